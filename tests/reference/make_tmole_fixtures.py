#!/usr/bin/python3
"""make_tmole_fixtures.py - the independent PyTorch reference for TMoLE and the two RecFound losses.

Usage:  /usr/bin/python3 tests/reference/make_tmole_fixtures.py tests/fixtures/tmole
        (the output is byte-identical run to run: fixed seeds, one torch thread)

TMoLE (paper §4.2, eq. 1-2) on the q, k, v, o projections of every layer of a
tiny Mistral decoder, and the two training objectives of §4.1: token CE on the
answer tokens of the generative pass (causal) and InfoNCE over
[queries | positives | hard negatives] in the embedding pass (bidirectional),
L = L_emb + lambda_gen * L_gen.  Everything is float64; the backbone is the
decoder of make_fixtures.py (imported, not copied) with the adapter term added
to each projection.  For each case it writes the backbone (HF layout), the
adapters (PEFT-style names, adapter_config.json), the batch and the expected
losses, embeddings, hidden states, routing tables and the gradient of every
adapter tensor (frozen backbone).  Also a standalone InfoNCE case.
README.md beside this file states the exact semantics.

Before writing anything the script checks itself: routing rows sum to 1 with
exact zeros at masked experts; B = 0 gives the backbone of make_fixtures.py;
each row equals make_fixtures.py's naive loop decoder run alone with the
row's routed mixture folded into W0 (for `lora`: W0 + (alpha/r) B A); masked
experts get exactly zero gradient; gradcheck and a directional finite
difference of both losses; InfoNCE against its closed-form gradient.
"""
import json
import math
import os
import re
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as mf  # noqa: E402  (the backbone, safetensors reader/writer)

F64 = torch.float64
PAD_ID = 0
TAU = 0.02
LAMBDA_GEN = 1.0
TASK_ROWS = 14
PROJS = ("q_proj", "k_proj", "v_proj", "o_proj")
PREFIX = "base_model.model.model.layers.%d.self_attn.%s."

BACKBONE = dict(architectures=["MistralForCausalLM"], model_type="mistral", hidden_size=32,
                intermediate_size=48, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                rms_norm_eps=1e-5, rope_theta=10000.0, vocab_size=96, max_position_embeddings=64,
                tie_word_embeddings=True, sliding_window=None)

# The batch shared by the cases (token ids are drawn per case).
# Generative rows: tasks SR(4), QR(3), PM(8); tokens [0, P) are the prompt.
GEN = dict(T=10, lengths=[10, 8, 6], prompt_lengths=[4, 5, 3], tasks=[4, 3, 8])
# Embedding rows: Q = 2 triplets laid out [q0 q1 | pos0 pos1 | neg0 neg1]; query tasks U2I(0), I2I(2),
# each carried by all three rows of its triplet.
EMB = dict(T=9, queries=2, lengths=[9, 6, 8, 5, 7, 4], pool_from=[2, 1, 2, 2, 1, 1], tasks=[0, 2, 0, 2, 0, 2])

CASES = [
    dict(name="tmole_222", seed=5101, r=4, alpha=8, E=8, experts=(2, 2, 2), router=True, hidden=[],
         description="the paper's TMoLE: 2 embedding | 2 shared | 2 generative experts, router = one Linear"),
    dict(name="tmole_303_hidden", seed=5202, r=4, alpha=8, E=8, experts=(3, 0, 3), router=True, hidden=[5],
         description="the authors' shipped split 3 | 0 | 3 (no shared expert), router MLP with a hidden "
                     "ReLU layer of width 5"),
    dict(name="lora", seed=5303, r=4, alpha=8, E=8, experts=(0, 1, 0), router=False, hidden=[],
         description="plain LoRA (the 'w/o TMoLE' ablation): one shared expert, no router, no task table"),
]


# ------------------------------------------------------------- the adapters


def proj_dims(cfg):
    """(in, out) of q, k, v, o."""
    C, H, KV, hd = mf.dims(cfg)
    return {"q_proj": (C, H * hd), "k_proj": (C, KV * hd), "v_proj": (C, KV * hd), "o_proj": (H * hd, C)}


