"""The truncation trade-off: FID, KID, precision/recall, IS and conditional accuracy against the truncation
threshold, with the batch-norm statistics recomputed for each truncation and with the stored ones.

    python scripts/truncation_sweep.py --saved_model=pretrained/fashion_mnist/1 \
        --feature_network=classifier:pretrained/fashion_mnist_classifier \
        --reference_cache=runs/reference_stats --json=runs/truncation.json --plot=docs/figures/truncation.png
    python scripts/truncation_sweep.py --model_dir=runs/results/attention ...   # a run's EMA generator
    # two sweeps on one figure (nothing is measured): with and without the orthogonal regulariser
    python scripts/truncation_sweep.py --from_json "default=runs/attention.json" "g_ortho_reg=runs/ortho.json" \
        --statistics=recomputed --plot=docs/figures/truncation_ortho.png

Each cell is `runner.evaluate_generator` on --num_samples samples (labels uniform, seeded) against the
reference split of the generator's data set (the test set for Fashion-MNIST), as trainers.evaluate
scores. "recomputed" samples inside `standing_statistics.truncation_statistics`; "stored" with the
statistics the checkpoint or export holds (those of untruncated z). Prints a markdown table, writes
every cell to --json (atomically, after each cell: an interrupted sweep keeps what it measured) and
draws --plot (needs matplotlib, in the dev extra): FID, precision and recall against the threshold, one
colour per sweep, solid for recomputed statistics and dashed for stored ones. --from_json tabulates and
draws sweeps measured before (``label=path``, the --json of each), --statistics picking the cells shown.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

STATISTICS = ("recomputed", "stored")
PLOTTED = (("fid", "FID (classifier features)"), ("precision", "precision"), ("recall", "recall"))
COLUMNS = (("fid", "FID"), ("kid", "KID"), ("precision", "precision"), ("recall", "recall"), ("is", "IS"),
           ("conditional_accuracy", "cond. acc."))


def parse_truncations(text: str) -> list[float | None]:
    from sagan_tf.sampling.noise import parse_truncations as parse
    try:
        return parse(text.split(","))
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"--truncations: {error}") from None


def parse_statistics(text: str) -> list[str]:
    chosen = [item.strip() for item in text.split(",") if item.strip()]
    bad = [item for item in chosen if item not in STATISTICS]
    if bad or not chosen:
        raise argparse.ArgumentTypeError(f"--statistics={text!r}: {', '.join(map(repr, bad)) or 'nothing'} is not "
                                         f"a comma list of {list(STATISTICS)}")
    return chosen


def cells(truncations, statistics):
    """(truncation, statistics) pairs to measure: without truncation the two are the same generator, once."""
    pairs = []
    for t in truncations:
        for mode in (statistics if t is not None else statistics[:1]):
            pairs.append((t, mode if t is not None else "stored"))
    return pairs


def value(metrics: dict, metric: str):
    found = [v for key, v in metrics.items() if key.split("/", 1)[0] == metric]
    return found[0] if found else None


def parse_sweep(text: str) -> tuple[str, list[dict]]:
    """``label=path`` (or just ``path``) of a --json written before -> (label, its records)."""
    label, _, path = text.rpartition("=")
    label = label or os.path.splitext(os.path.basename(path))[0]
    try:
        with open(path) as f:
            records = json.load(f)
    except (OSError, ValueError) as error:
        raise argparse.ArgumentTypeError(f"--from_json {text!r}: {error}") from None
    if not isinstance(records, list) or not all(isinstance(r, dict) and {"truncation", "statistics", "metrics"}
                                                <= r.keys() for r in records):
        raise argparse.ArgumentTypeError(f"--from_json {text!r}: {path} is not a list of this script's records")
    return label, records


def markdown_table(records, label: str | None = None) -> str:
    """One row per cell; with a label (several sweeps in one table) a first column names the sweep."""
    first = "| sweep " if label is not None else ""
    lines = [first + "| truncation | BN statistics | " + " | ".join(title for _, title in COLUMNS) + " |",
             ("|---" if label is not None else "") + "|---|---|" + "---:|" * len(COLUMNS)]
    for record in records:
        t = "none" if record["truncation"] is None else f"{record['truncation']:g}"
        cells_ = [f"{v:.4g}" if v is not None else "" for v in (value(record["metrics"], m) for m, _ in COLUMNS)]
        lines.append((f"| {label} " if label is not None else "") + f"| {t} | {record['statistics']} | "
                     + " | ".join(cells_) + " |")
    return "\n".join(lines)


def plot(series, out: str, title: str):
    """series: [(label, records)]. FID, precision and recall against the threshold (largest first), a
    colour per sweep, solid for recomputed and dashed for stored statistics; each sweep's untruncated
    cell is a thin horizontal line in its colour. Returns the figure (its axes hold the drawn data)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    thresholds = sorted({r["truncation"] for _, records in series for r in records if r["truncation"] is not None},
                        reverse=True)
    positions = {t: i for i, t in enumerate(thresholds)}
    figure, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for index, (label, records) in enumerate(series):
        colour = f"C{index % 10}"  # the colour cycle repeats after ten sweeps; none is dropped
        name = f"{label}, " if len(series) > 1 else ""
        for mode, style in zip(STATISTICS, ("-", "--")):
            rows = sorted((r for r in records if r["statistics"] == mode and r["truncation"] is not None),
                          key=lambda r: positions[r["truncation"]])
            if rows:
                for axis, (metric, _) in zip(axes, PLOTTED):
                    axis.plot([positions[r["truncation"]] for r in rows], [value(r["metrics"], metric) for r in rows],
                              "o" + style, color=colour, label=f"{name}BN statistics {mode}")
        for record in (r for r in records if r["truncation"] is None):
            for axis, (metric, _) in zip(axes, PLOTTED):
                axis.axhline(value(record["metrics"], metric), color=colour, lw=0.8, alpha=0.6,
                             label=f"{name}no truncation")
    for axis, (metric, ylabel) in zip(axes, PLOTTED):
        axis.set_xticks(range(len(thresholds)), [f"{t:g}" for t in thresholds])
        axis.set_xlabel("truncation threshold t (z truncated to [-t, t])")
        axis.set_ylabel(ylabel)
        axis.grid(True, alpha=0.3)
    axes[0].set_yscale("log")
    plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}" if f"{v:g}"[0] in "125" else "")  # not 2×10⁰
    axes[0].yaxis.set_major_formatter(plain)
    axes[0].yaxis.set_minor_formatter(plain)
    axes[0].legend(fontsize=7)
    figure.suptitle(title)
    figure.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    figure.savefig(out, dpi=100)
    return figure


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model_dir", help="training run: its latest EMA checkpoint")
    source.add_argument("--saved_model", help="an export of export.saved_model (its generator is rebuilt)")
    source.add_argument("--from_json", nargs="+", type=parse_sweep, metavar="LABEL=JSON",
                        help="sweeps measured before (their --json): tabulate and --plot them, measure nothing")
    parser.add_argument("--preset", default="fashion_mnist",
                        help="configs/<preset>.py names the real data set of a --saved_model (default fashion_mnist)")
    parser.add_argument("--feature_network", help="classifier:<dir>, savedmodel:<dir> or ... (needed to measure)")
    parser.add_argument("--reference_cache", default=None, help="cache of the real statistics (directory or .npz)")
    parser.add_argument("--truncations", type=parse_truncations, default=parse_truncations("none,2,1.5,1,0.75,0.5"))
    parser.add_argument("--statistics", type=parse_statistics, default=list(STATISTICS))
    parser.add_argument("--num_samples", type=int, default=10000)
    parser.add_argument("--batch_size", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="every cell's record (a JSON list)")
    parser.add_argument("--plot", default=None, help="PNG of FID and precision/recall against the threshold")
    parser.add_argument("--title", default="Fashion-MNIST 32x32, EMA generator, 10k samples vs test set")
    args = parser.parse_args(argv)
    if args.from_json:
        return show(args.from_json, args.statistics, args.plot, args.title)
    if not args.feature_network:
        parser.error("--feature_network is required to measure a sweep")
    if args.num_samples < 2:
        parser.error(f"--num_samples={args.num_samples} must be >= 2")
    for path, flag in ((args.model_dir, "--model_dir"), (args.saved_model, "--saved_model")):
        if path is not None and not os.path.isdir(path):
            parser.error(f"{flag}={path} is not a directory")

    import configs
    from sagan_tf import sampling
    from sagan_tf.data import real_images
    from sagan_tf.evaluation import load_feature_network, runner
    from sagan_tf.run import files, run_dir
    from sagan_tf.sampling import exported

    try:
        if args.model_dir:
            restored = run_dir.load_ema_generator(args.model_dir)
            generator, config, source = restored.generator, restored.config, restored.checkpoint
        else:
            generator = exported.keras_generator(args.saved_model)
            config = configs.load(args.preset)
            source = args.saved_model
    except ValueError as error:  # RunDirError, NotAnExportError, an unknown preset
        parser.error(str(error))
    network = load_feature_network(args.feature_network)
    cache = args.reference_cache or run_dir.reference_cache(args.model_dir or os.path.dirname(args.saved_model))
    reference, reference_name, _ = runner.run_reference(config, network, args.model_dir or "", args.num_samples,
                                                        args.num_samples, args.batch_size, cache=cache)
    dataset_name = real_images.canonical_dataset_name(config.dataset)
    print(f"{source}: {args.num_samples} samples per cell vs {reference_name}, feature network {network.name}")

    records = []
    for t, mode in cells(args.truncations, args.statistics):
        start = time.time()
        sampled = generator if mode == "recomputed" else sampling.as_sample_fn(generator)
        metrics = runner.evaluate_generator(sampled, network, reference, args.num_samples, args.batch_size,
                                            int(generator.spec["num_classes"]), z_dim=int(generator.spec["z_dim"]),
                                            truncation=t, seed=args.seed, dataset_name=dataset_name)
        records.append({"truncation": t, "statistics": mode, "metrics": metrics, "source": source,
                        "num_samples": args.num_samples, "seed": args.seed, "reference": reference_name,
                        "seconds": round(time.time() - start, 1)})
        print(f"truncation {'none' if t is None else f'{t:g}'}, {mode}: FID {value(metrics, 'fid'):.4g} "
              f"({records[-1]['seconds']:.0f} s)", flush=True)
        if args.json:
            files.atomic_write_json(args.json, records, indent=2)
    print(markdown_table(records))
    if args.plot:
        plot([("", records)], args.plot, args.title)
        print(f"wrote {args.plot}")
    return 0


def show(series, statistics, out: str | None, title: str) -> int:
    """--from_json: the cells of each sweep with the chosen statistics (and its untruncated cell), one table
    and, with --plot, one figure."""
    chosen = [(label, [r for r in records if r["truncation"] is None or r["statistics"] in statistics])
              for label, records in series]
    lines = markdown_table([], label="").splitlines()  # the header
    for label, records in chosen:
        lines += markdown_table(records, label=label).splitlines()[2:]
    print("\n".join(lines))
    if out:
        plot(chosen, out, title)
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
