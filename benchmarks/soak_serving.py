"""A soak of the gRPC server: a long mixed stream of valid and hostile Predict calls, every answer checked.

    python benchmarks/soak_serving.py [--saved_model=pretrained/fashion_mnist/1] [--calls=10000] [--clients=12]
        [--hostile=0.08] [--read_timeout=10] [--max_seconds=1800] [--seed=0] [--server_log=PATH] [--json]

Starts ``python -m export.grpc_server`` on a free loopback port as a subprocess (its stderr kept at
`--server_log` if given), loads the same SavedModel here with ``tf.saved_model.load``, and sends
`--calls` Predict calls from `--clients` concurrent clients, each with its own connection. The calls
are a seeded plan:
`--hostile` of them hostile, spread evenly over these kinds (code: what this server must answer;
TF-Serving's own answer where it differs is in HOSTILE_KINDS):

* ``undecodable``: bytes that do not parse as a PredictRequest (random, or a request cut short) →
  INTERNAL, as TF-Serving answers (export.grpc_server.UNDECODABLE_REQUEST_CODE), with a message;
* ``lying_shape``: a declared shape that disagrees with the content (tensor_content a row short or
  long, more values than declared) → INVALID_ARGUMENT;
* ``wrong_dtype`` (float64 z, int64 label), ``wrong_rank`` (z [n, z_dim, 1], label [n, 1]),
  ``bad_label`` (a label past the classes: the graph's own check) → INVALID_ARGUMENT;
* ``unknown_model``, ``unknown_version`` → NOT_FOUND; ``unknown_signature`` → FAILED_PRECONDITION;
* ``deadline_1ms``: a valid request with a 1 ms deadline → DEADLINE_EXCEEDED (an answer in time must
  be right);
* ``disconnect_mid_message``: a raw HTTP/2 client (benchmarks/raw_http2.py) sends the headers and
  part of the message (inside the message or inside its DATA frame), then closes (FIN or RST);
* ``stall_after_headers``: a grpcio call that sends its headers and no message, with a deadline past
  the server's read_timeout → DEADLINE_EXCEEDED from the server ("no request message within ...");
* ``stall_mid_message``: a raw client that sends the headers and part of the message, then waits →
  the server ends the stream with grpc-status DEADLINE_EXCEEDED after its read_timeout.

The valid calls come from a pool of requests on all three signatures (1-8 rows, some with an
``output_filter``) whose expected outputs are the local SavedModel's for the same z, labels, seeds and
truncations: float outputs within `--atol`, uint8 images within 1, PNGs decoding to the returned
images. A warm-up of valid calls from every client comes first (not counted); the server's RSS,
descriptors and threads are read from /proc/<pid> at the start, after the warm-up (clients
disconnected) and at the end (clients disconnected, the server given `--settle` s to close their
connections), RSS every 0.5 s for the peak and at every tenth of the calls (does it level off?).

Targets (printed beside the figures; the exit status is 1 if one fails): 0 wrong answers, 0
unexpected codes, RSS growth from after the warm-up to the end ≤ 5 %, descriptors and threads at
the end back to their value after the warm-up (the server starts its 4 predict threads on demand,
so that is its steady state; the value before the first call is printed too), no traceback in the
server's log, every call made within `--max_seconds`, exit status 0 after SIGTERM. Latencies are
printed for the record only: the machine is shared and they are noisy. All traffic stays on
127.0.0.1 and every loop is bounded in calls and time.
"""
from __future__ import annotations

import argparse
import collections
import io
import os
import random
import re
import shutil
import sys
import tempfile
import threading
import time

try:
    from benchmarks import common, raw_http2
    from benchmarks.server_process import MODEL_NAME, ServerProcess
except ImportError:  # run as a script from benchmarks/
    import common
    import raw_http2
    from server_process import MODEL_NAME, ServerProcess

