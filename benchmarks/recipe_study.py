"""Fashion-MNIST recipes against CPU cost: quality (FID, precision, recall, conditional accuracy) at points
along each run, beside the CPU-seconds its training took to get there.

    python benchmarks/recipe_study.py run [--recipes=base,ch32] [--out=runs/study] [--core=1] \
        [--records=docs/records/study]
    python benchmarks/recipe_study.py table [--records=docs/records/study]
    python benchmarks/recipe_study.py list

`run` trains each recipe (`python -m trainers.fashion_mnist`, pinned to --core with taskset) to each of
its evaluation points in turn, and after each point scores the EMA generator as docs/results.md does
(`python -m trainers.evaluate`: 10,000 samples, labels uniform, no truncation, against the 10,000 test
images, features of the committed classifier). Each point appends one line to
``<records>/<recipe>.jsonl``: the step, the CPU-seconds (user + system) of the training processes up
to it (evaluations excluded; each segment includes one trainer start-up, ≈ 20 CPU-s), the machine, the
load average, and the metrics. Interrupted, it resumes: points already recorded are skipped, and the
trainer continues from its latest checkpoint (resume is exact, so a run in segments is the run in one
go). `table` prints every recorded point, then each recipe's FID within CPU-hour budgets: quality per
cost, the figure a short recipe (the quickstart's) is picked by.

Precision is the preset's `auto` (bfloat16 where the CPU runs it faster); the run's config.json records
what it resolved to, and a resume keeps it, so a recipe's points are comparable across sessions, and
the record's `precision` field says which.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import time

try:
    from benchmarks.common import ROOT, format_table, machine_info
except ImportError:  # run as a script from benchmarks/
    from common import ROOT, format_table, machine_info

CLASSIFIER = os.path.join("pretrained", "fashion_mnist_classifier")
METRICS = ("fid", "precision", "recall", "conditional_accuracy")
NETWORK = "fashion_mnist_classifier"

# name → (trainer flags beyond the preset, the evaluation points in G steps). The preset is the default
# recipe: ch 16, batch 64, TTUR 1e-4 / 4e-4, n_dis 1, EMA 0.999 from step 1000, attention at 16².
RECIPES = {
    "base": ((), (1000, 2000, 4000, 8000, 12000, 16000, 20000)),
    "ch32": (("--config.ch=32",), (1000, 2000, 4000, 8000, 12000)),
    "ch48": (("--config.ch=48",), (1000, 2000, 4000, 8000)),
    "batch128": (("--config.batch_size=128",), (1000, 2000, 4000, 8000, 12000)),
    "ttur_2x": (("--config.g_lr=2e-4", "--config.d_lr=8e-4"), (1000, 2000, 4000, 8000, 12000, 16000, 20000)),
    # The quickstart's length (1,200 steps): an EMA of the last ≈ 200 steps instead of one that still
    # weighs the step-1,000 weights 0.82 at step 1,200 (decay 0.999 from step 1,000).
    "ttur_2x_ema995": (("--config.g_lr=2e-4", "--config.d_lr=8e-4", "--config.ema_decay=0.995",
                        "--config.ema_start=600"), (1200, 2000)),
    "n_dis2": (("--config.n_dis=2",), (1000, 2000, 4000, 8000)),
    "ema_9995": (("--config.ema_decay=0.9995", "--config.ema_start=2000"), (4000, 8000, 12000)),
    "ema_early": (("--config.ema_start=250",), (1000, 2000, 4000)),
    "diffaug": (("--config.augment=translation,cutout",), (1000, 2000, 4000, 8000, 12000, 16000, 20000)),
}


def record_file(records, recipe):
    return os.path.join(records, f"{recipe}.jsonl")


def read_points(records, recipe):
    path = record_file(records, recipe)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def append_point(records, recipe, point):
    os.makedirs(records, exist_ok=True)
    with open(record_file(records, recipe), "a") as f:
        f.write(json.dumps(point) + "\n")
        f.flush()
        os.fsync(f.fileno())


def children_cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Stopped(Exception):
    """A SIGTERM / SIGINT reached the study: its trainer was stopped (it checkpoints first)."""


def run_pinned(command, core, log, on_cpu=None):
    """Runs `command` (pinned to `core` when given) with its output appended to `log`; returns the
    CPU-seconds it used. A SIGTERM or SIGINT to the study is passed on to it; `on_cpu(seconds)` is then
    called with what it used before Stopped is raised. Raises RuntimeError on failure, naming the log."""
    if core is not None:
        command = ["taskset", "-c", str(core), *command]
    before = children_cpu_seconds()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
    stopped = []
    with open(log, "a") as out:
        out.write(f"\n$ {' '.join(command)}\n")
        out.flush()
        child = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env)

        def stop(signum, frame):
            stopped.append(signum)
            child.send_signal(signal.SIGTERM)

        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            status = child.wait()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    used = children_cpu_seconds() - before
    if stopped:
        if on_cpu:
            on_cpu(used)
        raise Stopped(f"stopped by signal {stopped[0]}; {command[-1]!r} checkpointed and exited with {status}")
    if status:
        raise RuntimeError(f"{' '.join(command)} exited with {status}; see {log}")
    return used


def pending_file(model_dir):
    """CPU-seconds a run spent in segments that a signal cut short, not yet in a recorded point."""
    return os.path.join(model_dir, "study_pending_cpu.json")


def read_pending(model_dir):
    try:
        with open(pending_file(model_dir)) as f:
            return float(json.load(f)["seconds"])
    except FileNotFoundError:
        return 0.0


def write_pending(model_dir, seconds):
    os.makedirs(model_dir, exist_ok=True)
    with open(pending_file(model_dir) + ".tmp", "w") as f:
        json.dump({"seconds": seconds}, f)
    os.replace(pending_file(model_dir) + ".tmp", pending_file(model_dir))


def run_recipe(recipe, out, records, core, python, max_step=None):
    """Trains and scores `recipe` up to each of its points (up to `max_step`) not yet recorded."""
    flags, points = RECIPES[recipe]
    points = [step for step in points if max_step is None or step <= max_step]
    model_dir = os.path.join(out, recipe)
    os.makedirs(out, exist_ok=True)
    log = os.path.join(out, f"{recipe}.log")
    done = read_points(records, recipe)
    cpu = done[-1]["train_cpu_seconds"] if done else 0.0
    for step in points:
        if any(point["step"] == step for point in done):
            continue
        train = [python, "-m", "trainers.fashion_mnist", f"--model_dir={model_dir}", f"--train_steps={step}", *flags]
        pending = read_pending(model_dir)
        cpu += pending + run_pinned(train, core, log, on_cpu=lambda used: write_pending(model_dir, pending + used))
        evaluation = os.path.join(model_dir, f"study_eval_{step}.json")
        run_pinned([python, "-m", "trainers.evaluate", f"--model_dir={model_dir}", f"--json={evaluation}",
                    f"--feature_network=classifier:{CLASSIFIER}",
                    f"--reference_cache={os.path.join(out, 'reference_stats')}"], core, log)
        with open(evaluation) as f:
            scores = json.load(f)
        with open(os.path.join(model_dir, "config.json")) as f:
            precision = json.load(f).get("mixed_precision")
        point = {"recipe": recipe, "flags": list(flags), "step": scores["step"], "train_cpu_seconds": round(cpu, 1),
                 "precision": precision, "machine": machine_info()["cpu"], "load": os.getloadavg()[0],
                 "date": time.strftime("%Y-%m-%d"),
                 "metrics": {name: scores["metrics"][f"{name}/{NETWORK}"] for name in METRICS}}
        append_point(records, recipe, point)
        write_pending(model_dir, 0.0)
        print(f"{recipe} step {step}: {point['metrics']} after {cpu / 3600:.2f} CPU-h", flush=True)


BUDGETS_CPU_HOURS = (0.25, 0.5, 1, 2, 4, 8, 16)


def table_rows(records):
    rows = []
    for recipe in RECIPES:
        for point in read_points(records, recipe):
            metrics = point["metrics"]
            rows.append({"recipe": recipe, "step": point["step"], "CPU-h": point["train_cpu_seconds"] / 3600,
                         "FID": metrics["fid"], "precision": metrics["precision"], "recall": metrics["recall"],
                         "accuracy": metrics["conditional_accuracy"], "dtype": point["precision"]})
    return rows


def budget_rows(rows):
    """For each recipe, the FID of its last point within each CPU-hour budget: quality per cost, the
    column a short recipe (the quickstart's) is picked from. A budget beyond the one its run ended in is
    left blank (the run was not followed that far), and so are the budgets no recipe reached."""
    recipes = list(dict.fromkeys(row["recipe"] for row in rows))
    longest = max((row["CPU-h"] for row in rows), default=0.0)
    budgets = [b for i, b in enumerate(BUDGETS_CPU_HOURS) if i == 0 or BUDGETS_CPU_HOURS[i - 1] < longest]
    table = []
    for recipe in recipes:
        points = [row for row in rows if row["recipe"] == recipe]
        reached = max(row["CPU-h"] for row in points)
        cells = {"recipe": recipe}
        for i, budget in enumerate(budgets):
            within = [row for row in points if row["CPU-h"] <= budget]
            followed = i == 0 or budgets[i - 1] < reached
            cells[f"FID ≤{budget} CPU-h"] = within[-1]["FID"] if within and followed else ""
        table.append(cells)
    return table


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("run", "table", "list"))
    parser.add_argument("--recipes", default=",".join(RECIPES), help="comma-separated recipe names")
    parser.add_argument("--out", default=os.path.join(ROOT, "runs", "study"), help="run directories")
    parser.add_argument("--records", default=os.path.join(ROOT, "docs", "records", "study"),
                        help="one <recipe>.jsonl of evaluation points per recipe (committed)")
    parser.add_argument("--core", type=int, default=None, help="CPU core to pin the trainer to")
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--max_step", type=int, default=None,
                        help="only the points up to this step (a pass over every recipe's early points first)")
    args = parser.parse_args(argv)
    recipes = [name.strip() for name in args.recipes.split(",") if name.strip()]
    unknown = [name for name in recipes if name not in RECIPES]
    if unknown:
        parser.error(f"--recipes: unknown recipe(s) {unknown}; known: {list(RECIPES)}")
    if args.action == "list":
        for name in recipes:
            flags, points = RECIPES[name]
            print(f"{name:10s} {' '.join(flags) or '(the preset)'}  points {list(points)}")
    elif args.action == "run":
        try:
            for name in recipes:
                run_recipe(name, args.out, args.records, args.core, args.python, args.max_step)
        except Stopped as stopped:
            print(f"recipe_study: {stopped}; rerun the same command to resume", file=sys.stderr)
            return 143
    else:
        rows = table_rows(args.records)
        print(format_table(rows, title=f"Recipe study: quality against training CPU time ({args.records})"))
        print()
        print(format_table(budget_rows(rows), title="FID reached within a CPU budget"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
