#!/usr/bin/python3
"""bench_torch_recfound.py - PyTorch (float32, CPU) timing of one RecFound joint
training step, the baseline `recfound bench-recfound` is measured against.

  bench_torch_recfound.py --model DIR [--queries 8] [--gen 8] [--len 128]
                          [--steps 5] [--threads 2] [--mode train|generate|embed]

The backbone is bench_torch.py's decoder (imported), loaded from DIR and frozen.
TMoLE (paper §4.2, eq. 1-2) is added on q, k, v, o of every layer: 6 experts
[2 embedding | 2 shared | 2 generative], r 16, alpha 64 (scaling 4), input
dropout 0.1 drawn separately per expert, one router Linear(512 -> 6) with bias
per projection on a task-embedding table [14, 512].

train: one step = embedding branch + generative branch (§4.1), one backward of
L = L_emb + L_gen, AdamW (lr 1e-4, weight decay 0 as the authors' code) on the
adapter tensors only, zero_grad.
  embedding:  3Q rows [queries | positives | hard negatives] of L random ids,
              bidirectional, mean of the final-norm hidden states over t >= 4
              (a 4-token instruction prefix), L2 norm, InfoNCE with tau 0.02
              over the 2Q passages; query tasks alternate U2I (0) / Q2I (1).
  generative: G rows of L random ids, causal, token-mean CE on the answer,
              positions t in [L/2 - 1, L - 1) predicting ids[t + 1]; tasks 3..12.
One warm-up step, then `steps` timed steps.  Prints
  torch recfound samples_per_s=<(Q + G) * steps / time> step_ms=<...> adapter_params=<n>
generate: greedy decoding with a KV cache, batch 1, a prompt of 64 random ids
and 64 new tokens, on the backbone with the adapters folded for task SR (4) in
the generative pass (W0 + sum_j v_j 4 B_j A_j: the cost of the plain backbone).
The time covers the prompt's forward and the 63 single-token steps.  Prints
  torch generate tokens_per_s=<64 * steps / time>
embed: bidirectional forward without gradients, pooling over t >= 4 and L2
normalisation of batches of 8 rows of `len` ids, adapters folded for task
U2I (0) in the embedding pass.  Prints
  torch embed seqs_per_s=<8 * steps / time>
Every mode ends with `torch peak_rss_mb=<...>`.  Before timing, the script
checks its own pieces (routing and mask, the batched expert sum against a loop,
masked experts' zero gradients, InfoNCE against its closed form, folded against
live adapters, the KV cache against the full forward) and stops with
`bench_torch_recfound.py: self-check failed: ...` if one fails.
"""
import argparse
import math
import os
import resource
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import make_fixtures as mf  # noqa: E402
import make_tmole_fixtures as mt  # noqa: E402  (the float64 TMoLE reference)
from bench_torch import load_decoder, rotate_half  # noqa: E402

N_EMB, N_SHARED, N_GEN = 2, 2, 2
N_EXPERTS = N_EMB + N_SHARED + N_GEN
RANK, ALPHA, DROPOUT = 16, 64.0, 0.1
TASK_ROWS, TASK_DIM = 14, 512
PROJS = ("q_proj", "k_proj", "v_proj", "o_proj")
TAU = 0.02
PREFIX = 4                     # instruction tokens, attended to but not pooled
U2I, Q2I, SR = 0, 1, 4
GEN_TASKS = list(range(3, 13))
PROMPT, NEW = 64, 64           # generate mode
EMBED_BATCH = 8                # embed mode


def check(cond, what):
    if not cond:
        raise SystemExit("bench_torch_recfound.py: self-check failed: " + what)


# ------------------------------------------------------------------- TMoLE


class Route:
    """What the adapters need to know about the current pass: the task of each row and the
    attention mode (bidirectional = embedding pass).  A plain object, not a module."""

    def __init__(self, table):
        self.table = table
        self.tasks = None
        self.bidirectional = False

    def set(self, tasks, bidirectional):
        self.tasks = torch.as_tensor(tasks)
        self.bidirectional = bidirectional


def open_range(bidirectional):
    """Experts open in a pass: [emb | shared] in the embedding pass, [shared | gen] in the
    generative pass (eq. 1's Mask); the open experts are contiguous."""
    return (0, N_EMB + N_SHARED) if bidirectional else (N_EMB, N_EXPERTS)


