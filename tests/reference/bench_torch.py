#!/usr/bin/python3
"""bench_torch.py - PyTorch (float32, CPU) timing of the same decoder, the
baseline the C implementation is measured against.

  bench_torch.py --model DIR [--batch 8] [--len 256] [--steps 5] [--threads 2]
                 [--mode train|embed] [--pool-from 0] [--lr 1e-4]
  bench_torch.py --make-small DIR     write a random "small" model folder
                                      (hidden 256, intermediate 688, 4 layers,
                                      8 heads, 4 kv heads, vocab 4096, tied)

train: full-parameter steps on random ids (all rows full length): causal
forward, mean next-token CE over all predicted tokens, backward, AdamW step,
zero_grad.  One warm-up step, then `steps` timed steps.  Prints
  torch train tokens_per_s=<B*T*steps/time> step_ms=<...>
embed: bidirectional forward without gradients, mean pooling over
[pool_from, T) and L2 normalisation.  Prints
  torch embed seqs_per_s=<B*steps/time> step_ms=<...>
Both end with `torch peak_rss_mb=<...>` (getrusage of this process).
The decoder is the one of make_fixtures.py (README.md), built from torch
modules in float32; attention is matmul + mask + softmax (torch 1.13 has no
scaled_dot_product_attention).
"""
import argparse
import json
import math
import os
import resource
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from make_fixtures import load_model_dir, param_shapes, st_write  # noqa: E402


class RMSNorm(nn.Module):
    def __init__(self, C, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(C))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], dim=-1)


class Attention(nn.Module):
    def __init__(self, C, H, KV, hd):
        super().__init__()
        self.H, self.KV, self.hd = H, KV, hd
        self.q_proj = nn.Linear(C, H * hd, bias=False)
        self.k_proj = nn.Linear(C, KV * hd, bias=False)
        self.v_proj = nn.Linear(C, KV * hd, bias=False)
        self.o_proj = nn.Linear(H * hd, C, bias=False)

    def forward(self, x, cos, sin, mask):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.H, self.hd).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.KV, self.hd).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.KV, self.hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        rep = self.H // self.KV  # query head h reads kv head h // rep
        if rep > 1:
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
        s = q @ k.transpose(-1, -2) * (1.0 / math.sqrt(self.hd)) + mask
        a = torch.softmax(s, dim=-1) @ v
        return self.o_proj(a.transpose(1, 2).reshape(B, T, self.H * self.hd))


class MLP(nn.Module):
    def __init__(self, C, I):
        super().__init__()
        self.gate_proj = nn.Linear(C, I, bias=False)
        self.up_proj = nn.Linear(C, I, bias=False)
        self.down_proj = nn.Linear(I, C, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Layer(nn.Module):
    def __init__(self, cfg, C, H, KV, hd):
        super().__init__()
        eps = cfg["rms_norm_eps"]
        self.input_layernorm = RMSNorm(C, eps)
        self.self_attn = Attention(C, H, KV, hd)
        self.post_attention_layernorm = RMSNorm(C, eps)
        self.mlp = MLP(C, cfg["intermediate_size"])

    def forward(self, x, cos, sin, mask):
        h = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)
        return h + self.mlp(self.post_attention_layernorm(h))