def adapter_shapes(cfg, case):
    """PEFT-style names and shapes, per layer and projection: A_0..A_{N-1}, B_0..B_{N-1},
    router hidden layers, final router layer; then the task-embedding table."""
    N = sum(case["experts"])
    r, E = case["r"], case["E"]
    out = []
    for l in range(cfg["num_hidden_layers"]):
        for p in PROJS:
            fin, fout = proj_dims(cfg)[p]
            pre = PREFIX % (l, p)
            out += [(pre + "lora_A.%d.weight" % j, (r, fin)) for j in range(N)]
            out += [(pre + "lora_B.%d.weight" % j, (fout, r)) for j in range(N)]
            if not case["router"]:
                continue
            width = E
            for h, w in enumerate(case["hidden"]):
                out += [(pre + "lora_route.hidden.%d.weight" % h, (w, width)),
                        (pre + "lora_route.hidden.%d.bias" % h, (w,))]
                width = w
            out += [(pre + "lora_route.weight", (N, width)), (pre + "lora_route.bias", (N,))]
    if case["router"]:
        out.append(("task_embedding.weight", (TASK_ROWS, E)))
    return out


def make_adapters(cfg, case, gen):
    """A ~ U(-1/sqrt(in), 1/sqrt(in)), B ~ N(0, 0.3^2) (not 0, so that every gradient is alive),
    router weights N(0, 1), final router bias U(-0.3, 0.3), hidden biases +1, -1, +1, ...
    (ReLU inputs stay away from 0), task embedding N(0, 0.3^2).  Drawn in float32 in table
    order; returns float64 leaves holding exactly the stored values."""
    A = {}
    for name, shape in adapter_shapes(cfg, case):
        if ".lora_A." in name:
            w = (torch.rand(shape, generator=gen) * 2 - 1) / math.sqrt(shape[1])
        elif ".lora_B." in name:
            w = 0.3 * torch.randn(shape, generator=gen)
        elif ".hidden." in name and name.endswith(".bias"):
            w = torch.tensor([1.0 if k % 2 == 0 else -1.0 for k in range(shape[0])])
        elif name.endswith(".bias"):
            w = (torch.rand(shape, generator=gen) * 2 - 1) * 0.3
        elif name == "task_embedding.weight":
            w = 0.3 * torch.randn(shape, generator=gen)
        else:  # router weights
            w = torch.randn(shape, generator=gen)
        A[name] = torch.tensor(w.to(torch.float32).numpy(), dtype=F64, requires_grad=True)
    return A


def expert_mask(case, bidirectional):
    """open[j]: expert j may be used in this pass (eq. 1's Mask).  Groups [emb | shared | gen]:
    the embedding (bidirectional) pass closes the generative experts, the generative (causal)
    pass closes the embedding experts; shared experts are always open."""
    ne, ns, ng = case["experts"]
    return torch.tensor([True] * ne + [True] * ns + [False] * ng if bidirectional
                        else [False] * ne + [True] * ns + [True] * ng)


def route_table(A, case, l, p, bidirectional):
    """eq. (1) for every task row: v [14, N] = softmax(Mask(MLP(E_tab))), masked entries exactly 0.
    Without a router every open expert has weight 1."""
    N = sum(case["experts"])
    open_ = expert_mask(case, bidirectional)
    if not case["router"]:
        return open_.to(F64)[None, :].expand(TASK_ROWS, N)
    pre = PREFIX % (l, p)
    x = A["task_embedding.weight"]
    for h in range(len(case["hidden"])):
        x = torch.relu(x @ A[pre + "lora_route.hidden.%d.weight" % h].T + A[pre + "lora_route.hidden.%d.bias" % h])
    z = x @ A[pre + "lora_route.weight"].T + A[pre + "lora_route.bias"]
    return torch.softmax(z.masked_fill(~open_[None, :], float("-inf")), dim=-1)


