"""Shared helpers of the benchmarks: interleaved timing, medians, MFU, tables and --json output.

The machine these run on is shared and noisy, so every benchmark times its variants side by side:
one round times one step of every variant (and, for MFU, one peak matmul of each precision), and
rounds repeat. Reported numbers are medians over rounds, after warm-up steps that are not timed.
Ratios between variants of one run are meaningful; absolute numbers drift with the load.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

PRESETS = ("fashion_mnist", "cifar10", "imagenet64", "imagenet128")


def load_preset(name):
    """configs/<name>.py → its ConfigDict."""
    import importlib.util
    if name not in PRESETS:
        raise ValueError(f"--config={name!r}; allowed: {list(PRESETS)}")
    spec = importlib.util.spec_from_file_location(f"preset_{name}", os.path.join(ROOT, "configs", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def median(values):
    values = list(values)
    if not values:
        raise ValueError("median of no values")
    return float(statistics.median(values))


def time_call(fn, sync=None):
    """Seconds one call of `fn` takes; `sync(result)` (e.g. `.numpy()`) waits for asynchronous work."""
    start = time.perf_counter()
    result = fn()
    if sync is not None:
        sync(result)
    return time.perf_counter() - start


def interleaved(fns, rounds, warmup=1, sync=None):
    """{name: [seconds per round]}: each round calls every fn once, in order, timed separately.

    `fns` is {name: zero-argument callable}. `warmup` untimed calls of each fn come first (tracing,
    XLA compilation, oneDNN primitive caches, allocator growth).
    """
    for fn in fns.values():
        for _ in range(warmup):
            result = fn()
            if sync is not None:
                sync(result)
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            times[name].append(time_call(fn, sync))
    return times


def mfu(flops_per_step, seconds_per_step, peak_flops_per_second):
    """Model FLOP utilisation: achieved FLOP/s over the measured peak FLOP/s of the same precision."""
    if seconds_per_step <= 0 or peak_flops_per_second <= 0:
        raise ValueError("step time and peak must be positive")
    return flops_per_step / seconds_per_step / peak_flops_per_second


def format_value(value):
    if isinstance(value, float):
        if value == 0:
            return "0"
        magnitude = abs(value)
        if magnitude >= 100:
            return f"{value:.0f}"
        if magnitude >= 10:
            return f"{value:.1f}"
        if magnitude >= 0.01:
            return f"{value:.3f}"
        return f"{value:.2e}"
    return str(value)


def format_table(rows, columns=None, title=None):
    """A Markdown table of `rows` (list of dicts); `columns` picks and orders the keys."""
    rows = list(rows)
    if columns is None:
        columns = []
        for row in rows:
            columns.extend(key for key in row if key not in columns)
    cells = [[format_value(row.get(column, "")) for column in columns] for row in rows]
    widths = [max([len(column)] + [len(line[i]) for line in cells]) for i, column in enumerate(columns)]
    lines = []
    if title:
        lines.append(f"### {title}")
        lines.append("")
    lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths)) + " |")
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for line in cells:
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(line, widths)) + " |")
    return "\n".join(lines)


# The CPU features that decide which precision is fast (docs/performance.md, machine classes).
ISA_FLAGS = ("amx_bf16", "amx_tile", "avx512_bf16", "avx512f", "avx2")


def cpu_description(cpuinfo: str) -> tuple[str, str]:
    """(model name, the ISA_FLAGS present) of a /proc/cpuinfo text: a model name alone ("AMD EPYC",
    "Intel(R) Xeon(R) Processor") does not tell the machine classes apart."""
    name, flags = "unknown", set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and name == "unknown":
            name = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = set(value.split())
    return name, " ".join(flag for flag in ISA_FLAGS if flag in flags)


def machine_info():
    """CPU model name, its ISA flags (ISA_FLAGS) and core count (Linux), and the TF / Keras versions if
    importable; "cpu" is the model name followed by the flags in brackets."""
    info = {"cpu": "unknown", "cpus": os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as f:
            name, isa = cpu_description(f.read())
        info.update(cpu=f"{name} [{isa}]" if isa else name, isa=isa)
    except OSError:
        pass
    for module in ("tensorflow", "keras"):
        if module in sys.modules:
            info[module] = sys.modules[module].__version__
    return info


def add_common_args(parser: argparse.ArgumentParser):
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of tables")
    return parser


def emit(args, result, tables):
    """Prints `result` as JSON (--json) or `tables` [(title, rows, columns)] as Markdown."""
    if getattr(args, "json", False):
        print(json.dumps(result, indent=2, default=float))
        return
    for title, rows, columns in tables:
        print(format_table(rows, columns, title))
        print()
    sys.stdout.flush()
