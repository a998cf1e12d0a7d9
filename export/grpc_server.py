"""An in-process TF-Serving stand-in: the PredictionService gRPC API over one loaded SavedModel.

For tests and demos on machines without ``tensorflow_model_server``:

    python -m export.grpc_server --saved_model=runs/fmnist/export [--port=8500] [--model_name=sagan]

(`--saved_model` is a version directory or an export base, whose highest numeric version is served.)
or, in Python::

    with InProcessServer("runs/fmnist/export/1") as server:   # binds 127.0.0.1 on a free port
        client.predict_grpc(server.address, "sagan", "generate", {...})

What it does, as TF-Serving does: ``Predict`` on any signature (``model_spec.signature_name``,
default ``serving_default``) with ``output_filter``; ``GetModelMetadata`` with the ``signature_def``
field; TF-Serving's status codes and messages for a bad model spec (empty name → INVALID_ARGUMENT
"ModelSpec has no name specified."; a ``version_label`` → INVALID_ARGUMENT "Unrecognized servable
version label: ..."; unknown model or version → NOT_FOUND; unknown signature → FAILED_PRECONDITION
'Serving signature key "..." not found.'); graph errors mapped to their gRPC codes (the signatures'
in-graph checks raise InvalidArgumentError → INVALID_ARGUMENT). A failed request never affects the
next one. Request bytes that do not decode as the method's message are answered INTERNAL, as
TF-Serving's gRPC layer answers them, but with a message a client can act on where TF-Serving's is
empty: "could not parse the request as tensorflow.serving.PredictRequest: ..." (see
``UNDECODABLE_REQUEST_CODE``).

What it adds, because a Python server is easier to exhaust than TF-Serving (see "Limits" below):

* **Sizes are checked from the declared shapes** (``TensorProto.tensor_shape``) before any tensor is
  built: rank and fixed dimensions against the signature, the batch (dim 0) against the export's
  ``max_batch`` (``assets.extra/sagan_export.json``), the declared byte size against
  ``max_message_bytes``, the number of values sent against the declared shape, and the response's
  size against the send limit. A 69-byte request declaring ``z`` as [2000000, 128] is answered
  INVALID_ARGUMENT in milliseconds without allocating it.
* **Admission control**: at most ``max_workers`` requests run the model at once and at most
  ``max_queue`` more wait; one more is answered RESOURCE_EXHAUSTED at once. Over all,
  ``maximum_concurrent_rpcs`` calls (reading, queued, running) are open at a time; gRPC itself
  answers RESOURCE_EXHAUSTED "Concurrent RPC limit exceeded!" beyond that.
* **Deadlines**: a request whose deadline passes while it waits is dropped (DEADLINE_EXCEEDED,
  counted in ``counts['expired']``) and never runs; one that expired before it is admitted is not
  queued. A running model call is not interrupted (its answer is discarded by gRPC).
* **Slow or silent clients cannot starve it**: it is a ``grpc.aio`` server, so a call whose request
  message has not arrived costs a coroutine, not a worker thread, and a call that sends nothing for
  ``read_timeout`` seconds is ended (DEADLINE_EXCEEDED, ``counts['read_timeout']``), freeing its
  ``maximum_concurrent_rpcs`` slot. (grpcio's thread-pool server hands each call to a worker thread
  that then blocks reading the request: four silent clients held all four threads.) The model runs
  in a ``max_workers`` thread pool.
* **A bounded log of refused calls**: one line each (kind, method, peer, code, message; never a
  traceback), at most ``log_limit`` lines per ``log_interval`` seconds per kind with a "suppressed N
  similar messages" summary, written by a background thread (``export.request_log``): a flood of
  bad requests cannot flood the log, and a stderr pipe that nobody reads cannot stop the server.
  An unexpected exception in a handler is answered INTERNAL and logged the same way.

Differences from TF-Serving that remain: shapes are checked here before running (TF-Serving feeds
any shape and relies on the graph's own checks, which the export has); the limits above (TF-Serving
accepts messages up to 2 GiB and bounds work through its batching queues instead); no request
batching, version polling / hot reload, warmup replay, model management (one model, one version, no
labels), Classify/Regress/MultiInference (UNIMPLEMENTED), REST API, TLS or monitoring.
"""
import asyncio
import math
import os
import signal
import sys
import threading
import traceback
from concurrent import futures

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf.message import DecodeError
from tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2