def tmole_term(A, case, l, p, x, v):
    """eq. (2) minus W0 x: sum_j v[b, j] (alpha/r) B_j (A_j x) for every token of row b.
    x [B, T, in], v [B, N] (routing of each row's task)."""
    s = case["alpha"] / case["r"]
    pre = PREFIX % (l, p)
    y = 0
    for j in range(sum(case["experts"])):
        y = y + v[:, j, None, None] * s * ((x @ A[pre + "lora_A.%d.weight" % j].T) @ A[pre + "lora_B.%d.weight" % j].T)
    return y


def forward_hidden(P, A, cfg, case, ids, lengths, tasks, bidirectional):
    """make_fixtures.forward_hidden with the TMoLE term on q, k, v (before RoPE) and o.
    The bidirectional pass is the embedding pass, the causal pass the generative pass."""
    C, H, KV, hd = mf.dims(cfg)
    eps = cfg["rms_norm_eps"]
    B, T = ids.shape
    cos, sin = mf.rope_tables(T, hd, cfg["rope_theta"])
    allowed = mf.allowed_keys(lengths, T, bidirectional, cfg.get("sliding_window"))
    tasks = torch.as_tensor(tasks)
    x = P["model.embed_tokens.weight"][ids]
    for l in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % l
        v = {q: route_table(A, case, l, q, bidirectional)[tasks] for q in PROJS}  # [B, N]

        def proj(name, inp):
            return inp @ P[p + "self_attn.%s.weight" % name].T + tmole_term(A, case, l, name, inp, v[name])
        n = mf.rms_norm(x, P[p + "input_layernorm.weight"], eps)
        q = proj("q_proj", n).view(B, T, H, hd).transpose(1, 2)
        k = proj("k_proj", n).view(B, T, KV, hd).transpose(1, 2)
        vv = proj("v_proj", n).view(B, T, KV, hd).transpose(1, 2)
        q = q * cos + mf.rotate_half(q) * sin
        k = k * cos + mf.rotate_half(k) * sin
        a = mf.attention(q, k, vv, allowed).transpose(1, 2).reshape(B, T, H * hd)
        h = x + proj("o_proj", a)
        n = mf.rms_norm(h, P[p + "post_attention_layernorm.weight"], eps)
        g = torch.nn.functional.silu(n @ P[p + "mlp.gate_proj.weight"].T)
        u = n @ P[p + "mlp.up_proj.weight"].T
        x = h + (g * u) @ P[p + "mlp.down_proj.weight"].T
    return mf.rms_norm(x, P["model.norm.weight"], eps)


# ---------------------------------------------------------------- the losses


def gen_loss(P, A, cfg, case, g):
    """Generative branch (§4.1): causal pass, position t predicts ids[t+1]; only the answer counts,
    t in [P_b - 1, len_b - 1); mean CE over all counted tokens of the batch.  -> (loss, hidden)."""
    hid = forward_hidden(P, A, cfg, case, g["ids"], g["lengths"], g["tasks"], False)
    logits = hid @ mf.lm_head(P).T
    B, T, _ = logits.shape
    tgt = torch.cat([g["ids"][:, 1:], torch.full((B, 1), PAD_ID, dtype=torch.long)], dim=1)
    ce = torch.logsumexp(logits, -1) - logits.gather(-1, tgt[..., None])[..., 0]
    t = torch.arange(T)[None, :]
    m = ((t >= torch.as_tensor(g["prompt_lengths"])[:, None] - 1)
         & (t < torch.as_tensor(g["lengths"])[:, None] - 1)).to(F64)
    return (ce * m).sum() / m.sum(), hid


def pool(hid, lengths, pool_from):
    """Mean of hidden over pool_from_b <= t < len_b, then L2 normalisation."""
    T = hid.shape[1]
    t = torch.arange(T)[None, :]
    m = ((t >= torch.as_tensor(pool_from)[:, None]) & (t < torch.as_tensor(lengths)[:, None])).to(F64)
    e = (hid * m[..., None]).sum(1) / m.sum(1, keepdim=True)
    return e / e.norm(dim=-1, keepdim=True)


