#!/usr/bin/env bash
# make bench: RecFound in C side by side with PyTorch and numpy on this machine,
# each measurement in the same run and with the same thread count.
#   1. one full-parameter AdamW training step of the `small` backbone, batch 8 x 256
#   2. one joint RecFound step: frozen `small` backbone, TMoLE 2/2/2 rank 16, 8 triplets + 8 generative rows of 128
#   3. greedy generation with a KV cache, and embedding inference
#   4. the matmul kernels on the model's shapes against numpy/OpenBLAS
#   5. a TIES merge of the small preset's adapters over 5 checkpoints
# Each C and PyTorch figure is the best of REPEAT runs (default 3), the two taking
# turns.  Nothing here is a test: it only measures.
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

# value of KEY in the output of a command printing "... KEY=VALUE ..."
value() {
  local key=$1; shift
  "$@" | sed -n "s/.*$key=\([0-9.]*\).*/\1/p" | head -1
}
max() { awk -v a="$1" -v c="${2:-0}" 'BEGIN { print (c > a ? c : a) }'; }
# The C command (array C_CMD) and the PyTorch command (T_CMD) run in turns, REPEAT
# times each, so that both meet the same minutes of a machine whose speed drifts;
# BEST_C and BEST_T are the best KEY of each, RUNS_C and RUNS_T every run's, in order.
pair() {
  local key=$1 v
  BEST_C=0; BEST_T=0; RUNS_C=""; RUNS_T=""
  for _ in $(seq "$REPEAT"); do
    v=$(value "$key" "${C_CMD[@]}"); RUNS_C="$RUNS_C ${v:-?}"; BEST_C=$(max "$BEST_C" "$v")
    if [ $have_torch = 1 ]; then
      v=$(value "$key" "${T_CMD[@]}"); RUNS_T="$RUNS_T ${v:-?}"; BEST_T=$(max "$BEST_T" "$v")
    fi
  done
}
# The runs behind the best figures: the spread shows how much the machine drifted.
runs() { echo "each run: C$RUNS_C${RUNS_T:+   PyTorch$RUNS_T}"; }
ratio() { awk -v c="$1" -v t="$2" 'BEGIN { if (t > 0) printf "%.2f", c / t; else printf "n/a" }'; }

echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), threads $OMP_NUM_THREADS"
# Debian's python3-torch and python3-numpy link libblas.so.3, which is netlib's
# reference BLAS until an optimised one is installed: PyTorch then runs some 15x
# slower and every ratio below would flatter the C side.  Name the library in use.
if [ $have_numpy = 1 ]; then
  # the file behind libblas.so.3 when numpy links it, else every BLAS-named library mapped
  blas=$("${pyenv[@]}" "$PY" -c 'import numpy; numpy.ones((2, 2)) @ numpy.ones((2, 2))
libs = sorted({l.split()[-1] for l in open("/proc/self/maps") if "blas" in l.lower()})
print(" ".join([f for f in libs if "/libblas" in f] or libs) or "none")')
  echo "== numpy's BLAS: $blas"
  case $blas in
    *openblas*|*mkl*|*blis*) ;;
    *) echo "warning: numpy and PyTorch are not on an optimised BLAS, so the PyTorch and numpy figures below" \
            "are far below this machine's speed; install OpenBLAS (apt-get install libopenblas0-pthread)" \
            "before reading any ratio" ;;
  esac
fi
./recfound init --preset small --seed 1 --out "$tmp/small" 2>/dev/null

echo "== 1. full-parameter training step, small (3.95M parameters), batch 8 x 256, AdamW"
C_CMD=(./recfound bench-train --model "$tmp/small" --batch 8 --len 256 --steps "$STEPS")
T_CMD=("${pyenv[@]}" "$PY" tests/reference/bench_torch.py --model "$tmp/small" --batch 8 --len 256 --steps "$STEPS"
       --threads "$OMP_NUM_THREADS")
pair tokens_per_s
./recfound bench-train --model "$tmp/small" --batch 8 --len 256 --steps 3 | grep -E "peak_rss|phases|attention"
runs
echo "C        tokens/s $BEST_C"
if [ $have_torch = 1 ]; then
  echo "PyTorch  tokens/s $BEST_T"
  echo "ratio C / PyTorch: $(ratio "$BEST_C" "$BEST_T")"
fi

echo "== 2. joint RecFound step (TMoLE 2/2/2 r16 on q,k,v,o; 8 triplets + 8 generative rows, length 128)"
C_CMD=(./recfound bench-recfound --model "$tmp/small" --queries 8 --gen 8 --len 128 --steps "$STEPS")
T_CMD=("${pyenv[@]}" "$PY" tests/reference/bench_torch_recfound.py --model "$tmp/small" --queries 8 --gen 8 --len 128
       --steps "$STEPS" --threads "$OMP_NUM_THREADS")
pair samples_per_s
runs
echo "C        samples/s $BEST_C"
if [ $have_torch = 1 ]; then
  echo "PyTorch  samples/s $BEST_T"
  echo "ratio C / PyTorch: $(ratio "$BEST_C" "$BEST_T")"
fi

echo "== 3. inference: greedy generation (64-token prompt, 64 new, KV cache) and embeddings (8 x 128)"
C_CMD=(./recfound bench-infer --model "$tmp/small")
T_CMD=("${pyenv[@]}" "$PY" tests/reference/bench_torch_recfound.py --model "$tmp/small" --mode generate
       --threads "$OMP_NUM_THREADS")
pair tokens_per_s
cg=$BEST_C tg=$BEST_T
T_CMD=("${pyenv[@]}" "$PY" tests/reference/bench_torch_recfound.py --model "$tmp/small" --mode embed
       --threads "$OMP_NUM_THREADS")
pair seqs_per_s
ce=$BEST_C te=$BEST_T
echo "C        generate tokens/s $cg   embed sequences/s $ce"
if [ $have_torch = 1 ]; then
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
grep -E "^machine peak" "$tmp/c_mm.txt" || true

echo "== 5. Model Merge: TIES over 5 checkpoints of the small preset's adapters"
./recfound bench-merge
