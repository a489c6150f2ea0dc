#!/usr/bin/python3
"""make_fixtures.py - the independent PyTorch reference for the C decoder.

Usage:  /usr/bin/python3 tests/reference/make_fixtures.py tests/fixtures
        (what `make fixtures` runs; the output is byte-identical run to run)

A Llama/Mistral decoder with Hugging Face `modeling_mistral` / `modeling_llama`
semantics, written out functionally in float64 so that its numbers can be the
"want" side of the C tests (see README.md beside this file for the exact
semantics).  For each case it writes a tiny random model folder in the HF
layout (config.json + safetensors, F32 or sharded BF16), the token ids, and the
expected logits, losses, pooled embeddings, every parameter gradient and the
parameters after one SGD step.  Before writing anything it checks itself:
a naive loop implementation, causality, padding invariance, row independence,
gradcheck and a directional finite difference.
"""
import json
import math
import os
import struct
import sys

import numpy as np
import torch

F64 = torch.float64
PAD_ID = 0
POOL_FROM = 2
LR = 0.1

# ---------------------------------------------------------------- safetensors
# File = u64 little-endian header length N, N bytes of JSON (space padded to a
# multiple of 8), then the raw little-endian tensor bytes; "data_offsets" are
# [begin, end) relative to the first byte after the header.


def f32_to_bf16_bits(a):
    """float32 array -> uint16 bfloat16 bit patterns, round to nearest even."""
    bits = np.ascontiguousarray(a, dtype="<f4").view(np.uint32).astype(np.uint64)
    rounding = ((bits >> 16) & 1) + 0x7FFF
    return ((bits + rounding) >> 16).astype("<u2")


def bf16_bits_to_f32(b):
    return (b.astype(np.uint32) << 16).view("<f4")


def st_write(path, tensors, dtype="F32"):
    """tensors: list of (name, array-like); written in name order (as the
    safetensors library does) with the given dtype: F32, BF16 or F16."""
    items = sorted(tensors, key=lambda nt: nt[0])
    header = {"__metadata__": {"format": "pt"}}
    blobs, off = [], 0
    for name, t in items:
        a = np.asarray(t.detach().cpu().numpy() if torch.is_tensor(t) else t, dtype=np.float32)
        if dtype == "F32":
            raw = a.astype("<f4").tobytes()
        elif dtype == "BF16":
            raw = f32_to_bf16_bits(a).tobytes()
        elif dtype == "F16":
            raw = a.astype("<f2").tobytes()
        else:
            raise ValueError(dtype)
        header[name] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for raw in blobs:
            f.write(raw)
    return off  # bytes of tensor data


def st_read(path):
    """-> {name: float32 numpy array} (F32, BF16 and F16 accepted)."""
    with open(path, "rb") as f:
        buf = f.read()
    (n,) = struct.unpack("<Q", buf[:8])
    header = json.loads(buf[8:8 + n])
    data = memoryview(buf)[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        raw = data[b:e]
        if info["dtype"] == "F32":
            a = np.frombuffer(raw, dtype="<f4")
        elif info["dtype"] == "BF16":
            a = bf16_bits_to_f32(np.frombuffer(raw, dtype="<u2"))
        elif info["dtype"] == "F16":
            a = np.frombuffer(raw, dtype="<f2").astype(np.float32)
        else:
            raise ValueError("%s: %s: unsupported dtype %s" % (path, name, info["dtype"]))
        out[name] = a.reshape(info["shape"]).copy()
    return out


def shard_files(d):
    """The safetensors files of a model folder: the shards listed in
    model.safetensors.index.json, else model.safetensors."""
    index = os.path.join(d, "model.safetensors.index.json")
    if not os.path.exists(index):
        return ["model.safetensors"]
    with open(index) as f:
        return sorted(set(json.load(f)["weight_map"].values()))


def load_model_dir(d):
    """config.json + model.safetensors, or shards listed in model.safetensors.index.json."""
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    w = {}
    for s in shard_files(d):
        w.update(st_read(os.path.join(d, s)))
    return cfg, w


# ------------------------------------------------------------------ the model


def dims(cfg):
    C, H, KV = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg.get("head_dim") or C // H
    return C, H, KV, hd


def param_shapes(cfg):
    """HF names and shapes, in the order of the C parameter table."""
    C, H, KV, hd = dims(cfg)
    I, V = cfg["intermediate_size"], cfg["vocab_size"]
    out = [("model.embed_tokens.weight", (V, C))]
    for l in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % l
        out += [(p + "input_layernorm.weight", (C,)),
                (p + "self_attn.q_proj.weight", (H * hd, C)),
                (p + "self_attn.k_proj.weight", (KV * hd, C)),
                (p + "self_attn.v_proj.weight", (KV * hd, C)),
                (p + "self_attn.o_proj.weight", (C, H * hd)),
                (p + "post_attention_layernorm.weight", (C,)),
                (p + "mlp.gate_proj.weight", (I, C)),
                (p + "mlp.up_proj.weight", (I, C)),
                (p + "mlp.down_proj.weight", (C, I))]
    out.append(("model.norm.weight", (C,)))
    if not cfg["tie_word_embeddings"]:
        out.append(("lm_head.weight", (V, C)))
    return out


def rms_norm(x, w, eps):
    # x / sqrt(mean(x^2) + eps) * weight
    return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps) * w


