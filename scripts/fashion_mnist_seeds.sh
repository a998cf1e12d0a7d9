#!/usr/bin/env bash
# One seed of rows of the results table, two runs at a time side by side, one CPU core each (so both
# see the same machine), evaluated every 1000 steps with the committed classifier. Rerun the same
# command to resume (every run continues from its last checkpoint; a SIGTERM makes each save one first).
#   [ROWS="attention no_attention"] [PRECISION=float32] \
#     bash scripts/fashion_mnist_seeds.sh SEED [OUT=runs/seeds] [STEPS=4000] [extra trainer flags...]
# ROWS names the runs (each is written to OUT/<row>_s<SEED>); the rows the results page uses:
#   attention     the default recipe: self-attention at 16² in G and D
#   no_attention  no self-attention
#   g32_d16       attention at 32² in G (after its last block) and 16² in D
#   g32           attention at 32² in G only
#   ortho         the default with BigGAN's orthogonal regulariser on G (g_ortho_reg=1e-4)
# PRECISION is pinned (not the preset's `auto`) so a run resumed on another CPU keeps its arithmetic
# and every cell of the table is comparable; every run here so far is float32.
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
read -r -a ROW_NAMES <<< "${ROWS:-attention no_attention}"
CLS=pretrained/fashion_mnist_classifier
mkdir -p "$OUT"
EVAL="--config.eval_every=1000 --config.eval_feature_network=classifier:$CLS --config.eval_reference_cache=$OUT/reference_stats"

row_flags() {  # row name -> the trainer flags that make it
  case $1 in
    attention) ;;
    no_attention) echo "--config.g_attention=() --config.d_attention=()" ;;
    g32_d16) echo "--config.g_attention=(32,) --config.d_attention=(16,)" ;;
    g32) echo "--config.g_attention=(32,) --config.d_attention=()" ;;
    ortho) echo "--config.g_ortho_reg=1e-4" ;;
    *) echo "fashion_mnist_seeds.sh: unknown row '$1' in ROWS (attention, no_attention, g32_d16, g32, ortho)" >&2
       return 1 ;;
  esac
}
for row in "${ROW_NAMES[@]}"; do row_flags "$row" > /dev/null; done  # refuse a bad ROWS before training

train() {  # core, row; run in the background, it becomes the trainer (exec), so its PID is the trainer's
  local core=$1 row=$2 flags
  flags=$(row_flags "$row")
  # shellcheck disable=SC2086  # the row's flags are words without spaces
  exec taskset -c "$core" $PY -m trainers.fashion_mnist --model_dir="$OUT/${row}_s$SEED" --train_steps="$STEPS" \
    --config.seed="$SEED" --config.mixed_precision="${PRECISION:-float32}" $EVAL $flags "${EXTRA[@]}" \
    >> "$OUT/${row}_s$SEED.log" 2>&1
}
# Two at a time; both may compute the shared test-set reference at start-up (its cache is written atomically).
# A SIGTERM to this script reaches the trainers themselves, so each saves a checkpoint before it exits.
pids=()
trap 'kill -TERM "${pids[@]}" 2>/dev/null; wait; exit 143' TERM INT  # and start no further rows
for ((i = 0; i < ${#ROW_NAMES[@]}; i += 2)); do
  pids=()
  train 0 "${ROW_NAMES[i]}" & pids+=($!)
  if ((i + 1 < ${#ROW_NAMES[@]})); then train 1 "${ROW_NAMES[i + 1]}" & pids+=($!); fi
  status=0
  for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
  ((status == 0)) || exit "$status"
done
