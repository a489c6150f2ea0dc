#!/usr/bin/env bash
# The same RecFound training on one process and on several MPI ranks, timed.
#   1 rank  x 2 OpenMP threads   (the ordinary binary)
#   1 rank  x 2 threads          (the MPI binary under mpirun, to see its overhead)
#   2 ranks x 1 thread each      (the MPI binary)
# on a `small` backbone (random weights: the timing does not depend on them)
# and a synthetic world.  Needs `make` and `make MPI=1` first.  Sizes: STEPS,
# EMB, GEN, LEN.  On a 2-core machine this shows what the split costs and
# saves; more machines (a hostfile) are where it pays.
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${STEPS:-20}
EMB=${EMB:-8}
GEN=${GEN:-16}
LEN=${LEN:-128}
[ -x ./recfound ] && [ -x build-mpi/recfound ] || { echo "mpi_scaling: run make and make MPI=1 first" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_PROC_BIND=true
./recfound synth --out "$tmp/w" --scale 0.02 --seed 1 >/dev/null 2>&1
./recfound tokenizer train --data "$tmp/w" --vocab 2000 --out "$tmp/tok.json" 2>/dev/null
./recfound init --preset small --vocab 2000 --seed 1 --out "$tmp/m" 2>/dev/null
opts=(--model "$tmp/m" --tokenizer "$tmp/tok.json" --data "$tmp/w" --steps "$STEPS" --emb-batch "$EMB"
      --gen-batch "$GEN" --max-len "$LEN" --sched-val 8 --sched-remainder largest)
timed() {  # timed LABEL COMMAND...: wall seconds of a whole run, then per step
  local name=$1; shift
  local t0 t1
  t0=$(date +%s.%N)
  "$@" --out "$tmp/$name" 2>/dev/null
  t1=$(date +%s.%N)
  awk -v a="$t0" -v b="$t1" -v s="$STEPS" -v n="$name" 'BEGIN { printf "%-34s %7.1f s  %6.2f s/step\n", n, b - a, (b - a) / s }'
}
echo "RecFound training, small backbone, $STEPS steps of $EMB triplets + $GEN generative samples, length <= $LEN, S2Sched on"
timed "1 process x 2 threads" env OMP_NUM_THREADS=2 ./recfound train "${opts[@]}"
timed "mpirun -np 1, 2 threads" mpirun -np 1 --bind-to none -x OMP_NUM_THREADS=2 build-mpi/recfound train "${opts[@]}"
timed "mpirun -np 2, 1 thread each" mpirun -np 2 -x OMP_NUM_THREADS=1 build-mpi/recfound train "${opts[@]}"
