#!/usr/bin/env bash
# One seed of rows of the results table, one run per CPU core side by side (so they see the same
# machine), evaluated every 1000 steps with the committed classifier. Rerun the same command to resume
# (every run continues from its last checkpoint; a SIGTERM makes each save one first).
#   [ROWS="attention no_attention"] [CORES="0 1"] [PRECISION=float32] \
#     bash scripts/fashion_mnist_seeds.sh SEED [OUT=runs/seeds] [STEPS=4000] [extra trainer flags...]
# CORES are the CPU cores to pin to: the rows are dealt to them in turn, and each core runs its rows one
# after another without waiting for the other core (CORES=1 ROWS=g32 starts one run on the idle core).
# ROWS names the runs (each is written to OUT/<row>_s<SEED>); the rows the results page uses:
#   attention     the default recipe: self-attention at 16² in G and D
#   no_attention  no self-attention
#   g32_d16       attention at 32² in G (after its last block) and 16² in D
#   g32           attention at 32² in G only
#   ortho         the default with BigGAN's orthogonal regulariser on G (g_ortho_reg=1e-4)
# PRECISION is pinned (not the preset's `auto`) so a run resumed on another CPU keeps its arithmetic
# and every cell of the table is comparable; every run here so far is float32.
# RECORDS=dir copies each finished run's eval_history.jsonl and config.json to dir/<row>_s<SEED>/ (the
# results page keeps them in docs/records/seeds, committed: run directories are not).
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
read -r -a CORE_IDS <<< "${CORES:-0 1}"
((${#CORE_IDS[@]} > 0)) || { echo "fashion_mnist_seeds.sh: CORES is empty" >&2; exit 2; }
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
record() {  # row: a finished run's scores and config, copied to RECORDS (when set)
  local run=${1}_s$SEED
  [[ -n ${RECORDS:-} ]] || return 0
  mkdir -p "$RECORDS/$run"
  cp "$OUT/$run/eval_history.jsonl" "$OUT/$run/config.json" "$RECORDS/$run/"
}
queue() {  # core, rows...: this core's rows in order; a SIGTERM reaches the running trainer itself
  local core=$1 row; shift
  trap 'kill -TERM "$child" 2>/dev/null; wait "$child"; exit 143' TERM  # and start no further row
  for row in "$@"; do
    train "$core" "$row" & child=$!
    wait "$child"
    record "$row"
  done
}
# The runs may compute the shared test-set reference together at start-up (its cache is written atomically).
queues=()
trap 'kill -TERM "${queues[@]}" 2>/dev/null; wait; exit 143' TERM INT
for ((c = 0; c < ${#CORE_IDS[@]} && c < ${#ROW_NAMES[@]}; c++)); do
  mine=()
  for ((i = c; i < ${#ROW_NAMES[@]}; i += ${#CORE_IDS[@]})); do mine+=("${ROW_NAMES[i]}"); done
  queue "${CORE_IDS[c]}" "${mine[@]}" & queues+=($!)
done
status=0
for pid in "${queues[@]}"; do wait "$pid" || status=$?; done
exit "$status"