def info_nce(q, p, tau):
    """S = q p^T / tau over all 2Q passages (positives then hard negatives); mean CE with target i."""
    S = q @ p.T / tau
    return (torch.logsumexp(S, -1) - S.diagonal()).mean()


def emb_loss(P, A, cfg, case, e):
    """Embedding branch (§4.1): bidirectional pass over [queries | positives | negatives]. -> (loss, emb)."""
    hid = forward_hidden(P, A, cfg, case, e["ids"], e["lengths"], e["tasks"], True)
    emb = pool(hid, e["lengths"], e["pool_from"])
    Q = e["queries"]
    return info_nce(emb[:Q], emb[Q:], TAU), emb


def total_loss(P, A, cfg, case, g, e):
    return emb_loss(P, A, cfg, case, e)[0] + LAMBDA_GEN * gen_loss(P, A, cfg, case, g)[0]


def grads_of(f, A):
    for a in A.values():
        a.grad = None
    f().backward()
    return {k: (a.grad.clone() if a.grad is not None else torch.zeros_like(a)) for k, a in A.items()}


# ------------------------------------------------------------ self checks


def check(cond, what):
    if not cond:
        raise SystemExit("make_tmole_fixtures.py: self-check failed: " + what)


def naive_route(A, case, l, p, task, bidirectional):
    """eq. (1) for one task in numpy loops: explicit MLP, mask, and softmax over the open experts."""
    ne, ns, ng = case["experts"]
    N = ne + ns + ng
    group = ["emb"] * ne + ["shared"] * ns + ["gen"] * ng
    open_ = [g == "shared" or g == ("emb" if bidirectional else "gen") for g in group]
    if not case["router"]:
        return np.array([1.0 if o else 0.0 for o in open_])
    pre = PREFIX % (l, p)
    W = {k: a.detach().numpy() for k, a in A.items()}
    x = list(W["task_embedding.weight"][task])
    for h in range(len(case["hidden"])):
        w, b = W[pre + "lora_route.hidden.%d.weight" % h], W[pre + "lora_route.hidden.%d.bias" % h]
        x = [max(0.0, b[o] + sum(w[o, i] * x[i] for i in range(len(x)))) for o in range(w.shape[0])]
    w, b = W[pre + "lora_route.weight"], W[pre + "lora_route.bias"]
    z = [b[o] + sum(w[o, i] * x[i] for i in range(len(x))) for o in range(N)]
    zmax = max(z[j] for j in range(N) if open_[j])
    ex = [math.exp(z[j] - zmax) if open_[j] else 0.0 for j in range(N)]
    return np.array(ex) / sum(ex)


def folded(P, A, cfg, case, task, bidirectional):
    """The backbone with W0 + sum_j v_j (alpha/r) B_j A_j for one task in one pass (routing is per
    sample, so a row of the adapted model is the backbone with these folded weights)."""
    Q = {k: w.detach().clone() for k, w in P.items()}
    s = case["alpha"] / case["r"]
    for l in range(cfg["num_hidden_layers"]):
        for p in PROJS:
            v = naive_route(A, case, l, p, task, bidirectional)
            pre = PREFIX % (l, p)
            for j in range(len(v)):
                Bj, Aj = A[pre + "lora_B.%d.weight" % j].detach(), A[pre + "lora_A.%d.weight" % j].detach()
                Q["model.layers.%d.self_attn.%s.weight" % (l, p)] += float(v[j]) * s * (Bj @ Aj)
    return Q