def expert_dropout(x, n):
    """dropout_j(x) of eq. (2) for n experts at once: x [rows, in] -> [n, rows, in], an
    independent mask per expert."""
    return F.dropout(x.unsqueeze(0).expand(n, -1, -1), DROPOUT, True)


class TmoleLinear(nn.Module):
    """y = W0 x + sum_j v_j (alpha/r) B_j A_j dropout_j(x)   (eq. 2), v = softmax(Mask(router(e_task)))."""

    def __init__(self, base, route, gen):
        super().__init__()
        self.base = base                       # the frozen projection
        out, fin = base.weight.shape
        self.route = route
        self.scaling = ALPHA / RANK
        bound = 1.0 / math.sqrt(fin)           # kaiming-uniform(a = sqrt 5) of a Linear [r, in]
        self.A = nn.Parameter((torch.rand(N_EXPERTS, RANK, fin, generator=gen) * 2 - 1) * bound)
        # N(0, 0.02^2) instead of the authors' 0, so that every gradient is non-trivial
        self.B = nn.Parameter(0.02 * torch.randn(N_EXPERTS, out, RANK, generator=gen))
        self.router = nn.Linear(TASK_DIM, N_EXPERTS)
        with torch.no_grad():
            self.router.weight.copy_(torch.randn(N_EXPERTS, TASK_DIM, generator=gen))
            b = 1.0 / math.sqrt(TASK_DIM)
            self.router.bias.copy_((torch.rand(N_EXPERTS, generator=gen) * 2 - 1) * b)

    def weights(self, tasks, bidirectional):
        """eq. (1): v [rows, N]; the closed experts' logits are -inf, so their weight is exactly 0."""
        z = self.router(self.route.table[tasks])
        lo, hi = open_range(bidirectional)
        closed = torch.ones(N_EXPERTS, dtype=torch.bool)
        closed[lo:hi] = False
        return torch.softmax(z.masked_fill(closed, float("-inf")), dim=-1)

    def forward(self, x):
        y = self.base(x)
        Bsz, T, fin = x.shape
        v = self.weights(self.route.tasks, self.route.bidirectional)
        lo, hi = open_range(self.route.bidirectional)
        n = hi - lo                            # closed experts have weight 0: not computed
        A, B = self.A[lo:hi], self.B[lo:hi]    # [n, r, in], [n, out, r]
        if self.training and DROPOUT > 0:
            # a separate dropout mask per expert: [n, B*T, in] @ A_j^T -> [n, B*T, r]
            xd = expert_dropout(x.reshape(Bsz * T, fin), n)
            h = torch.bmm(xd, A.transpose(1, 2)).view(n, Bsz, T, RANK).permute(1, 2, 0, 3)
        else:
            h = (x.reshape(Bsz * T, fin) @ A.reshape(n * RANK, fin).T).view(Bsz, T, n, RANK)
        h = h * (self.scaling * v[:, None, lo:hi, None])               # v of each row's task
        Bcat = B.permute(0, 2, 1).reshape(n * RANK, -1)                # [n*r, out]
        return y + h.reshape(Bsz, T, n * RANK) @ Bcat

    def folded(self, task, bidirectional):
        """W0 + sum_j v_j (alpha/r) B_j A_j for one task in one pass (inference)."""
        with torch.no_grad():
            v = self.weights(torch.tensor([task]), bidirectional)[0]
            return self.base.weight + self.scaling * torch.einsum("j,jor,jri->oi", v, self.B, self.A)


class Tmole(nn.Module):
    """The adapters of a decoder: the task-embedding table and one TmoleLinear per adapted
    projection (installed in place of q, k, v, o of every layer; the backbone is frozen)."""

    def __init__(self, m, seed=7):
        super().__init__()
        for p in m.parameters():
            p.requires_grad_(False)
        gen = torch.Generator().manual_seed(seed)
        std = math.sqrt(2.0 / (TASK_ROWS + TASK_DIM))                    # xavier-normal
        self.task_embedding = nn.Parameter(std * torch.randn(TASK_ROWS, TASK_DIM, generator=gen))
        self.route = Route(self.task_embedding)
        self.sites = nn.ModuleList()
        for layer in m.model.layers:
            for p in PROJS:
                s = TmoleLinear(getattr(layer.self_attn, p), self.route, gen)
                setattr(layer.self_attn, p, s)
                self.sites.append(s)
        self.m = [m]                                                    # not a submodule

    def params(self):
        return [p for p in self.parameters() if p.requires_grad]

    def fold(self, task, bidirectional):
        """Replace every site by a plain Linear holding the folded weight of one task."""
        m = self.m[0]
        k = 0
        for layer in m.model.layers:
            for p in PROJS:
                s = self.sites[k]
                lin = nn.Linear(s.base.in_features, s.base.out_features, bias=False)
                with torch.no_grad():
                    lin.weight.copy_(s.folded(task, bidirectional))
                lin.weight.requires_grad_(False)
                setattr(layer.self_attn, p, lin)
                k += 1