from export import request_log
from sagan_tf.sampling.exported import DEFAULT_SIGNATURE, read_max_batch, read_signature_defs, resolve_saved_model

SERVICE = "tensorflow.serving.PredictionService"
# Largest request the server reads (gRPC's receive limit, also the largest declared input tensor):
# a full serving_default batch (256 rows x z_dim 128 float32) is 128 KiB.
MAX_MESSAGE_BYTES = 4 * 2 ** 20
# Largest response it sends: 256 float32 images of 128x128x3 are 48 MiB.
MAX_SEND_BYTES = 128 * 2 ** 20
DEFAULT_MAX_BATCH = 256  # for exports without assets.extra/sagan_export.json
DEFAULT_WORKERS = 4
DEFAULT_QUEUE = 16
DEFAULT_MAX_CONCURRENT_RPCS = 64
DEFAULT_READ_TIMEOUT = 10.0
UNKNOWN_SIGNATURE_CODE = grpc.StatusCode.FAILED_PRECONDITION  # as TF-Serving's predict_util.cc
# Request bytes that do not decode as the method's message: TF-Serving's code. Its C++ gRPC layer
# (GenericDeserialize in grpcpp's proto_utils.h) answers INTERNAL, with an empty message, before the
# servable sees the call, as gRPC's status-code table lists request parse errors; a client tested
# against this server must meet the code it will meet in production. The message here says more.
UNDECODABLE_REQUEST_CODE = grpc.StatusCode.INTERNAL
_CODES = {code.value[0]: code for code in grpc.StatusCode}
# TensorProto value fields per dtype (what tf.make_ndarray reads when tensor_content is empty).
_VALUE_FIELDS = {tf.float32: "float_val", tf.float64: "double_val", tf.int32: "int_val", tf.int16: "int_val",
                 tf.int8: "int_val", tf.uint8: "int_val", tf.uint16: "int_val", tf.int64: "int64_val",
                 tf.uint32: "uint32_val", tf.uint64: "uint64_val", tf.bool: "bool_val", tf.float16: "half_val",
                 tf.bfloat16: "half_val", tf.string: "string_val"}


