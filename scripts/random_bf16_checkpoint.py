#!/usr/bin/env python3
"""A Mistral-7B-shaped checkpoint in BF16 with random weights, for measuring
what `recfound` does with a 7B model on a machine without the real download.

    python3 scripts/random_bf16_checkpoint.py OUT_DIR

Writes OUT_DIR/config.json (Mistral-7B-Instruct-v0.3's shapes: hidden 4096,
intermediate 14336, 32 layers, 32/8 heads of 128, vocabulary 32768, untied
head) and three shards model-0000k-of-00003.safetensors with their
model.safetensors.index.json, as the Hugging Face hub lays them out: every
matrix N(0, 0.02^2) rounded to bfloat16 (nearest, ties to even), every
RMSNorm weight 1.  About 14.5 GB; needs numpy only.
"""
import json
import os
import struct
import sys

import numpy as np


def main(out):
    os.makedirs(out, exist_ok=True)
    C, I, L, H, KV, hd, V = 4096, 14336, 32, 32, 8, 128, 32768
    cfg = {"architectures": ["MistralForCausalLM"], "bos_token_id": 1, "eos_token_id": 2, "head_dim": hd,
           "hidden_act": "silu", "hidden_size": C, "intermediate_size": I, "max_position_embeddings": 32768,
           "model_type": "mistral", "num_attention_heads": H, "num_hidden_layers": L, "num_key_value_heads": KV,
           "rms_norm_eps": 1e-05, "rope_theta": 1000000.0, "sliding_window": None, "tie_word_embeddings": False,
           "torch_dtype": "bfloat16", "vocab_size": V}
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    names = [("model.embed_tokens.weight", (V, C))]
    for l in range(L):
        p = f"model.layers.{l}."
        names += [(p + "input_layernorm.weight", (C,)), (p + "self_attn.q_proj.weight", (H * hd, C)),
                  (p + "self_attn.k_proj.weight", (KV * hd, C)), (p + "self_attn.v_proj.weight", (KV * hd, C)),
                  (p + "self_attn.o_proj.weight", (C, H * hd)), (p + "post_attention_layernorm.weight", (C,)),
                  (p + "mlp.gate_proj.weight", (I, C)), (p + "mlp.up_proj.weight", (I, C)),
                  (p + "mlp.down_proj.weight", (C, I))]
    names += [("model.norm.weight", (C,)), ("lm_head.weight", (V, C))]
    rng = np.random.default_rng(7)

    def bf16(shape):
        if len(shape) == 1:
            return np.full(shape, 0x3F80, dtype="<u2")  # 1.0
        bits = (rng.standard_normal(shape, dtype=np.float32) * 0.02).view("<u4")
        return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype("<u2")

    shards = [names[:100], names[100:200], names[200:]]
    weight_map = {}
    for k, part in enumerate(shards):
        fn = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
        header, off = {}, 0
        for n, s in part:
            nb = int(np.prod(s)) * 2
            header[n] = {"dtype": "BF16", "shape": list(s), "data_offsets": [off, off + nb]}
            off += nb
            weight_map[n] = fn
        hj = json.dumps(header).encode()
        hj += b" " * ((8 - len(hj) % 8) % 8)
        with open(os.path.join(out, fn), "wb") as f:
            f.write(struct.pack("<Q", len(hj)) + hj)
            for n, s in part:
                f.write(bf16(s).tobytes())
        print(f"wrote {os.path.join(out, fn)}", flush=True)
    with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
