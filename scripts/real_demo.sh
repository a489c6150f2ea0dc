#!/usr/bin/env bash
# make real-demo: the pipeline of scripts/demo.sh on the dataset built from the real public raw sources
# (../shared/data/raw, see its README.md and PROVENANCE.md files; never copied into this repository).
#   1. recfound build-data: the RecFound format from MovieLens-100k, MuDoCo-QR, Amazon-Google, ESCI,
#      AmazonQA, Amazon Reviews 2023 histories and Amazon Reviews 2018 meta files (11 of the 13 tasks)
#   2. a BPE tokenizer trained on the built dataset (the Mistral-7B tokenizer of ../shared/data/tokenizers
#      has 32,000 tokens, which would make the `small` backbone mostly embedding table)
#   3. a `small` backbone, pretrained as a causal LM on the dataset's texts
#   4. RecFound training: TMoLE adapters, both branches, S2Sched, checkpoints
#   5. Model Merge: TIES over the checkpoints
#   6. evaluation on the test split: backbone alone, RecFound without merge, RecFound
# Everything goes to runs/real (REAL_DIR to change).  About 9 minutes on 2 idle cores at the sizes below
# (pretraining about 0.75 s a step, RecFound training about 2.5 s a step); 32 minutes under heavy load.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
RAW=${RAW_DIR:-../shared/data/raw}          # the raw sources
OUT=${REAL_DIR:-runs/real}                  # everything this script writes
VOCAB=${VOCAB:-4096}                        # tokenizer size (the `small` preset's own vocabulary)
PRETRAIN_STEPS=${PRETRAIN_STEPS:-250}       # causal-LM steps of 16 texts
TRAIN_STEPS=${TRAIN_STEPS:-120}             # RecFound steps of EMB_BATCH triplets and GEN_BATCH samples
EMB_BATCH=${EMB_BATCH:-6}
GEN_BATCH=${GEN_BATCH:-20}
MAX_LEN=${MAX_LEN:-256}                     # tokens per sample (longer prompts lose their oldest tokens)
EVAL_LIMIT=${EVAL_LIMIT:-24}                # test records per task
R=${RECFOUND:-./recfound}
if [ ! -d "$RAW" ]; then
  echo "real-demo: the raw data folder $RAW does not exist." >&2
  echo "real-demo: it holds the public sources described in its README.md (set RAW_DIR to use another place)." >&2
  exit 1
fi
start=$(date +%s)
stage() { echo; echo "== [$(( $(date +%s) - start )) s] $*"; }

rm -rf "$OUT"
mkdir -p "$OUT"
stage "1/6 the dataset from $RAW"
$R build-data --raw "$RAW" --out "$OUT/world"
stage "2/6 tokenizer (BPE, $VOCAB tokens)"
$R tokenizer train --data "$OUT/world" --vocab "$VOCAB" --out "$OUT/tokenizer.json"
stage "3/6 small backbone, pretrained for $PRETRAIN_STEPS steps"
$R init --preset small --vocab "$VOCAB" --seed 1 --out "$OUT/init"
$R pretrain --model "$OUT/init" --data "$OUT/world" --tokenizer "$OUT/tokenizer.json" --batch 16 --max-len "$MAX_LEN" \
  --steps "$PRETRAIN_STEPS" --lr 2e-3 --warmup 20 --clip 1 --out "$OUT/backbone"
cp "$OUT/tokenizer.json" "$OUT/backbone/"
stage "4/6 RecFound training: TMoLE 2/2/2 + S2Sched, $TRAIN_STEPS steps"
$R train --model "$OUT/backbone" --data "$OUT/world" --out "$OUT/run" --steps "$TRAIN_STEPS" --emb-batch "$EMB_BATCH" \
  --gen-batch "$GEN_BATCH" --max-len "$MAX_LEN" --rank 8 --alpha 32 --task-dim 64 --lr 2e-3 --sched-val 8 \
  --sched-remainder largest --save-every $(( TRAIN_STEPS / 4 > 0 ? TRAIN_STEPS / 4 : 1 ))
