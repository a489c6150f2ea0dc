#!/usr/bin/python3
"""score_stream.py - `recfound score` in PyTorch for a checkpoint too large to
hold in float32: the reference decoder of make_fixtures.py (float64), reading
each weight from the safetensors shards only when the forward pass reaches it.

Usage:  /usr/bin/python3 tests/reference/score_stream.py --model DIR --ids FILE [--bidirectional]

Prints, one line per line of FILE (token ids, whitespace separated), the mean
next-token cross-entropy of that sequence, as `recfound score` does.  Each
sequence runs alone (batch 1, no padding).  A weight is memory-mapped from its
shard, widened to float64 and dropped after use, so a Mistral-7B-sized BF16
checkpoint (14.5 GB on disk, 54 GB in float64) runs in about 2.7 GB of the
script's own memory (a few of the largest matrices in float64) besides the
page cache holding the shards.
"""
import argparse
import json
import mmap
import os
import struct
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from make_fixtures import bf16_bits_to_f32, forward_hidden, lm_head, shard_files, token_ce  # noqa: E402


class Shards:
    """name -> float64 tensor, read from the shard that holds it on each access."""

    def __init__(self, d):
        self.where = {}
        self.maps = []
        for fn in shard_files(d):
            f = open(os.path.join(d, fn), "rb")
            m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            (n,) = struct.unpack("<Q", m[:8])
            header = json.loads(m[8:8 + n])
            for name, info in header.items():
                if name != "__metadata__":
                    self.where[name] = (m, 8 + n, info, fn)
            self.maps.append((f, m))

    def __contains__(self, name):
        return name in self.where

    def __getitem__(self, name):
        m, base, info, fn = self.where[name]
        b, e = info["data_offsets"]
        raw = np.frombuffer(m, dtype=np.uint8, count=e - b, offset=base + b)
        if info["dtype"] == "BF16":
            a = bf16_bits_to_f32(raw.view("<u2"))
        elif info["dtype"] == "F32":
            a = raw.view("<f4")
        elif info["dtype"] == "F16":
            a = raw.view("<f2")
        else:
            raise ValueError("%s: %s: unsupported dtype %s" % (fn, name, info["dtype"]))
        return torch.from_numpy(a.astype(np.float64).reshape(info["shape"]))


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--ids", required=True)
    ap.add_argument("--bidirectional", action="store_true")
    args = ap.parse_args(argv)
    with open(os.path.join(args.model, "config.json")) as f:
        cfg = json.load(f)
    P = Shards(args.model)
    torch.set_grad_enabled(False)
    with open(args.ids) as f:
        rows = [[int(t) for t in line.split()] for line in f if line.strip()]
    for row in rows:
        ids = torch.tensor([row])
        hidden = forward_hidden(P, cfg, ids, [len(row)], args.bidirectional)
        ce, mask = token_ce(hidden @ lm_head(P).T, ids, [len(row)])
        print("%.9g" % float((ce * mask).sum() / mask.sum()))
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except (OSError, ValueError, KeyError) as e:  # a missing file, a bad header or id, a missing tensor
        sys.exit("score_stream.py: %s" % e)
