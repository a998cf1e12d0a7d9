"""`python -m export.grpc_server` as a subprocess on a free loopback port, for the serving benchmarks:
started, waited for, measured (/proc figures) and stopped."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

try:
    from benchmarks import common
except ImportError:  # run as a script from benchmarks/
    import common

MODEL_NAME = "sagan"


def proc_figures(pid):
    """{'rss_mib', 'fds', 'threads'} of a live process, from /proc/<pid>."""
    with open(f"/proc/{pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f if ":" in line)
    return {"rss_mib": int(fields["VmRSS"].split()[0]) / 1024, "threads": int(fields["Threads"]),
            "fds": len(os.listdir(f"/proc/{pid}/fd"))}


class ServerProcess:
    """`python -m export.grpc_server` on a free loopback port, its stderr in `log_path`."""

    def __init__(self, saved_model, read_timeout, log_path, extra_flags=()):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self.log_path = log_path
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=common.ROOT)
        self._log = open(log_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "export.grpc_server", f"--saved_model={saved_model}", f"--port={self.port}",
             f"--read_timeout={read_timeout:g}", *extra_flags], cwd=common.ROOT, env=env, stdout=subprocess.PIPE,
            stderr=self._log)
        self.pid = self.process.pid
        self.peak_rss_mib, self._sampling = 0.0, None

    def wait_ready(self, timeout=180):
        """Blocks until the server answers GetModelMetadata; raises naming its log if it exits or times out."""
        from export import client
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.signature_inputs_grpc(self.address, MODEL_NAME, timeout=2)
                return
            except client.ServingError:
                if self.process.poll() is not None:
                    raise RuntimeError(f"the server exited with {self.process.returncode} while starting; "
                                       f"see {self.log_path}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the server did not answer within {timeout} s; see {self.log_path}")
                time.sleep(0.5)

    def figures(self):
        figures = proc_figures(self.pid)
        self.peak_rss_mib = max(self.peak_rss_mib, figures["rss_mib"])
        return figures

    def settled(self, done, seconds):
        """Figures once `done(figures)` holds (the server closed its clients' connections), or after `seconds`."""
        deadline = time.monotonic() + seconds
        while True:
            figures = self.figures()
            if done(figures) or time.monotonic() > deadline:
                return figures
            time.sleep(0.25)

    def sample_rss(self, every=0.5):
        """Starts a daemon thread that reads the RSS every `every` s (for the peak) until stop()."""
        stop = threading.Event()

        def loop():
            while not stop.wait(every):
                try:
                    self.figures()
                except OSError:  # the process is gone
                    return
        threading.Thread(target=loop, name="rss-sampler", daemon=True).start()
        self._sampling = stop

    def stop(self):
        """SIGTERM, then (exit status, stdout); kills it after 60 s."""
        if self._sampling is not None:
            self._sampling.set()
        self.process.send_signal(signal.SIGTERM)
        try:
            out, _ = self.process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            out, _ = self.process.communicate()
        self._log.close()
        return self.process.returncode, out.decode("utf-8", "replace")