def self_check(case, cfg, P, A, g, e, gen):
    name = case["name"]
    N = sum(case["experts"])
    L = cfg["num_hidden_layers"]
    # 1. routing: rows sum to 1, exact zeros at the masked experts, positive at the open ones,
    #    and equal to an explicit loop computation; ReLU inputs far from the kink
    for bidir in (False, True):
        open_ = expert_mask(case, bidir)
        for l in range(L):
            for p in PROJS:
                v = route_table(A, case, l, p, bidir).detach()
                if case["router"]:
                    check((v.sum(-1) - 1).abs().max() < 1e-14, "%s: routing rows do not sum to 1" % name)
                check(bool((v[:, ~open_] == 0).all()), "%s: masked expert with nonzero weight" % name)
                check(bool((v[:, open_] > 0).all()), "%s: open expert with zero weight" % name)
                for task in range(TASK_ROWS):
                    err = np.abs(v[task].numpy() - naive_route(A, case, l, p, task, bidir)).max()
                    check(err < 1e-14, "%s: routing vs loops, layer %d %s task %d: %.3g" % (name, l, p, task, err))
                for h in range(len(case["hidden"])):
                    pre = PREFIX % (l, p)
                    z = (A["task_embedding.weight"] @ A[pre + "lora_route.hidden.%d.weight" % h].T
                         + A[pre + "lora_route.hidden.%d.bias" % h])
                    check(z.abs().min() > 1e-5, "%s: a router ReLU input is at its kink" % name)
    # 2. B = 0: exactly the backbone of make_fixtures.py, both passes; with B != 0 it differs
    A0 = {k: (torch.zeros_like(a) if ".lora_B." in k else a).detach() for k, a in A.items()}
    for bidir, d in ((False, g), (True, e)):
        with torch.no_grad():
            want = mf.forward_hidden(P, cfg, d["ids"], d["lengths"], bidir)
            got0 = forward_hidden(P, A0, cfg, case, d["ids"], d["lengths"], d["tasks"], bidir)
            got = forward_hidden(P, A, cfg, case, d["ids"], d["lengths"], d["tasks"], bidir)
        check((got0 - want).abs().max() < 1e-13, "%s: B = 0 is not the backbone" % name)
        check((got - want).abs().max() > 1e-2, "%s: the adapters have no effect" % name)
    # 3. every row = make_fixtures' naive loop decoder alone, unpadded, on the folded weights of
    #    its task (covers per-row routing, the scaling alpha/r, the adapter on q/k/v before RoPE)
    for bidir, d in ((False, g), (True, e)):
        with torch.no_grad():
            hid = forward_hidden(P, A, cfg, case, d["ids"], d["lengths"], d["tasks"], bidir)
            logits = hid @ mf.lm_head(P).T
        for b in range(len(d["lengths"])):
            n = d["lengths"][b]
            Q = folded(P, A, cfg, case, d["tasks"][b], bidir)
            want = mf.naive_logits(Q, cfg, d["ids"][b:b + 1, :n], [n], bidir)[0]
            err = np.abs(logits[b, :n].numpy() - want).max() / np.abs(want).max()
            check(err < 1e-12, "%s: row %d (bidirectional=%d) vs folded naive decoder: rel %.3g"
                  % (name, b, bidir, err))
    # 4. masked experts get exactly zero gradient from the pass that masks them
    gg = grads_of(lambda: gen_loss(P, A, cfg, case, g)[0], A)
    ge = grads_of(lambda: emb_loss(P, A, cfg, case, e)[0], A)
    ga = grads_of(lambda: total_loss(P, A, cfg, case, g, e), A)
    ne, ns, ng = case["experts"]
    for k in A:
        m = re.search(r"\.lora_[AB]\.(\d+)\.", k)
        if m:
            j = int(m.group(1))
            if j < ne:
                check(bool((gg[k] == 0).all()), "%s: embedding expert %s gets a generative gradient" % (name, k))
            if j >= ne + ns:
                check(bool((ge[k] == 0).all()), "%s: generative expert %s gets an embedding gradient" % (name, k))
            check(gg[k].abs().max() + ge[k].abs().max() > 0, "%s: %s has no gradient at all" % (name, k))
        check((ga[k] - (ge[k] + LAMBDA_GEN * gg[k])).abs().max() < 1e-12,
              "%s: grad L != grad L_emb + lambda_gen grad L_gen" % name)
    # 5. gradcheck on a few adapter tensors, for L
    picks = ["base_model.model.model.layers.0.self_attn.q_proj.lora_A.0.weight",
             "base_model.model.model.layers.1.self_attn.v_proj.lora_B.%d.weight" % (N - 1),
             "base_model.model.model.layers.1.self_attn.o_proj.lora_A.%d.weight" % (N // 2)]
    if case["router"]:
        picks += ["task_embedding.weight", "base_model.model.model.layers.0.self_attn.k_proj.lora_route.weight",
                  "base_model.model.model.layers.1.self_attn.o_proj.lora_route.bias"]
    if case["hidden"]:
        picks += ["base_model.model.model.layers.0.self_attn.v_proj.lora_route.hidden.0.weight",
                  "base_model.model.model.layers.1.self_attn.q_proj.lora_route.hidden.0.bias"]
    for nm in picks:
        def f(w, nm=nm):
            return total_loss(P, dict(A, **{nm: w}), cfg, case, g, e)
        w = A[nm].detach().clone().requires_grad_(True)
        check(torch.autograd.gradcheck(f, (w,), eps=1e-6, atol=1e-7, rtol=1e-5), "%s: gradcheck %s" % (name, nm))
    # 6. directional finite difference over all adapter tensors at once, each loss
    for what, f, gr in (("L_gen", lambda X: gen_loss(P, X, cfg, case, g)[0], gg),
                        ("L_emb", lambda X: emb_loss(P, X, cfg, case, e)[0], ge)):
        d = {k: torch.randn(a.shape, generator=gen, dtype=F64) for k, a in A.items()}
        h = 1e-5
        with torch.no_grad():
            fd = (f({k: A[k] + h * d[k] for k in A}) - f({k: A[k] - h * d[k] for k in A})).item() / (2 * h)
        an = sum((gr[k] * d[k]).sum().item() for k in A)
        check(abs(fd - an) <= 1e-6 * max(1.0, abs(an)),
              "%s: finite difference of %s: fd %.12g vs autograd %.12g" % (name, what, fd, an))
    print("  self-checks passed: routing, B = 0 backbone, folded naive rows, masked gradients, "
          "gradcheck (%d tensors), finite difference" % len(picks))
    return gg, ge, ga


# ------------------------------------------------------------------- writing


def write_json(path, obj):
    """Indented JSON with innermost lists (numbers, plain strings) kept on one line."""
    text = json.dumps(obj, indent=2)
    text = re.sub(r"\[([^\[\]{}]*)\]",
                  lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",") if x.strip()) + "]", text)
    with open(path, "w") as f:
        f.write(text + "\n")


