#!/usr/bin/env bash
# Sets up sagan-tf on a fresh Debian machine and runs the embedded default:
# a short Fashion-MNIST run (checkpoints, TensorBoard events, sample sheets), then a SavedModel export.
#   bash scripts/quickstart.sh [extra trainer flags, e.g. --train_steps=2000]
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq dataset-fashion-mnist
fi
[ -d .venv ] || python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e ".[dev]"

RUN=runs/quickstart
# The recipe study's best short recipe (docs/results.md, benchmarks/recipe_study.py: ttur_2x_ema995):
# twice the paper's TTUR rates (G 2e-4, D 8e-4) and an EMA over the last ~200 steps (decay 0.995 from
# step 600), where the preset's EMA (0.999 from step 1,000) would still be mostly the step-1,000 weights.
.venv/bin/python -m trainers.fashion_mnist --config=configs/fashion_mnist_ttur2x.py --model_dir="$RUN" \
  --train_steps=1200 --config.ema_decay=0.995 --config.ema_start=600 "$@"
.venv/bin/python -m export.saved_model --model_dir="$RUN" --export_base="$RUN/export"
echo
echo "Samples:     $(ls -1 "$RUN"/samples/*.png | tail -n 1)"
echo "SavedModel:  $(ls -d "$RUN"/export/*/ | tail -n 1)"
echo "TensorBoard: .venv/bin/tensorboard --logdir $RUN"
echo
echo "The shipped generator, the same learning rates trained for 8,000 steps: pretrained/fashion_mnist/2."
echo "A sheet from it, one row per class:"
echo "  .venv/bin/python -m trainers.sample --saved_model=pretrained/fashion_mnist/2 --out=pretrained_sheet.png"
