#!/usr/bin/env bash
# S2Sched's effect (§4.3): two RecFound runs on the same backbone and world at
# equal steps, one with S2Sched and one with uniform task mixing
# (--no-s2sched), then the held-out loss of every task for both.  Needs the
# backbone and world of `make demo` (DEMO_DIR, default runs/demo).
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
D=${DEMO_DIR:-runs/demo}
STEPS=${STEPS:-120}
OUT=${OUT:-$D/s2sched_effect}
R=./recfound
[ -d "$D/backbone" ] && [ -d "$D/world" ] || { echo "run make demo first (no $D/backbone)" >&2; exit 1; }
common=(--model "$D/backbone" --data "$D/world" --steps "$STEPS" --emb-batch 6 --gen-batch 20 --max-len 192 --rank 8
        --alpha 32 --task-dim 64 --lr 2e-3 --sched-val 8 --sched-remainder largest --seed 7)
rm -rf "$OUT/s2sched" "$OUT/uniform"  # a re-run replaces its own runs (train never writes into a used folder)
$R train "${common[@]}" --out "$OUT/s2sched"
$R train "${common[@]}" --no-s2sched --out "$OUT/uniform"
for v in s2sched uniform; do
  $R loss --model "$D/backbone" --adapter "$OUT/$v/final" --data "$D/world" --samples 64 --max-len 192 > "$OUT/loss_$v.csv"
done
echo
printf "%-5s %-4s %10s %10s\n" task kind S2Sched uniform
paste -d, "$OUT/loss_s2sched.csv" "$OUT/loss_uniform.csv" | tail -n +2 |
  awk -F, '{ printf "%-5s %-4s %10.4f %10.4f\n", $1, $2, $4, $8 }'
echo
echo "held-out loss after $STEPS steps (eval split, 64 records per task); sample ratios per step: $OUT/s2sched/sched.svg"
