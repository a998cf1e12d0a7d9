#!/usr/bin/env bash
# Reproduces docs/results.md: the Fashion-MNIST classifier, the default recipe with and without
# self-attention (run side by side, one CPU core each, so both see the same machine), their
# evaluation on 10k EMA samples, the real-vs-real reference, the figures and the pretrained export.
#   bash scripts/fashion_mnist_results.sh [OUT=runs/results] [STEPS=4000] [extra trainer flags...]
# Stages whose output already exists are skipped, so an interrupted run can simply be restarted
# (training resumes from its last checkpoint).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/results}
STEPS=${2:-4000}
shift $(( $# > 2 ? 2 : $# ))
EXTRA=("$@")
PY=${PYTHON:-python}
CLS=$OUT/classifier
FIG=docs/figures
mkdir -p "$OUT" "$FIG"

# 1. The feature network: a small Fashion-MNIST classifier (both cores, ~6 min).
[ -f "$CLS/classifier.keras" ] || $PY -m trainers.classifier --dataset=fashion_mnist --model_dir="$CLS" --steps=3000

# 2. The two runs, pinned to one core each, evaluated every 1000 steps (FID curve, best checkpoint).
#    Both write the same test-set reference into the shared cache (atomically) at start-up.
EVAL="--config.eval_every=1000 --config.eval_feature_network=classifier:$CLS --config.eval_reference_cache=$OUT/reference_stats"
train() {  # core, run name, extra flags...; run in the background, it becomes the trainer (exec)
  local core=$1 name=$2; shift 2
  exec taskset -c "$core" $PY -m trainers.fashion_mnist --model_dir="$OUT/$name" --train_steps="$STEPS" $EVAL \
    "${EXTRA[@]}" "$@" > "$OUT/$name.log" 2>&1
}
pids=()
trap 'kill -TERM "${pids[@]}" 2>/dev/null; wait; exit 143' TERM INT  # each trainer checkpoints and exits
train 0 attention & pids+=($!)
train 1 no_attention --config.g_attention='()' --config.d_attention='()' & pids+=($!)
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
((status == 0)) || exit "$status"  # a failed run stops the script before its evaluation

# 3. Final numbers: 10k EMA samples of the last checkpoint vs the 10k test images; real train images likewise.
for name in attention no_attention; do
  $PY -m trainers.evaluate --model_dir="$OUT/$name" --feature_network=classifier:"$CLS" \
    --reference_cache="$OUT/reference_stats" --num_samples=10000 --json="$OUT/$name/eval_final.json"
done
$PY -m trainers.evaluate --model_dir="$OUT/attention" --feature_network=classifier:"$CLS" \
  --reference_cache="$OUT/reference_stats" --num_samples=10000 --real_split=train --json="$OUT/real_train.json"

# 4. Figures.
$PY scripts/plot_eval_history.py --out=$FIG/fid_vs_step.png "self-attention 16x16=$OUT/attention" \
  "no attention=$OUT/no_attention"
$PY -m trainers.sample --model_dir="$OUT/attention" --mode=sheet --columns=10 --out=$FIG/sample_sheet.png
$PY -m trainers.sample --model_dir="$OUT/no_attention" --mode=sheet --columns=10 --out=$FIG/sample_sheet_no_attention.png
$PY -m trainers.sample --model_dir="$OUT/attention" --mode=interpolate_z --labels=0,5,7,9 --columns=10 \
  --interpolation=slerp --out=$FIG/interpolation.png
$PY -m trainers.sample --model_dir="$OUT/attention" --mode=attention --scale=6 --out=$FIG/attention.png

# 5. The pretrained EMA generator (float32 SavedModel) committed under pretrained/.
rm -rf pretrained/fashion_mnist
$PY -m export.saved_model --model_dir="$OUT/attention" --export_base=pretrained/fashion_mnist --version=1 \
  --serving_base_path=/models/sagan
du -sh pretrained/fashion_mnist/1
