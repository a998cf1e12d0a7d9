#!/usr/bin/env bash
# One seed of the results table's two rows: the default recipe and the same without attention, side by
# side, one CPU core each (so both see the same machine), evaluated every 1000 steps with the committed
# classifier. Rerun the same command to resume (both runs continue from their last checkpoint; a
# SIGTERM makes each save one first).
#   bash scripts/fashion_mnist_seeds.sh SEED [OUT=runs/seeds] [STEPS=4000] [extra trainer flags...]
# Then the table over the seeds and the mean curves:
#   python scripts/plot_eval_history.py --table_step=4000 --out=docs/figures/fid_vs_step.png \
#     "default=runs/seeds/attention_s0,runs/seeds/attention_s1,runs/seeds/attention_s2" \
#     "no attention=runs/seeds/no_attention_s0,runs/seeds/no_attention_s1,runs/seeds/no_attention_s2"
set -euo pipefail
cd "$(dirname "$0")/.."
SEED=${1:?usage: fashion_mnist_seeds.sh SEED [OUT] [STEPS] [flags...]}
OUT=${2:-runs/seeds}
STEPS=${3:-4000}
shift $(( $# > 3 ? 3 : $# ))
EXTRA=("$@")
PY=${PYTHON:-python}
CLS=pretrained/fashion_mnist_classifier
mkdir -p "$OUT"
EVAL="--config.eval_every=1000 --config.eval_feature_network=classifier:$CLS --config.eval_reference_cache=$OUT/reference_stats"
train() {  # core, run name, extra flags...
  local core=$1 name=$2; shift 2
  taskset -c "$core" $PY -m trainers.fashion_mnist --model_dir="$OUT/$name" --train_steps="$STEPS" \
    --config.seed="$SEED" $EVAL "${EXTRA[@]}" "$@" >> "$OUT/$name.log" 2>&1
}
# Both may compute the shared test-set reference at start-up; its cache file is written atomically.
train 0 "attention_s$SEED" & first=$!
train 1 "no_attention_s$SEED" --config.g_attention='()' --config.d_attention='()' & second=$!
trap 'kill -TERM $first $second 2>/dev/null; wait' TERM INT
wait
