#!/usr/bin/env bash
# make demo: RecFound end to end on this CPU with nothing downloaded.
#   1. a synthetic recommendation world (all 13 tasks, published format)
#   2. a BPE tokenizer trained on it
#   3. a `small` backbone, pretrained as a causal LM on the world's texts
#   4. RecFound training: TMoLE adapters, both branches, S2Sched, checkpoints
#   5. Model Merge: TIES over the checkpoints
#   6. evaluation on the test split: backbone alone, RecFound without merge, RecFound
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
stage "6/6 evaluation on the test split (Tables 2 and 3 of the paper)"
LIMIT=${EVAL_LIMIT:-24}
for m in backbone:- "w/o merge":final RecFound:merged; do
  name=${m%%:*}; ad=${m##*:}
  adapter=(); [ "$ad" != "-" ] && adapter=(--adapter "$OUT/run/$ad")
  echo "-- $name"
  $R eval --model "$OUT/backbone" "${adapter[@]}" --data "$OUT/world" --split test --limit "$LIMIT" --max-new 48 \
    --max-len 192 --out "$OUT/eval_${ad/-/backbone}/scores.json" > "$OUT/eval_${ad/-/backbone}.txt"
done
# One line per task: the metric for the backbone alone, RecFound without merge, RecFound, and the paper.
score() {  # score JSON TASK -> the task's headline number (embedding tasks: full-corpus retrieval @20)
  local key='"score": '
  case $2 in I2I) key='"ndcg@20": ' ;; Q2I|U2I) key='"mrr@20": ' ;; esac
  awk -v t="\"$2\":" -v k="$key" '$1 == t { i = index($0, k); if (i) { print substr($0, i + length(k)) + 0; exit } }' "$1"
}
echo
printf "%-5s %-9s %9s %10s %9s %9s\n" task metric backbone "w/o merge" RecFound paper
for t in QR AVE AG SR SA UP AP PRP PM IP I2I Q2I U2I; do
  metric=$(awk -v t="\"$t\":" '$1 == t && match($0, /"metric": "[^"]*"/) { print substr($0, RSTART + 11, RLENGTH - 12) }' \
           "$OUT/eval_backbone/scores.json")
  case $t in I2I) metric=NDCG@20 ;; Q2I|U2I) metric=MRR@20 ;; esac
  paper=$(awk -v t="\"$t\":" '$1 == t && match($0, /"paper": [0-9.]+/) { print substr($0, RSTART + 9, RLENGTH - 9) }' \
          "$OUT/eval_backbone/scores.json")
  printf "%-5s %-9s %9.3f %10.3f %9.3f %9s\n" "$t" "$metric" "$(score "$OUT/eval_backbone/scores.json" $t)" \
    "$(score "$OUT/eval_final/scores.json" $t)" "$(score "$OUT/eval_merged/scores.json" $t)" "$paper"
done
echo
echo "test split, at most $LIMIT records per task; generation capped at 48 new tokens; embedding tasks: full-corpus"
echo "retrieval (I2I NDCG@20, Q2I/U2I MRR@20). QR, AG, UP, IP: token F1 here, BERTScore-F1 in the paper."
echo "The paper's numbers are a 7B model trained on the real dataset: they show the layout, not a target."
echo "Full tables per model: $OUT/eval_*.txt; run folder $OUT/run (losses.csv, sched.csv, losses.svg, sched.svg)"
echo "total $(( $(date +%s) - start )) s"