def rope_tables(T, hd, theta):
    # inv_freq[i] = theta^(-2i/hd); the angle table is duplicated over both halves.
    i = torch.arange(hd // 2, dtype=F64)
    inv_freq = float(theta) ** (-2.0 * i / hd)
    ang = torch.arange(T, dtype=F64)[:, None] * inv_freq[None, :]
    ang = torch.cat([ang, ang], dim=-1)
    return torch.cos(ang), torch.sin(ang)


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], dim=-1)


def allowed_keys(lengths, T, bidirectional, window):
    """allowed[b, i, j]: may query i attend to key j in row b."""
    i = torch.arange(T)[:, None]
    j = torch.arange(T)[None, :]
    a = (j[None] < torch.as_tensor(lengths)[:, None, None]).expand(len(lengths), T, T)
    if not bidirectional:
        a = a & (j <= i)[None]
    if window and window > 0:
        dist = (i - j).abs() if bidirectional else (i - j)
        a = a & (dist < window)[None]
    return a


def attention(q, k, v, allowed):
    """q [B,H,T,hd], k/v [B,KV,T,hd]; query head h reads kv head h // (H/KV).
    A query with no allowed key (only pad rows with a sliding window) outputs 0."""
    B, H, T, hd = q.shape
    rep = H // k.shape[1]
    k = k.repeat_interleave(rep, dim=1)
    v = v.repeat_interleave(rep, dim=1)
    s = q @ k.transpose(-1, -2) / math.sqrt(hd)
    m = allowed[:, None]
    nonempty = m.any(-1, keepdim=True)
    s = s.masked_fill(~m, float("-inf")).masked_fill(~nonempty, 0.0)
    p = torch.softmax(s, dim=-1) * nonempty
    return p @ v


