"""An in-process TF-Serving stand-in: the PredictionService gRPC API over one loaded SavedModel.

For tests and demos on machines without ``tensorflow_model_server``:

    python -m export.grpc_server --saved_model=runs/fmnist/export [--port=8500] [--model_name=sagan]

(`--saved_model` is a version directory or an export base, whose highest numeric version is served.)
or, in Python::

    with InProcessServer("runs/fmnist/export/1") as server:   # binds 127.0.0.1 on a free port
        client.predict_grpc(server.address, "sagan", "generate", {...})

What it does, as TF-Serving does: ``Predict`` on any signature (``model_spec.signature_name``,
default ``serving_default``) with ``output_filter``; request validation before running anything
(unknown model name or version → NOT_FOUND; unknown signature, missing or extra inputs, wrong dtype,
wrong rank or fixed dimension, unknown output filter → INVALID_ARGUMENT, naming the offending input);
graph errors mapped to their gRPC codes (the signatures' in-graph checks raise InvalidArgumentError →
INVALID_ARGUMENT); ``GetModelMetadata`` with the ``signature_def`` field. A failed request never
affects the next one.

Differences from TF-Serving: an unknown signature name is INVALID_ARGUMENT here (TF-Serving returns
FAILED_PRECONDITION "Serving signature key ... not found"); shapes are checked here before running
(TF-Serving feeds any shape and relies on the graph's own checks, which the export has). What it
does NOT do: request batching, version polling / hot reload, warmup replay, model management
(one model, one version, no labels), Classify/Regress/MultiInference, the REST API, TLS, monitoring.
"""
import os
import re
import signal
import sys
import threading
from concurrent import futures

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2, prediction_service_pb2_grpc

DEFAULT_SIGNATURE = "serving_default"
MAX_MESSAGE_BYTES = 512 * 2 ** 20
# TF-Serving answers FAILED_PRECONDITION here; this server follows the project's spec (INVALID_ARGUMENT).
UNKNOWN_SIGNATURE_CODE = grpc.StatusCode.INVALID_ARGUMENT
_CODES = {code.value[0]: code for code in grpc.StatusCode}


