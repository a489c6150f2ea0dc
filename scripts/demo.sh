#!/usr/bin/env bash
# make demo: RecFound end to end on this CPU with nothing downloaded.
#   1. a synthetic recommendation world (all 13 tasks, published format)
#   2. a BPE tokenizer trained on it
#   3. a `small` backbone, pretrained as a causal LM on the world's texts
#   4. RecFound training: TMoLE adapters, both branches, S2Sched, checkpoints
#   5. Model Merge: TIES over the checkpoints
#   6. held-out loss of every task: backbone alone, RecFound without merge, RecFound
# Everything goes to runs/demo (DEMO_DIR to change).  Sizes: DEMO_SCALE,
# PRETRAIN_STEPS, TRAIN_STEPS.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
OUT=${DEMO_DIR:-runs/demo}
SCALE=${DEMO_SCALE:-0.01}
PRETRAIN_STEPS=${PRETRAIN_STEPS:-200}
TRAIN_STEPS=${TRAIN_STEPS:-120}
R=./recfound
start=$(date +%s)
stage() { echo; echo "== [$(( $(date +%s) - start )) s] $*"; }

rm -rf "$OUT"
mkdir -p "$OUT"
stage "1/6 synthetic world (scale $SCALE)"
$R synth --out "$OUT/world" --scale "$SCALE" --seed 1
stage "2/6 tokenizer (BPE, 2048 tokens)"
$R tokenizer train --data "$OUT/world" --vocab 2048 --out "$OUT/tokenizer.json"
stage "3/6 small backbone, pretrained for $PRETRAIN_STEPS steps"
$R init --preset small --vocab 2048 --seed 1 --out "$OUT/init"
$R pretrain --model "$OUT/init" --data "$OUT/world" --tokenizer "$OUT/tokenizer.json" --batch 16 --max-len 192 \
  --steps "$PRETRAIN_STEPS" --lr 2e-3 --warmup 20 --clip 1 --out "$OUT/backbone"
cp "$OUT/tokenizer.json" "$OUT/backbone/"
stage "4/6 RecFound training: TMoLE 2/2/2 + S2Sched, $TRAIN_STEPS steps"
$R train --model "$OUT/backbone" --data "$OUT/world" --out "$OUT/run" --steps "$TRAIN_STEPS" --emb-batch 6 \
  --gen-batch 20 --max-len 192 --rank 8 --alpha 32 --task-dim 64 --lr 2e-3 --sched-val 8 \
  --sched-remainder largest --save-every $((TRAIN_STEPS / 4))
stage "5/6 Model Merge: TIES over the checkpoints"
ckpts=$(ls -d "$OUT"/run/step-* | grep -v 'step-0$' | sort -t- -k2 -n)
$R merge --base "$OUT/run/step-0" $ckpts "$OUT/run/final" --out "$OUT/run/merged"
stage "6/6 held-out loss of every task (eval split; lower is better)"
$R loss --model "$OUT/backbone" --data "$OUT/world" --samples 64 --max-len 192 > "$OUT/loss_backbone.csv"
$R loss --model "$OUT/backbone" --adapter "$OUT/run/step-0" --data "$OUT/world" --samples 64 --max-len 192 > "$OUT/loss_step0.csv"
$R loss --model "$OUT/backbone" --adapter "$OUT/run/final" --data "$OUT/world" --samples 64 --max-len 192 > "$OUT/loss_final.csv"
$R loss --model "$OUT/backbone" --adapter "$OUT/run/merged" --data "$OUT/world" --samples 64 --max-len 192 > "$OUT/loss_merged.csv"
echo
printf "%-5s %-4s %10s %10s %10s %10s\n" task kind backbone step-0 "w/o merge" RecFound
paste -d, "$OUT/loss_backbone.csv" "$OUT/loss_step0.csv" "$OUT/loss_final.csv" "$OUT/loss_merged.csv" | tail -n +2 |
  awk -F, '{ printf "%-5s %-4s %10.4f %10.4f %10.4f %10.4f\n", $1, $2, $4, $8, $12, $16 }'
echo
echo "embedding tasks: InfoNCE over 64 held-out records (in-sample negatives); generative: answer-token cross-entropy"
echo "run folder: $OUT (losses.csv, sched.csv, step-*, merged); total $(( $(date +%s) - start )) s"
