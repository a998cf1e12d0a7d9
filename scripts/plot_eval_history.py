"""Plot FID (and conditional accuracy) against G step for one or more training runs, and tabulate
them over seeds.

    python scripts/plot_eval_history.py --out docs/figures/fid_vs_step.png \
        "attention 16x16=runs/fmnist_attn" "no attention=runs/fmnist_noattn"
    # three seeds per row: the plot shows mean ± standard deviation, the table is at step 4000
    python scripts/plot_eval_history.py --out fid.png --table_step=4000 \
        "default=runs/s0/attn,runs/s1/attn,runs/s2/attn" "no attention=runs/s0/none,runs/s1/none,runs/s2/none"

Each argument is ``label=run_dir[,run_dir...]`` (or just ``run_dir``); the points come from each run's
``eval_history.jsonl``, which periodic evaluation (``--config.eval_every``) appends to. When a
resumed run evaluated a step twice, the last record wins. Several runs under one label (seeds) are
drawn as their mean ± sample standard deviation at the steps every one of them evaluated, and
``--table_step`` prints a markdown table of mean ± standard deviation at that step (every run must
have evaluated it). ``--welch`` adds a second table: the first label against each of the others at that
step, each metric's difference of means and the two-sided p of Welch's t-test (unequal variances; needs
scipy; a label with one run is left out). Needs matplotlib (in the ``dev`` extra) for the plot;
``--out`` may be left out when only the tables are wanted.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys

HISTORY_FILE = "eval_history.jsonl"  # sagan_tf.evaluation.periodic.HISTORY_FILE, without importing TF
TABLE_METRICS = (("fid", "FID ↓"), ("kid", "KID ↓"), ("is", "IS ↑"), ("precision", "precision"),
                 ("recall", "recall"), ("conditional_accuracy", "conditional accuracy"))


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


def parse_run(argument: str) -> tuple[str, list[str]]:
    """(label, run directories) of ``label=dir[,dir...]``; a bare directory is its own label."""
    label, sep, paths = argument.partition("=")
    if not sep:
        return os.path.basename(os.path.normpath(argument)), [argument]
    return label, [path for path in paths.split(",") if path]


def seed_series(histories: list[dict[int, dict]], metric: str) -> tuple[list[int], list[float], list[float]]:
    """Steps every history evaluated `metric` at, with the mean and sample standard deviation (0 for one
    run) of the values there."""
    series = [dict(zip(*metric_series(history, metric))) for history in histories]
    steps = sorted(set.intersection(*(set(values) for values in series))) if series else []
    means, stds = [], []
    for step in steps:
        values = [values[step] for values in series]
        means.append(statistics.fmean(values))
        stds.append(statistics.stdev(values) if len(values) > 1 else 0.0)
    return steps, means, stds


def seed_table(groups: list[tuple[str, list[str], list[dict[int, dict]]]], step: int) -> str:
    """Markdown: one row per label, each metric as mean ± standard deviation over its runs at `step`."""
    lines = [f"| run (step {step}) | seeds | " + " | ".join(title for _, title in TABLE_METRICS) + " |",
             "|---|---:|" + "---:|" * len(TABLE_METRICS)]
    for label, paths, histories in groups:
        missing = [path for path, history in zip(paths, histories) if step not in history]
        if missing:
            raise ValueError(f"{label}: {', '.join(missing)} did not evaluate step {step}")
        cells = []
        for metric, _ in TABLE_METRICS:
            values = [found[0] for found in (metric_series({step: h[step]}, metric)[1] for h in histories) if found]
            if len(values) < len(histories):
                cells.append("")
                continue
            mean = statistics.fmean(values)
            std = statistics.stdev(values) if len(values) > 1 else math.nan
            digits = 3 if abs(mean) < 10 else 1
            cells.append(f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if len(values) > 1 else ""))
        lines.append(f"| {label} | {len(histories)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def step_values(label: str, histories: list[dict[int, dict]], step: int, metric: str) -> list[float]:
    """`metric` at `step` in every one of `histories` (a ValueError names the label if one lacks it)."""
    values = [found[0] for found in (metric_series({step: h[step]}, metric)[1] for h in histories if step in h)
              if found]
    if len(values) < len(histories):
        raise ValueError(f"{label}: not every run evaluated {metric} at step {step}")
    return values


def welch_table(groups: list[tuple[str, list[str], list[dict[int, dict]]]], step: int) -> str:
    """Markdown: the first group against each other one at `step`, per metric: mean(first) − mean(other)
    and the two-sided p of Welch's t-test (scipy.stats.ttest_ind, equal_var=False). Groups of one run
    have no variance to test and are left out."""
    from scipy import stats

    (base, _, base_histories), others = groups[0], [group for group in groups[1:] if len(group[2]) > 1]
    if len(base_histories) < 2 or not others:
        raise ValueError(f"Welch's t-test needs two runs of each: {base} has {len(base_histories)}, "
                         "and another label needs two as well")
    header = "| metric | " + " | ".join(f"{base} − {label} | p" for label, _, _ in others) + " |"
    lines = [header, "|---|" + "---:|---:|" * len(others)]
    for metric, title in TABLE_METRICS:
        base_values = step_values(base, base_histories, step, metric)
        cells = []
        for label, _, histories in others:
            values = step_values(label, histories, step, metric)
            difference = statistics.fmean(base_values) - statistics.fmean(values)
            p = stats.ttest_ind(base_values, values, equal_var=False).pvalue
            digits = 3 if abs(statistics.fmean(base_values)) < 1 else 2
            cells.append(f"{difference:+.{digits}f} | {p:.2f}".replace("-", "−"))
        lines.append(f"| {title.rstrip(' ↓↑')} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(groups: list[tuple[str, list[str], list[dict[int, dict]]]], title: str):
    """The figure: FID (log axis labelled 1, 2, 5, 10, ... in plain numbers) and conditional accuracy
    against G step, one line per label (its seeds' mean, with a ± std band when there are several)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    legend_rows = math.ceil(len(groups) / 2)  # one legend under both panels, where it hides no line
    figure, (fid_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(10, 3.8 + 0.25 * legend_rows))
    for label, _, histories in groups:
        name = label if len(histories) == 1 else f"{label} ({len(histories)} seeds, mean ± std)"
        for axis, metric in ((fid_axis, "fid"), (accuracy_axis, "conditional_accuracy")):
            steps, means, stds = seed_series(histories, metric)
            line, = axis.plot(steps, means, marker="o", markersize=3, label=name)
            if len(histories) > 1:
                axis.fill_between(steps, [m - s for m, s in zip(means, stds)], [m + s for m, s in zip(means, stds)],
                                  color=line.get_color(), alpha=0.2)
    fid_axis.set(xlabel="G step", ylabel="FID (classifier features)", yscale="log")
    # FID here spans about 1.5 to 30: matplotlib's default log labels would show "10^1" alone.
    fid_axis.yaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1, 2, 5)))
    fid_axis.yaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
    fid_axis.yaxis.set_minor_formatter(ticker.NullFormatter())
    accuracy_axis.set(xlabel="G step", ylabel="conditional accuracy", ylim=(0, 1))
    for axis in (fid_axis, accuracy_axis):
        axis.grid(True, alpha=0.3)
    figure.legend(*fid_axis.get_legend_handles_labels(), loc="lower center", ncol=2, frameon=False)
    figure.suptitle(title)
    figure.tight_layout(rect=(0, 0.25 * legend_rows / figure.get_figheight() + 0.02, 1, 1))
    return figure


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="label=run_dir[,run_dir...] or run_dir")
    parser.add_argument("--out", default=None, help="PNG to write")
    parser.add_argument("--table_step", type=int, default=None, help="print the mean ± std table at this step")
    parser.add_argument("--welch", action="store_true",
                        help="with --table_step: Welch's t-test of the first label against each other label")
    parser.add_argument("--title", default="Fashion-MNIST 32x32, EMA generator, 10k samples vs test set")
    args = parser.parse_args(argv)
    if args.out is None and args.table_step is None:
        parser.error("nothing to do: pass --out and/or --table_step")
    if args.welch and args.table_step is None:
        parser.error("--welch needs --table_step (the step the runs are compared at)")

    groups = []
    for label, paths in (parse_run(argument) for argument in args.runs):
        if not paths:
            parser.error(f"{label!r} names no run directory")
        try:
            groups.append((label, paths, [read_history(path) for path in paths]))
        except (FileNotFoundError, ValueError) as error:
            parser.error(str(error))
    if args.table_step is not None:
        try:
            print(seed_table(groups, args.table_step))
            if args.welch:
                print()
                print(welch_table(groups, args.table_step))
        except ValueError as error:
            parser.error(str(error))
    if args.out is None:
        return 0

    figure = plot(groups, args.title)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    figure.savefig(args.out, dpi=100)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
