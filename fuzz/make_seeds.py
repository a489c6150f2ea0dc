#!/usr/bin/env python3
"""make_seeds.py - writes the seed corpora corpus/<target>/ of the fuzz targets:
small valid inputs (a few hundred bytes each) that libFuzzer mutates from.
Run from fuzz/: python3 make_seeds.py"""
import json, os, struct

def put(target, name, data):
    os.makedirs(f"corpus/{target}", exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    with open(f"corpus/{target}/{name}", "wb") as f:
        f.write(data)

# json: the shapes the project reads, escapes, numbers
put("json", "object", '{"a": [1, -2.5e3, true, false, null], "b": {"c": "d\\u00e9\\ud83d\\ude00\\n"}, "": []}')
put("json", "array", '[[], {}, "x", 0, 1e-7, "\\"\\\\\\/\\b\\f\\r\\t", "caf\xc3\xa9 \xe2\x96\x81"]')
put("json", "scalar", '  "plain"  ')

# safetensors: 8-byte little-endian header length, JSON header, data
def safetensors(tensors, meta=None):
    header, data = {}, b""
    if meta is not None:
        header["__metadata__"] = meta
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data
put("safetensors", "f32", safetensors([("w", "F32", [2, 2], struct.pack("<4f", 1, -2, 0.5, 3))], {"format": "pt"}))
put("safetensors", "halves", safetensors([("a", "F16", [3], struct.pack("<3H", 0x3C00, 0x8001, 0x7C00)),
                                          ("b", "BF16", [1, 2], struct.pack("<2H", 0x3F80, 0xC000)),
                                          ("empty", "F32", [0, 4], b"")]))

# config.json
mistral = {"architectures": ["MistralForCausalLM"], "model_type": "mistral", "hidden_size": 64,
           "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
           "vocab_size": 300, "max_position_embeddings": 512, "rms_norm_eps": 1e-05, "rope_theta": 10000.0,
           "tie_word_embeddings": False, "sliding_window": 4096, "bos_token_id": 1, "eos_token_id": 2,
           "hidden_act": "silu", "torch_dtype": "float32"}
put("config", "mistral", json.dumps(mistral, indent=1))
llama = {"model_type": "llama", "hidden_size": 32, "intermediate_size": 80, "num_hidden_layers": 1,
         "num_attention_heads": 2, "vocab_size": 100, "head_dim": 16, "rms_norm_eps": 1e-6,
         "bos_token_id": None, "eos_token_id": [2, 3], "tie_word_embeddings": True, "rope_scaling": None,
         "attention_bias": False}
put("config", "llama", json.dumps(llama))

# dataset records (official-code.md §2 layout)
emb = {"query": ["Given a user history, retrieve the next item", "Toy car\nPuzzle"],
       "pos": [["Represent the item", "Kite"]], "neg": [["Represent the item", "Mug"]],
       "task": "Emb_user", "id": 7, "source": "Toys"}
gen = {"text": ["### Instruction:\nIs this review positive?\n\n### Response:", "yes"],
       "task": "Sentiment_Analysis", "id": "sa-1", "source": "Books"}
put("record", "lines.jsonl", json.dumps(emb) + "\n\n" + json.dumps(gen) + "\n")
put("record", "one_gen", json.dumps(gen))
put("record", "array.json", json.dumps([{"query": "plain query text", "pos": [["instr", ["a", "b"]]], "neg": [],
                                         "task": "Emb_item", "id": None}]))

# tokenizer.json (Mistral kind, tiny vocabulary) + NUL + text to encode
vocab = ["<unk>", "<s>", "</s>", "<0x0A>", "<0x21>", "<0xC3>", "<0xA9>", "\u2581", "h", "e", "l", "o", "w",
         "r", "d", "\u2581h", "he", "ll", "\u2581he", "\u2581hell", "\u2581hello", "\u2581w", "or", "\u2581wor"]
merges = [["\u2581", "h"], ["h", "e"], ["l", "l"], ["\u2581h", "e"], ["\u2581he", "ll"], ["\u2581hell", "o"],
          ["\u2581", "w"], ["o", "r"], ["\u2581w", "or"]]
added = [{"id": i, "content": c, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
          "special": True} for i, c in enumerate(["<unk>", "<s>", "</s>"])]
tok = {"version": "1.0", "added_tokens": added,
       "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "\u2581"},
                      {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
       "pre_tokenizer": None,
       "post_processor": {"type": "TemplateProcessing",
                          "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                          "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
       "decoder": {"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
                   {"type": "ByteFallback"}, {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
       "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "fuse_unk": True, "byte_fallback": True,
                 "vocab": {p: i for i, p in enumerate(vocab)}, "merges": merges}}
put("tokenizer", "mistral", json.dumps(tok, separators=(",", ":")).encode() + b"\0hello world<s>\xc3\xa9!\nxyz")
old = dict(tok, normalizer=None,
           pre_tokenizer={"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first", "split": False},
           decoder={"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first", "split": False})
old["model"] = dict(tok["model"], merges=[" ".join(m) for m in merges])
put("tokenizer", "metaspace", json.dumps(old, separators=(",", ":")).encode() + b"\0 hello  wor</s>ld")

# raw sources of build-data: a selector byte (source % 8), files separated by "\n--8<--\n"
SEP = "\n--8<--\n"
def raw(src, *files):
    return bytes([src]) + SEP.join(files).encode("latin-1" if src == 3 else "utf-8")
put("rawcsv", "mudoco", raw(0, json.dumps({"dialogs": [{"split": "train", "turns": [
    {"utterance": "play the news", "rewritten_utterance": "play the news", "rewrite_required": False},
    {"utterance": "and the weather there", "rewritten_utterance": "and the weather in Paris",
     "rewrite_required": True}]}]})))
put("rawcsv", "amazon_google", raw(1,
    'id,title,description,manufacturer,price\nb1,"Photo Suite, v2",edit photos,Acme,19.99\nb2,Tax Pro,,Intuit,0\n',
    'id,name,description,manufacturer,price\nhttp://g/1,photo suite 2,"multi\nline",Acme,20\nhttp://g/2,tax,,intuit,1\n',
    '"idAmazon","idGoogleBase"\r\nb1,http://g/1\r\nb2,http://g/2\r\n'))
put("rawcsv", "esci", raw(2, 'query,product_title,esci_label\nred kite,Big Red Kite,E\nmug,"Mug, 12 oz",E\n'
                             'kite,"Kite ""Deluxe""",E\n'))
put("rawcsv", "amazonqa", raw(3, 'questionText,answerText\nDoes it float?,Yes it does\nDoes it float?,No\n'
                                 'Batteries included?,"No, buy AA"\nSize?,caf\u00e9 size\n'))
items = "".join(f"{i}|Movie {i} (199{i % 10})|01-Jan-199{i % 10}||http://x|0|{i % 2}|0|0|1|0|0|0|0|0|0|0|0|0|0|0|0|0|0\n"
                for i in range(1, 16))
data = "".join(f"1\t{i}\t{1 + i % 5}\t{880000000 + i}\n" for i in range(1, 14))
put("rawcsv", "movielens", raw(4, "1|30|F|writer|10001\n2|41|M|doctor|20002\n", items, data))
hist = lambda t, r: {"product": {"title": t}, "rating": r, "review_full": f"{t} was fine"}
users = [{"user_id": "u1", "category": "Toys", "history": [hist("Kite", 5), hist("Ball", 3)], "heldout": hist("Yo-yo", 4)},
         {"user_id": "u2", "history": [hist("Mug", 1)], "heldout": hist("Cup", 2)}]
put("rawcsv", "amazon2023", raw(5, json.dumps(users[0]), json.dumps(users[1]), ""))
# Amazon 2018 meta (the target wraps .gz files in gzip): also_buy / also_view within the file, a broken
# HTML title, a repeated ASIN, categories with HTML left-overs
meta = [{"asin": "G1", "title": " Kite Shop Gift Card", "brand": "Kite", "category": ["Gift Cards", "Gift Cards"],
         "also_buy": ["G2", "X9"], "also_view": ["G3", "G1"], "description": ["A card."]},
        {"asin": "G2", "title": "Kite &amp; Ball eGift", "category": ["Gift Cards", "</span>"], "also_buy": [],
         "also_view": ["G1"], "description": []},
        {"asin": "G3", "title": "<span class=\"x\"", "brand": "Pub Co", "category": [],
         "also_buy": ["G1"], "also_view": [], "description": ["<p>A magazine about kites. Monthly.</p>"]},
        {"asin": "G4", "title": "Mug Card", "category": ["Gift Cards", "Mugs &amp; Cups"], "also_buy": [],
         "also_view": [], "description": []},
        {"asin": "G3", "title": "repeat", "also_buy": [], "also_view": []}]
put("rawcsv", "amazon2018_meta", raw(6, "\n".join(json.dumps(m) for m in meta),
                                     json.dumps({"asin": "M1", "title": "", "brand": "", "description": [""]})))
review = lambda who, st, text: json.dumps({"overall": st, "reviewerID": who, "asin": "G1", "reviewText": text})
put("rawcsv", "amazon2018_reviews", raw(7, "\n".join([review("u1", 5.0, "Great card"), review("u2", 2.5, "half"),
                                                      review("u3", 1, "  ")]), review("u4", 3, "It is fine")))

# gzip: the valid fixtures of tests/fixtures/gz (Python's gzip and zlib, tests/reference/make_gz_fixtures.py)
for name in ("stored", "fixed", "dynamic", "multi", "empty", "extra"):
    with open(f"../tests/fixtures/gz/{name}.gz", "rb") as f:
        put("gzip", name, f.read())

# S2Sched loss tables: one option byte, then the CSV
put("schedcsv", "paper", bytes([0x00]) + b"step,U2I,Q2I,SR,SA\n" + "".join(
    f"{t},{2.0 / (t + 1):.4f},{1.5 - 0.01 * t:.4f},{3.0 - 0.1 * t:.3f},{1.0 + (t % 3) * 0.1:.2f}\n"
    for t in range(12)).encode())
put("schedcsv", "code", bytes([0x8D]) + b"Emb_user,Sequential_Recommendation , AP\n" + "".join(
    f"{1.0 / (t + 1):.5f},{'' if t % 4 == 1 else 2.0 - 0.05 * t},{'nan' if t == 3 else 0.7 + 0.01 * t}\n"
    for t in range(10)).encode())