class RequestError(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


def _dtype_name(enum):
    return tf.dtypes.as_dtype(enum).name


def _shape_text(tensor_info):
    if tensor_info.tensor_shape.unknown_rank:
        return "<unknown rank>"
    return "[" + ", ".join(str(d.size) for d in tensor_info.tensor_shape.dim) + "]"


def clean_tf_message(message):
    """The useful part of a TF error message: the assertion text if any, else its first line."""
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    assertions = [line for line in lines if line.startswith("assertion failed")]
    if assertions:
        return assertions[0]
    useful = [line for line in lines if not line.startswith(("Graph execution error", "Detected at node",
                                                              "<stack traces", "[["))]
    return (useful or lines or [str(message)])[0]


def _invalid(message):
    return RequestError(grpc.StatusCode.INVALID_ARGUMENT, message)


def parse_request(message_class, data):
    """`data`, a call's request bytes, parsed as `message_class`; RequestError (UNDECODABLE_REQUEST_CODE)
    naming the expected type, the cause and the size if they do not decode."""
    try:
        return message_class.FromString(data)
    except DecodeError as error:
        name = message_class.DESCRIPTOR.full_name
        cause = str(error).rpartition(": ")[2] or "not a protobuf encoding"
        size = f"{len(data)} byte{'' if len(data) == 1 else 's'}"
        raise RequestError(UNDECODABLE_REQUEST_CODE,
                           f"could not parse the request as {name}: {cause} ({size} received). This method takes "
                           f"a serialized {name} (tensorflow_serving.apis); check the message type and that the "
                           "bytes are not truncated.") from error


def describe_internal_error(error):
    """One line for an unexpected exception: its type, message and the line that raised it."""
    frames = traceback.extract_tb(error.__traceback__)
    where = f" (at {os.path.basename(frames[-1].filename)}:{frames[-1].lineno})" if frames else ""
    return f"internal server error: {type(error).__name__}: {error}{where}"


class PredictionServicer:
    """Validates and runs requests on the signatures of one loaded SavedModel served as `model_name`.

    Synchronous: :meth:`predict` and :meth:`get_model_metadata` take a request proto and return the
    response or raise :class:`RequestError`. :class:`InProcessServer` puts them behind gRPC.
    """

    def __init__(self, saved_model, model_name="sagan", max_batch=None, max_message_bytes=MAX_MESSAGE_BYTES,
                 max_send_bytes=MAX_SEND_BYTES):
        self.directory, self.version = resolve_saved_model(saved_model)
        self.model_name = model_name
        self.max_batch = int(max_batch or read_max_batch(self.directory, DEFAULT_MAX_BATCH))
        self.max_message_bytes, self.max_send_bytes = int(max_message_bytes), int(max_send_bytes)
        self.signature_defs = read_signature_defs(self.directory)
        self.model = tf.saved_model.load(self.directory)
        self.functions = {name: self.model.signatures[name] for name in self.signature_defs}
        self.lock = threading.Lock()
        self.counts = {"ok": 0, "error": 0, "rejected": 0, "expired": 0, "read_timeout": 0, "runs": 0}

    # --- validation -------------------------------------------------------------------------------

    def _check_model_spec(self, model_spec):
        # The order and the messages of TF-Serving's ServerCore::ServableRequestFromModelSpec.
        if not model_spec.name:
            raise _invalid("ModelSpec has no name specified.")
        if model_spec.WhichOneof("version_choice") == "version_label":
            raise _invalid(f"Unrecognized servable version label: {model_spec.version_label} (this server "
                           "configures no version labels; ask for a version number or the latest).")
        if model_spec.name != self.model_name:
            raise RequestError(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Latest({model_spec.name})"
                               f"; this server serves model {self.model_name!r}.")
        if model_spec.HasField("version") and model_spec.version.value != (self.version or 0):
            raise RequestError(grpc.StatusCode.NOT_FOUND,
                               f"Servable not found for request: Specific({model_spec.name}, "
                               f"{model_spec.version.value}); only version {self.version} is loaded.")

    def _signature(self, model_spec):
        name = model_spec.signature_name or DEFAULT_SIGNATURE
        if name not in self.signature_defs:
            raise RequestError(UNKNOWN_SIGNATURE_CODE, f'Serving signature key "{name}" not found. This model has '
                               f"{sorted(self.signature_defs)}.")
        return name, self.signature_defs[name]

    def _declared_shape(self, key, signature_name, info, proto):
        """The shape `proto` declares, checked against the signature and the limits; builds nothing."""
        if proto.tensor_shape.unknown_rank:
            raise _invalid(f"input {key!r} of signature {signature_name!r} has no shape (unknown rank).")
        dims = [int(d.size) for d in proto.tensor_shape.dim]
        if any(d < 0 for d in dims):
            raise _invalid(f"input {key!r} declares shape {dims}: dimensions must be >= 0.")
        if not info.tensor_shape.unknown_rank:
            expected = [d.size for d in info.tensor_shape.dim]
            if len(dims) != len(expected) or any(e >= 0 and e != d for e, d in zip(expected, dims)):
                raise _invalid(f"input {key!r} of signature {signature_name!r} must have shape "
                               f"{_shape_text(info)} (-1: any), got {dims}.")
        if dims and not 1 <= dims[0] <= self.max_batch:
            raise _invalid(f"input {key!r} declares {dims[0]} rows (shape {dims}); this model takes between 1 and "
                           f"{self.max_batch} rows per request (max_batch).")
        dtype = tf.dtypes.as_dtype(proto.dtype)
        elements = math.prod(dims)
        if dtype != tf.string and elements * dtype.size > self.max_message_bytes:
            raise _invalid(f"input {key!r} declares shape {dims}: {elements * dtype.size} bytes of {dtype.name}, "
                           f"over the server's limit of {self.max_message_bytes} bytes per input.")
        if proto.tensor_content:
            if dtype == tf.string or len(proto.tensor_content) != elements * dtype.size:
                raise _invalid(f"input {key!r} declares shape {dims} ({elements} x {dtype.name}) but its "
                               f"tensor_content holds {len(proto.tensor_content)} bytes.")
        else:
            field = _VALUE_FIELDS.get(dtype)
            sent = len(getattr(proto, field)) if field else 0
            if field == "half_val" or dtype == tf.string:
                sent_ok = sent == elements
            else:  # as TF's Tensor::FromProto: no values → zeros, fewer → the last one repeated
                sent_ok = sent <= elements
            if not sent_ok:
                raise _invalid(f"input {key!r} declares shape {dims} ({elements} values) but sends {sent} values.")
        return dims

    def _inputs(self, signature_name, signature, request):
        expected, sent = set(signature.inputs), set(request.inputs)
        if expected != sent:
            raise _invalid(f"input size does not match signature {signature_name!r}: {len(sent)}!={len(expected)} "
                           f"len({{{','.join(sorted(sent))}}}) != len({{{','.join(sorted(expected))}}}). "
                           f"Sent extra: {{{','.join(sorted(sent - expected))}}}. "
                           f"Missing but required: {{{','.join(sorted(expected - sent))}}}.")
        for key in sorted(expected):  # every input's dtype and declared shape before building any of them
            info, proto = signature.inputs[key], request.inputs[key]
            if proto.dtype != info.dtype:
                raise _invalid(f"input {key!r} of signature {signature_name!r} must be {_dtype_name(info.dtype)}, "
                               f"got {_dtype_name(proto.dtype) if proto.dtype else 'no dtype'}.")
            self._declared_shape(key, signature_name, info, request.inputs[key])
        inputs = {}
        for key in sorted(expected):
            try:
                inputs[key] = tf.make_ndarray(request.inputs[key])
            except Exception as error:  # malformed TensorProto
                raise _invalid(f"input {key!r} is not a valid TensorProto: {error}") from error
        return inputs

    def _output_keys(self, signature, output_filter):
        keys = list(output_filter) or list(signature.outputs)
        for key in keys:
            if key not in signature.outputs:
                raise _invalid(f"output tensor alias not found in signature: {key} Outputs expected to be in the "
                               f"set {{{','.join(sorted(signature.outputs))}}}.")
        if len(set(keys)) != len(keys):
            raise _invalid(f"duplicate output tensor alias in {keys}")
        return keys

    def _check_response_size(self, signature, keys, inputs):
        """Refuses a request whose numeric outputs alone would exceed the send limit, before running it."""
        rows = max((value.shape[0] for value in inputs.values() if value.ndim), default=1)
        per_row = 0
        for key in keys:
            info = signature.outputs[key]
            dims = [d.size for d in info.tensor_shape.dim]
            if info.dtype == tf.string.as_datatype_enum or info.tensor_shape.unknown_rank or any(
                    d < 0 for d in dims[1:]):
                continue  # size unknown before running (the PNGs of `generate`)
            per_row += math.prod(dims[1:]) * tf.dtypes.as_dtype(info.dtype).size
        if per_row and rows * per_row > self.max_send_bytes:
            raise RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                               f"the response to {rows} rows would hold {rows * per_row} bytes ({per_row} per row of "
                               f"{', '.join(keys)}), over the server's send limit of {self.max_send_bytes} bytes; "
                               f"send at most {self.max_send_bytes // per_row} rows or use output_filter.")

    def prepare(self, request):
        """(signature name, numpy inputs, output keys) of a valid request; raises RequestError. Cheap."""
        self._check_model_spec(request.model_spec)
        name, signature = self._signature(request.model_spec)
        inputs = self._inputs(name, signature, request)
        keys = self._output_keys(signature, request.output_filter)
        self._check_response_size(signature, keys, inputs)
        return name, inputs, keys

    def run(self, prepared):
        """Runs a prepared request; the PredictResponse, or RequestError for a failed run."""
        name, inputs, keys = prepared
        self._count("runs")
        try:
            outputs = self.functions[name](**{key: tf.constant(value) for key, value in inputs.items()})
        except tf.errors.OpError as error:
            raise RequestError(_CODES.get(error.error_code, grpc.StatusCode.UNKNOWN),
                               clean_tf_message(error.message)) from error
        except (TypeError, ValueError) as error:  # rejected by the signature's Python-side checks
            raise _invalid(str(error)) from error
        response = predict_pb2.PredictResponse()
        response.model_spec.name = self.model_name
        response.model_spec.signature_name = name
        if self.version is not None:
            response.model_spec.version.value = self.version
        for key in keys:
            response.outputs[key].CopyFrom(tf.make_tensor_proto(np.asarray(outputs[key].numpy())))
        return response

    def predict(self, request):
        """PredictResponse for `request`; raises RequestError for an invalid request or a failed run."""
        return self.run(self.prepare(request))

    def get_model_metadata(self, request):
        self._check_model_spec(request.model_spec)
        unsupported = [field for field in request.metadata_field if field != "signature_def"]
        if unsupported or not request.metadata_field:
            raise _invalid(f"Metadata field(s) {unsupported or '<none>'} not supported; ask for 'signature_def'.")
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = self.model_name
        if self.version is not None:
            response.model_spec.version.value = self.version
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for name, signature in self.signature_defs.items():
            signature_map.signature_def[name].CopyFrom(signature)
        response.metadata["signature_def"].Pack(signature_map)
        return response

    def _count(self, key):
        with self.lock:
            self.counts[key] += 1


