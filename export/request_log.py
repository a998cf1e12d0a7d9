"""The server's log of refused requests: one short line each, rate-limited, written off the event loop.

A client can send bad requests as fast as the server answers them, so the log must not grow with
them and writing it must never hold up the server:

* **One line per request, no traceback**: the kind, the method, the peer, the status code and the
  message (cut to ``MAX_MESSAGE_CHARS``, newlines folded).
* **Rate-limited per kind**: at most `limit` lines per `interval` seconds for each kind
  (``undecodable``, ``refused``, ``internal``, ...); the others are counted and reported in one line,
  ``suppressed 195 similar messages (undecodable) in the last 60 s``, once their window has ended
  (by the writer thread, even if no request of that kind comes again) or when the log is closed.
* **Written by a background thread** from a buffer of at most `capacity` lines: :meth:`RequestLog.refused`
  appends and returns, so the caller (the server's event loop) never waits for the stream. A stderr
  pipe that nobody reads blocks only the writer thread; once the buffer is full further lines are
  dropped and counted (``dropped N log lines: the log stream did not keep up``, written when it
  drains).

    log = RequestLog(sys.stderr, limit=5, interval=60)
    log.refused("undecodable", "Predict", "ipv4:127.0.0.1:41234", "INVALID_ARGUMENT", "could not parse ...")
    log.close()
"""
import collections
import threading
import time

MAX_MESSAGE_CHARS = 200
DEFAULT_LIMIT = 5
DEFAULT_INTERVAL = 60.0
DEFAULT_CAPACITY = 1000


class RateLimiter:
    """Fixed windows per kind: the first `limit` events of a window of `interval` seconds pass, the
    rest are counted. Not thread-safe (:class:`RequestLog` holds a lock around it)."""

    def __init__(self, limit=DEFAULT_LIMIT, interval=DEFAULT_INTERVAL, clock=time.monotonic):
        if int(limit) < 1:
            raise ValueError(f"limit={limit} must be >= 1 line per interval")
        if not interval > 0:
            raise ValueError(f"interval={interval} must be > 0 seconds")
        self.limit, self.interval, self.clock = int(limit), float(interval), clock
        self._windows = {}  # kind -> [window start, events passed, events suppressed]

    def admit(self, kind):
        """(passes, summaries): whether this event of `kind` may be logged, and the summary lines of
        windows that ended before it (the ended window of `kind` itself included)."""
        now = self.clock()
        summaries = self.ended(now)
        window = self._windows.setdefault(kind, [now, 0, 0])
        if window[1] < self.limit:
            window[1] += 1
            return True, summaries
        window[2] += 1
        return False, summaries

    def ended(self, now=None):
        """Summary lines of the windows that have ended by `now` with suppressed events; forgets them."""
        now = self.clock() if now is None else now
        summaries = []
        for kind, (start, _, suppressed) in list(self._windows.items()):
            if now - start >= self.interval:
                del self._windows[kind]
                if suppressed:
                    summaries.append(self._summary(kind, suppressed, now - start))
        return summaries

    def flush(self):
        """Summary lines of every window with suppressed events, ended or not; forgets all windows."""
        now = self.clock()
        summaries = [self._summary(kind, suppressed, now - start)
                     for kind, (start, _, suppressed) in self._windows.items() if suppressed]
        self._windows.clear()
        return summaries

    @staticmethod
    def _summary(kind, suppressed, seconds):
        noun = "message" if suppressed == 1 else "messages"
        return f"suppressed {suppressed} similar {noun} ({kind}) in the last {seconds:.0f} s"


class RequestLog:
    """Rate-limited one-line records of refused requests, written to `stream` by a daemon thread."""

    def __init__(self, stream, limit=DEFAULT_LIMIT, interval=DEFAULT_INTERVAL, capacity=DEFAULT_CAPACITY,
                 clock=time.monotonic, prefix="export.grpc_server: "):
        if int(capacity) < 1:
            raise ValueError(f"capacity={capacity} must be >= 1 buffered line")
        self.stream, self.capacity, self.prefix = stream, int(capacity), prefix
        self.limiter = RateLimiter(limit, interval, clock)
        self.dropped = 0  # lines lost because the buffer was full
        self._lines = collections.deque()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._closed = False
        self._thread = threading.Thread(target=self._write_loop, name="request-log", daemon=True)
        self._thread.start()

    def refused(self, kind, method, peer, code, message):
        """Logs one refused request (unless rate-limited). Never blocks on the stream."""
        text = " ".join(str(message).split())
        if len(text) > MAX_MESSAGE_CHARS:
            text = text[:MAX_MESSAGE_CHARS - 3] + "..."
        line = f"refused request ({kind}): {method} from {peer}: {code}: {text}"
        with self._lock:
            passes, summaries = self.limiter.admit(kind)
            self._append(summaries + ([line] if passes else []))

    def close(self, timeout=5.0):
        """Reports the suppressed counts, writes what is buffered (waiting at most `timeout` s), stops."""
        with self._lock:
            if self._closed:
                return
            self._append(self.limiter.flush())
            self._closed = True
            self._wake.notify()
        self._thread.join(timeout)

    def _append(self, lines):  # with the lock held
        for line in lines:
            if len(self._lines) >= self.capacity:
                self.dropped += 1
            else:
                self._lines.append(line)
        if lines:
            self._wake.notify()

    def _write_loop(self):
        reported_drops = 0
        while True:
            with self._lock:
                if not self._lines and not self._closed:
                    self._wake.wait(timeout=self.limiter.interval)
                    self._append(self.limiter.ended())
                lines = list(self._lines)
                self._lines.clear()
                dropped, closed = self.dropped, self._closed
            if dropped > reported_drops:
                lines.append(f"dropped {dropped - reported_drops} log lines: the log stream did not keep up")
                reported_drops = dropped
            if lines:
                try:
                    self.stream.write("".join(f"{self.prefix}{line}\n" for line in lines))
                    self.stream.flush()
                except (OSError, ValueError):  # a closed or broken stream: the lines are lost, the server is not
                    pass
            if closed:
                with self._lock:
                    if not self._lines:
                        return