class Inner(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        C, H, KV = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
        hd = cfg.get("head_dim") or C // H
        self.embed_tokens = nn.Embedding(cfg["vocab_size"], C)
        self.layers = nn.ModuleList([Layer(cfg, C, H, KV, hd) for _ in range(cfg["num_hidden_layers"])])
        self.norm = RMSNorm(C, cfg["rms_norm_eps"])


class Decoder(nn.Module):
    """Parameter names match the HF checkpoint (model.*, lm_head.weight)."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.model = Inner(cfg)
        self.tied = bool(cfg["tie_word_embeddings"])
        if not self.tied:
            self.lm_head = nn.Linear(cfg["hidden_size"], cfg["vocab_size"], bias=False)
        C, H = cfg["hidden_size"], cfg["num_attention_heads"]
        self.hd = cfg.get("head_dim") or C // H

    def hidden(self, ids, bidirectional):
        B, T = ids.shape
        i = torch.arange(self.hd // 2, dtype=torch.float64)
        inv_freq = float(self.cfg["rope_theta"]) ** (-2.0 * i / self.hd)
        ang = torch.arange(T, dtype=torch.float64)[:, None] * inv_freq[None, :]
        ang = torch.cat([ang, ang], dim=-1)
        cos, sin = torch.cos(ang).float(), torch.sin(ang).float()
        qi = torch.arange(T)[:, None]
        kj = torch.arange(T)[None, :]
        allowed = torch.ones(T, T, dtype=torch.bool) if bidirectional else kj <= qi
        W = self.cfg.get("sliding_window") or 0
        if W > 0:
            allowed &= ((qi - kj).abs() if bidirectional else (qi - kj)) < W
        mask = torch.zeros(T, T).masked_fill(~allowed, float("-inf"))
        x = self.model.embed_tokens(ids)
        for layer in self.model.layers:
            x = layer(x, cos, sin, mask)
        return self.model.norm(x)

    def logits(self, hidden):
        w = self.model.embed_tokens.weight if self.tied else self.lm_head.weight
        return hidden @ w.T


def load_decoder(d):
    cfg, w = load_model_dir(d)
    m = Decoder(cfg)
    names = dict(m.named_parameters())
    want = [n for n, _ in param_shapes(cfg)]
    if sorted(names) != sorted(want):
        raise SystemExit("bench_torch.py: internal: parameter names differ from the HF table")
    with torch.no_grad():
        for n in want:
            if n not in w:
                raise SystemExit("bench_torch.py: %s: missing tensor %s" % (d, n))
            names[n].copy_(torch.from_numpy(w[n]))
    return m


def make_small(d, seed=1234):
    cfg = dict(architectures=["MistralForCausalLM"], model_type="mistral", hidden_size=256,
               intermediate_size=688, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=4,
               rms_norm_eps=1e-5, rope_theta=10000.0, vocab_size=4096, max_position_embeddings=2048,
               tie_word_embeddings=True, sliding_window=None, bos_token_id=1, eos_token_id=2,
               hidden_act="silu", torch_dtype="float32")
    g = torch.Generator().manual_seed(seed)
    tensors = []
    for n, shape in param_shapes(cfg):  # HF init: N(0, 0.02) matrices, norms 1
        tensors.append((n, torch.ones(shape) if len(shape) == 1 else 0.02 * torch.randn(shape, generator=g)))
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    st_write(os.path.join(d, "model.safetensors"), tensors)
    print("wrote %s (%d parameters)" % (d, sum(t.numel() for _, t in tensors)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--len", type=int, default=256)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--mode", choices=["train", "embed"], default="train")
    ap.add_argument("--pool-from", type=int, default=0)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--make-small", metavar="DIR")
    a = ap.parse_args()
    if a.make_small:
        make_small(a.make_small)
        return 0
    if not a.model:
        ap.error("--model DIR is required")
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    m = load_decoder(a.model)
    B, T, V = a.batch, a.len, m.cfg["vocab_size"]
    ids = torch.randint(3, V, (B, T))
    nparams = sum(p.numel() for p in m.parameters())
    print("torch %s threads=%d params=%d B=%d T=%d mode=%s"
          % (torch.__version__, a.threads, nparams, B, T, a.mode))

    if a.mode == "train":
        opt = torch.optim.AdamW(m.parameters(), lr=a.lr)

        def step():
            logits = m.logits(m.hidden(ids, bidirectional=False))
            # token t predicts ids[t+1]; mean over all B*(T-1) predicted tokens
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, V), ids[:, 1:].reshape(-1))
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            return loss.item()
    else:
        def step():
            with torch.no_grad():
                h = m.hidden(ids, bidirectional=True)[:, a.pool_from:].mean(1)
                return (h / h.norm(dim=-1, keepdim=True)).sum().item()

    first = step()  # warm-up
    t0 = time.perf_counter()
    for _ in range(a.steps):
        last = step()
    dt = time.perf_counter() - t0
    if a.mode == "train":
        print("torch train loss_first=%.4f loss_last=%.4f" % (first, last))
        print("torch train tokens_per_s=%.1f step_ms=%.1f" % (B * T * a.steps / dt, 1000 * dt / a.steps))
    else:
        print("torch embed seqs_per_s=%.2f step_ms=%.1f" % (B * a.steps / dt, 1000 * dt / a.steps))
    print("torch peak_rss_mb=%.1f" % (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