class InProcessServer:
    """A ``grpc.aio`` PredictionService over a :class:`PredictionServicer` (or the SavedModel
    `saved_model`, loaded), bound to `host`:`port` (0 = a free port), its event loop in a background thread.

    `max_workers` requests run the model at once, `max_queue` more wait (then RESOURCE_EXHAUSTED);
    `maximum_concurrent_rpcs` bounds all open calls; `read_timeout` ends calls whose request does not
    arrive in time; `max_message_bytes` / `max_send_bytes` are gRPC's receive / send limits.
    Every refused call is logged to `log_stream` (default: stderr at :meth:`start`) by an
    :class:`export.request_log.RequestLog`: one line, at most `log_limit` per `log_interval` seconds
    per kind, written by a background thread so that a stream that blocks never stops the server.
    """

    def __init__(self, saved_model, model_name="sagan", host="127.0.0.1", port=0, max_workers=DEFAULT_WORKERS,
                 max_queue=DEFAULT_QUEUE, maximum_concurrent_rpcs=DEFAULT_MAX_CONCURRENT_RPCS,
                 read_timeout=DEFAULT_READ_TIMEOUT, max_message_bytes=MAX_MESSAGE_BYTES, max_send_bytes=MAX_SEND_BYTES,
                 max_batch=None, log_stream=None, log_limit=request_log.DEFAULT_LIMIT,
                 log_interval=request_log.DEFAULT_INTERVAL):
        for name, value, low in (("max_workers", max_workers, 1), ("max_queue", max_queue, 0),
                                 ("maximum_concurrent_rpcs", maximum_concurrent_rpcs, 1), ("log_limit", log_limit, 1)):
            if int(value) < low:
                raise ValueError(f"{name}={value} must be >= {low}")
        for name, value in (("read_timeout", read_timeout), ("log_interval", log_interval)):
            if not value > 0:
                raise ValueError(f"{name}={value} must be > 0 seconds")
        if isinstance(saved_model, PredictionServicer):  # an already loaded model (tests)
            self.servicer = saved_model
        else:
            self.servicer = PredictionServicer(saved_model, model_name, max_batch=max_batch,
                                               max_message_bytes=max_message_bytes, max_send_bytes=max_send_bytes)
        self.host, self.requested_port = host, int(port)
        self.max_workers, self.max_queue = int(max_workers), int(max_queue)
        self.maximum_concurrent_rpcs, self.read_timeout = int(maximum_concurrent_rpcs), float(read_timeout)
        self.log_stream, self.log_limit, self.log_interval = log_stream, int(log_limit), float(log_interval)
        self.port = None
        self._server = self._loop = self._thread = self._pool = self._log = None
        self._admitted = 0  # running + waiting; touched only on the event loop

    @property
    def address(self):
        return f"{self.host}:{self.port}"

    @property
    def counts(self):
        return dict(self.servicer.counts)

    # --- lifecycle --------------------------------------------------------------------------------

    def start(self):
        self._log = request_log.RequestLog(self.log_stream or sys.stderr, limit=self.log_limit,
                                           interval=self.log_interval)
        self._pool = futures.ThreadPoolExecutor(max_workers=self.max_workers, thread_name_prefix="predict")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="grpc-aio-server", daemon=True)
        self._thread.start()
        try:
            self.port = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=60)
        except BaseException:
            self._shutdown_loop()
            raise
        return self

    async def _start(self):
        options = [("grpc.max_send_message_length", self.servicer.max_send_bytes),
                   ("grpc.max_receive_message_length", self.servicer.max_message_bytes)]
        self._slots = asyncio.Semaphore(self.max_workers)
        server = grpc.aio.server(options=options, maximum_concurrent_rpcs=self.maximum_concurrent_rpcs)
        handlers = {
            # Registered as stream-unary (the wire format of a unary call is the same) so that the handler
            # reads the request itself, with a timeout; and without a request deserializer, so that it
            # parses the bytes itself: bytes that fail a deserializer are answered by grpc (UNKNOWN, the
            # exception's class name) and logged with a traceback from the event loop, once per call.
            "Predict": grpc.stream_unary_rpc_method_handler(
                self._predict, response_serializer=predict_pb2.PredictResponse.SerializeToString),
            "GetModelMetadata": grpc.stream_unary_rpc_method_handler(
                self._get_model_metadata,
                response_serializer=get_model_metadata_pb2.GetModelMetadataResponse.SerializeToString),
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        port = server.add_insecure_port(f"{self.host}:{self.requested_port}")
        if not port:
            raise OSError(f"could not bind {self.host}:{self.requested_port}")
        await server.start()
        self._server = server
        return port

    def stop(self, grace=None):
        if self._server is not None:
            asyncio.run_coroutine_threadsafe(self._server.stop(grace), self._loop).result(
                timeout=None if grace is None else grace + 30)
            self._server = None
        self._shutdown_loop()

    def _shutdown_loop(self):
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30)
            self._loop.close()
            self._loop = self._thread = None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self._log is not None:
            self._log.close()  # writes the counts of suppressed lines
            self._log = None

    def wait(self):
        self._thread.join()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # --- RPCs (on the event loop) -----------------------------------------------------------------

    async def _refuse(self, context, method, code, message, kind=None):
        """Logs the refused call (one line, rate-limited; `kind` defaults to the code's name) and ends it
        with `code` and `message` (raises grpc.aio.AbortError, as ``context.abort`` does; or
        CancelledError if the call has already ended, e.g. its deadline passed, and nothing can be sent)."""
        self._log.refused(kind or code.name.lower(), method, context.peer() or "a peer already gone", code.name,
                          message)
        try:
            await context.abort(code, message)
        except grpc.aio.AbortError:
            raise
        except Exception as error:  # gRPC's ExecuteBatchError: the call is over; end the handler as cancelled
            raise asyncio.CancelledError(f"the call ended before its status could be sent ({error})") from None

    async def _guarded(self, method, context, handler):
        """Runs `handler(context)`; a bug in it ends the call INTERNAL with one log line, never a
        traceback written from the event loop (gRPC logs one for every exception a handler lets out)."""
        try:
            return await handler(context)
        except (grpc.aio.AbortError, asyncio.CancelledError):
            raise
        except Exception as error:
            self.servicer._count("error")
            await self._refuse(context, method, grpc.StatusCode.INTERNAL, describe_internal_error(error),
                               kind="internal")

    async def _read_request(self, context, method, message_class):
        """The call's one request message parsed as `message_class`; ends the call (raises AbortError) if
        none arrives within read_timeout, if the call ends without one or if its bytes do not decode."""
        try:
            data = await asyncio.wait_for(context.read(), timeout=self.read_timeout)
        except asyncio.TimeoutError:
            self.servicer._count("read_timeout")
            await self._refuse(context, method, grpc.StatusCode.DEADLINE_EXCEEDED,
                               f"no request message within {self.read_timeout:g} s (read_timeout); call ended.")
        if data is grpc.aio.EOF:
            self.servicer._count("error")
            await self._refuse(context, method, grpc.StatusCode.INVALID_ARGUMENT,
                               "the call ended without a request message.")
        try:
            return parse_request(message_class, data)
        except RequestError as error:
            self.servicer._count("error")
            await self._refuse(context, method, error.code, error.message, kind="undecodable")

    async def _predict(self, request_iterator, context):
        return await self._guarded("Predict", context, self._predict_call)

    async def _predict_call(self, context):
        request = await self._read_request(context, "Predict", predict_pb2.PredictRequest)
        try:
            prepared = self.servicer.prepare(request)  # cheap: sizes are bounded before anything is built
        except RequestError as error:
            self.servicer._count("error")
            await self._refuse(context, "Predict", error.code, error.message)
        if self._admitted >= self.max_workers + self.max_queue:
            self.servicer._count("rejected")
            await self._refuse(context, "Predict", grpc.StatusCode.RESOURCE_EXHAUSTED,
                               f"server busy: {self._admitted} requests running or queued (limit {self.max_workers} "
                               f"running + {self.max_queue} queued); retry later.")
        self._admitted += 1
        try:
            response = await self._run_admitted(prepared, context)
        finally:
            self._admitted -= 1
        return response

    async def _run_admitted(self, prepared, context):
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            self.servicer._count("expired")
            await self._refuse(context, "Predict", grpc.StatusCode.DEADLINE_EXCEEDED,
                               "deadline exceeded before the request could run.")
        try:
            await asyncio.wait_for(self._slots.acquire(), timeout=remaining)
        except asyncio.TimeoutError:
            self.servicer._count("expired")
            await self._refuse(context, "Predict", grpc.StatusCode.DEADLINE_EXCEEDED,
                               f"deadline exceeded after {remaining:.3g} s in the queue; the request did not run.")
        except asyncio.CancelledError:  # gRPC cancelled the call (its deadline passed first, or the client left)
            self.servicer._count("expired")
            raise
        try:
            remaining = context.time_remaining()
            if remaining is not None and remaining <= 0:
                self.servicer._count("expired")
                await self._refuse(context, "Predict", grpc.StatusCode.DEADLINE_EXCEEDED,
                                   "deadline exceeded in the queue; not run.")
            try:
                response = await asyncio.get_running_loop().run_in_executor(self._pool, self.servicer.run, prepared)
            except RequestError as error:
                self.servicer._count("error")
                await self._refuse(context, "Predict", error.code, error.message)
        finally:
            self._slots.release()
        self.servicer._count("ok")
        return response

    async def _get_model_metadata(self, request_iterator, context):
        return await self._guarded("GetModelMetadata", context, self._get_model_metadata_call)

    async def _get_model_metadata_call(self, context):
        request = await self._read_request(context, "GetModelMetadata",
                                           get_model_metadata_pb2.GetModelMetadataRequest)
        try:
            return self.servicer.get_model_metadata(request)
        except RequestError as error:
            await self._refuse(context, "GetModelMetadata", error.code, error.message)