def pad_rows(rows, T):
    return mf.pad_batch(rows, T, pad=PAD_ID)


def pick_emb_rows(P, A, cfg, case, candidates=32):
    """Embedding rows: prefixes of one common random sequence whose first token (never pooled:
    pool_from >= 1) differs per row.  With tau = 0.02 unrelated random rows put nearly all the
    softmax weight of S on one passage, and the other passages would get almost no gradient; so
    among a few such candidates (fixed seeds) take the one whose least spread row of softmax(S)
    has the largest entropy."""
    best = None
    for c in range(candidates):
        gen = torch.Generator().manual_seed(case["seed"] + 100 + c)
        base = torch.randint(3, cfg["vocab_size"], (EMB["T"],), generator=gen)
        rows = []
        for n in EMB["lengths"]:
            r = base[:n].clone()
            r[0] = int(torch.randint(3, cfg["vocab_size"], (1,), generator=gen))
            rows.append(r.tolist())
        e = dict(EMB, rows=rows, ids=pad_rows(rows, EMB["T"]))
        with torch.no_grad():
            emb = emb_loss(P, A, cfg, case, e)[1]
            Q = EMB["queries"]
            pr = torch.softmax(emb[:Q] @ emb[Q:].T / TAU, -1)
            ent = torch.special.entr(pr).sum(-1).min().item()
        if best is None or ent > best[0]:
            best = (ent, e, c)
    print("  embedding rows: candidate %d, smallest entropy of a row of softmax(S) %.3f" % (best[2], best[0]))
    return best[1]