DEFAULT_SAVED_MODEL = os.path.join(common.ROOT, "pretrained", "fashion_mnist", "1")
PREDICT = "/tensorflow.serving.PredictionService/Predict"
CALL_TIMEOUT = 60.0  # client deadline of every call that is not a deadline or stall test
POOL_SIZE = 48
RSS_TARGET = 0.05
# kind -> (the code this server must answer, a pattern its message must match, TF-Serving's answer
# where it differs)
HOSTILE_KINDS = {
    "undecodable": ("INTERNAL", r"^could not parse the request as tensorflow\.serving\.PredictRequest: ",
                    "the same code, an empty message"),
    "lying_shape": ("INVALID_ARGUMENT", r"declares shape .*(tensor_content holds|sends \d+ values)", ""),
    "wrong_dtype": ("INVALID_ARGUMENT", r"must be (float32|int32), got (float64|int64)", ""),
    "wrong_rank": ("INVALID_ARGUMENT", r"must have shape \[", ""),
    "bad_label": ("INVALID_ARGUMENT", r"label values must be in \[0, \d+\)", ""),
    "unknown_model": ("NOT_FOUND", r"^Servable not found for request: Latest\(sagan-unknown\)", ""),
    "unknown_version": ("NOT_FOUND", r"^Servable not found for request: Specific\(sagan, \d+\)", ""),
    "unknown_signature": ("FAILED_PRECONDITION", r'^Serving signature key "sample" not found\.', ""),
    "deadline_1ms": ("DEADLINE_EXCEEDED", "", ""),
    "disconnect_mid_message": ("(client gone)", "", ""),
    "stall_after_headers": ("DEADLINE_EXCEEDED", r"^no request message within ", "the same at the client's deadline"),
    "stall_mid_message": ("DEADLINE_EXCEEDED", "", "the same at the client's deadline"),
}
# the kinds that are one unary call of a prepared payload, answered with a status code
CODED_KINDS = ("undecodable", "lying_shape", "wrong_dtype", "wrong_rank", "bad_label", "unknown_model",
               "unknown_version", "unknown_signature")
STATUS_NAMES = {}  # grpc status number -> name, filled by _status_names()