def main(argv=None):
    from absl import app, flags

    flags.DEFINE_string("saved_model", None, "A SavedModel version directory or an export base (latest version).")
    flags.DEFINE_string("model_name", "sagan", "Model name clients put in model_spec.name.")
    flags.DEFINE_string("host", "127.0.0.1", "Address to bind (default: loopback only).")
    flags.DEFINE_integer("port", 8500, "gRPC port (0: a free one).", lower_bound=0, upper_bound=65535)
    flags.DEFINE_integer("max_workers", DEFAULT_WORKERS, "Requests that run the model at once.", lower_bound=1)
    flags.DEFINE_integer("max_queue", DEFAULT_QUEUE, "Requests that may wait for a worker (then RESOURCE_EXHAUSTED).",
                         lower_bound=0)
    flags.DEFINE_integer("maximum_concurrent_rpcs", DEFAULT_MAX_CONCURRENT_RPCS,
                         "Open calls at once, reading, queued or running (then RESOURCE_EXHAUSTED).", lower_bound=1)
    flags.DEFINE_float("read_timeout", DEFAULT_READ_TIMEOUT, "Seconds a call may take to send its request.",
                       lower_bound=0.001)
    flags.DEFINE_integer("max_message_bytes", MAX_MESSAGE_BYTES, "Largest request (and declared input) in bytes.",
                         lower_bound=1024)
    flags.DEFINE_integer("max_send_bytes", MAX_SEND_BYTES, "Largest response in bytes.", lower_bound=1024)
    flags.DEFINE_integer("log_limit", request_log.DEFAULT_LIMIT,
                         "Log lines per kind of refused request per --log_interval (the rest are counted).",
                         lower_bound=1)
    flags.DEFINE_float("log_interval", request_log.DEFAULT_INTERVAL, "Seconds of one --log_limit window.",
                       lower_bound=0.001)
    flags.mark_flag_as_required("saved_model")
    FLAGS = flags.FLAGS

    def run(_):
        stopped = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stopped.set())
        try:
            server = InProcessServer(FLAGS.saved_model, FLAGS.model_name, FLAGS.host, FLAGS.port,
                                     max_workers=FLAGS.max_workers, max_queue=FLAGS.max_queue,
                                     maximum_concurrent_rpcs=FLAGS.maximum_concurrent_rpcs,
                                     read_timeout=FLAGS.read_timeout, max_message_bytes=FLAGS.max_message_bytes,
                                     max_send_bytes=FLAGS.max_send_bytes, log_limit=FLAGS.log_limit,
                                     log_interval=FLAGS.log_interval).start()
        except (FileNotFoundError, OSError, ValueError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        servicer = server.servicer
        print(f"Serving model {servicer.model_name!r} version {servicer.version} from {servicer.directory} "
              f"on {server.address} (signatures: {', '.join(sorted(servicer.signature_defs))}; max_batch "
              f"{servicer.max_batch}, {server.max_workers} workers + {server.max_queue} queued). Ctrl-C stops.",
              flush=True)
        while not stopped.wait(0.5):
            pass
        server.stop(grace=2)
        counts = servicer.counts
        print(f"Stopped after {counts['ok']} ok / {counts['error']} failed requests ({counts['rejected']} rejected as "
              f"busy, {counts['expired']} expired in the queue, {counts['read_timeout']} never sent).", flush=True)
        return 0

    app.run(run, argv=argv)


if __name__ == "__main__":
    main()