def forward_hidden(P, cfg, ids, lengths, bidirectional):
    """Final-norm hidden states [B,T,C]."""
    C, H, KV, hd = dims(cfg)
    eps = cfg["rms_norm_eps"]
    B, T = ids.shape
    cos, sin = rope_tables(T, hd, cfg["rope_theta"])
    allowed = allowed_keys(lengths, T, bidirectional, cfg.get("sliding_window"))
    x = P["model.embed_tokens.weight"][ids]
    for l in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % l
        n = rms_norm(x, P[p + "input_layernorm.weight"], eps)
        q = (n @ P[p + "self_attn.q_proj.weight"].T).view(B, T, H, hd).transpose(1, 2)
        k = (n @ P[p + "self_attn.k_proj.weight"].T).view(B, T, KV, hd).transpose(1, 2)
        v = (n @ P[p + "self_attn.v_proj.weight"].T).view(B, T, KV, hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        a = attention(q, k, v, allowed).transpose(1, 2).reshape(B, T, H * hd)
        h = x + a @ P[p + "self_attn.o_proj.weight"].T
        n = rms_norm(h, P[p + "post_attention_layernorm.weight"], eps)
        g = torch.nn.functional.silu(n @ P[p + "mlp.gate_proj.weight"].T)
        u = n @ P[p + "mlp.up_proj.weight"].T
        x = h + (g * u) @ P[p + "mlp.down_proj.weight"].T
    return rms_norm(x, P["model.norm.weight"], eps)


def lm_head(P):
    return P["lm_head.weight"] if "lm_head.weight" in P else P["model.embed_tokens.weight"]


def token_ce(logits, ids, lengths):
    """CE of predicting ids[t+1] at t, and the mask of predicted positions t < len-1."""
    B, T, V = logits.shape
    tgt = torch.cat([ids[:, 1:], torch.full((B, 1), PAD_ID, dtype=ids.dtype)], dim=1)
    ce = torch.logsumexp(logits, -1) - logits.gather(-1, tgt[..., None])[..., 0]
    mask = torch.arange(T)[None, :] < (torch.as_tensor(lengths)[:, None] - 1)
    return ce, mask.to(F64)


def losses(P, cfg, ids, lengths, bidirectional):
    """-> logits, seq_loss[B], loss (mean CE over all predicted tokens of the batch)."""
    logits = forward_hidden(P, cfg, ids, lengths, bidirectional) @ lm_head(P).T
    ce, mask = token_ce(logits, ids, lengths)
    seq = (ce * mask).sum(1) / mask.sum(1)
    loss = (ce * mask).sum() / mask.sum()
    return logits, seq, loss


def embed(P, cfg, ids, lengths, pool_from):
    """Bidirectional pass, mean of hidden over pool_from <= t < len, L2-normalised."""
    hid = forward_hidden(P, cfg, ids, lengths, True)
    T = ids.shape[1]
    t = torch.arange(T)[None, :]
    m = ((t >= pool_from) & (t < torch.as_tensor(lengths)[:, None])).to(F64)
    e = (hid * m[..., None]).sum(1) / m.sum(1, keepdim=True)
    return e / e.norm(dim=-1, keepdim=True)


# ------------------------------------------- a second, naive implementation
# Plain loops in numpy, RoPE as a rotation of the pairs (x[i], x[i + hd/2]),
# GQA by explicit head index: written differently on purpose so that an
# indexing slip in the vectorised model above shows up as a mismatch.


def naive_logits(P, cfg, ids, lengths, bidirectional):
    Pn = {k: v.detach().numpy() for k, v in P.items()}
    C, H, KV, hd = dims(cfg)
    eps, W = cfg["rms_norm_eps"], cfg.get("sliding_window") or 0
    B, T = ids.shape
    half = hd // 2

    def rms(x, w):
        return x / np.sqrt(np.mean(x * x) + eps) * w

    def rope(vec, pos):
        out = vec.copy()
        for i in range(half):
            th = pos * cfg["rope_theta"] ** (-2.0 * i / hd)
            a, b = vec[i], vec[i + half]
            out[i] = a * math.cos(th) - b * math.sin(th)
            out[i + half] = b * math.cos(th) + a * math.sin(th)
        return out

    lm = Pn.get("lm_head.weight", Pn["model.embed_tokens.weight"])
    out = np.zeros((B, T, cfg["vocab_size"]))
    for b in range(B):
        L = lengths[b]
        x = np.stack([Pn["model.embed_tokens.weight"][int(ids[b, t])] for t in range(T)])
        for l in range(cfg["num_hidden_layers"]):
            p = "model.layers.%d." % l
            n = np.stack([rms(x[t], Pn[p + "input_layernorm.weight"]) for t in range(T)])
            q = n @ Pn[p + "self_attn.q_proj.weight"].T
            k = n @ Pn[p + "self_attn.k_proj.weight"].T
            v = n @ Pn[p + "self_attn.v_proj.weight"].T
            att = np.zeros((T, H * hd))
            for h in range(H):
                g = h // (H // KV)
                for i in range(T):
                    qi = rope(q[i, h * hd:(h + 1) * hd], i)
                    keys = [j for j in range(T) if j < L and (bidirectional or j <= i)
                            and (W <= 0 or (abs(i - j) if bidirectional else i - j) < W)]
                    if not keys:
                        continue
                    s = np.array([qi @ rope(k[j, g * hd:(g + 1) * hd], j) for j in keys]) / math.sqrt(hd)
                    w = np.exp(s - s.max())
                    w /= w.sum()
                    att[i, h * hd:(h + 1) * hd] = sum(w[c] * v[j, g * hd:(g + 1) * hd] for c, j in enumerate(keys))
            hcur = x + att @ Pn[p + "self_attn.o_proj.weight"].T
            n = np.stack([rms(hcur[t], Pn[p + "post_attention_layernorm.weight"]) for t in range(T)])
            gate = n @ Pn[p + "mlp.gate_proj.weight"].T
            up = n @ Pn[p + "mlp.up_proj.weight"].T
            x = hcur + (gate / (1 + np.exp(-gate)) * up) @ Pn[p + "mlp.down_proj.weight"].T
        for t in range(T):
            out[b, t] = rms(x[t], Pn["model.norm.weight"]) @ lm.T
    return out


# ---------------------------------------------------------------- the cases

CASES = [
    dict(name="gqa_tied", seed=1001, T=12, lengths=[12, 9, 5], dtype="F32",
         description="mistral, GQA 4 query / 2 kv heads (head_dim 12), tied lm_head, no sliding window, "
                     "rope_theta 10000",
         config=dict(architectures=["MistralForCausalLM"], model_type="mistral", hidden_size=48,
                     intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                     rms_norm_eps=1e-5, rope_theta=10000.0, vocab_size=128, max_position_embeddings=64,
                     tie_word_embeddings=True, sliding_window=None)),
    dict(name="mha_untied_window", seed=2002, T=12, lengths=[12, 9, 5], dtype="F32",
         description="mistral, 4 heads = 4 kv heads, untied lm_head, sliding_window 4 < T, rope_theta 500, "
                     "eps 1e-6; in row 2 (length 5) the pad queries t >= 8 have no key inside the window "
                     "and attend to nothing (attention output 0)",
         config=dict(architectures=["MistralForCausalLM"], model_type="mistral", hidden_size=32,
                     intermediate_size=80, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                     rms_norm_eps=1e-6, rope_theta=500.0, vocab_size=96, max_position_embeddings=64,
                     tie_word_embeddings=False, sliding_window=4)),
    dict(name="llama_bf16_sharded", seed=3003, T=11, lengths=[11, 8, 5], dtype="BF16",
         description="llama, 4 query heads / 1 kv head, head_dim 16 != hidden/heads = 8, untied, "
                     "BF16 weights in two shards; expected values use the bf16-rounded weights",
         config=dict(architectures=["LlamaForCausalLM"], model_type="llama", hidden_size=32,
                     intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1,
                     head_dim=16, rms_norm_eps=1e-5, rope_theta=10000.0, vocab_size=112,
                     max_position_embeddings=64, tie_word_embeddings=False)),
]


def full_config(case):
    c = dict(case["config"])
    c.update(bos_token_id=1, eos_token_id=2, hidden_act="silu",
             torch_dtype="bfloat16" if case["dtype"] == "BF16" else "float32")
    if c["model_type"] == "llama":  # as in real Llama checkpoints: no sliding_window key
        c.update(attention_bias=False, mlp_bias=False, pretraining_tp=1, rope_scaling=None)
    return c


def make_params(cfg, gen, dtype):
    """N(0, 0.2) matrices, 1 + N(0, 0.1) norm weights, drawn in table order.
    Returns float64 leaves holding exactly the values stored in the file."""
    P = {}
    for name, shape in param_shapes(cfg):
        r = torch.randn(shape, generator=gen, dtype=torch.float32)
        w = 1.0 + 0.1 * r if len(shape) == 1 else 0.2 * r
        a = w.numpy().astype(np.float32)
        if dtype == "BF16":
            a = bf16_bits_to_f32(f32_to_bf16_bits(a))
        P[name] = torch.tensor(a, dtype=F64, requires_grad=True)
    return P


def pad_batch(rows, T, pad=PAD_ID):
    ids = torch.full((len(rows), T), pad, dtype=torch.long)
    for b, r in enumerate(rows):
        ids[b, :len(r)] = torch.tensor(r)
    return ids


def grads_of(scalar_fn, P):
    for p in P.values():
        p.grad = None
    scalar_fn().backward()
    return {k: (p.grad.clone() if p.grad is not None else torch.zeros_like(p)) for k, p in P.items()}


# ------------------------------------------------------------ self checks


def check(cond, what):
    if not cond:
        raise SystemExit("make_fixtures.py: self-check failed: " + what)


def self_check(case, cfg, P, ids, lengths, probe, gen):
    name = case["name"]
    B, T = ids.shape
    # 1. a naive loop implementation agrees, both attention modes
    for bidir in (False, True):
        want = naive_logits(P, cfg, ids, lengths, bidir)
        got = losses(P, cfg, ids, lengths, bidir)[0].detach().numpy()
        err = np.abs(got - want).max() / np.abs(want).max()
        check(err < 1e-12, "%s: naive vs vectorised logits (bidirectional=%d): rel %.3g" % (name, bidir, err))
    base, _, _ = losses(P, cfg, ids, lengths, False)
    base_bi, _, _ = losses(P, cfg, ids, lengths, True)
    # 2. causality: changing tokens after t leaves causal logits at <= t unchanged
    t = 4
    ids2 = ids.clone()
    ids2[0, t + 1:lengths[0]] = torch.randint(3, cfg["vocab_size"], (lengths[0] - t - 1,), generator=gen)
    check(not torch.equal(ids2[0, t + 1:lengths[0]], ids[0, t + 1:lengths[0]]), "causality: ids did not change")
    l2 = losses(P, cfg, ids2, lengths, False)[0]
    check((l2[0, :t + 1] - base[0, :t + 1]).abs().max() < 1e-12, "%s: causal logits see the future" % name)
    check((l2[0, t + 1:] - base[0, t + 1:]).abs().max() > 1e-3, "%s: causal logits ignore the present" % name)
    l2b = losses(P, cfg, ids2, lengths, True)[0]
    check((l2b[0, :t + 1] - base_bi[0, :t + 1]).abs().max() > 1e-3, "%s: bidirectional does not look ahead" % name)
    # 3. pad ids do not matter at valid positions
    ids3 = pad_batch([ids[b, :lengths[b]].tolist() for b in range(B)], T, pad=7)
    l3, s3, _ = losses(P, cfg, ids3, lengths, False)
    _, s3b, _ = losses(P, cfg, ids3, lengths, True)
    for b in range(B):
        check((l3[b, :lengths[b]] - base[b, :lengths[b]]).abs().max() < 1e-12, "%s: pad ids leak" % name)
    check((s3 - losses(P, cfg, ids, lengths, False)[1]).abs().max() < 1e-12, "%s: pad ids leak into loss" % name)
    check((s3b - losses(P, cfg, ids, lengths, True)[1]).abs().max() < 1e-12, "%s: pad ids leak (bidir)" % name)
    check((embed(P, cfg, ids3, lengths, POOL_FROM) - embed(P, cfg, ids, lengths, POOL_FROM)).abs().max() < 1e-12,
          "%s: pad ids leak into embed" % name)
    # 4. a row alone, unpadded, gives the same valid logits
    b = B - 1
    L = lengths[b]
    for bidir, ref in ((False, base), (True, base_bi)):
        alone = losses(P, cfg, ids[b:b + 1, :L], [L], bidir)[0]
        check((alone[0] - ref[b, :L]).abs().max() < 1e-12, "%s: row depends on batch/padding" % name)
    # 5. the sliding window changes the result when it is set
    if cfg.get("sliding_window"):
        cfg_nw = dict(cfg, sliding_window=None)
        check((losses(P, cfg_nw, ids, lengths, False)[0][0] - base[0]).abs().max() > 1e-3,
              "%s: sliding window has no effect" % name)
    # 6. gradcheck on a few parameters, both objectives
    names = ["model.layers.0.input_layernorm.weight", "model.layers.1.self_attn.k_proj.weight",
             "model.norm.weight"]
    for nm in names:
        def f_loss(w, nm=nm):
            return losses(dict(P, **{nm: w}), cfg, ids, lengths, False)[2]

        def f_emb(w, nm=nm):
            return (embed(dict(P, **{nm: w}), cfg, ids, lengths, POOL_FROM) * probe).sum()
        for f in (f_loss, f_emb):
            w = P[nm].detach().clone().requires_grad_(True)
            check(torch.autograd.gradcheck(f, (w,), eps=1e-6, atol=1e-7, rtol=1e-5),
                  "%s: gradcheck %s" % (name, nm))
    # 7. directional finite difference over all parameters at once (kann style)
    objectives = (("loss", lambda Q: losses(Q, cfg, ids, lengths, False)[2]),
                  ("embed", lambda Q: (embed(Q, cfg, ids, lengths, POOL_FROM) * probe).sum()))
    for what, f in objectives:
        g = grads_of(lambda: f(P), P)
        d = {k: torch.randn(p.shape, generator=gen, dtype=F64) for k, p in P.items()}
        h = 1e-5
        with torch.no_grad():
            fp = f({k: P[k] + h * d[k] for k in P})
            fm = f({k: P[k] - h * d[k] for k in P})
        fd = (fp - fm).item() / (2 * h)
        an = sum((g[k] * d[k]).sum().item() for k in P)
        check(abs(fd - an) <= 1e-6 * max(1.0, abs(an)),
              "%s: finite difference of %s: fd %.12g vs autograd %.12g" % (name, what, fd, an))
    print("  self-checks passed: naive loops, causality, padding, rows, window, gradcheck, finite difference")


# ------------------------------------------------------------------- writing


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def make_case(case, root):
    cfg = full_config(case)
    gen = torch.Generator().manual_seed(case["seed"])
    P = make_params(cfg, gen, case["dtype"])
    T, lengths = case["T"], case["lengths"]
    B = len(lengths)
    V, C = cfg["vocab_size"], cfg["hidden_size"]
    rows = [torch.randint(3, V, (L,), generator=gen).tolist() for L in lengths]
    ids = pad_batch(rows, T)
    probe = torch.randn((B, C), generator=gen, dtype=torch.float32).to(F64)

    print("%s: %d parameters" % (case["name"], sum(p.numel() for p in P.values())))
    self_check(case, cfg, P, ids, lengths, probe, torch.Generator().manual_seed(case["seed"] + 1))

    with torch.no_grad():
        logits, seq_loss, loss = losses(P, cfg, ids, lengths, False)
        _, seq_bidir, _ = losses(P, cfg, ids, lengths, True)
        emb = embed(P, cfg, ids, lengths, POOL_FROM)
    g_loss = grads_of(lambda: losses(P, cfg, ids, lengths, False)[2], P)
    g_emb = grads_of(lambda: (embed(P, cfg, ids, lengths, POOL_FROM) * probe).sum(), P)

    d = os.path.join(root, case["name"])
    md = os.path.join(d, "model")
    os.makedirs(md, exist_ok=True)
    write_json(os.path.join(md, "config.json"), cfg)
    named = [(k, P[k]) for k, _ in param_shapes(cfg)]
    if case["dtype"] == "BF16":
        # two shards, split inside layer 1 so a loader must follow the weight_map
        split = next(i for i, (k, _) in enumerate(named) if k.startswith("model.layers.1.post_attention"))
        shards = [("model-00001-of-00002.safetensors", named[:split]),
                  ("model-00002-of-00002.safetensors", named[split:])]
        total, wmap = 0, {}
        for fname, part in shards:
            total += st_write(os.path.join(md, fname), part, "BF16")
            wmap.update({k: fname for k, _ in part})
        write_json(os.path.join(md, "model.safetensors.index.json"),
                   {"metadata": {"total_size": total}, "weight_map": dict(sorted(wmap.items()))})
    else:
        st_write(os.path.join(md, "model.safetensors"), named, case["dtype"])

    with open(os.path.join(d, "ids.txt"), "w") as f:
        for r in rows:
            f.write(" ".join(str(i) for i in r) + "\n")
    out = [("logits", logits), ("seq_loss", seq_loss), ("seq_loss_bidir", seq_bidir),
           ("loss", loss.reshape(1)), ("embed", emb), ("embed_probe", probe)]
    out += [("grad." + k, g_loss[k]) for k, _ in named]
    out += [("grad_embed." + k, g_emb[k]) for k, _ in named]
    st_write(os.path.join(d, "expected.safetensors"), out)
    with torch.no_grad():
        st_write(os.path.join(d, "sgd.safetensors"), [(k, P[k] - LR * g_loss[k]) for k, _ in named])
    write_json(os.path.join(d, "meta.json"),
               {"pool_from": POOL_FROM, "lr": LR, "B": B, "T": T, "pad_id": PAD_ID,
                "lengths": lengths, "seed": case["seed"], "description": case["description"]})

    # round trip: the files read back to the values computed above
    cfg2, w2 = load_model_dir(md)
    check(cfg2 == cfg, "config round trip")
    for k, p in named:
        check(np.array_equal(w2[k], p.detach().numpy().astype(np.float32)), "weights round trip " + k)
    e2 = st_read(os.path.join(d, "expected.safetensors"))
    check(np.array_equal(e2["loss"], np.float32([loss.item()])), "expected round trip")
    print("  loss %.6f  seq_loss %s  seq_loss_bidir %s" % (loss.item(), np.round(seq_loss.numpy(), 5),
                                                          np.round(seq_bidir.numpy(), 5)))


def main(argv):
    if len(argv) != 2:
        sys.stderr.write("usage: make_fixtures.py OUTDIR   (e.g. tests/fixtures)\n")
        return 2
    torch.set_num_threads(1)  # one thread: reductions in a fixed order, byte-identical output
    # the bf16 rounding here must match torch's own (round to nearest even)
    x = torch.randn(4096, generator=torch.Generator().manual_seed(0)) * 3
    check(np.array_equal(f32_to_bf16_bits(x.numpy()), x.to(torch.bfloat16).view(torch.int16).numpy().view("<u2")),
          "bf16 rounding differs from torch")
    for case in CASES:
        make_case(case, argv[1])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