def make_case(case, root):
    cfg = mf.full_config(dict(config=BACKBONE, dtype="F32"))
    gen = torch.Generator().manual_seed(case["seed"])
    # backbone: N(0, 0.1^2) matrices, 1 + N(0, 0.1^2) norm weights, in make_fixtures' table order
    P = {}
    for nm, shape in mf.param_shapes(cfg):
        r = torch.randn(shape, generator=gen, dtype=torch.float32)
        P[nm] = torch.tensor((1.0 + 0.1 * r if len(shape) == 1 else 0.1 * r).numpy(), dtype=F64)
    A = make_adapters(cfg, case, gen)
    print("%s: %d adapter parameters" % (case["name"], sum(a.numel() for a in A.values())))
    V = cfg["vocab_size"]
    g = dict(GEN)
    g["rows"] = [torch.randint(3, V, (n,), generator=gen).tolist() for n in GEN["lengths"]]
    g["ids"] = pad_rows(g["rows"], GEN["T"])
    e = pick_emb_rows(P, A, cfg, case)
    for b in range(len(g["lengths"])):
        check(1 <= g["prompt_lengths"][b] < g["lengths"][b] <= g["T"], "generative batch layout")
    for b in range(len(e["lengths"])):
        check(0 <= e["pool_from"][b] < e["lengths"][b] <= e["T"], "embedding batch layout")
    check(len(e["lengths"]) == 3 * e["queries"], "embedding batch is not [Q | Q | Q]")

    gg, ge, ga = self_check(case, cfg, P, A, g, e, torch.Generator().manual_seed(case["seed"] + 1))

    with torch.no_grad():
        lg, gen_hidden = gen_loss(P, A, cfg, case, g)
        le, emb = emb_loss(P, A, cfg, case, e)
        loss = le + LAMBDA_GEN * lg
        routes = {bidir: torch.stack([route_table(A, case, l, p, bidir) for l in range(cfg["num_hidden_layers"])
                                      for p in PROJS]) for bidir in (False, True)}

    d = os.path.join(root, case["name"])
    md, ad = os.path.join(d, "model"), os.path.join(d, "adapter")
    os.makedirs(md, exist_ok=True)
    os.makedirs(ad, exist_ok=True)
    write_json(os.path.join(md, "config.json"), cfg)
    mf.st_write(os.path.join(md, "model.safetensors"), [(k, P[k]) for k, _ in mf.param_shapes(cfg)])
    ne, ns, ng = case["experts"]
    write_json(os.path.join(ad, "adapter_config.json"), {
        "peft_type": "TMOLE", "r": case["r"], "lora_alpha": case["alpha"], "lora_dropout": 0,
        "target_modules": list(PROJS), "num_embedding_experts": ne, "num_shared_experts": ns,
        "num_generative_experts": ng, "router": case["router"], "task_embedding_dim": case["E"],
        "num_task_rows": TASK_ROWS, "router_hidden": case["hidden"]})
    names = [k for k, _ in adapter_shapes(cfg, case)]
    mf.st_write(os.path.join(ad, "adapter_model.safetensors"), [(k, A[k]) for k in names])
    write_json(os.path.join(d, "batch.json"), {
        "description": case["description"],
        "gen": {"ids": g["ids"].tolist(), "lengths": g["lengths"], "prompt_lengths": g["prompt_lengths"],
                "tasks": g["tasks"]},
        "emb": {"ids": e["ids"].tolist(), "lengths": e["lengths"], "pool_from": e["pool_from"],
                "tasks": e["tasks"], "queries": e["queries"]},
        "tau": TAU, "lambda_gen": LAMBDA_GEN, "pad_id": PAD_ID})
    out = [("gen_loss", lg.reshape(1)), ("emb_loss", le.reshape(1)), ("loss", loss.reshape(1)),
           ("emb", emb), ("gen_hidden", gen_hidden), ("route_gen", routes[False]), ("route_emb", routes[True])]
    out += [("grad." + k, ga[k]) for k in names]
    out += [("grad_gen." + k, gg[k]) for k in names]
    out += [("grad_emb." + k, ge[k]) for k in names]
    mf.st_write(os.path.join(d, "expected.safetensors"), out)

    # round trip: the files read back to the values used above
    w = mf.st_read(os.path.join(ad, "adapter_model.safetensors"))
    check(sorted(w) == sorted(names), "adapter names round trip")
    for k in names:
        check(np.array_equal(w[k], A[k].detach().numpy().astype(np.float32)), "adapter round trip " + k)
    cfg2, w2 = mf.load_model_dir(md)
    check(cfg2 == cfg, "config round trip")
    for k, _ in mf.param_shapes(cfg):
        check(np.array_equal(w2[k], P[k].numpy().astype(np.float32)), "weights round trip " + k)
    with open(os.path.join(d, "batch.json")) as f:
        bj = json.load(f)
    check(bj["gen"]["ids"] == g["ids"].tolist() and bj["emb"]["ids"] == e["ids"].tolist(), "batch round trip")
    e2 = mf.st_read(os.path.join(d, "expected.safetensors"))
    check(np.array_equal(e2["loss"], np.float32([loss.item()])), "expected round trip")
    vmin = min(routes[b][routes[b] > 0].min().item() for b in (False, True))
    Q = e["queries"]
    pmax = torch.softmax(emb[:Q] @ emb[Q:].T / TAU, -1).max(-1)[0]
    print("  L_gen %.6f  L_emb %.6f  L %.6f  smallest open routing weight %.3g  max softmax(S) per query %s"
          % (lg, le, loss, vmin, np.round(pmax.numpy(), 3)))


