"""What TensorBoard itself shows for a run: the real `tensorboard` server on the tiny run of
tests/test_monitoring.py (2 steps, resumed to 4), read through its HTTP data API."""
import io
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request

import numpy as np
import pytest
from PIL import Image

from tests.helpers import ROOT
from tests.shared_runs import STEPS, monitored_run

DEADLINE_S = 120


class TensorBoard:
    """`python -m tensorboard.main` on 127.0.0.1 with a port the OS picks (--port=0), read from its banner."""

    def __init__(self, logdir):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tensorboard.main", f"--logdir={logdir}", "--host=127.0.0.1", "--port=0",
             "--load_fast=false", "--reload_interval=1"],
            cwd=ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True, start_new_session=True)
        self.lines, self.output = queue.Queue(), []
        threading.Thread(target=self._read, daemon=True).start()
        self.deadline = time.monotonic() + DEADLINE_S
        self.url = None
        while self.url is None:
            try:
                line = self.lines.get(timeout=max(self.deadline - time.monotonic(), 0.01))
            except queue.Empty:
                break
            if line is None:  # exited
                break
            match = re.search(r"(http://127\.0\.0\.1:\d+)/", line)
            self.url = match.group(1) if match else None
        if self.url is None:
            self.close()
            raise AssertionError("tensorboard did not print its address:\n" + "".join(self.output))

    def _read(self):
        for line in self.process.stderr:
            self.output.append(line)
            self.lines.put(line)
        self.lines.put(None)

    def get(self, path, **query):
        url = f"{self.url}{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.read()

    def json(self, path, **query):
        return json.loads(self.get(path, **query))

    def wait_for(self, path, ready, **query):
        """Polls `path` until `ready(answer)` (the server loads the events in the background)."""
        while True:
            answer = self.json(path, **query)
            if ready(answer):
                return answer
            assert time.monotonic() < self.deadline, f"{path}: still {answer} after {DEADLINE_S} s"
            time.sleep(0.2)

    def close(self):
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)  # its own session: the server and nothing else
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    run = monitored_run(tmp_path_factory)
    board = TensorBoard(run["model_dir"])
    try:
        yield run, board
    finally:
        board.close()


def test_tensorboard_serves_each_steps_value_and_what_it_is(served):
    run, board = served
    tags = board.wait_for("/data/plugin/scalars/tags",
                          lambda answer: "g_lr" in answer.get("train", {}))["train"]
    expected = {"d_loss", "g_loss", "d_real", "d_fake", "d_real_active", "d_fake_active", "d_grad_norm",
                "g_grad_norm", "g_sigma_max", "g_sigma_mean", "d_sigma_max", "d_sigma_mean", "g_gamma_16",
                "d_gamma_16", "g_lr", "d_lr", "img_per_s"}
    assert expected <= set(tags), expected - set(tags)
    assert "not a running mean" in tags["d_loss"]["description"]
    # Both processes' events files are read: every step once, each the value the train step returned.
    points = board.wait_for("/data/plugin/scalars/scalars", lambda answer: len(answer) == STEPS, run="train",
                            tag="d_loss")
    assert [step for _, step, _ in points] == list(range(1, STEPS + 1))
    for _, step, value in points:
        assert value == float(np.float32(run["step_logs"][step]["d_loss"])), step
    grad_norms = board.json("/data/plugin/scalars/scalars", run="train", tag="g_grad_norm")
    assert [value for _, _, value in grad_norms] == [float(np.float32(run["step_logs"][step]["g_grad_norm"]))
                                                     for step in range(1, STEPS + 1)]


def test_tensorboard_serves_the_sample_frames_and_the_config(served):
    run, board = served
    tags = board.wait_for("/data/plugin/images/tags",
                          lambda answer: {"ema_samples", "ema_attention"} <= set(answer.get("train", {})))["train"]
    assert "same z in every frame" in tags["ema_samples"]["description"]
    frames = board.json("/data/plugin/images/images", run="train", tag="ema_samples", sample=0)
    assert [frame["step"] for frame in frames] == [2, 4]
    for frame in frames:
        shown = np.asarray(Image.open(io.BytesIO(board.get("/data/plugin/images/individualImage?" + frame["query"]))))
        written = np.asarray(Image.open(run["model_dir"] / "samples" / f"step_{frame['step']:08d}.png"))
        np.testing.assert_array_equal(shown.squeeze(), written.squeeze())
    assert board.json("/data/plugin/text/tags") == {"train": ["config"]}
    texts = board.json("/data/plugin/text/text", run="train", tag="config")
    assert [text["step"] for text in texts] == [0, 2]  # written at each (re)start
    assert re.search(r"z_dim(&quot;|\")?: 8\b", texts[-1]["text"]), texts[-1]["text"][:500]


def test_steps_logged_again_after_a_kill_are_shown_once_with_the_resumed_values(tmp_path):
    """A kill -9 after step 7 with the last checkpoint at 3: the resumed process logs 4.. again. Each process
    starts with a session START (callbacks.ConfigSummary does it at every (re)start), and TensorBoard drops the
    killed process's steps from the START on."""
    import tensorflow as tf

    from sagan_tf.training.callbacks import write_session_start
    logdir = tmp_path / "train"
    for first, last, offset in ((0, 7, 0.0), (3, 9, 100.0), (8, 12, 1000.0)):  # killed at 7, then at 9, resumed
        writer = tf.summary.create_file_writer(str(logdir))
        with writer.as_default():
            write_session_start(first + 1)
            for step in range(first + 1, last + 1):
                tf.summary.scalar("d_loss", offset + step, step=step)
        writer.close()
        time.sleep(1.1)  # events file names differ in their second, as those of two processes do
    board = TensorBoard(tmp_path)
    try:
        points = board.wait_for("/data/plugin/scalars/scalars", lambda answer: answer and answer[-1][1] == 12,
                                run="train", tag="d_loss")
    finally:
        board.close()
    assert [(step, value) for _, step, value in points] == (
        [(step, float(step)) for step in range(1, 4)] + [(step, 100.0 + step) for step in range(4, 9)]
        + [(step, 1000.0 + step) for step in range(9, 13)])
