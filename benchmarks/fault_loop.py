"""A fault loop of the trainer: a Fashion-MNIST run killed again and again, then compared with one that was not.

    python benchmarks/fault_loop.py [--minutes=30] [--min_interval=120] [--max_interval=300] [--kills=N]
        [--seed=0] [--work_dir=DIR] [--cpus=1] [--checkpoint_every=50] [--sample_every=25] [--eval_every=100]
        [--eval_samples=1000] [--final_steps=N] [--trainer_flag=--config.ch=4 ...] [--json]

A supervisor runs ``python -m trainers.fashion_mnist`` (the preset, float32, with the cadences above,
``log_every=1`` and a periodic evaluation with the pretrained classifier) on ``<work_dir>/faulted`` and,
at seeded random moments every `--min_interval`–`--max_interval` seconds, sends it SIGTERM or SIGKILL and
starts it again, until `--minutes` have passed (or `--kills` kills were made). The kills are aimed, in a
seeded order: the first three at a checkpoint, a sample sheet and an evaluation being written, later ones
at one of those or at any moment. An aimed kill waits, from its moment on, for the write to begin
(inotify on the run directory: TF's ``ckpt-<N>_temp`` shards, the ``.tmp-*`` files of
``sagan_tf.run.files``' atomic writes of sheets, ``eval_history.jsonl`` and ``best/``) and sends the
signal at once; whether it landed inside the write (the temporary file is left behind) or just after
it is shown in the table. After the last kill the run is resumed once more to `--final_steps` past
its checkpoint and ends by itself at step N; then an uninterrupted run of the same command, same seed,
on the same CPUs, trains to N in ``<work_dir>/reference``.

Checks (printed with pass/FAIL; the exit status is 1 if one fails):

* the final checkpoints hold the same value in every variable (np.array_equal; only the checkpoint's
  own save counter may differ);
* no kill cost more than one checkpoint interval (last step logged by the killed process − the step
  the next one resumed from ≤ checkpoint_every), a SIGTERM cost nothing and exited 0, the step the run
  resumed from never went backwards, and every restart resumed from the latest checkpoint;
* every checkpoint left (``checkpoints/``, ``best/``) reads back whole (every tensor, checksums), every
  sample sheet left decodes, every events file reads back (its records' checksums; only a killed
  process's file may end in a record cut short), every ``eval_history.jsonl`` line parses;
* TensorBoard's own server (``python -m tensorboard.main`` on 127.0.0.1, all samples kept) shows
  every step's scalars exactly once, in order, with the uninterrupted run's values (``img_per_s``, a
  timing, only its steps);
* no trainer printed a traceback.

Everything stays on this machine; every wait is bounded. The figures of one run are in
docs/reliability.md; `tests/test_fault_loop.py` runs a short version (3 kills, a tiny config) among
the slow tests.
"""
from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import os
import random
import re
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

try:
    from benchmarks import common
except ImportError:  # run as a script from benchmarks/
    import common

FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
CLASSIFIER = os.path.join(common.ROOT, "pretrained", "fashion_mnist_classifier")
TARGETS = ("checkpoint", "sample sheet", "evaluation")
SIGNALS = {"SIGTERM": signal.SIGTERM, "SIGKILL": signal.SIGKILL}
STOP_TIMEOUT = 600.0  # a SIGTERMed trainer finishes its step, its evaluation and a checkpoint within this
TIMING_TAGS = ("img_per_s",)  # scalars whose values are timings: only their steps are compared


