"""Plot FID (and conditional accuracy) against G step for one or more training runs.

    python scripts/plot_eval_history.py --out docs/figures/fid_vs_step.png \
        "attention 16x16=runs/fmnist_attn" "no attention=runs/fmnist_noattn"

Each argument is ``label=run_dir`` (or just ``run_dir``); the points come from the run's
``eval_history.jsonl``, which periodic evaluation (``--config.eval_every``) appends to. When a
resumed run evaluated a step twice, the last record wins. Needs matplotlib (in the ``dev`` extra).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

HISTORY_FILE = "eval_history.jsonl"  # sagan_tf.evaluation.periodic.HISTORY_FILE, without importing TF


def read_history(run_dir: str) -> dict[int, dict]:
    """{step: metrics} from ``<run_dir>/eval_history.jsonl`` (last record per step)."""
    path = os.path.join(run_dir, HISTORY_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: was the run trained with --config.eval_every > 0?")
    history = {}
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                history[int(record["step"])] = dict(record["metrics"])
            except (ValueError, KeyError, TypeError) as error:
                raise ValueError(f"{path}:{number} is not a history record ({error}): {line.strip()[:80]!r}")
    return dict(sorted(history.items()))


def metric_series(history: dict[int, dict], metric: str) -> tuple[list[int], list[float]]:
    """Steps and values of `metric` ("fid", "conditional_accuracy", ...) under whatever network measured it."""
    steps, values = [], []
    for step, metrics in history.items():
        found = [value for key, value in metrics.items() if key == metric or key.startswith(metric + "/")]
        if found:
            steps.append(step)
            values.append(found[0])
    return steps, values


def parse_run(argument: str) -> tuple[str, str]:
    label, sep, path = argument.partition("=")
    return (label, path) if sep else (os.path.basename(os.path.normpath(argument)), argument)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="label=run_dir or run_dir")
    parser.add_argument("--out", required=True, help="PNG to write")
    parser.add_argument("--title", default="Fashion-MNIST 32x32, EMA generator, 10k samples vs test set")
    args = parser.parse_args(argv)

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [parse_run(argument) for argument in args.runs]
    histories = []
    for label, path in runs:
        try:
            histories.append((label, read_history(path)))
        except (FileNotFoundError, ValueError) as error:
            parser.error(str(error))

    figure, (fid_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(10, 3.8))
    for label, history in histories:
        fid_axis.plot(*metric_series(history, "fid"), marker="o", markersize=3, label=label)
        accuracy_axis.plot(*metric_series(history, "conditional_accuracy"), marker="o", markersize=3, label=label)
    fid_axis.set(xlabel="G step", ylabel="FID (classifier features)", yscale="log")
    accuracy_axis.set(xlabel="G step", ylabel="conditional accuracy", ylim=(0, 1))
    for axis in (fid_axis, accuracy_axis):
        axis.grid(True, alpha=0.3)
        axis.legend()
    figure.suptitle(args.title)
    figure.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    figure.savefig(args.out, dpi=100)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
