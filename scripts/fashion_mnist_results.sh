#!/usr/bin/env bash
# Reproduces docs/results.md with the committed classifier (pretrained/fashion_mnist_classifier, whose
# features every score on that page uses): the seed table (four attention placements and the default
# with the orthogonal regulariser, × seeds 0, 1, 2), the truncation sweeps of seed 0 with and without the
# regulariser, the table, the t-tests, the figures, the sample sheets and the pretrained export.
#   [SEEDS="0 1 2"] [RECORDS=docs/records/seeds] [FIGURES=docs/figures] \
#   [EXPORT_RUN=attention_s0 [PRETRAINED=pretrained/fashion_mnist]] \
#     bash scripts/fashion_mnist_results.sh [OUT=runs/seeds] [STEPS=4000] [extra trainer flags...]
# EXPORT_RUN (unset: stage 4 is skipped) names the run whose sample sheets, interpolation, attention map
# and truncation sheet are drawn and which replaces the committed export: the committed generator is an
# earlier run's that still has the best FID (docs/results.md), so replacing it is a choice to make.
# The runs are scripts/fashion_mnist_seeds.sh's (one pinned to each core, float32): 15 runs of about an
# hour each on a Zen 5 EPYC core, so about 7.5 h on 2 cores. Rerun the same command after an
# interruption: a finished run is "already at step 4000", a stopped one resumes from its checkpoint, and
# a truncation sweep already written is not measured again.
# RECORDS=dir keeps each finished run's scores and config, and each sweep's truncation.json, in dir/<run>/.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/seeds}
STEPS=${2:-4000}
shift $(( $# > 2 ? 2 : $# ))
EXTRA=("$@")
PY=${PYTHON:-python}
read -r -a SEED_LIST <<< "${SEEDS:-0 1 2}"
EXPORT_RUN=${EXPORT_RUN:-}
CLS=pretrained/fashion_mnist_classifier
FIG=${FIGURES:-docs/figures}
EXPORT=${PRETRAINED:-pretrained/fashion_mnist}
PLACEMENTS="attention no_attention g32_d16 g32"
mkdir -p "$OUT" "$FIG"

# A SIGTERM (or ^C) reaches the running stage: the seeds script checkpoints and stops its trainers, a
# sweep stops (the cells it measured stay in its .tmp.json); no later stage starts.
children=
trap '[[ -z $children ]] || { kill -TERM $children 2>/dev/null; wait; }; exit 143' TERM INT

# 1. The runs: every placement and the default with the orthogonal regulariser, for each seed.
for seed in "${SEED_LIST[@]}"; do
  ROWS="$PLACEMENTS ortho" bash scripts/fashion_mnist_seeds.sh "$seed" "$OUT" "$STEPS" "${EXTRA[@]}" & children=$!
  wait "$children"
done

# 2. The truncation trade-off of the default (seed 0) with and without the regulariser, one core each.
sweep() {  # core, run: its sweep to OUT/run/truncation.json, unless that is there already
  local core=$1 run=$2 sweeper
  [[ ! -f $OUT/$run/truncation.json ]] || return 0
  taskset -c "$core" $PY scripts/truncation_sweep.py --model_dir="$OUT/$run" \
    --feature_network=classifier:$CLS --reference_cache="$OUT/reference_stats" \
    --truncations=none,2,1.5,1,0.75,0.5,0.25 --json="$OUT/$run/truncation.tmp.json" > "$OUT/$run.truncation.log" 2>&1 &
  sweeper=$!
  trap 'kill -TERM "$sweeper" 2>/dev/null; wait "$sweeper"; exit 143' TERM
  wait "$sweeper"
  mv "$OUT/$run/truncation.tmp.json" "$OUT/$run/truncation.json"
  [[ -z ${RECORDS:-} ]] || { mkdir -p "$RECORDS/$run" && cp "$OUT/$run/truncation.json" "$RECORDS/$run/"; }
}
sweep 0 attention_s0 & children=$!
sweep 1 ortho_s0 & children="$children $!"
for pid in $children; do wait "$pid"; done
children=
both=("default=$OUT/attention_s0/truncation.json" "g_ortho_reg=1e-4=$OUT/ortho_s0/truncation.json")
$PY scripts/truncation_sweep.py --from_json "${both[@]}" --plot=$FIG/truncation_ortho.png \
  --title="Fashion-MNIST 32x32, seed 0 at 4,000 steps, with and without G's orthogonal regulariser"

# 3. The table over the seeds at step STEPS and the mean curves.
runs() {  # row -> OUT/row_s<seed> for every seed, comma-separated
  local seed list=()
  for seed in "${SEED_LIST[@]}"; do list+=("$OUT/${1}_s$seed"); done
  (IFS=,; echo "${list[*]}")
}
$PY scripts/plot_eval_history.py --table_step="$STEPS" --out=$FIG/fid_vs_step.png \
  "default (16² in G and D)=$(runs attention)" "no attention=$(runs no_attention)" \
  "32² in G, 16² in D=$(runs g32_d16)" "32² in G only=$(runs g32)" "default + g_ortho_reg=$(runs ortho)"
$PY scripts/plot_eval_history.py --table_step="$STEPS" --welch "default=$(runs attention)" \
  "no attention=$(runs no_attention)" "32² G, 16² D=$(runs g32_d16)" "32² G only=$(runs g32)" \
  "ortho=$(runs ortho)"

[[ -n $EXPORT_RUN ]] || { echo "EXPORT_RUN unset: the committed generator and its figures are kept"; exit 0; }

# 4. Version 1's figures, the real-vs-real reference (10k train images against the test set) and
#    version 1 of the pretrained EMA generator (float32 SavedModel) under pretrained/, replaced whole.
$PY -m trainers.evaluate --model_dir="$OUT/$EXPORT_RUN" --feature_network=classifier:"$CLS" \
  --reference_cache="$OUT/reference_stats" --num_samples=10000 --real_split=train --json="$OUT/real_train.json"
$PY -m trainers.sample --model_dir="$OUT/$EXPORT_RUN" --mode=sheet --columns=10 --out=$FIG/sample_sheet_v1.png
$PY -m trainers.sample --model_dir="$OUT/no_attention_${EXPORT_RUN##*_}" --mode=sheet --columns=10 \
  --out=$FIG/sample_sheet_no_attention.png
$PY -m trainers.sample --model_dir="$OUT/$EXPORT_RUN" --mode=interpolate_z --labels=0,5,7,9 --columns=10 \
  --interpolation=slerp --out=$FIG/interpolation.png
$PY -m trainers.sample --model_dir="$OUT/$EXPORT_RUN" --mode=attention --scale=6 --out=$FIG/attention.png
for statistics in truncation_statistics notruncation_statistics; do  # left recomputed, right stored
  $PY -m trainers.sample --model_dir="$OUT/$EXPORT_RUN" --mode=truncation --truncations=none,2,1,0.5,0.25 \
    --columns=10 --labels=0,5,7,9,2 --$statistics --out="$OUT/$statistics.png"
done
$PY - "$OUT/truncation_statistics.png" "$OUT/notruncation_statistics.png" $FIG/truncation_sheet.png <<'EOF'
import sys
from PIL import Image
left, right = (Image.open(path) for path in sys.argv[1:3])
sheet = Image.new(left.mode, (left.width + 16 + right.width, max(left.height, right.height)), "white")
sheet.paste(left, (0, 0))
sheet.paste(right, (left.width + 16, 0))
sheet.save(sys.argv[3])
EOF
# Version 1 only: the shipped version 2 (the recipe study's, docs/results.md) and models.config stay.
rm -rf "$EXPORT.tmp"
$PY -m export.saved_model --model_dir="$OUT/$EXPORT_RUN" --export_base="$EXPORT.tmp" --version=1 \
  --serving_base_path=/models/sagan
mkdir -p "$EXPORT" && rm -rf "$EXPORT/1" && mv "$EXPORT.tmp/1" "$EXPORT/1" && rm -rf "$EXPORT.tmp"
du -sh "$EXPORT/1"