def parse_args(argv=None):
    parser = common.add_common_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--minutes", type=float, default=30.0, help="length of the kill phase")
    parser.add_argument("--min_interval", type=float, default=120.0, help="shortest time to the next kill (s)")
    parser.add_argument("--max_interval", type=float, default=300.0, help="longest time to the next kill (s)")
    parser.add_argument("--kills", type=int, default=None, help="stop after this many kills (default: by time)")
    parser.add_argument("--aim_timeout", type=float, default=None,
                        help="longest wait for an aimed kill's write (s; default: max_interval); then it kills anyway")
    parser.add_argument("--seed", type=int, default=0, help="seeds the kill plan (the trainer keeps its own seed)")
    parser.add_argument("--work_dir", default=None, help="where the two runs go (default: a new temporary directory)")
    parser.add_argument("--cpus", default=None,
                        help="CPU list every trainer is pinned to, e.g. 1 or 0-1 (default: this process's)")
    parser.add_argument("--data_dir", default=FASHION_MNIST)
    parser.add_argument("--checkpoint_every", type=int, default=50)
    parser.add_argument("--sample_every", type=int, default=25)
    parser.add_argument("--eval_every", type=int, default=100)
    parser.add_argument("--eval_samples", type=int, default=1000)
    parser.add_argument("--final_steps", type=int, default=None,
                        help="steps the last resume trains past its checkpoint (default: checkpoint_every)")
    parser.add_argument("--trainer_flag", action="append", default=[],
                        help="an extra flag for every trainer, e.g. --trainer_flag=--config.ch=4 (repeatable)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary work directory when all checks pass")
    parser.add_argument("--check_only", action="store_true",
                        help="only run the checks again on a finished --work_dir (its loop.json)")
    args = parser.parse_args(argv)
    if not 0 < args.min_interval <= args.max_interval:
        parser.error(f"need 0 < --min_interval <= --max_interval (got {args.min_interval}, {args.max_interval})")
    if args.kills is not None and args.kills < 1:
        parser.error("--kills must be >= 1")
    for name in ("checkpoint_every", "sample_every", "eval_every", "eval_samples"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1")
    args.aim_timeout = args.max_interval if args.aim_timeout is None else args.aim_timeout
    args.final_steps = args.checkpoint_every if args.final_steps is None else args.final_steps
    args.cpus = parse_cpus(args.cpus) if args.cpus else sorted(os.sched_getaffinity(0))
    if args.check_only and not args.work_dir:
        parser.error("--check_only needs the --work_dir of a finished loop")
    return args


def parse_cpus(text):
    """'1' / '0-1' / '0,2-3' → [cpus]."""
    cpus = set()
    for part in str(text).split(","):
        first, _, last = part.partition("-")
        cpus.update(range(int(first), int(last or first) + 1))
    return sorted(cpus)


# --- the plan -------------------------------------------------------------------------------------------

def kill_plan(seed, min_interval, max_interval):
    """Endless (seconds to wait, signal name, target) triples, a function of `seed` alone: the first three
    aim at each of TARGETS (in a seeded order) with both signals among them, later ones at any target or
    at any moment."""
    rng = random.Random(seed)
    targets = list(TARGETS)
    rng.shuffle(targets)
    signals = ["SIGKILL", "SIGTERM", rng.choice(("SIGKILL", "SIGTERM"))]
    rng.shuffle(signals)
    index = 0
    while True:
        target = targets[index] if index < len(targets) else rng.choice((*TARGETS, "any moment"))
        name = signals[index] if index < len(signals) else rng.choice(("SIGKILL", "SIGTERM"))
        yield rng.uniform(min_interval, max_interval), name, target
        index += 1


# --- what the trainer is writing ------------------------------------------------------------------------

def write_kind(directory, name):
    """Which write a new entry `name` in `directory` (relative to model_dir: '', 'samples', ...) belongs to,
    or None for a finished file: temporary names of checkpoints (TF's ``ckpt-<N>_temp``, its index's
    ``checkpoint.tmp…``), of sheets and evaluation records (``.tmp-`` atomic writes)."""
    temporary = name.startswith(".tmp-") or "_temp" in name or name.startswith("checkpoint.tmp")
    if not temporary:
        return None
    if directory == "checkpoints":
        return "checkpoint"
    if directory == "samples":
        return "sample sheet"
    if directory in ("best", "reference_stats") or name.endswith(("eval_history.jsonl", "best.json")):
        return "evaluation"
    return "other"


WATCHED = ("", "checkpoints", "samples", "best", "reference_stats")


def writes_in_progress(model_dir):
    """{(directory, name): kind} of every temporary entry in the run directory now."""
    found = {}
    for directory in WATCHED:
        try:
            names = os.listdir(os.path.join(model_dir, directory))
        except OSError:
            continue
        for name in names:
            kind = write_kind(directory, name)
            if kind is not None:
                found[(directory, name)] = kind
    return found


class WriteWatcher:
    """Tells, within about a millisecond, that the trainer began a write of some kind: inotify IN_CREATE on
    the run directory's sub-directories (added as they appear), or listing them every millisecond where
    inotify is not available."""

    IN_CREATE, IN_MOVED_TO = 0x100, 0x80

    def __init__(self, model_dir):
        self.model_dir = model_dir
        self.watches = {}  # wd -> directory
        self.fd = None
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
            if fd >= 0:
                self.libc, self.fd = libc, fd
        except (OSError, AttributeError):
            self.fd = None

    def _add_watches(self):
        for directory in WATCHED:
            if directory in self.watches.values():
                continue
            path = os.path.join(self.model_dir, directory)
            if os.path.isdir(path):
                wd = self.libc.inotify_add_watch(self.fd, path.encode(), self.IN_CREATE | self.IN_MOVED_TO)
                if wd >= 0:
                    self.watches[wd] = directory

    def _events(self, timeout):
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return []
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return []
        events, offset = [], 0
        while offset + 16 <= len(data):
            wd, _, _, length = struct.unpack_from("iIII", data, offset)
            name = data[offset + 16:offset + 16 + length].split(b"\0", 1)[0].decode(errors="replace")
            events.append((self.watches.get(wd), name))
            offset += 16 + length
        return events

    def drain(self):
        if self.fd is not None:
            self._add_watches()
            while self._events(0):
                pass

    def wait_for(self, kind, deadline, alive):
        """The (directory, name) of the first new write of `kind` before `deadline` (monotonic), or None
        (also when `alive()` turns False)."""
        seen = set(writes_in_progress(self.model_dir))
        next_scan = 0.0
        while time.monotonic() < deadline and alive():
            if self.fd is not None:
                if time.monotonic() >= next_scan:  # directories created meanwhile
                    self._add_watches()
                    next_scan = time.monotonic() + 0.2
                for directory, name in self._events(min(0.2, max(deadline - time.monotonic(), 0))):
                    if directory is not None and write_kind(directory, name) == kind:
                        return directory, name
            else:
                for entry, found in writes_in_progress(self.model_dir).items():
                    if found == kind and entry not in seen:
                        return entry
                time.sleep(0.001)
        return None

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


# --- what the run left ----------------------------------------------------------------------------------

def records(path):
    """(complete record payloads, whether the file ends inside a record) of a TFRecord file, by its framing
    (length, length CRC, data, data CRC); the checksums are verified separately (`check_events_file`)."""
    payloads, cut = [], False
    with open(path, "rb") as f:
        while True:
            header = f.read(12)
            if not header:
                break
            if len(header) < 12:
                cut = True
                break
            (length,) = struct.unpack("<Q", header[:8])
            data, footer = f.read(length), f.read(4)
            if len(data) < length or len(footer) < 4:
                cut = True
                break
            payloads.append(data)
    return payloads, cut


EVENTS_NAME = re.compile(r"events\.out\.tfevents\.\d+\.(?P<host>.+)\.(?P<pid>\d+)\.\d+\.v2$")


def events_files(model_dir, pid=None):
    directory = os.path.join(model_dir, "train")
    names = sorted(os.listdir(directory)) if os.path.isdir(directory) else []
    return [os.path.join(directory, name) for name in names
            if EVENTS_NAME.match(name) and (pid is None or EVENTS_NAME.match(name).group("pid") == str(pid))]


def logged_steps(model_dir, pid=None):
    """The steps whose losses are in the events files (of process `pid` only, if given)."""
    from tensorboard.compat.proto import event_pb2  # protobuf only: no TensorFlow in the supervisor's loop

    steps = set()
    for path in events_files(model_dir, pid):
        for payload in records(path)[0]:
            event = event_pb2.Event.FromString(payload)
            if event.HasField("summary") and any(value.tag == "d_loss" for value in event.summary.value):
                steps.add(event.step)
    return steps


def checkpoint_step(model_dir):
    """The step of the latest checkpoint the `checkpoint` index names (0 if none)."""
    try:
        with open(os.path.join(model_dir, "checkpoints", "checkpoint")) as f:
            match = re.search(r'^model_checkpoint_path: "(?:.*/)?ckpt-(\d+)"', f.read(), re.M)
    except OSError:
        return 0
    return int(match.group(1)) if match else 0


# --- running trainers -----------------------------------------------------------------------------------

def trainer_command(args, model_dir, train_steps):
    return [sys.executable, "-m", "trainers.fashion_mnist", f"--model_dir={model_dir}", f"--data_dir={args.data_dir}",
            f"--train_steps={train_steps}", "--config.mixed_precision=float32", "--config.log_every=1",
            f"--config.checkpoint_every={args.checkpoint_every}", f"--config.sample_every={args.sample_every}",
            f"--config.eval_every={args.eval_every}", f"--config.eval_samples={args.eval_samples}",
            f"--config.eval_feature_network=classifier:{CLASSIFIER}", *args.trainer_flag]


class Trainer:
    """One trainer process, pinned to `cpus`, its output in `log`."""

    def __init__(self, command, cpus, log):
        self.log = log
        self.output = open(log, "w")
        env = dict(os.environ, PYTHONPATH=common.ROOT)
        self.process = subprocess.Popen(command, cwd=common.ROOT, env=env, stdout=self.output, stderr=subprocess.STDOUT,
                                        start_new_session=True, preexec_fn=lambda: os.sched_setaffinity(0, cpus))
        self.pid = self.process.pid

    def alive(self):
        return self.process.poll() is None

    def wait(self, timeout):
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return None
        finally:
            self.output.close()

    def text(self):
        with open(self.log, errors="replace") as f:
            return f.read()


def resumed_at(log_text):
    match = re.search(r"^(?:Resuming at|Starting from) step (\d+)", log_text, re.M)
    return int(match.group(1)) if match else None


def kill_phase(args, model_dir, logs, out=print):
    """The kills, until --minutes have passed or --kills were made; returns one record per kill. The
    trainer is restarted after every kill but the last (the final resume follows)."""
    plan = kill_plan(args.seed, args.min_interval, args.max_interval)
    watcher = WriteWatcher(model_dir)
    kills = []
    start = time.monotonic()
    trainer = Trainer(trainer_command(args, model_dir, 10 ** 9), args.cpus, os.path.join(logs, "segment-00.log"))
    try:
        while True:
            wait, name, target = next(plan)
            moment = time.monotonic() + wait
            while time.monotonic() < moment and trainer.alive():
                time.sleep(0.2)
            if not trainer.alive():
                kills.append({"kill": len(kills) + 1, "pid": trainer.pid, "log": trainer.log,
                              "problem": f"the trainer exited by itself (status {trainer.process.returncode})"})
                trainer.wait(1)
                break
            before = writes_in_progress(model_dir)
            landed = None
            if target != "any moment":
                watcher.drain()
                landed = watcher.wait_for(target, time.monotonic() + args.aim_timeout, trainer.alive)
            trainer.process.send_signal(SIGNALS[name])
            at = time.monotonic() - start
            during = {entry: kind for entry, kind in writes_in_progress(model_dir).items() if entry not in before}
            status = trainer.wait(STOP_TIMEOUT)
            left = {entry: kind for entry, kind in writes_in_progress(model_dir).items() if entry not in before}
            steps = logged_steps(model_dir, trainer.pid)
            previous = kills[-1]["resumed from"] if kills else 0
            resumed, last = checkpoint_step(model_dir), (max(steps) if steps else None)
            record = {"kill": len(kills) + 1, "time_s": round(at, 1), "signal": name, "aimed at": target,
                      "being written": describe_writes(target, landed, during, left, args.aim_timeout),
                      "last step logged": last if last is not None else "-", "resumed from": resumed,
                      "lost steps": max(last - resumed, 0) if last is not None else 0, "exit": status,
                      "previous": previous, "pid": trainer.pid, "log": trainer.log,
                      "left behind": sorted(f"{d}/{n}".lstrip("/") for d, n in left)}
            kills.append(record)
            out(f"kill {record['kill']} at {at:.0f} s: {name} aimed at {target}: {record['being written']}; "
                f"last step logged {record['last step logged']}, checkpoint {resumed}, exit {status}", flush=True)
            if time.monotonic() - start >= args.minutes * 60 or (args.kills is not None and len(kills) >= args.kills):
                break
            trainer = Trainer(trainer_command(args, model_dir, 10 ** 9), args.cpus,
                              os.path.join(logs, f"segment-{len(kills):02d}.log"))
            record["next log"] = trainer.log
    finally:
        if trainer.alive():
            trainer.process.kill()
            trainer.wait(60)
        watcher.close()
    return kills


def describe_writes(target, landed, during, left, aim_timeout):
    """What was being written when the signal went out, as far as the run directory tells."""
    if target != "any moment" and landed is None:
        what = f"no {target} write began within {aim_timeout:g} s: killed anyway"
    elif landed is not None:
        what = f"{target} ({'/'.join(part for part in landed if part)})"
    else:
        kinds = sorted(set(during.values()))
        what = ", ".join(kinds) if kinds else "no file (a step, or start-up)"
    if left:
        what += f"; cut mid-write ({len(left)} temporary file(s) left)"
    elif landed is not None:
        what += "; in flight at the signal, then completed" if during else "; completed as the signal arrived"
    return what


# --- checks ---------------------------------------------------------------------------------------------

def check_weights(faulted, reference, step):
    """(ok, detail): every variable of the two step-`step` checkpoints equal."""
    import numpy as np
    import tensorflow as tf

    a = tf.train.load_checkpoint(os.path.join(faulted, "checkpoints", f"ckpt-{step}"))
    b = tf.train.load_checkpoint(os.path.join(reference, "checkpoints", f"ckpt-{step}"))
    names_a, names_b = set(a.get_variable_to_shape_map()), set(b.get_variable_to_shape_map())
    compared = sorted(name for name in names_a & names_b if not name.startswith("save_counter"))
    differing = [name for name in compared if not np.array_equal(a.get_tensor(name), b.get_tensor(name))]
    if names_a ^ names_b:
        return False, f"variables in one checkpoint only: {sorted(names_a ^ names_b)[:5]}"
    if differing:
        worst = max(float(np.max(np.abs(np.asarray(a.get_tensor(n), np.float64) - np.asarray(b.get_tensor(n), np.float64))))
                    for n in differing)
        return False, f"{len(differing)} of {len(compared)} variables differ (max |Δ| {worst:.3g}): {differing[:5]}"
    return True, f"all {len(compared)} variables equal at step {step} (save_counter excluded)"


def check_kills(kills, checkpoint_every):
    problems = []
    for kill in kills:
        if "problem" in kill:
            problems.append(f"kill {kill['kill']}: {kill['problem']}")
            continue
        if kill["lost steps"] > checkpoint_every:
            problems.append(f"kill {kill['kill']} lost {kill['lost steps']} steps > checkpoint_every={checkpoint_every}")
        if kill["signal"] == "SIGTERM" and (kill["lost steps"] or kill["exit"] != 0):
            problems.append(f"kill {kill['kill']} (SIGTERM) lost {kill['lost steps']} steps, exit {kill['exit']}")
        if kill["signal"] == "SIGKILL" and kill["exit"] != -signal.SIGKILL:
            problems.append(f"kill {kill['kill']} (SIGKILL) exit {kill['exit']}")
        if kill["resumed from"] < kill["previous"]:
            problems.append(f"kill {kill['kill']}: the checkpoint went back from {kill['previous']} to {kill['resumed from']}")
    return not problems, "; ".join(problems) or f"{len(kills)} kills, each within one interval; SIGTERMs lost nothing"


def check_resumes(kills):
    problems = []
    for kill in kills:
        if "next log" not in kill:
            continue
        with open(kill["next log"], errors="replace") as f:
            text = f.read()
        at = resumed_at(text)
        if at is not None and at != kill["resumed from"]:
            problems.append(f"after kill {kill['kill']} the run resumed at {at}, the latest checkpoint was "
                            f"{kill['resumed from']}")
    return not problems, "; ".join(problems) or "every restart resumed from the latest checkpoint"


def check_checkpoints(model_dir):
    from sagan_tf.run.run_dir import checkpoint_files, unreadable_reason

    checked, bad = 0, []
    for directory in (os.path.join(model_dir, "checkpoints"), os.path.join(model_dir, "best")):
        for step, prefix in sorted(checkpoint_files(directory).items()):
            checked += 1
            reason = unreadable_reason(prefix)
            if reason:
                bad.append(f"{prefix}: {reason}")
    aside = os.path.join(model_dir, "checkpoints", "unreadable")
    moved = len(os.listdir(aside)) if os.path.isdir(aside) else 0
    detail = f"{checked} checkpoints read back whole" + (f"; {moved} set(s) moved to unreadable/ by a resume" if moved else "")
    return not bad, "; ".join(bad) or detail


def check_sheets(model_dir):
    from PIL import Image

    directory = os.path.join(model_dir, "samples")
    names = sorted(os.listdir(directory)) if os.path.isdir(directory) else []
    sheets, bad = [n for n in names if n.endswith(".png") and not n.startswith(".")], []
    for name in sheets:
        try:
            with Image.open(os.path.join(directory, name)) as image:
                image.load()
        except Exception as error:  # noqa: BLE001 - any failure to decode is the finding
            bad.append(f"{name}: {type(error).__name__}: {error}")
    hidden = len(names) - len(sheets)
    detail = f"{len(sheets)} sheets decode" + (f"; {hidden} hidden temporary file(s) of killed writes" if hidden else "")
    return bool(sheets) and not bad, "; ".join(bad) or detail


def check_events(model_dir, killed_pids):
    import tensorflow as tf

    problems, total, cut_files = [], 0, 0
    for path in events_files(model_dir):
        payloads, cut = records(path)
        verified = 0
        try:
            for _ in tf.compat.v1.io.tf_record_iterator(path):
                verified += 1
        except tf.errors.DataLossError:
            pass
        total += verified
        pid = int(EVENTS_NAME.search(os.path.basename(path)).group("pid"))
        if verified != len(payloads):
            problems.append(f"{os.path.basename(path)}: {len(payloads) - verified} record(s) fail their checksum")
        if cut:
            cut_files += 1
            if pid not in killed_pids:
                problems.append(f"{os.path.basename(path)} ends in a cut record but its process was not killed")
    detail = f"{len(events_files(model_dir))} events files, {total} records verified" + (
        f"; {cut_files} killed writer(s) ended in a cut record" if cut_files else "")
    return not problems, "; ".join(problems) or detail


def check_eval_history(model_dir):
    path = os.path.join(model_dir, "eval_history.jsonl")
    if not os.path.exists(path):
        return False, f"{path} missing"
    steps, bad, records_by_step = [], [], {}
    with open(path) as f:
        for number, line in enumerate(f, 1):
            try:
                record = json.loads(line)
                steps.append(record["step"])
                records_by_step.setdefault(record["step"], set()).add(json.dumps(record["metrics"], sort_keys=True))
            except (ValueError, KeyError) as error:
                bad.append(f"line {number}: {error}")
    repeated = len(records_by_step) and len(steps) - len(records_by_step)
    differing = sorted(step for step, metrics in records_by_step.items() if len(metrics) > 1)
    if differing:
        bad.append(f"steps evaluated again after a kill gave other metrics: {differing[:5]}")
    detail = f"{len(steps)} records parse" + (
        f"; {repeated} step(s) evaluated again after a kill, with the same metrics" if repeated else "")
    return not bad, "; ".join(bad) or detail


def check_tracebacks(logs):
    found = [name for name in sorted(os.listdir(logs))
             if "Traceback (most recent call last)" in open(os.path.join(logs, name), errors="replace").read()]
    return not found, f"tracebacks in {found}" if found else f"none in {len(os.listdir(logs))} trainer logs"


class TensorBoard:
    """`python -m tensorboard.main` on 127.0.0.1 (a free port, `samples` points kept and served per scalar
    tag: more than the run's steps, so none is dropped), read through its HTTP API."""

    def __init__(self, logdir_spec, samples, deadline_s=300):
        # --samples_per_plugin is both what the server keeps and what the scalars endpoint returns (0: none)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tensorboard.main", f"--logdir_spec={logdir_spec}", "--host=127.0.0.1",
             "--port=0", "--load_fast=false", "--reload_interval=2", f"--samples_per_plugin=scalars={samples}"],
            cwd=common.ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True, start_new_session=True)
        self.deadline = time.monotonic() + deadline_s
        self.url, self.output = None, []
        found = threading.Event()

        def read():
            for line in self.process.stderr:
                self.output.append(line)
                match = re.search(r"(http://127\.0\.0\.1:\d+)/", line)
                if match and self.url is None:
                    self.url = match.group(1)
                    found.set()
            found.set()

        threading.Thread(target=read, daemon=True).start()
        found.wait(timeout=deadline_s)
        if self.url is None:
            self.close()
            raise RuntimeError("tensorboard did not print its address:\n" + "".join(self.output)[-2000:])

    def json(self, path, **query):
        url = f"{self.url}{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
        with urllib.request.urlopen(url, timeout=60) as response:
            return json.loads(response.read())

    def close(self):
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)  # its own session: the server and nothing else
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def check_tensorboard(faulted, reference, final_step, eval_every):
    """(ok, detail): TensorBoard's scalars of the faulted run: every step once, in order, the reference's values."""
    board = TensorBoard(f"faulted:{faulted},reference:{reference}", samples=2 * final_step + 1000)
    try:
        runs = {"faulted": None, "reference": None}
        while True:  # until both runs are loaded to their last step and stay so
            tags = board.json("/data/plugin/scalars/tags")
            for run in tags:
                for name in runs:
                    if run.startswith(name) and run.endswith("train"):
                        runs[name] = run
            if all(runs.values()) and all("d_loss" in tags[run] for run in runs.values()):
                last = [board.json("/data/plugin/scalars/scalars", run=run, tag="d_loss") for run in runs.values()]
                if all(points and points[-1][1] == final_step for points in last):
                    time.sleep(5)  # one more reload: nothing left to read
                    break
            if time.monotonic() > board.deadline:
                return False, (f"TensorBoard did not load both runs to step {final_step} in time (runs: "
                               f"{sorted(tags)})")
            time.sleep(1)
        tags = board.json("/data/plugin/scalars/tags")
        problems, checked = [], 0
        for tag in sorted(tags[runs["reference"]]):
            expected = [point for point in board.json("/data/plugin/scalars/scalars", run=runs["reference"], tag=tag)]
            shown = board.json("/data/plugin/scalars/scalars", run=runs["faulted"], tag=tag) \
                if tag in tags[runs["faulted"]] else []
            steps = [step for _, step, _ in shown]
            want = list(range(1, final_step + 1)) if not tag.startswith("eval/") else \
                list(range(eval_every, final_step + 1, eval_every))
            checked += 1
            if steps != want:
                repeated = len(steps) - len(set(steps))
                problems.append(f"{tag}: {len(steps)} points, {repeated} repeated, "
                                f"{'in order' if steps == sorted(steps) else 'out of order'}, "
                                f"missing {sorted(set(want) - set(steps))[:5]}")
                continue
            if tag not in TIMING_TAGS and [value for _, _, value in shown] != [value for _, _, value in expected]:
                differing = [step for (_, step, a), (_, _, b) in zip(shown, expected) if a != b]
                problems.append(f"{tag}: values differ from the uninterrupted run at steps {differing[:5]}")
        detail = f"{checked} scalar tags, every step 1–{final_step} once and in order, the uninterrupted run's values"
        return not problems, "; ".join(problems[:6]) or detail
    finally:
        board.close()


