"""export.request_log: the rate limit per kind, the summaries of suppressed lines, and a stream that
blocks (a pipe nobody reads) never blocking the caller."""
import io
import threading
import time

import pytest

from export.request_log import RateLimiter, RequestLog


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_rate_limiter_passes_the_first_lines_of_each_window_per_kind_and_summarises_the_rest():
    clock = FakeClock()
    limiter = RateLimiter(limit=2, interval=60, clock=clock)
    assert [limiter.admit("a")[0] for _ in range(5)] == [True, True, False, False, False]
    assert limiter.admit("b") == (True, [])  # kinds are limited separately
    clock.now += 30
    assert limiter.admit("a") == (False, [])  # same window
    assert limiter.ended() == []
    clock.now += 31  # a's window (and b's) ended with 4 of a's suppressed
    passes, summaries = limiter.admit("a")
    assert passes and summaries == ["suppressed 4 similar messages (a) in the last 61 s"]
    assert limiter.admit("a")[0] and not limiter.admit("a")[0]
    assert limiter.flush() == ["suppressed 1 similar message (a) in the last 0 s"]
    assert limiter.flush() == []


@pytest.mark.parametrize("kwargs, message", [(dict(limit=0), "limit=0 must be >= 1"),
                                             (dict(interval=0), "interval=0 must be > 0 seconds")])
def test_rate_limiter_rejects_bad_settings_naming_them(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RateLimiter(**kwargs)


def _wait_for(predicate, timeout=10):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_one_line_per_request_newlines_folded_and_long_messages_cut():
    stream = io.StringIO()
    log = RequestLog(stream, limit=10)
    message = "first line\n  second " + "x" * 500
    log.refused("invalid_argument", "Predict", "ipv4:127.0.0.1:5", "INVALID_ARGUMENT", message)
    log.close()
    (line,) = stream.getvalue().splitlines()
    assert line.startswith("export.grpc_server: refused request (invalid_argument): Predict from ipv4:127.0.0.1:5: "
                           "INVALID_ARGUMENT: first line second xxx")
    assert line.endswith("...") and len(line) < 320


def test_suppressed_lines_are_reported_when_the_window_ends_without_another_request():
    stream = io.StringIO()
    log = RequestLog(stream, limit=1, interval=0.2)
    for _ in range(4):
        log.refused("undecodable", "Predict", "peer", "INVALID_ARGUMENT", "bad bytes")
    _wait_for(lambda: "suppressed" in stream.getvalue())  # the writer thread's own check, no new request
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and lines[1].startswith("export.grpc_server: suppressed 3 similar messages (undecodable)")
    log.close()


class BlockingStream:
    """A stream whose writes wait until `release` is set: a pipe that nobody reads."""

    def __init__(self):
        self.release, self.writing, self.text = threading.Event(), threading.Event(), []

    def write(self, text):
        self.writing.set()
        assert self.release.wait(30)
        self.text.append(text)

    def flush(self):
        pass


def test_a_blocked_stream_never_blocks_the_caller_and_overflowing_lines_are_counted():
    stream = BlockingStream()
    log = RequestLog(stream, limit=10_000, capacity=10)
    log.refused("k", "Predict", "peer", "CODE", "line 0")
    assert stream.writing.wait(10)  # the writer thread is now stuck in write()
    start = time.monotonic()
    for i in range(1, 100):
        log.refused("k", "Predict", "peer", "CODE", f"line {i}")
    assert time.monotonic() - start < 1.0
    assert log.dropped == 89  # line 0 is being written, 10 are buffered
    stream.release.set()
    log.close()
    lines = "".join(stream.text).splitlines()
    assert [line.rsplit(" ", 1)[1] for line in lines[:11]] == [str(i) for i in range(11)]
    assert lines[11:] == ["export.grpc_server: dropped 89 log lines: the log stream did not keep up"]


def test_close_returns_after_its_timeout_even_if_the_stream_stays_blocked():
    stream = BlockingStream()
    log = RequestLog(stream)
    log.refused("k", "Predict", "peer", "CODE", "stuck")
    assert stream.writing.wait(10)
    start = time.monotonic()
    log.close(timeout=0.2)
    assert time.monotonic() - start < 2
    stream.release.set()


def test_a_broken_stream_loses_lines_not_the_writer():
    class Broken(io.StringIO):
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

    log = RequestLog(Broken())
    log.refused("k", "Predict", "peer", "CODE", "lost")
    log.close()
    assert not log._thread.is_alive()
