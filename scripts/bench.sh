#!/usr/bin/env bash
# make bench: RecFound in C side by side with PyTorch and numpy on this machine.
#   1. one full-parameter AdamW training step of the `small` preset, batch 8 x 256,
#      in C and in PyTorch (tests/reference/bench_torch.py), 2 threads each;
#   2. the matmul kernel's GFLOP/s on the model's shapes against numpy/OpenBLAS.
# Prints the figures and the ratios.  Nothing here is a test: it only measures.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-/usr/bin/python3}
THREADS=${THREADS:-2}
STEPS=${STEPS:-5}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), threads=$THREADS"
./recfound init --preset small --seed 1 --out "$tmp/small" 2>/dev/null

echo "== training step: small preset (3.95M parameters), batch 8 x 256, AdamW"
c_line=$(OMP_NUM_THREADS=$THREADS ./recfound bench-train --model "$tmp/small" --batch 8 --len 256 --steps "$STEPS")
echo "$c_line"
if "$PY" -c 'import torch' 2>/dev/null; then
  t_line=$("$PY" tests/reference/bench_torch.py --model "$tmp/small" --batch 8 --len 256 --steps "$STEPS" --threads "$THREADS")
  echo "$t_line"
  c_tps=$(echo "$c_line" | sed -n 's/.*tokens_per_s=\([0-9.]*\).*/\1/p' | head -1)
  t_tps=$(echo "$t_line" | sed -n 's/.*tokens_per_s=\([0-9.]*\).*/\1/p' | head -1)
  awk -v c="$c_tps" -v t="$t_tps" 'BEGIN { printf "ratio train tokens/s C / PyTorch = %.2f\n", c / t }'
else
  echo "PyTorch not importable by $PY: skipping the PyTorch side (apt-get install python3-torch)"
fi

echo "== matmul kernel vs numpy/OpenBLAS (float32, the small preset's shapes)"
OMP_NUM_THREADS=$THREADS ./recfound bench-matmul | tee "$tmp/c_mm.txt"
if "$PY" -c 'import numpy' 2>/dev/null; then
  # OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE slow a current OpenBLAS: unset for this command only.
  env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OPENBLAS_NUM_THREADS=$THREADS OMP_NUM_THREADS=$THREADS \
    "$PY" tests/reference/bench_numpy.py | tee "$tmp/np_mm.txt"
  for kind in nt nn tn overall; do
    c=$(grep -E "^matmul (total|overall)" "$tmp/c_mm.txt" | grep -E "\b$kind\b" | sed -n 's/.*gflops=\([0-9.]*\).*/\1/p' | head -1)
    n=$(grep -E "^numpy (total|overall)" "$tmp/np_mm.txt" | grep -E "\b$kind\b" | sed -n 's/.*gflops=\([0-9.]*\).*/\1/p' | head -1)
    [ -n "$c" ] && [ -n "$n" ] && awk -v c="$c" -v n="$n" -v k="$kind" \
      'BEGIN { printf "ratio matmul %s C / numpy = %.2f (%.1f vs %.1f GFLOP/s)\n", k, c / n, c, n }'
  done
fi