def run_checks(state, faulted, reference, logs):
    kills, final_step = state["kills"], state["final_step"]
    killed = {kill["pid"] for kill in kills if "pid" in kill}
    checks = [("final weights equal an uninterrupted run", lambda: check_weights(faulted, reference, final_step)),
              ("no kill cost more than one checkpoint interval", lambda: check_kills(kills, state["checkpoint_every"])),
              ("each restart resumed from the latest checkpoint", lambda: check_resumes(kills)),
              ("every checkpoint left is readable", lambda: check_checkpoints(faulted)),
              ("every sample sheet left is readable", lambda: check_sheets(faulted)),
              ("every events file left is readable", lambda: check_events(faulted, killed)),
              ("every evaluation record left is readable", lambda: check_eval_history(faulted)),
              ("TensorBoard shows every step's scalars once, in order",
               lambda: check_tensorboard(faulted, reference, final_step, state["eval_every"])),
              ("no trainer traceback", lambda: check_tracebacks(logs))]
    rows = []
    for name, check in checks:
        try:
            ok, detail = check()
        except Exception as error:  # noqa: BLE001 - a check that cannot run fails, with its reason
            ok, detail = False, f"{type(error).__name__}: {error}"
        rows.append({"check": name, "result": "pass" if ok else "FAIL", "detail": detail[:400]})
    return rows