class RequestError(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


def resolve_saved_model(path):
    """(version directory, version or None) for a SavedModel directory or an export base."""
    path = os.path.abspath(path)
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        name = os.path.basename(path)
        return path, int(name) if re.fullmatch(r"\d+", name) else None
    versions = sorted(int(name) for name in (os.listdir(path) if os.path.isdir(path) else [])
                      if re.fullmatch(r"\d+", name) and os.path.isfile(os.path.join(path, name, "saved_model.pb")))
    if not versions:
        raise FileNotFoundError(f"{path!r} is neither a SavedModel directory nor an export base with numeric "
                                "version directories holding saved_model.pb.")
    return os.path.join(path, str(versions[-1])), versions[-1]


def read_signature_defs(saved_model_dir):
    """{name: SignatureDef} of the 'serve' MetaGraph, read from saved_model.pb as TF-Serving does."""
    saved_model = saved_model_pb2.SavedModel()
    with open(os.path.join(saved_model_dir, "saved_model.pb"), "rb") as f:
        saved_model.ParseFromString(f.read())
    for meta_graph in saved_model.meta_graphs:
        if "serve" in meta_graph.meta_info_def.tags:
            return {name: meta_graph.signature_def[name] for name in meta_graph.signature_def
                    if not name.startswith("__")}
    raise ValueError(f"{saved_model_dir!r} has no MetaGraph tagged 'serve'")


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


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Serves the signatures of one loaded SavedModel under `model_name`."""

    def __init__(self, saved_model, model_name="sagan"):
        self.directory, self.version = resolve_saved_model(saved_model)
        self.model_name = model_name
        self.signature_defs = read_signature_defs(self.directory)
        self.model = tf.saved_model.load(self.directory)
        self.functions = {name: self.model.signatures[name] for name in self.signature_defs}
        self.lock = threading.Lock()
        self.counts = {"ok": 0, "error": 0}

    # --- validation -------------------------------------------------------------------------------

    def _check_model_spec(self, model_spec):
        if model_spec.name and model_spec.name != self.model_name:
            raise RequestError(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Latest({model_spec.name})"
                               f"; this server serves model {self.model_name!r}.")
        if model_spec.HasField("version") and model_spec.version.value != (self.version or 0):
            raise RequestError(grpc.StatusCode.NOT_FOUND,
                               f"Servable not found for request: Specific({model_spec.name or self.model_name}, "
                               f"{model_spec.version.value}); only version {self.version} is loaded.")
        if model_spec.version_label:
            raise RequestError(grpc.StatusCode.NOT_FOUND,
                               f"version label {model_spec.version_label!r} not found (no labels are configured).")

    def _signature(self, model_spec):
        name = model_spec.signature_name or DEFAULT_SIGNATURE
        if name not in self.signature_defs:
            raise RequestError(UNKNOWN_SIGNATURE_CODE, f"Serving signature key {name!r} not found; this model has "
                               f"{sorted(self.signature_defs)}.")
        return name, self.signature_defs[name]

    @staticmethod
    def _inputs(signature_name, signature, request):
        expected, sent = set(signature.inputs), set(request.inputs)
        if expected != sent:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"input size does not match signature {signature_name!r}: {len(sent)}!={len(expected)} "
                               f"len({{{','.join(sorted(sent))}}}) != len({{{','.join(sorted(expected))}}}). "
                               f"Sent extra: {{{','.join(sorted(sent - expected))}}}. "
                               f"Missing but required: {{{','.join(sorted(expected - sent))}}}.")
        inputs = {}
        for key in sorted(expected):
            info, proto = signature.inputs[key], request.inputs[key]
            if proto.dtype != info.dtype:
                raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                                   f"input {key!r} of signature {signature_name!r} must be {_dtype_name(info.dtype)}, "
                                   f"got {_dtype_name(proto.dtype) if proto.dtype else 'no dtype'}.")
            try:
                value = tf.make_ndarray(proto)
            except Exception as error:  # malformed TensorProto (content size vs shape, ...)
                raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                                   f"input {key!r} is not a valid TensorProto: {error}") from error
            if not info.tensor_shape.unknown_rank:
                dims = [d.size for d in info.tensor_shape.dim]
                if value.ndim != len(dims) or any(d >= 0 and d != s for d, s in zip(dims, value.shape)):
                    raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                                       f"input {key!r} of signature {signature_name!r} must have shape "
                                       f"{_shape_text(info)} (-1: any), got {list(value.shape)}.")
            inputs[key] = value
        return inputs

    @staticmethod
    def _output_keys(signature, output_filter):
        keys = list(output_filter) or list(signature.outputs)
        for key in keys:
            if key not in signature.outputs:
                raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                                   f"output tensor alias not found in signature: {key} Outputs expected to be in the "
                                   f"set {{{','.join(sorted(signature.outputs))}}}.")
        if len(set(keys)) != len(keys):
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"duplicate output tensor alias in {keys}")
        return keys

    # --- RPCs -------------------------------------------------------------------------------------

    def predict(self, request):
        """PredictResponse for `request`; raises RequestError for an invalid request or a failed run."""
        self._check_model_spec(request.model_spec)
        name, signature = self._signature(request.model_spec)
        inputs = self._inputs(name, signature, request)
        keys = self._output_keys(signature, request.output_filter)
        try:
            outputs = self.functions[name](**{key: tf.constant(value) for key, value in inputs.items()})
        except tf.errors.OpError as error:
            raise RequestError(_CODES.get(error.error_code, grpc.StatusCode.UNKNOWN),
                               clean_tf_message(error.message)) from error
        except (TypeError, ValueError) as error:  # rejected by the signature's Python-side checks
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, str(error)) from error
        response = predict_pb2.PredictResponse()
        response.model_spec.name = self.model_name
        response.model_spec.signature_name = name
        if self.version is not None:
            response.model_spec.version.value = self.version
        for key in keys:
            response.outputs[key].CopyFrom(tf.make_tensor_proto(np.asarray(outputs[key].numpy())))
        return response

    def Predict(self, request, context):
        try:
            response = self.predict(request)
        except RequestError as error:
            self._count("error")
            context.abort(error.code, error.message)
        except Exception as error:  # never let one request take the server down
            self._count("error")
            context.abort(grpc.StatusCode.INTERNAL, f"{type(error).__name__}: {error}")
        self._count("ok")
        return response

    def GetModelMetadata(self, request, context):
        try:
            self._check_model_spec(request.model_spec)
            unsupported = [field for field in request.metadata_field if field != "signature_def"]
            if unsupported or not request.metadata_field:
                raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                                   f"Metadata field(s) {unsupported or '<none>'} not supported; "
                                   "ask for 'signature_def'.")
        except RequestError as error:
            context.abort(error.code, error.message)
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
    """A grpcio server with a :class:`PredictionServicer`, bound to `host` on `port` (0 = a free port)."""

    def __init__(self, saved_model, model_name="sagan", host="127.0.0.1", port=0, max_workers=4):
        self.servicer = PredictionServicer(saved_model, model_name)
        self.host, self.requested_port, self.max_workers = host, int(port), max_workers
        self.port = None
        self._server = None

    @property
    def address(self):
        return f"{self.host}:{self.port}"

    def start(self):
        options = [("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                   ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)]
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=self.max_workers), options=options)
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(self.servicer, self._server)
        self.port = self._server.add_insecure_port(f"{self.host}:{self.requested_port}")
        if not self.port:
            raise OSError(f"could not bind {self.host}:{self.requested_port}")
        self._server.start()
        return self

    def stop(self, grace=None):
        if self._server is not None:
            self._server.stop(grace).wait()
            self._server = None

    def wait(self):
        self._server.wait_for_termination()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def main(argv=None):
    from absl import app, flags

    flags.DEFINE_string("saved_model", None, "A SavedModel version directory or an export base (latest version).")
    flags.DEFINE_string("model_name", "sagan", "Model name clients put in model_spec.name.")
    flags.DEFINE_string("host", "127.0.0.1", "Address to bind (default: loopback only).")
    flags.DEFINE_integer("port", 8500, "gRPC port (0: a free one).", lower_bound=0, upper_bound=65535)
    flags.mark_flag_as_required("saved_model")
    FLAGS = flags.FLAGS

    def run(_):
        try:
            server = InProcessServer(FLAGS.saved_model, FLAGS.model_name, FLAGS.host, FLAGS.port).start()
        except (FileNotFoundError, OSError, ValueError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        servicer = server.servicer
        print(f"Serving model {servicer.model_name!r} version {servicer.version} from {servicer.directory} "
              f"on {server.address} (signatures: {', '.join(sorted(servicer.signature_defs))}). Ctrl-C stops.",
              flush=True)
        stopped = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stopped.set())
        while not stopped.wait(0.5):
            pass
        server.stop(grace=2)
        print(f"Stopped after {servicer.counts['ok']} ok / {servicer.counts['error']} failed requests.", flush=True)
        return 0

    app.run(run, argv=argv)


if __name__ == "__main__":
    main()