# ------------------------------------------------------------------ losses


def pool(hidden):
    """Mean over t >= PREFIX of the final-norm hidden states, then L2 normalisation."""
    e = hidden[:, PREFIX:].mean(1)
    return e / e.norm(dim=-1, keepdim=True)


def info_nce(q, p):
    """S = q p^T / tau over the 2Q passages [positives; negatives]; query i's target is i."""
    S = q @ p.T / TAU
    return F.cross_entropy(S, torch.arange(q.shape[0]))


def emb_loss(m, tm, ids, tasks):
    tm.route.set(tasks, True)
    e = pool(m.hidden(ids, bidirectional=True))
    Q = ids.shape[0] // 3
    return info_nce(e[:Q], e[Q:])


def gen_loss(m, tm, ids, tasks):
    """Token-mean CE over the answer: t in [L/2 - 1, L - 1) predicts ids[t + 1]."""
    tm.route.set(tasks, False)
    L = ids.shape[1]
    a = L // 2 - 1
    logits = m.logits(m.hidden(ids, bidirectional=False)[:, a:L - 1])   # only the answer positions
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, a + 1:].reshape(-1))


def make_batch(Q, G, L, V, gen):
    emb_ids = torch.randint(3, V, (3 * Q, L), generator=gen)
    qt = [U2I if i % 2 == 0 else Q2I for i in range(Q)]
    gen_ids = torch.randint(3, V, (G, L), generator=gen)
    return emb_ids, qt * 3, gen_ids, [GEN_TASKS[g % len(GEN_TASKS)] for g in range(G)]


# -------------------------------------------------------- KV-cache decoding