def main(argv=None):
    args = parse_args(argv)
    if not os.path.isdir(args.data_dir):
        print(f"error: --data_dir={args.data_dir} does not exist (apt-get install dataset-fashion-mnist)", file=sys.stderr)
        return 2
    work = args.work_dir or tempfile.mkdtemp(prefix="fault-loop-")
    faulted, reference, logs = (os.path.join(work, name) for name in ("faulted", "reference", "logs"))
    state_file = os.path.join(work, "loop.json")
    if args.check_only:
        with open(state_file) as f:
            state = json.load(f)
    else:
        for path in (faulted, reference):
            if os.path.exists(path):
                print(f"error: {path} exists; use a new --work_dir (or --check_only)", file=sys.stderr)
                return 2
        os.makedirs(logs, exist_ok=True)
        state = run_loop(args, faulted, reference, logs)
        with open(state_file, "w") as f:
            json.dump(state, f, indent=1)
    kills, final_step = state["kills"], state["final_step"]
    if state["final_status"] != 0 or state["reference_status"] != 0:
        rows = [{"check": "the final resume and the uninterrupted run end at step N", "result": "FAIL",
                 "detail": f"exit {state['final_status']} and {state['reference_status']} (logs in {logs})"}]
    else:
        rows = run_checks(state, faulted, reference, logs)
    kill_rows = [{key: kill.get(key, "") for key in ("kill", "time_s", "signal", "aimed at", "being written",
                                                     "last step logged", "resumed from", "lost steps", "exit")}
                 for kill in kills]
    machine = common.machine_info()
    minutes = state["loop_seconds"] / 60
    result = {"machine": machine, "work_dir": work, "seed": state["seed"], "cpus": state["cpus"],
              "final_step": final_step, "minutes": round(minutes, 1), "reference_seconds": state["reference_seconds"],
              "kills": kill_rows, "checks": rows, "passed": all(row["result"] == "pass" for row in rows)}
    common.emit(args, result, [
        (f"Kills ({len(kills)} in {minutes:.1f} min, checkpoint_every={state['checkpoint_every']})", kill_rows, None),
        (f"Checks (final step {final_step}; {machine['cpu']}, {machine['cpus']} CPUs; trainers on CPUs {state['cpus']})",
         rows, ["check", "result", "detail"])])
    if result["passed"] and not args.keep and not args.work_dir:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if result["passed"] else 1


