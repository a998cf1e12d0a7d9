#!/usr/bin/env python3
"""Runs N multi-worker training processes on this machine, as N hosts would run them.

    python scripts/launch_local_cluster.py 2 -- trainers.fashion_mnist --model_dir=runs/mw \
        --strategy=multi_worker_mirrored --train_steps=100

Everything after `--` is the trainer: a module name (`trainers.fashion_mnist`), `-m <module>`, a
`.py` file, or `-c <code>`, followed by its flags; every worker runs exactly that command with
`python` (this interpreter unless --python is given). The launcher:

* picks free ports on 127.0.0.1 and gives worker i the TF_CONFIG of task ("worker", i) of a
  cluster of N workers (with --chief: task 0 is ("chief", 0) and the others ("worker", i - 1));
* streams every worker's stdout and stderr, line by line, prefixed with `[worker i]`;
* stops all workers (SIGTERM, then SIGKILL after --grace seconds) as soon as one exits non-zero,
  or when --timeout seconds have passed, or when the launcher itself gets SIGINT/SIGTERM;
* exits 0 if every worker exited 0, otherwise with the first failure's exit code (124 on timeout,
  1 if that worker was killed by a signal).

It never talks to any address but 127.0.0.1. Workers do not share anything but the file system:
all of them must be given the same --model_dir (the chief writes there; see docs/distributed.md).
"""
import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

PREFIX = "[launcher]"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_ports(count, host="127.0.0.1"):
    """`count` distinct ports that were free on `host` a moment ago (the sockets are closed again, so
    another process could take one before a worker binds it; unlikely on a test machine)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def tf_configs(num_workers, ports, host="127.0.0.1", chief=False):
    """The TF_CONFIG (as a dict) of each of the `num_workers` processes, in launch order."""
    addresses = [f"{host}:{port}" for port in ports]
    if chief:
        cluster = {"chief": addresses[:1], "worker": addresses[1:]} if num_workers > 1 else {"chief": addresses}
        tasks = [("chief", 0)] + [("worker", i) for i in range(num_workers - 1)]
    else:
        cluster = {"worker": addresses}
        tasks = [("worker", i) for i in range(num_workers)]
    return [{"cluster": cluster, "task": {"type": kind, "index": index}} for kind, index in tasks]


def trainer_command(python, trainer):
    """The command line each worker runs for the `trainer` words given after `--`."""
    if not trainer:
        raise ValueError("no trainer given after `--` (e.g. `-- trainers.fashion_mnist --model_dir=...`)")
    first = trainer[0]
    if first in ("-m", "-c") or first.endswith(".py"):
        return [python, *trainer]
    return [python, "-m", *trainer]


def _stream(index, pipe, lock):
    for line in iter(pipe.readline, ""):
        text = line if line.endswith("\n") else line + "\n"
        with lock:
            sys.stdout.write(f"[worker {index}] {text}")
            sys.stdout.flush()
    pipe.close()


def _say(message, lock):
    with lock:
        print(f"{PREFIX} {message}", flush=True)


def _describe(code):
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def stop_all(processes, grace, lock):
    """SIGTERM to every running worker, SIGKILL to those still running after `grace` seconds."""
    running = [p for p in processes if p.poll() is None]
    for process in running:
        process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for process in running:
        try:
            process.wait(timeout=max(deadline - time.monotonic(), 0))
        except subprocess.TimeoutExpired:
            _say(f"pid {process.pid} still running {grace:g}s after SIGTERM: SIGKILL", lock)
            process.kill()
            process.wait()


def launch(num_workers, trainer, timeout=3600.0, grace=10.0, chief=False, python=sys.executable, env=None):
    """Runs the cluster; returns the launcher's exit code (see the module docstring)."""
    if num_workers < 1:
        raise ValueError(f"the number of workers must be >= 1, got {num_workers}")
    command = trainer_command(python, trainer)
    configs = tf_configs(num_workers, free_ports(num_workers), chief=chief)
    lock = threading.Lock()
    base_env = dict(os.environ if env is None else env)
    base_env.setdefault("PYTHONUNBUFFERED", "1")
    # The repository is importable whatever the working directory (`-m trainers.<name>`).
    base_env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, base_env.get("PYTHONPATH")) if p)
    processes, threads = [], []
    stop_requested = []

    def on_signal(signum, frame):
        stop_requested.append(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        _say(f"cluster {json.dumps(configs[0]['cluster'])}; command: {' '.join(command)}", lock)
        for index, config in enumerate(configs):
            process = subprocess.Popen(command, env=dict(base_env, TF_CONFIG=json.dumps(config)),
                                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                       text=True, bufsize=1, start_new_session=True)
            processes.append(process)
            _say(f"worker {index} ({config['task']['type']} {config['task']['index']}) started, pid {process.pid}",
                 lock)
            thread = threading.Thread(target=_stream, args=(index, process.stdout, lock), daemon=True)
            thread.start()
            threads.append(thread)

        deadline = time.monotonic() + timeout
        code = None
        while code is None:
            if stop_requested:
                _say(f"{stop_requested[0]} received: stopping all workers", lock)
                code = 128 + getattr(signal, stop_requested[0])
                break
            finished = [(i, p.returncode) for i, p in enumerate(processes) if p.poll() is not None]
            failed = [(i, c) for i, c in finished if c != 0]
            if failed:
                index, worker_code = failed[0]
                _say(f"worker {index} {_describe(worker_code)}: stopping the other workers", lock)
                code = worker_code if worker_code > 0 else 1
            elif len(finished) == len(processes):
                code = 0
            elif time.monotonic() > deadline:
                _say(f"timeout: the workers did not finish within {timeout:g}s; stopping them", lock)
                code = 124
            else:
                time.sleep(0.2)
        stop_all(processes, grace, lock)
        for thread in threads:
            thread.join(timeout=5)
        results = ", ".join(f"worker {i} {_describe(p.returncode)}" for i, p in enumerate(processes))
        outcome = "all workers finished" if code == 0 else "stopped" if stop_requested else "FAILED"
        _say(f"{outcome}: {results}", lock)
        return code
    finally:
        for process in processes:  # never leave a worker behind, whatever happened above
            if process.poll() is None:
                process.kill()
                process.wait()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def parse_args(argv):
    if "--" not in argv:
        raise SystemExit("usage: launch_local_cluster.py [options] N -- <trainer module or file> [flags...]")
    split = argv.index("--")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("num_workers", type=int, help="number of worker processes")
    parser.add_argument("--timeout", type=float, default=3600.0,
                        help="seconds after which all workers are stopped (default 3600)")
    parser.add_argument("--grace", type=float, default=10.0,
                        help="seconds between SIGTERM and SIGKILL when stopping workers (default 10)")
    parser.add_argument("--chief", action="store_true",
                        help="make task 0 an explicit 'chief' task instead of worker 0")
    parser.add_argument("--python", default=sys.executable, help="interpreter for the workers")
    args = parser.parse_args(argv[:split])
    if args.num_workers < 1:
        parser.error(f"N must be >= 1, got {args.num_workers}")
    if not argv[split + 1:]:
        parser.error("nothing after `--`: give the trainer module and its flags")
    return args, argv[split + 1:]


def main(argv=None):
    args, trainer = parse_args(sys.argv[1:] if argv is None else argv)
    return launch(args.num_workers, trainer, timeout=args.timeout, grace=args.grace, chief=args.chief,
                  python=args.python)


if __name__ == "__main__":
    sys.exit(main())