def decode(m, ids, cache):
    """Forward of new tokens ids [1, n] after the cached ones: per layer the cache holds K and V
    (after RoPE, kv heads) of the earlier positions; each new query attends to the cache and to
    the new positions up to itself.  Returns the logits of the new positions."""
    n = ids.shape[1]
    p0 = cache[0][0].shape[2] if cache[0] is not None else 0
    cfg, hd = m.cfg, m.hd
    i = torch.arange(hd // 2, dtype=torch.float64)
    ang = torch.arange(p0, p0 + n, dtype=torch.float64)[:, None] * (float(cfg["rope_theta"]) ** (-2.0 * i / hd))
    ang = torch.cat([ang, ang], dim=-1)
    cos, sin = torch.cos(ang).float(), torch.sin(ang).float()
    qi = torch.arange(p0, p0 + n)[:, None]
    kj = torch.arange(p0 + n)[None, :]
    allowed = kj <= qi
    W = cfg.get("sliding_window") or 0
    if W > 0:
        allowed &= (qi - kj) < W
    mask = torch.zeros(n, p0 + n).masked_fill(~allowed, float("-inf"))
    x = m.model.embed_tokens(ids)
    for li, layer in enumerate(m.model.layers):
        at = layer.self_attn
        h_in = layer.input_layernorm(x)
        q = at.q_proj(h_in).view(1, n, at.H, hd).transpose(1, 2)
        k = at.k_proj(h_in).view(1, n, at.KV, hd).transpose(1, 2)
        v = at.v_proj(h_in).view(1, n, at.KV, hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if cache[li] is not None:
            k = torch.cat([cache[li][0], k], dim=2)
            v = torch.cat([cache[li][1], v], dim=2)
        cache[li] = (k, v)
        rep = at.H // at.KV
        if rep > 1:
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
        s = q @ k.transpose(-1, -2) * (1.0 / math.sqrt(hd)) + mask
        a = (torch.softmax(s, dim=-1) @ v).transpose(1, 2).reshape(1, n, at.H * hd)
        h = x + at.o_proj(a)
        x = h + layer.mlp(layer.post_attention_layernorm(h))
    return m.logits(m.model.norm(x))


def generate(m, prompt, new):
    """Greedy: the prompt in one forward, then one token at a time from the cache."""
    cache = [None] * len(m.model.layers)
    with torch.no_grad():
        logits = decode(m, prompt, cache)
        out = []
        for t in range(new):
            tok = logits[:, -1].argmax(-1, keepdim=True)
            out.append(tok)
            if t + 1 < new:
                logits = decode(m, tok, cache)
    return torch.cat(out, dim=1)


# ------------------------------------------------------------- self checks


def self_check_infonce():
    """InfoNCE against the hand formula mean_i(logsumexp_k S_ik - S_ii) and its closed-form
    gradient dS = (softmax(S) - I) / Q, dq = dS p / tau, dp = dS^T q / tau (float64)."""
    g = torch.Generator().manual_seed(3)
    c = torch.randn(16, generator=g, dtype=torch.float64)
    q = F.normalize(c + 0.1 * torch.randn(3, 16, generator=g, dtype=torch.float64), dim=-1).requires_grad_(True)
    p = F.normalize(c + 0.1 * torch.randn(6, 16, generator=g, dtype=torch.float64), dim=-1).requires_grad_(True)
    loss = info_nce(q, p)
    dq, dp = torch.autograd.grad(loss, (q, p))
    with torch.no_grad():
        S = q @ p.T / TAU
        want = sum(math.log(sum(math.exp(S[i, k].item()) for k in range(6))) - S[i, i].item() for i in range(3)) / 3
        check(abs(loss.item() - want) < 1e-12, "InfoNCE %.15g vs hand formula %.15g" % (loss.item(), want))
        dS = (torch.softmax(S, -1) - torch.eye(3, 6, dtype=torch.float64)) / 3
        check((dq - dS @ p / TAU).abs().max() < 1e-12 and (dp - dS.T @ q / TAU).abs().max() < 1e-12,
              "InfoNCE gradient vs closed form")


def self_check_adapters(m, tm, V):
    """Routing and mask, the batched expert sum against a loop over experts, per-expert dropout
    masks, zero gradients of the masked experts, folded against live adapters."""
    s = tm.sites[1]                                       # layer 0 k_proj: in != out
    for bidir in (False, True):
        lo, hi = open_range(bidir)
        v = s.weights(torch.arange(TASK_ROWS), bidir).detach()
        check((v.sum(-1) - 1).abs().max() < 1e-6, "routing rows do not sum to 1")
        check(bool((v[:, :lo] == 0).all() and (v[:, hi:] == 0).all()), "a masked expert has nonzero weight")
        check(bool((v[:, lo:hi] > 0).all()), "an open expert has weight 0")
        want = torch.softmax(s.router(tm.task_embedding)[:, lo:hi], -1).detach()
        check((v[:, lo:hi] - want).abs().max() < 1e-6, "routing vs softmax over the open experts")
    # the batched sum (closed experts skipped) against eq. (2) summed over all six experts
    g = torch.Generator().manual_seed(11)
    x = torch.randn(3, 5, s.base.in_features, generator=g)
    tasks = [0, 1, 5]
    tm.eval()
    with torch.no_grad():
        for bidir in (False, True):
            tm.route.set(tasks, bidir)
            got = s(x)
            v = s.weights(torch.tensor(tasks), bidir)
            want = s.base(x)
            for j in range(N_EXPERTS):
                want = want + v[:, j, None, None] * 4.0 * ((x @ s.A[j].T) @ s.B[j].T)
            check((got - want).abs().max() <= 1e-5 * want.abs().max(), "expert sum vs loop over experts")
    # dropout: one independent mask per expert (different zero patterns, scale 1 / (1 - p))
    tm.train()
    xd = expert_dropout(torch.ones(4000, 8), 4)
    check(bool((xd[0] == 0).ne(xd[1] == 0).any()), "dropout masks shared between experts")
    u = xd.unique()
    check(len(u) == 2 and u[0] == 0 and abs(u[1].item() - 1 / (1 - DROPOUT)) < 1e-6, "dropout values")
    # each pass alone: the experts it masks get exactly zero gradient, the others a nonzero one
    gen = torch.Generator().manual_seed(12)
    emb_ids, emb_tasks, gen_ids, gen_tasks = make_batch(2, 2, 2 * PREFIX + 4, V, gen)
    for name, f, lo, hi in (("embedding", lambda: emb_loss(m, tm, emb_ids, emb_tasks), 0, N_EMB + N_SHARED),
                            ("generative", lambda: gen_loss(m, tm, gen_ids, gen_tasks), N_EMB, N_EXPERTS)):
        for p in tm.params():
            p.grad = None
        f().backward()
        for k, st in enumerate(tm.sites):
            for t in (st.A, st.B):
                gA = t.grad
                check(gA is not None and bool((gA[:lo] == 0).all() and (gA[hi:] == 0).all()),
                      "%s pass: a masked expert of site %d has a gradient" % (name, k))
                check(all(gA[j].abs().max() > 0 for j in range(lo, hi)),
                      "%s pass: an open expert of site %d has no gradient" % (name, k))
        check(tm.task_embedding.grad is not None and tm.task_embedding.grad.abs().max() > 0,
              "%s pass: no task-embedding gradient" % name)
    for p in tm.params():
        p.grad = None
    mine = set(id(p) for p in tm.params())
    check(all(not p.requires_grad for p in m.parameters() if id(p) not in mine), "the backbone is not frozen")


def self_check_reference(model_dir, m, tm, V):
    """L, L_emb, L_gen and every adapter gradient (dropout off) against make_tmole_fixtures.py,
    the independent float64 implementation (one expert at a time, closed experts included)."""
    cfg, w = mf.load_model_dir(model_dir)
    P = {k: torch.tensor(a, dtype=torch.float64) for k, a in w.items()}
    A, mine = {}, {}
    for k, s in enumerate(tm.sites):
        pre = mt.PREFIX % (k // len(PROJS), PROJS[k % len(PROJS)])
        for j in range(N_EXPERTS):
            mine[pre + "lora_A.%d.weight" % j] = (s.A, j)
            mine[pre + "lora_B.%d.weight" % j] = (s.B, j)
        mine[pre + "lora_route.weight"] = (s.router.weight, None)
        mine[pre + "lora_route.bias"] = (s.router.bias, None)
    mine["task_embedding.weight"] = (tm.task_embedding, None)
    for name, (t, j) in mine.items():
        A[name] = (t if j is None else t[j]).detach().double().requires_grad_(True)
    case = dict(r=RANK, alpha=ALPHA, E=TASK_DIM, experts=(N_EMB, N_SHARED, N_GEN), router=True, hidden=[])
    Q, G, L = 2, 2, 2 * PREFIX + 4
    emb_ids, emb_tasks, gen_ids, gen_tasks = make_batch(Q, G, L, V, torch.Generator().manual_seed(15))
    e = dict(ids=emb_ids, lengths=[L] * 3 * Q, pool_from=[PREFIX] * 3 * Q, tasks=emb_tasks, queries=Q)
    g = dict(ids=gen_ids, lengths=[L] * G, prompt_lengths=[L // 2] * G, tasks=gen_tasks)
    want_e, want_g = mt.emb_loss(P, A, cfg, case, e)[0], mt.gen_loss(P, A, cfg, case, g)[0]
    (want_e + want_g).backward()
    tm.eval()
    for p in tm.params():
        p.grad = None
    got_e, got_g = emb_loss(m, tm, emb_ids, emb_tasks), gen_loss(m, tm, gen_ids, gen_tasks)
    (got_e + got_g).backward()
    for what, got, want in (("L_emb", got_e, want_e), ("L_gen", got_g, want_g)):
        check(abs(got.item() - want.item()) <= 1e-4 * abs(want.item()),
              "%s %.8g vs make_tmole_fixtures %.8g" % (what, got.item(), want.item()))
    worst = 0.0
    for name, (t, j) in mine.items():
        gm = (t.grad if j is None else t.grad[j]).double()
        gw = A[name].grad
        err = ((gm - gw).norm() ** 2 / gw.norm() ** 2).item() if gw.norm() > 0 else gm.norm().item()
        check(err <= 1e-6, "gradient of %s: normalised error %.3g" % (name, err))
        worst = max(worst, err)
    for p in tm.params():
        p.grad = None
    return worst


def self_check_folded(m, tm, task, bidirectional, V):
    """Live adapters (eval) on rows of one task = the backbone with that task's folded weights."""
    ids = torch.randint(3, V, (2, 2 * PREFIX + 5), generator=torch.Generator().manual_seed(13))
    tm.eval()
    tm.route.set([task, task], bidirectional)
    with torch.no_grad():
        live = m.hidden(ids, bidirectional)
        tm.fold(task, bidirectional)
        fold = m.hidden(ids, bidirectional)
    err = ((live - fold).norm() / live.norm()).item()
    check(err < 1e-5, "folded vs live adapters: relative error %.3g" % err)


def self_check_cache(m, V):
    """KV cache: at every step of a greedy run, the cached logits of the new position equal the
    full causal forward's last-position logits over the whole sequence so far."""
    prompt = torch.randint(3, V, (1, 7), generator=torch.Generator().manual_seed(14))
    cache = [None] * len(m.model.layers)
    with torch.no_grad():
        seq = prompt
        logits = decode(m, prompt, cache)
        for t in range(5):
            full = m.logits(m.hidden(seq, bidirectional=False))
            err = ((logits[0, -1] - full[0, -1]).abs().max() / full[0, -1].abs().max()).item()
            check(err < 1e-4, "KV cache vs full forward, step %d: relative error %.3g" % (t, err))
            if t == 0:
                check((logits[0] - full[0]).abs().max() <= 1e-4 * full[0].abs().max(), "prompt logits")
            tok = logits[:, -1].argmax(-1, keepdim=True)
            seq = torch.cat([seq, tok], dim=1)
            logits = decode(m, tok, cache)
        check(torch.equal(generate(m, prompt, 5), seq[:, 7:]), "generate() vs the checked loop")


# -------------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--queries", type=int, default=8)
    ap.add_argument("--gen", type=int, default=8)
    ap.add_argument("--len", type=int, default=128)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--mode", choices=["train", "generate", "embed"], default="train")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if a.queries < 1 or a.gen < 1 or a.steps < 1 or a.len < PREFIX + 1:
        ap.error("--queries, --gen, --steps >= 1 and --len >= %d" % (PREFIX + 1))
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    m = load_decoder(a.model)
    V = m.cfg["vocab_size"]
    tm = Tmole(m)
    nad = sum(p.numel() for p in tm.params())
    self_check_infonce()
    self_check_adapters(m, tm, V)
    worst = self_check_reference(a.model, m, tm, V)
    print("torch %s threads=%d mode=%s adapter_params=%d (self-checks passed; gradients vs the float64 "
          "reference: worst normalised error %.2g)" % (torch.__version__, a.threads, a.mode, nad, worst))
    gen = torch.Generator().manual_seed(a.seed + 1)

    if a.mode == "train":
        Q, G, L = a.queries, a.gen, a.len
        emb_ids, emb_tasks, gen_ids, gen_tasks = make_batch(Q, G, L, V, gen)
        opt = torch.optim.AdamW(tm.params(), lr=1e-4, weight_decay=0.0)
        tm.train()

        def step():
            le = emb_loss(m, tm, emb_ids, emb_tasks)
            lg = gen_loss(m, tm, gen_ids, gen_tasks)
            (le + lg).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            return le.item(), lg.item()

        first = step()  # warm-up
        t0 = time.perf_counter()
        for _ in range(a.steps):
            last = step()
        dt = time.perf_counter() - t0
        print("torch recfound Q=%d G=%d L=%d L_emb %.4f -> %.4f  L_gen %.4f -> %.4f"
              % (Q, G, L, first[0], last[0], first[1], last[1]))
        print("torch recfound samples_per_s=%.2f step_ms=%.1f adapter_params=%d"
              % ((Q + G) * a.steps / dt, 1000 * dt / a.steps, nad))
    elif a.mode == "generate":
        self_check_folded(m, tm, SR, False, V)
        self_check_cache(m, V)
        prompt = torch.randint(3, V, (1, PROMPT), generator=gen)
        generate(m, prompt, NEW)  # warm-up
        t0 = time.perf_counter()
        for _ in range(a.steps):
            generate(m, prompt, NEW)
        dt = time.perf_counter() - t0
        print("torch generate tokens_per_s=%.1f step_ms=%.1f prompt=%d new=%d"
              % (NEW * a.steps / dt, 1000 * dt / a.steps, PROMPT, NEW))
    else:
        self_check_folded(m, tm, U2I, True, V)
        ids = torch.randint(3, V, (EMBED_BATCH, a.len), generator=gen)

        def step():
            with torch.no_grad():
                return pool(m.hidden(ids, bidirectional=True)).sum().item()
        step()  # warm-up
        t0 = time.perf_counter()
        for _ in range(a.steps):
            step()
        dt = time.perf_counter() - t0
        print("torch embed seqs_per_s=%.2f step_ms=%.1f batch=%d len=%d"
              % (EMBED_BATCH * a.steps / dt, 1000 * dt / a.steps, EMBED_BATCH, a.len))
    print("torch peak_rss_mb=%.1f" % (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