def make_infonce(root):
    """Standalone InfoNCE: q [3, 16], p [6, 16] unit rows; gradients w.r.t. the normalised q and p."""
    gen = torch.Generator().manual_seed(5404)
    # rows scattered around one direction (cosines 0.9 +- 0.05), so that S / tau spreads over a few
    # units and every passage has a visible share of softmax(S)
    c = torch.randn(16, generator=gen, dtype=torch.float32)
    c = c / c.norm()

    def unit(n):
        x = c + 0.1 * torch.randn((n, 16), generator=gen, dtype=torch.float32)
        x = x / x.norm(dim=-1, keepdim=True)
        return torch.tensor(x.numpy(), dtype=F64, requires_grad=True)  # exactly the stored float32 values
    q, p = unit(3), unit(6)
    loss = info_nce(q, p, TAU)
    dq, dp = torch.autograd.grad(loss, (q, p))
    # closed form: dL/dS = (softmax(S) - onehot) / Q, dq = dS p / tau, dp = dS^T q / tau
    with torch.no_grad():
        S = q @ p.T / TAU
        dS = (torch.softmax(S, -1) - torch.eye(3, 6, dtype=F64)) / 3
        check((dq - dS @ p / TAU).abs().max() < 1e-12 and (dp - dS.T @ q / TAU).abs().max() < 1e-12,
              "InfoNCE gradient vs closed form")
    check(torch.autograd.gradcheck(lambda a, b: info_nce(a, b, TAU), (q, p), eps=1e-6, atol=1e-7, rtol=1e-5),
          "InfoNCE gradcheck")
    os.makedirs(root, exist_ok=True)
    mf.st_write(os.path.join(root, "infonce.safetensors"),
                [("q", q), ("p", p), ("tau", torch.tensor([TAU])), ("loss", loss.detach().reshape(1)),
                 ("dq", dq), ("dp", dp)])
    print("infonce: loss %.6f (self-checks passed: closed form, gradcheck)" % loss.item())


def main(argv):
    if len(argv) != 2:
        sys.stderr.write("usage: make_tmole_fixtures.py OUTDIR   (e.g. tests/fixtures/tmole)\n")
        return 2
    torch.set_num_threads(1)  # one thread: reductions in a fixed order, byte-identical output
    for case in CASES:
        make_case(case, argv[1])
    make_infonce(argv[1])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