stage "5/6 Model Merge: TIES over the checkpoints"
ckpts=$(ls -d "$OUT"/run/step-* | grep -v 'step-0$' | sort -t- -k2 -n)
$R merge --base "$OUT/run/step-0" $ckpts "$OUT/run/final" --out "$OUT/run/merged"
stage "6/6 evaluation on the test split (Tables 2 and 3 of the paper)"
for m in backbone:- "w/o merge":final RecFound:merged; do
  name=${m%%:*}; ad=${m##*:}
  adapter=(); [ "$ad" != "-" ] && adapter=(--adapter "$OUT/run/$ad")
  echo "-- $name"
  $R eval --model "$OUT/backbone" "${adapter[@]}" --data "$OUT/world" --split test --limit "$EVAL_LIMIT" --max-new 48 \
    --max-len "$MAX_LEN" --out "$OUT/eval_${ad/-/backbone}/scores.json" > "$OUT/eval_${ad/-/backbone}.txt"
done
# One line per task: the metric for the backbone alone, RecFound without merge, RecFound, and the paper.
score() {  # score JSON TASK -> the task's headline number (embedding tasks: full-corpus retrieval @20)
  local key='"score": '
  case $2 in I2I) key='"ndcg@20": ' ;; Q2I|U2I) key='"mrr@20": ' ;; esac
  awk -v t="\"$2\":" -v k="$key" '$1 == t { i = index($0, k); if (i) { print substr($0, i + length(k)) + 0; exit } }' "$1"
}
count() {  # count JSON TASK -> records scored ("n" of a generative task, "full" n of an embedding task)
  awk -v t="\"$2\":" '$1 == t { s = $0; i = index(s, "\"full\""); if (i) s = substr(s, i);
                                if (match(s, /"n": [0-9]+/)) { print substr(s, RSTART + 5, RLENGTH - 5); exit } }' "$1"
}
echo
printf "%-5s %-9s %7s %9s %10s %9s %9s\n" task metric records backbone "w/o merge" RecFound paper
for t in QR AVE AG SR SA UP AP PRP PM IP I2I Q2I U2I; do
  S="$OUT/eval_backbone/scores.json"
  metric=$(awk -v t="\"$t\":" '$1 == t && match($0, /"metric": "[^"]*"/) { print substr($0, RSTART + 11, RLENGTH - 12) }' "$S")
  case $t in I2I) metric=NDCG@20 ;; Q2I|U2I) metric=MRR@20 ;; esac
  paper=$(awk -v t="\"$t\":" '$1 == t && match($0, /"paper": [0-9.]+/) { print substr($0, RSTART + 9, RLENGTH - 9) }' "$S")
  case $t in AVE) metric=${metric:-tripleF1}; paper=${paper:-0.344} ;; AP) metric=${metric:-"F1(yes)"}; paper=${paper:-0.830} ;; esac
  n=$(count "$S" $t); n=${n:-0}
  if [ "$n" = 0 ]; then
    printf "%-5s %-9s %7s %9s %10s %9s %9s\n" "$t" "$metric" 0 - - - "$paper"
    continue
  fi
  printf "%-5s %-9s %7s %9.3f %10.3f %9.3f %9s\n" "$t" "$metric" "$n" "$(score "$S" $t)" \
    "$(score "$OUT/eval_final/scores.json" $t)" "$(score "$OUT/eval_merged/scores.json" $t)" "$paper"
done
echo
echo "test split of the dataset built from $RAW, at most $EVAL_LIMIT records per task; generation capped at 48"
echo "new tokens; embedding tasks: full-corpus retrieval (I2I NDCG@20, Q2I/U2I MRR@20). QR, AG, UP, IP: token F1"
echo "here, BERTScore-F1 in the paper. AVE and AP have no labelled source in the raw data (0 records)."
echo "The paper's numbers are a 7B model trained on the full RecFound dataset: they show the layout, not a target."
echo "Full tables per model: $OUT/eval_*.txt; run folder $OUT/run (losses.csv, sched.csv, losses.svg, sched.svg)"
echo "total $(( $(date +%s) - start )) s"