def parse_args(argv=None):
    parser = common.add_common_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--saved_model", default=DEFAULT_SAVED_MODEL,
                        help="a SavedModel version directory or export base (default: the pretrained model)")
    parser.add_argument("--calls", type=int, default=10_000, help="Predict calls after the warm-up")
    parser.add_argument("--clients", type=int, default=12, help="concurrent clients, one connection each")
    parser.add_argument("--hostile", type=float, default=0.08, help="fraction of hostile calls")
    parser.add_argument("--warmup", type=int, default=None, help="valid warm-up calls (default: calls/50, >= 100)")
    parser.add_argument("--read_timeout", type=float, default=10.0, help="the server's --read_timeout (s)")
    parser.add_argument("--max_seconds", type=float, default=1800.0, help="stop taking new calls after this")
    parser.add_argument("--settle", type=float, default=20.0, help="seconds the server gets to close connections")
    parser.add_argument("--atol", type=float, default=1e-4, help="tolerance of float outputs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--server_log", default=None, help="keep the server's stderr in this file")
    args = parser.parse_args(argv)
    if args.calls < 1 or not 1 <= args.clients <= 32:
        parser.error(f"need --calls >= 1 (got {args.calls}) and 1 <= --clients <= 32 (got {args.clients})")
    if not 0 <= args.hostile <= 0.5:
        parser.error(f"--hostile={args.hostile} must be in [0, 0.5]")
    if not args.read_timeout > 0 or not args.max_seconds > 0:
        parser.error(f"--read_timeout={args.read_timeout} and --max_seconds={args.max_seconds} must be > 0")
    if args.warmup is None:
        args.warmup = max(100, args.calls // 50)
    return args


# --- the server process and what /proc says about it ------------------------------------------------

# --- requests and their expected answers --------------------------------------------------------------

def make_request(signature, inputs, model_name=MODEL_NAME, output_filter=(), version=None):
    import numpy as np
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    for key, value in inputs.items():
        request.inputs[key].CopyFrom(tf.make_tensor_proto(np.asarray(value)))
    request.output_filter.extend(output_filter)
    return request


class Reference:
    """The SavedModel loaded here: a pool of valid requests (serialized) with their expected outputs."""

    def __init__(self, saved_model, seed, pool_size=POOL_SIZE):
        import numpy as np
        import tensorflow as tf

        from sagan_tf.sampling.exported import read_info, read_signature_defs, resolve_saved_model

        self.directory, self.version = resolve_saved_model(saved_model)
        limits = read_info(self.directory).get("limits", {})
        defs = read_signature_defs(self.directory)
        self.z_dim = int(defs["serving_default"].inputs["z"].tensor_shape.dim[1].size)
        self.classes = int(limits.get("label_range", [0, 10])[1])
        loaded = tf.saved_model.load(self.directory)
        rng = np.random.default_rng(seed)
        self.pool = []  # (signature, inputs, output_filter, serialized request, expected outputs)
        for i in range(pool_size):
            signature = ("serving_default", "attention", "generate")[i % 3]
            n = int(rng.integers(1, 9))
            labels = rng.integers(0, self.classes, n).astype(np.int32)
            if signature == "generate":
                inputs = {"label": labels, "seed": rng.integers(0, 2 ** 31, n).astype(np.int64),
                          "truncation": rng.choice([0.0, 0.5, 1.0], n).astype(np.float32)}
            else:
                inputs = {"z": rng.standard_normal((n, self.z_dim)).astype(np.float32), "label": labels}
            outputs = {key: value.numpy() for key, value in
                       loaded.signatures[signature](**{k: tf.constant(v) for k, v in inputs.items()}).items()}
            output_filter = ("images",) if signature != "serving_default" and i % 2 else ()
            expected = {key: outputs[key] for key in (output_filter or outputs)}
            request = make_request(signature, inputs, output_filter=output_filter)
            self.pool.append((signature, inputs, output_filter, request.SerializeToString(), expected))
        del loaded

    def check(self, index, response_bytes, atol):
        """None if the PredictResponse bytes answer pool request `index` right, else what is wrong."""
        import numpy as np
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        signature, _, _, _, expected = self.pool[index]
        response = predict_pb2.PredictResponse.FromString(response_bytes)
        if (response.model_spec.name, response.model_spec.signature_name) != (MODEL_NAME, signature):
            return f"answered as {response.model_spec.name}/{response.model_spec.signature_name}"
        if set(response.outputs) != set(expected):
            return f"outputs {sorted(response.outputs)}, expected {sorted(expected)}"
        got = {key: tf.make_ndarray(proto) for key, proto in response.outputs.items()}
        for key, want in expected.items():
            value = got[key]
            if value.shape != want.shape or value.dtype != want.dtype:
                return f"{key}: {value.dtype}{list(value.shape)}, expected {want.dtype}{list(want.shape)}"
            if want.dtype == np.uint8:
                worst = int(np.abs(value.astype(int) - want.astype(int)).max())
                if worst > 1:
                    return f"{key}: off by up to {worst} levels"
            elif want.dtype == object:  # PNGs: they must decode to the images returned beside them
                images = got.get("images")
                for row, png in enumerate(value):
                    decoded = tf.io.decode_png(png).numpy()
                    if images is not None and not np.array_equal(decoded, images[row]):
                        return f"{key}[{row}] does not decode to images[{row}]"
            elif not np.allclose(value, want, atol=atol, rtol=0):
                return f"{key}: off by up to {float(np.abs(value - want).max()):.3g} (atol {atol:g})"
        return None


class HostileRequests:
    """Serialized hostile requests of each kind that a PredictRequest can carry, built from the pool."""

    def __init__(self, reference, seed):
        import numpy as np
        from google.protobuf.message import DecodeError
        from tensorflow_serving.apis import predict_pb2

        self.reference, self.rng = reference, random.Random(seed)
        z_requests = [entry for entry in reference.pool if entry[0] != "generate"]
        self.undecodable = []
        bytes_rng = np.random.default_rng(seed)
        while len(self.undecodable) < 32:  # random bytes and requests cut short, kept only if they fail to parse
            if len(self.undecodable) % 2:
                data = z_requests[len(self.undecodable) % len(z_requests)][3]
                data = data[:int(bytes_rng.integers(1, len(data)))]
            else:
                data = bytes_rng.integers(0, 256, int(bytes_rng.integers(1, 300))).astype(np.uint8).tobytes()
            try:
                predict_pb2.PredictRequest.FromString(data)
            except DecodeError:
                self.undecodable.append(data)
        self.built = collections.defaultdict(list)
        for signature, inputs, _, _, _ in z_requests:
            n, z, labels = len(inputs["label"]), inputs["z"], inputs["label"]
            self.built["wrong_dtype"] += [make_request(signature, {"z": z.astype(np.float64), "label": labels}),
                                          make_request(signature, {"z": z, "label": labels.astype(np.int64)})]
            self.built["wrong_rank"] += [make_request(signature, {"z": z[..., None], "label": labels}),
                                         make_request(signature, {"z": z, "label": labels[:, None]})]
            self.built["bad_label"].append(make_request(signature, {"z": z, "label": np.full(n, reference.classes,
                                                                                               np.int32)}))
            self.built["unknown_model"].append(make_request(signature, inputs, model_name="sagan-unknown"))
            self.built["unknown_version"].append(make_request(signature, inputs, version=(reference.version or 0) + 7))
            self.built["unknown_signature"].append(make_request("sample", inputs))
            short = make_request(signature, inputs)  # tensor_content one row short / long of the declared shape
            short.inputs["z"].tensor_content = short.inputs["z"].tensor_content[:-4 * reference.z_dim] or b"\0\0\0\0"
            long = make_request(signature, inputs)
            long.inputs["z"].tensor_content += long.inputs["z"].tensor_content[:4 * reference.z_dim]
            extra = make_request(signature, inputs)  # more int_val values than the declared label shape
            extra.inputs["label"].ClearField("tensor_content")
            extra.inputs["label"].int_val.extend([0] * (n + 1))
            self.built["lying_shape"] += [short, long, extra]
        self.built = {kind: [r.SerializeToString() for r in requests] for kind, requests in self.built.items()}

    def payload(self, kind):
        if kind == "undecodable":
            return self.rng.choice(self.undecodable)
        return self.rng.choice(self.built[kind])


# --- one client -------------------------------------------------------------------------------------

Outcome = collections.namedtuple("Outcome", "kind expected code seconds problem")  # problem: None if as expected


class Client:
    """One client: its own channel (its own connection) and the calls of every kind."""

    def __init__(self, server, reference, hostile, args, seed):
        import grpc

        self.grpc = grpc
        self.server, self.reference, self.hostile, self.args = server, reference, hostile, args
        self.rng = random.Random(seed)
        options = [("grpc.use_local_subchannel_pool", 1), ("grpc.max_receive_message_length", 64 * 2 ** 20)]
        self.channel = grpc.insecure_channel(server.address, options=options)
        self.predict = self.channel.unary_unary(PREDICT, request_serializer=None, response_deserializer=None)
        self.stream = self.channel.stream_unary(PREDICT, request_serializer=None, response_deserializer=None)

    def close(self):
        self.channel.close()

    def call(self, kind, index):
        """The Outcome of one call of `kind` (`index`: the pool request of a valid call)."""
        start = time.perf_counter()
        expected = "OK" if kind == "valid" else HOSTILE_KINDS[kind][0]
        try:
            code, problem = self._coded(kind) if kind in CODED_KINDS else getattr(self, f"_{kind}")(index)
        except Exception as error:  # the client's own failure (refused connection, ...) is an unexpected outcome
            code, problem = type(error).__name__, f"client error: {error}"
        return Outcome(kind, expected, code, time.perf_counter() - start, problem)

    def _unary(self, payload, timeout=CALL_TIMEOUT):
        """(code name, response bytes or the error's details)."""
        try:
            return "OK", self.predict(payload, timeout=timeout)
        except self.grpc.RpcError as error:
            return error.code().name, error.details()

    def _valid(self, index):
        code, answer = self._unary(self.reference.pool[index][3])
        if code != "OK":
            return code, f"valid request answered {code}: {answer}"
        return code, (None if (wrong := self.reference.check(index, answer, self.args.atol)) is None
                      else f"wrong answer: {wrong}")

    def _coded(self, kind):
        code, details = self._unary(self.hostile.payload(kind))
        expected, pattern, _ = HOSTILE_KINDS[kind]
        if code == expected and re.search(pattern, details):
            return code, None
        return code, f"{code} (expected {expected} matching {pattern!r}): {str(details)[:160]}"

    def _deadline_1ms(self, index):
        code, answer = self._unary(self.reference.pool[index][3], timeout=0.001)
        if code == "OK":  # answered within 1 ms: then it must be right
            return code, (None if (wrong := self.reference.check(index, answer, self.args.atol)) is None
                          else f"wrong answer: {wrong}")
        return code, None if code == "DEADLINE_EXCEEDED" else f"{code} (expected DEADLINE_EXCEEDED): {answer}"

    def _stall_after_headers(self, index):
        release = threading.Event()

        def nothing():  # the call's request iterator: sends no message until released
            release.wait(self.args.read_timeout + 30)
            return
            yield

        future = self.stream.future(nothing(), timeout=self.args.read_timeout + 15)
        try:
            error = future.exception(timeout=self.args.read_timeout + 30)
        finally:
            release.set()
        if error is None:
            return "OK", "a call that sent no message was answered OK"
        code, details = error.code().name, error.details() or ""
        if code != "DEADLINE_EXCEEDED" or not re.search(HOSTILE_KINDS["stall_after_headers"][1], details):
            return code, f"{code} {details!r}: not ended by the server's read_timeout"
        return code, None

    def _raw_call(self):
        return raw_http2.RawGrpcCall("127.0.0.1", self.server.port, PREDICT)

    def _disconnect_mid_message(self, index):
        payload = self.reference.pool[index][3]
        with self._raw_call() as call:
            call.send_headers()
            how = self.rng.randrange(3)
            if how == 0:
                call.send_partial_message(payload, keep=self.rng.randrange(len(payload)))
            elif how == 1:
                call.send_partial_frame(payload, keep=self.rng.randrange(len(payload)))
            call.abort(reset=self.rng.random() < 0.5)
        return "(client gone)", None

    def _stall_mid_message(self, index):
        payload = self.reference.pool[index][3]
        with self._raw_call() as call:
            call.send_headers()
            call.send_partial_message(payload, keep=self.rng.randrange(len(payload)))
            how, value = call.wait_for_end(timeout=self.args.read_timeout + 15)
        if how == "trailers" and value == 4:
            return "DEADLINE_EXCEEDED", None
        code = STATUS_NAMES.get(value, str(value)) if how == "trailers" else how
        return code, f"the stalled stream ended with {how} {value}: expected trailers with grpc-status 4"


def _status_names():
    import grpc
    STATUS_NAMES.update({code.value[0]: code.name for code in grpc.StatusCode})


# --- the soak ---------------------------------------------------------------------------------------

def plan(calls, hostile_fraction, pool_size, seed):
    """[(kind, pool index)] of `calls` calls: hostile kinds round-robin at seeded positions."""
    rng = random.Random(seed)
    n_hostile = round(calls * hostile_fraction)
    kinds = [list(HOSTILE_KINDS)[i % len(HOSTILE_KINDS)] for i in range(n_hostile)]
    kinds += ["valid"] * (calls - n_hostile)
    rng.shuffle(kinds)
    return [(kind, rng.randrange(pool_size)) for kind in kinds]


def run_calls(clients, calls, deadline, on_progress=None):
    """Runs `calls` from all clients (each takes the next call when free) until done or `deadline`;
    `on_progress(calls done)` after each one."""
    lock, position, outcomes = threading.Lock(), [0], []

    def worker(client):
        while time.monotonic() < deadline:
            with lock:
                if position[0] >= len(calls):
                    return
                kind, index = calls[position[0]]
                position[0] += 1
            outcome = client.call(kind, index)
            with lock:
                outcomes.append(outcome)
                if on_progress is not None:
                    on_progress(len(outcomes))

    threads = [threading.Thread(target=worker, args=(client,), name=f"client-{i}") for i, client in enumerate(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


def read_log(path, soak_offset):
    """Figures of the server's log: tracebacks in all of it; lines (and the first few that are not
    refused-call records) from `soak_offset`, where the soak's calls began."""
    with open(path, "rb") as f:
        text = f.read().decode("utf-8", "replace")
        f.seek(soak_offset)
        lines = f.read().decode("utf-8", "replace").splitlines()
    return {"lines": len(lines), "tracebacks": text.count("Traceback"),
            "refused_lines": sum("refused request (" in line for line in lines),
            "suppressed_summaries": sum(" similar message" in line for line in lines),
            "other_lines": [line for line in lines if "export.grpc_server: " not in line][:20]}


def soak(args):
    import numpy as np

    _status_names()
    machine = {**common.machine_info(), "load_average_start": os.getloadavg()}
    workdir = tempfile.mkdtemp(prefix="sagan-soak-")
    log_path = args.server_log or os.path.join(workdir, "server.log")
    server = ServerProcess(args.saved_model, args.read_timeout, log_path)
    log_offset = 0
    try:
        server.wait_ready()
        time.sleep(1.0)
        start = server.figures()
        reference = Reference(args.saved_model, args.seed)
        hostile = HostileRequests(reference, args.seed)
        clients = [Client(server, reference, hostile, args, seed=args.seed * 1000 + i) for i in range(args.clients)]
        warm_plan = [("valid", i % len(reference.pool)) for i in range(args.warmup)]
        warm = run_calls(clients, warm_plan, time.monotonic() + args.max_seconds)
        for client in clients:
            client.close()
        after_warmup = server.settled(lambda now: now["fds"] <= start["fds"], args.settle)
        server.peak_rss_mib = after_warmup["rss_mib"]
        server.sample_rss()
        with open(server.log_path, "rb") as f:
            log_offset = f.seek(0, io.SEEK_END)

        calls = plan(args.calls, args.hostile, len(reference.pool), args.seed)
        clients = [Client(server, reference, hostile, args, seed=args.seed * 1000 + 100 + i)
                   for i in range(args.clients)]
        began = time.monotonic()
        tenths = {round(args.calls * k / 10): k for k in range(1, 11)}
        trend = []  # the RSS each time another tenth of the calls is done: does it level off?

        def record_rss(done):
            if done in tenths:
                trend.append({"calls done": f"{tenths[done] * 10} % ({done})", "seconds": time.monotonic() - began,
                              "RSS MiB": server.figures()["rss_mib"]})
        outcomes = run_calls(clients, calls, began + args.max_seconds, on_progress=record_rss)
        soak_seconds = time.monotonic() - began
        for client in clients:
            client.close()
        end = server.settled(lambda now: now["fds"] <= after_warmup["fds"] and
                             now["threads"] <= after_warmup["threads"], args.settle + args.read_timeout)
        peak = server.peak_rss_mib
    finally:
        exit_status, stdout = server.stop()
        log = read_log(server.log_path, log_offset)
        shutil.rmtree(workdir, ignore_errors=True)  # the log itself is kept only at --server_log
    machine["load_average_end"] = os.getloadavg()

    by_kind = collections.OrderedDict((kind, []) for kind in ["valid", *HOSTILE_KINDS])
    for outcome in outcomes:
        by_kind[outcome.kind].append(outcome)
    rows = []
    for kind, items in by_kind.items():
        codes = collections.Counter(o.code for o in items)
        seconds = np.array([o.seconds for o in items]) * 1000 if items else np.zeros(1)
        rows.append({"kind": kind, "calls": len(items),
                     "expected": "OK, right answer" if kind == "valid" else HOSTILE_KINDS[kind][0],
                     "as expected": sum(o.problem is None for o in items),
                     "unexpected": sum(o.problem is not None for o in items),
                     "codes": ", ".join(f"{c} {n}" for c, n in codes.most_common()),
                     "p50 ms": float(np.percentile(seconds, 50)), "p99 ms": float(np.percentile(seconds, 99)),
                     "max ms": float(seconds.max()),
                     "TF-Serving": "" if kind == "valid" else HOSTILE_KINDS[kind][2]})
    problems = [o for o in outcomes if o.problem is not None]
    wrong = [o for o in problems if o.problem.startswith("wrong answer")]
    warm_problems = [o for o in warm if o.problem is not None]
    latency_rows = []
    for label, selected in (("valid, answered", [o for o in outcomes if o.kind == "valid" and o.code == "OK"]),
                            ("hostile, answered with a code", [o for o in outcomes if o.kind in HOSTILE_KINDS and
                                                               not o.kind.startswith(("stall", "disconnect",
                                                                                      "deadline"))])):
        ms = np.array([o.seconds for o in selected]) * 1000 if selected else np.zeros(1)
        latency_rows.append({"calls": label, "n": len(selected), "p50 ms": float(np.percentile(ms, 50)),
                             "p99 ms": float(np.percentile(ms, 99)), "max ms": float(ms.max())})
    growth = end["rss_mib"] / after_warmup["rss_mib"] - 1
    targets = [
        ("0 wrong answers", f"{len(wrong)} of {len(by_kind['valid'])} valid calls (+ deadline_1ms answers)",
         not wrong and not [o for o in warm_problems if o.problem.startswith("wrong")]),
        ("0 unexpected codes", f"{len(problems) - len(wrong)} (warm-up: {len(warm_problems)})",
         len(problems) == len(wrong) and not warm_problems),
        ("RSS growth after warm-up <= 5 %", f"{after_warmup['rss_mib']:.0f} -> {end['rss_mib']:.0f} MiB "
                                            f"({100 * growth:+.1f} %), peak {peak:.0f} MiB", growth <= RSS_TARGET),
        ("descriptors back to start", f"{after_warmup['fds']} -> {end['fds']} (before the first call: "
                                      f"{start['fds']})", end["fds"] <= after_warmup["fds"]),
        ("threads back to start", f"{after_warmup['threads']} -> {end['threads']} (before the first call: "
                                  f"{start['threads']})", end["threads"] <= after_warmup["threads"]),
        ("no traceback in the server's log", f"{log['tracebacks']} in {log['lines']} lines "
                                             f"({log['refused_lines']} refused-call lines, "
                                             f"{log['suppressed_summaries']} suppressed-count summaries)",
         log["tracebacks"] == 0),
        ("every call made within --max_seconds", f"{len(outcomes)} of {args.calls} in {soak_seconds:.0f} s",
         len(outcomes) == args.calls),
        ("exit status 0 after SIGTERM", str(exit_status), exit_status == 0),
    ]
    resources = [{"server": name, "start": start[key], "after warm-up": after_warmup[key],
                  "peak": peak if key == "rss_mib" else "", "end": end[key]}
                 for name, key in (("RSS MiB", "rss_mib"), ("open fds", "fds"), ("threads", "threads"))]
    return {"machine": machine, "args": {k: v for k, v in vars(args).items() if k != "json"},
            "rows": rows, "latency": latency_rows, "resources": resources, "rss_trend": trend,
            "targets": [{"target": t, "figure": f, "met": "yes" if ok else "NO"} for t, f, ok in targets],
            "passed": all(ok for _, _, ok in targets), "log": log, "server_stdout": stdout.strip().splitlines()[-1:],
            "problems": [o._asdict() for o in problems[:20]], "warmup_calls": len(warm),
            "soak_seconds": soak_seconds}


def main(argv=None):
    args = parse_args(argv)
    result = soak(args)
    machine = result["machine"]
    title = (f"{args.calls} Predict calls from {args.clients} clients, {100 * args.hostile:g} % hostile, "
             f"after {result['warmup_calls']} warm-up calls; server read_timeout {args.read_timeout:g} s; "
             f"{machine['cpu']}, {machine['cpus']} CPUs, load average "
             f"{machine['load_average_start'][0]:.2f} -> {machine['load_average_end'][0]:.2f}")
    columns = ["kind", "calls", "expected", "as expected", "unexpected", "codes", "p50 ms", "p99 ms", "max ms",
               "TF-Serving"]
    common.emit(args, result, [(f"Calls by outcome ({title})", result["rows"], columns),
                               ("Latency (noisy: shared machine)", result["latency"], None),
                               ("Server process (/proc)", result["resources"], None),
                               ("Server RSS during the soak", result["rss_trend"], None),
                               ("Targets", result["targets"], None)])
    if not args.json:
        for problem in result["problems"]:
            print(f"unexpected: {problem['kind']}: {problem['problem']}")
        for line in result["log"]["other_lines"]:
            print(f"server log: {line}")
        print(f"server: {' '.join(result['server_stdout'])}")
        print("all targets met" if result["passed"] else "TARGETS FAILED")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