def run_loop(args, faulted, reference, logs):
    """The kill phase, the final resume to step N and the uninterrupted run to N; what the checks need."""
    started = time.monotonic()
    print(f"fault loop: {os.path.dirname(faulted)}, CPUs {args.cpus}, seed {args.seed}, kills every "
          f"{args.min_interval:g}–{args.max_interval:g} s for {args.minutes:g} min"
          + (f" (at most {args.kills})" if args.kills else ""), flush=True)
    kills = kill_phase(args, faulted, logs)
    loop_seconds = time.monotonic() - started
    resumed = checkpoint_step(faulted)
    final_step = resumed + args.final_steps
    final = Trainer(trainer_command(args, faulted, final_step), args.cpus, os.path.join(logs, "final.log"))
    if kills:
        kills[-1]["next log"] = final.log
    final_status = final.wait(max(STOP_TIMEOUT, 4 * loop_seconds))
    print(f"final resume from step {resumed} to {final_step}: exit {final_status}", flush=True)
    ref_started = time.monotonic()
    ref = Trainer(trainer_command(args, reference, final_step), args.cpus, os.path.join(logs, "reference.log"))
    ref_status = ref.wait(max(STOP_TIMEOUT, 4 * loop_seconds))
    ref_seconds = time.monotonic() - ref_started
    print(f"uninterrupted run to step {final_step}: exit {ref_status} ({ref_seconds:.0f} s)", flush=True)
    return {"kills": kills, "final_step": final_step, "final_status": final_status, "reference_status": ref_status,
            "loop_seconds": loop_seconds, "reference_seconds": round(ref_seconds, 1), "seed": args.seed,
            "cpus": args.cpus, "checkpoint_every": args.checkpoint_every, "eval_every": args.eval_every}


if __name__ == "__main__":
    sys.exit(main())
