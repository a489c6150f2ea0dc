#!/usr/bin/env bash
# make ablation: the paper's Table 4 at small scale on the synthetic world.
#   RecFound               TMoLE + S2Sched, TIES-merged checkpoints
#   w/o M.M.               the same run's final checkpoint
#   w/o M.M. & S2Sched     TMoLE, uniform task mixing
#   w/o M.M. & TMoLE       one plain LoRA, S2Sched
#   w/o all three          one plain LoRA, uniform mixing
# each over SEEDS (default 1 2 3), on the backbone and world of `make demo`
# (made first when missing); every model evaluated on the test split as the
# demo does.  Prints mean ± std of the generative and embedding averages, the
# per-task means, and writes the routing heatmap (Figure 2) and the sample
# ratios (Figure 3) of the first seed.  Sizes: TRAIN_STEPS, EVAL_LIMIT, SEEDS.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
D=${DEMO_DIR:-runs/demo}
OUT=${OUT:-runs/ablation}
STEPS=${TRAIN_STEPS:-120}
LIMIT=${EVAL_LIMIT:-24}
SEEDS=${SEEDS:-1 2 3}
R=./recfound
start=$(date +%s)
[ -d "$D/backbone" ] || ./scripts/demo.sh
mkdir -p "$OUT"
common=(--model "$D/backbone" --data "$D/world" --steps "$STEPS" --emb-batch 6 --gen-batch 20 --max-len 192 --rank 8
        --alpha 32 --task-dim 64 --lr 2e-3 --sched-val 8 --sched-remainder largest --save-every $((STEPS / 4)))
evaluate() {  # evaluate NAME ADAPTER
  $R eval --model "$D/backbone" --adapter "$2" --data "$D/world" --split test --limit "$LIMIT" --max-new 48 \
    --max-len 192 --out "$OUT/$1/scores.json" > "$OUT/$1.txt" 2> "$OUT/$1.log"
}
for s in $SEEDS; do
  for v in full nosched notmole none; do
    flags=(); case $v in nosched) flags=(--no-s2sched) ;; notmole) flags=(--no-tmole) ;; none) flags=(--no-tmole --no-s2sched) ;; esac
    echo "== [$(( $(date +%s) - start )) s] seed $s: $v"
    rm -rf "$OUT/run_${v}_$s"  # a re-run replaces its own runs (train never writes into a used folder)
    $R train "${common[@]}" "${flags[@]}" --seed "$s" --out "$OUT/run_${v}_$s" 2> "$OUT/run_${v}_$s.log"
    evaluate "eval_${v}_$s" "$OUT/run_${v}_$s/final"
  done
  ckpts=$(ls -d "$OUT/run_full_$s"/step-* | grep -v 'step-0$' | sort -t- -k2 -n)
  $R merge --base "$OUT/run_full_$s/step-0" $ckpts "$OUT/run_full_$s/final" --out "$OUT/run_full_$s/merged" 2>/dev/null
  evaluate "eval_merged_$s" "$OUT/run_full_$s/merged"
done
first=${SEEDS%% *}
$R route --adapter "$OUT/run_full_$first/final" --out "$OUT/route_similarity" > "$OUT/route.csv"
cp "$OUT/run_full_$first/sched.svg" "$OUT/sched_ratios.svg"

# headline number of a task in a scores.json (embedding tasks: full-corpus retrieval @20)
score() {
  local key='"score": '
  case $2 in I2I) key='"ndcg@20": ' ;; Q2I|U2I) key='"mrr@20": ' ;; esac
  awk -v t="\"$2\":" -v k="$key" '$1 == t { i = index($0, k); if (i) { print substr($0, i + length(k)) + 0; exit } }' "$1"
}
GEN="QR AVE AG SR SA UP AP PRP PM IP"
EMB="I2I Q2I U2I"
{
  for s in $SEEDS; do
    for v in merged full nosched notmole none; do
      f="$OUT/eval_${v}_$s/scores.json"
      for t in $GEN $EMB; do echo "$v $s $t $(score "$f" "$t")"; done
    done
  done
} > "$OUT/all_scores.txt"
echo
echo "Table 4 at small scale: mean ± std over seeds ($SEEDS), test split, $STEPS training steps"
printf "%-22s %18s %18s\n" model "generative avg" "embedding avg"
for v in merged full nosched notmole none; do
  case $v in merged) name="RecFound" ;; full) name="w/o M.M." ;; nosched) name="w/o M.M. & S2Sched" ;;
             notmole) name="w/o M.M. & TMoLE" ;; none) name="w/o all three" ;; esac
  awk -v v="$v" -v gen="$GEN" -v name="$name" '
    BEGIN { n = split(gen, g, " "); for (i = 1; i <= n; i++) isgen[g[i]] = 1 }
    $1 == v { k = isgen[$3] ? "g" : "e"; sum[k, $2] += $4; cnt[k, $2]++; seeds[$2] = 1 }
    END {
      for (k in seeds) { for (j = 1; j <= 2; j++) { c = j == 1 ? "g" : "e"; a = sum[c, k] / cnt[c, k]; m[c] += a; m2[c] += a * a; ns[c]++ } }
      for (j = 1; j <= 2; j++) { c = j == 1 ? "g" : "e"; mu[c] = m[c] / ns[c]; sd[c] = sqrt(m2[c] / ns[c] - mu[c] * mu[c]) }
      printf "%-22s %9.3f ± %5.3f  %9.3f ± %5.3f\n", name, mu["g"], sd["g"], mu["e"], sd["e"] }' "$OUT/all_scores.txt"
done
echo
echo "per task, mean over seeds"
printf "%-22s" model; for t in $GEN $EMB; do printf "%7s" "$t"; done; echo
for v in merged full nosched notmole none; do
  printf "%-22s" "$v"
  for t in $GEN $EMB; do
    awk -v v="$v" -v t="$t" '$1 == v && $3 == t { s += $4; n++ } END { printf "%7.3f", s / n }' "$OUT/all_scores.txt"
  done
  echo
done
echo
echo "Figure 2: $OUT/route_similarity.svg; Figure 3: $OUT/sched_ratios.svg; raw scores $OUT/all_scores.txt"
echo "paper (Mistral-7B, real data): RecFound 0.704 / 0.775; w/o M.M. 0.703 / 0.775; w/o M.M. & S2Sched 0.679 / 0.762;"
echo "w/o M.M. & TMoLE 0.678 / 0.759; w/o all three 0.684 / 0.748 (generative / embedding averages)"
echo "total $(( $(date +%s) - start )) s"
