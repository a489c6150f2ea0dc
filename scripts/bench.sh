#!/usr/bin/env bash
# make bench: RecFound in C side by side with PyTorch and numpy on this machine,
# each measurement in the same run and with the same thread count.
#   1. one full-parameter AdamW training step of the `small` backbone, batch 8 x 256
#   2. one joint RecFound step: frozen `small` backbone, TMoLE 2/2/2 rank 16, 8 triplets + 8 generative rows of 128
#   3. greedy generation with a KV cache, and embedding inference
#   4. the matmul kernels on the model's shapes against numpy/OpenBLAS
#   5. a TIES merge of the small preset's adapters over 5 checkpoints
# Each C and PyTorch figure is the best of REPEAT runs (default 3).  Nothing
# here is a test: it only measures.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-/usr/bin/python3}
export OMP_NUM_THREADS=${THREADS:-2}
export OMP_PROC_BIND=true
STEPS=${STEPS:-5}
REPEAT=${REPEAT:-3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE slow a current OpenBLAS: unset for the Python side only.
pyenv=(env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OPENBLAS_NUM_THREADS="$OMP_NUM_THREADS")
have_torch=0; "$PY" -c 'import torch' 2>/dev/null && have_torch=1
have_numpy=0; "$PY" -c 'import numpy' 2>/dev/null && have_numpy=1

# best VALUE of KEY over REPEAT runs of a command printing "... KEY=VALUE ..."
best() {
  local key=$1; shift
  local b=0 v
  for _ in $(seq "$REPEAT"); do
    v=$("$@" | sed -n "s/.*$key=\([0-9.]*\).*/\1/p" | head -1)
    b=$(awk -v a="$b" -v c="${v:-0}" 'BEGIN { print (c > a ? c : a) }')
  done
  echo "$b"
}
ratio() { awk -v c="$1" -v t="$2" 'BEGIN { if (t > 0) printf "%.2f", c / t; else printf "n/a" }'; }

echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), threads $OMP_NUM_THREADS"
./recfound init --preset small --seed 1 --out "$tmp/small" 2>/dev/null

echo "== 1. full-parameter training step, small (3.95M parameters), batch 8 x 256, AdamW"
c=$(best tokens_per_s ./recfound bench-train --model "$tmp/small" --batch 8 --len 256 --steps "$STEPS")
./recfound bench-train --model "$tmp/small" --batch 8 --len 256 --steps 3 | grep -E "peak_rss|phases"
echo "C        tokens/s $c"
if [ $have_torch = 1 ]; then
  t=$(best tokens_per_s "${pyenv[@]}" "$PY" tests/reference/bench_torch.py --model "$tmp/small" --batch 8 --len 256 \
      --steps "$STEPS" --threads "$OMP_NUM_THREADS")
  echo "PyTorch  tokens/s $t"
  echo "ratio C / PyTorch: $(ratio "$c" "$t")"
fi

echo "== 2. joint RecFound step (TMoLE 2/2/2 r16 on q,k,v,o; 8 triplets + 8 generative rows, length 128)"
c=$(best samples_per_s ./recfound bench-recfound --model "$tmp/small" --queries 8 --gen 8 --len 128 --steps "$STEPS")
echo "C        samples/s $c"
if [ $have_torch = 1 ]; then
  t=$(best samples_per_s "${pyenv[@]}" "$PY" tests/reference/bench_torch_recfound.py --model "$tmp/small" --queries 8 \
      --gen 8 --len 128 --steps "$STEPS" --threads "$OMP_NUM_THREADS")
  echo "PyTorch  samples/s $t"
  echo "ratio C / PyTorch: $(ratio "$c" "$t")"
fi

echo "== 3. inference: greedy generation (64-token prompt, 64 new, KV cache) and embeddings (8 x 128)"
cg=$(best tokens_per_s ./recfound bench-infer --model "$tmp/small")
ce=$(best seqs_per_s ./recfound bench-infer --model "$tmp/small")
echo "C        generate tokens/s $cg   embed sequences/s $ce"
if [ $have_torch = 1 ]; then
  tg=$(best tokens_per_s "${pyenv[@]}" "$PY" tests/reference/bench_torch_recfound.py --model "$tmp/small" --mode generate \
       --threads "$OMP_NUM_THREADS")
  te=$(best seqs_per_s "${pyenv[@]}" "$PY" tests/reference/bench_torch_recfound.py --model "$tmp/small" --mode embed \
       --threads "$OMP_NUM_THREADS")
  echo "PyTorch  generate tokens/s $tg   embed sequences/s $te"
  echo "ratio C / PyTorch: generate $(ratio "$cg" "$tg"), embed $(ratio "$ce" "$te")"
fi

echo "== 4. matmul kernels vs numpy/OpenBLAS (float32, the small preset's shapes)"
./recfound bench-matmul > "$tmp/c_mm.txt"
if [ $have_numpy = 1 ]; then "${pyenv[@]}" "$PY" tests/reference/bench_numpy.py > "$tmp/np_mm.txt"; fi
for kind in nt nn tn all; do
  c=$(grep -E "^matmul $kind total" "$tmp/c_mm.txt" | sed -n 's/.*gflops=\([0-9.]*\).*/\1/p')
  n=$( [ -f "$tmp/np_mm.txt" ] && grep -E "^numpy $kind total" "$tmp/np_mm.txt" | sed -n 's/.*gflops=\([0-9.]*\).*/\1/p' || true)
  echo "matmul $kind: C $c GFLOP/s, numpy ${n:-n/a} GFLOP/s, ratio $(ratio "${c:-0}" "${n:-0}")"
done

echo "== 5. Model Merge: TIES over 5 checkpoints of the small preset's adapters"
./recfound bench-merge
