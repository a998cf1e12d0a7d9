"""Client for a served SAGAN generator (TF-Serving or export.grpc_server): request images, write a PNG grid.

    python -m export.client --server=localhost:8500 --model_name=sagan --label=207 --num=4 --out=out.png \
        [--signature=serving_default|generate|attention] [--seed=0] [--truncation=0] [--rows=R]
    python -m export.client --rest=http://localhost:8501 --model_name=sagan --label=3 --num=8 --out=out.png

gRPC goes through tensorflow-serving-api's PredictionService stub; ``--rest`` uses TF-Serving's REST
API (``POST /v1/models/<name>[/versions/<v>]:predict`` with ``signature_name`` and columnar
``inputs``). ``--label`` is one class or a comma list, cycled over the ``--num`` images.
``--class_name=cats[,dogs]`` asks by name instead, with the name → label map from ``--classes``: an
export's version directory (its ``assets.extra/classes.json``), a run directory or a ``classes.json``
(see ``sagan_tf.run.class_map``; TF-Serving itself does not serve that file).

* ``serving_default`` / ``attention``: the client draws z itself (numpy, from ``--seed``; with
  ``--truncation=t > 0`` every |z| > t is redrawn: `sagan_tf.sampling.noise.sample_noise`) and needs
  z_dim: ``--z_dim`` or, by default, the model's metadata (gRPC GetModelMetadata / REST ``.../metadata``).
* ``generate``: the server draws z; row i uses seed ``--seed + i`` and ``--truncation``.

``--truncation`` follows the project's one convention (`sagan_tf.sampling.noise`): t > 0 truncates, 0 (the
default) is none, a negative or non-finite value is refused, naming it, before any request is sent.

Requests larger than ``--batch`` (default 64) are split. Errors print the server's status and message
and exit with status 1.
"""
import json
import math
import sys
import urllib.error
import urllib.request

import grpc
import numpy as np
import tensorflow as tf
from absl import app, flags
from tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2, prediction_service_pb2_grpc

from sagan_tf.run import class_map
from sagan_tf.sampling.images import image_grid, save_png, to_uint8
from sagan_tf.sampling.noise import check_truncation, sample_noise

SIGNATURES = ("serving_default", "generate", "attention")
MAX_MESSAGE_BYTES = 512 * 2 ** 20


class ServingError(RuntimeError):
    """A failed request; `code` is the gRPC status name or the HTTP status."""

    def __init__(self, code, message):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


# --- gRPC --------------------------------------------------------------------------------------------

def _stub(server):
    channel = grpc.insecure_channel(server, options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                                                     ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)])
    return channel, prediction_service_pb2_grpc.PredictionServiceStub(channel)


def _model_spec(spec, model_name, signature_name=None, version=None):
    spec.name = model_name
    if signature_name:
        spec.signature_name = signature_name
    if version is not None:
        spec.version.value = int(version)


class GrpcClient:
    """One channel to `server` kept open across calls (a connection set up once, as a long-lived client
    holds it); a context manager that closes it. `predict_grpc` / `signature_inputs_grpc` open one per call."""

    def __init__(self, server):
        self.server = server
        self._channel, self._stub = _stub(server)

    def predict(self, model_name, signature_name, inputs, output_filter=(), timeout=60.0, version=None):
        """{output: ndarray} of one Predict call; `inputs` maps input names to arrays of the signature's dtypes."""
        request = predict_pb2.PredictRequest()
        _model_spec(request.model_spec, model_name, signature_name, version)
        for key, value in inputs.items():
            request.inputs[key].CopyFrom(tf.make_tensor_proto(np.asarray(value)))
        request.output_filter.extend(output_filter)
        try:
            response = self._stub.Predict(request, timeout=timeout)
        except grpc.RpcError as error:
            raise ServingError(error.code().name, error.details()) from error
        return {key: tf.make_ndarray(proto) for key, proto in response.outputs.items()}

    def signature_inputs(self, model_name, timeout=30.0, version=None):
        """{signature: {input: shape list}} from GetModelMetadata (-1 = any size)."""
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        _model_spec(request.model_spec, model_name, version=version)
        try:
            response = self._stub.GetModelMetadata(request, timeout=timeout)
        except grpc.RpcError as error:
            raise ServingError(error.code().name, error.details()) from error
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_map)
        return {name: {key: [d.size for d in info.tensor_shape.dim] for key, info in signature.inputs.items()}
                for name, signature in signature_map.signature_def.items()}

    def close(self):
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def predict_grpc(server, model_name, signature_name, inputs, output_filter=(), timeout=60.0, version=None):
    """{output: ndarray} of one Predict call on a channel of its own (see `GrpcClient.predict`)."""
    with GrpcClient(server) as client:
        return client.predict(model_name, signature_name, inputs, output_filter, timeout, version)


def signature_inputs_grpc(server, model_name, timeout=30.0, version=None):
    """{signature: {input: shape list}} from GetModelMetadata (-1 = any size), on a channel of its own."""
    with GrpcClient(server) as client:
        return client.signature_inputs(model_name, timeout, version)


# --- REST --------------------------------------------------------------------------------------------

def _rest_url(base, model_name, version, suffix):
    url = f"{base.rstrip('/')}/v1/models/{model_name}"
    if version is not None:
        url += f"/versions/{int(version)}"
    return url + suffix


def _rest_call(url, payload=None, timeout=60.0):
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"},
                                     method="GET" if payload is None else "POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
    except urllib.error.HTTPError as error:
        body = error.read().decode("utf-8", "replace")
        try:
            message = json.loads(body).get("error", body)
        except ValueError:
            message = body
        raise ServingError(f"HTTP {error.code}", message) from error
    except urllib.error.URLError as error:
        raise ServingError("UNAVAILABLE", f"{url}: {error.reason}") from error
    # TF-Serving writes DT_STRING outputs whose name does not end in "_bytes" (generate's "png") as raw
    # bytes inside JSON strings, which need not be valid UTF-8: keep such bytes as surrogates.
    return json.loads(body.decode("utf-8", "surrogateescape"))


def predict_rest(url, model_name, signature_name, inputs, timeout=60.0, version=None):
    """{output: ndarray} of one REST predict call (columnar "inputs" format).

    Numeric outputs come back as nested lists (converted with numpy's default dtypes: cast as
    needed); string outputs as str (see `_rest_call`).
    """
    payload = {"signature_name": signature_name,
               "inputs": {key: np.asarray(value).tolist() for key, value in inputs.items()}}
    result = _rest_call(_rest_url(url, model_name, version, ":predict"), payload, timeout)
    outputs = result["outputs"]
    if not isinstance(outputs, dict):  # a single-output signature: TF-Serving drops the name
        outputs = {"images": outputs}
    return {key: (np.asarray(value) if not _is_string_list(value) else value) for key, value in outputs.items()}


def _is_string_list(value):
    while isinstance(value, list) and value:
        value = value[0]
    return isinstance(value, (str, dict))


def signature_inputs_rest(url, model_name, timeout=30.0, version=None):
    """{signature: {input: shape list}} from ``GET /v1/models/<name>/metadata``."""
    result = _rest_call(_rest_url(url, model_name, version, "/metadata"), None, timeout)
    signatures = result["metadata"]["signature_def"]["signature_def"]
    return {name: {key: [int(d.get("size", -1)) for d in info.get("tensor_shape", {}).get("dim", [])]
                   for key, info in signature.get("inputs", {}).items()}
            for name, signature in signatures.items()}


# --- images ------------------------------------------------------------------------------------------

def parse_labels(text):
    try:
        labels = [int(part) for part in str(text).split(",") if part.strip()]
    except ValueError as error:
        raise ValueError(f"--label={text!r} must be an integer or a comma-separated list of integers") from error
    if not labels:
        raise ValueError("--label needs at least one class")
    return labels


def labels_from_names(text, classes):
    """Labels of the comma-separated class names `text`, from the class map `classes` (a classes.json, or a
    directory holding one: an export version directory or a run directory)."""
    names = [part.strip() for part in str(text).split(",") if part.strip()]
    if not names:
        raise ValueError("--class_name needs at least one name")
    if not classes:
        raise ValueError("--class_name needs --classes=<export version dir, run dir or classes.json> (the "
                         "name -> label map)")
    path = class_map.find_class_map(classes)
    if path is None:
        raise ValueError(f"--classes={classes} holds no {class_map.CLASS_MAP_FILE} (nor "
                         f"{class_map.EXPORT_CLASS_MAP}); the model may have no class names")
    return class_map.labels_for_names(names, class_map.read_class_map(path), path)


def request_images(signature="serving_default", labels=(0,), num=4, seed=0, truncation=0.0, server=None,
                   rest=None, model_name="sagan", z_dim=None, batch=64, timeout=60.0, version=None):
    """uint8 images [num, H, W, C] from a server (gRPC `server` host:port, or REST `rest` base URL)."""
    if (server is None) == (rest is None):
        raise ValueError("pass exactly one of server (gRPC host:port) and rest (http://host:port)")
    if signature not in SIGNATURES:
        raise ValueError(f"--signature={signature!r}; expected one of {SIGNATURES}")
    if num < 1 or batch < 1:
        raise ValueError(f"--num ({num}) and --batch ({batch}) must be >= 1")
    check_truncation(truncation)  # a ValueError naming a negative or non-finite value
    all_labels = np.asarray(labels, np.int32)[np.arange(num) % len(labels)]
    if signature == "generate":
        inputs = {"label": all_labels, "seed": np.int64(seed) + np.arange(num, dtype=np.int64),
                  "truncation": np.full([num], truncation, np.float32)}
    else:
        if z_dim is None:
            shapes = (signature_inputs_grpc(server, model_name, timeout, version) if server
                      else signature_inputs_rest(rest, model_name, timeout, version))
            z_dim = shapes[signature]["z"][1]
        inputs = {"z": sample_noise(num, int(z_dim), truncation, seed), "label": all_labels}
    chunks = []
    for start in range(0, num, batch):
        part = {key: value[start:start + batch] for key, value in inputs.items()}
        if server:
            outputs = predict_grpc(server, model_name, signature, part, output_filter=["images"], timeout=timeout,
                                   version=version)
        else:
            outputs = predict_rest(rest, model_name, signature, part, timeout=timeout, version=version)
        images = np.asarray(outputs["images"])
        chunks.append(images.astype(np.uint8) if signature == "generate" else to_uint8(images))
    return np.concatenate(chunks)


def default_rows(num):
    """The largest divisor of num that is <= sqrt(num) (a near-square grid)."""
    return max(d for d in range(1, int(math.isqrt(num)) + 1) if num % d == 0)


def main(argv=None):
    flags.DEFINE_string("server", "localhost:8500", "gRPC address host:port of TF-Serving / export.grpc_server.")
    flags.DEFINE_string("rest", None, "REST base URL (e.g. http://localhost:8501); used instead of --server.")
    flags.DEFINE_string("model_name", "sagan", "Model name.")
    flags.DEFINE_integer("version", None, "Model version (default: the server's latest).")
    flags.DEFINE_enum("signature", "serving_default", list(SIGNATURES), "Signature to call.")
    flags.DEFINE_string("label", "0", "Class label, or a comma-separated list cycled over the images.")
    flags.DEFINE_string("class_name", None, "Class name(s) instead of --label, e.g. cats or cats,dogs (needs "
                        "--classes).")
    flags.DEFINE_string("classes", None, "The name -> label map for --class_name: an export version directory "
                        "(assets.extra/classes.json), a run directory or a classes.json file.")
    flags.DEFINE_integer("num", 4, "Number of images.", lower_bound=1)
    flags.DEFINE_integer("seed", 0, "Noise seed (generate: row i uses seed+i).")
    flags.DEFINE_float("truncation", 0.0, "Truncation t > 0: |z| <= t; 0 means none.")
    flags.DEFINE_integer("z_dim", None, "Noise width for serving_default/attention (default: from model metadata).")
    flags.DEFINE_integer("rows", None, "Grid rows (default: near-square).", lower_bound=1)
    flags.DEFINE_integer("batch", 64, "Largest batch per request.", lower_bound=1)
    flags.DEFINE_float("timeout", 60.0, "Per-request timeout in seconds.")
    flags.DEFINE_string("out", "samples.png", "Output PNG grid.")
    FLAGS = flags.FLAGS

    def run(_):
        try:
            if FLAGS.class_name is not None:
                if FLAGS["label"].present:
                    raise ValueError("pass --label or --class_name, not both")
                labels = labels_from_names(FLAGS.class_name, FLAGS.classes)
            else:
                labels = parse_labels(FLAGS.label)
            rows = FLAGS.rows or default_rows(FLAGS.num)
            if FLAGS.num % rows:
                raise ValueError(f"--rows={rows} does not divide --num={FLAGS.num}")
            images = request_images(FLAGS.signature, labels, FLAGS.num, FLAGS.seed, FLAGS.truncation,
                                    server=None if FLAGS.rest else FLAGS.server, rest=FLAGS.rest,
                                    model_name=FLAGS.model_name, z_dim=FLAGS.z_dim, batch=FLAGS.batch,
                                    timeout=FLAGS.timeout, version=FLAGS.version)
        except (ServingError, ValueError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        save_png(FLAGS.out, image_grid(images, rows))
        print(f"Wrote {FLAGS.out}: {FLAGS.num} images ({images.shape[1]}x{images.shape[2]}x{images.shape[3]}) "
              f"from {FLAGS.rest or FLAGS.server} {FLAGS.model_name}/{FLAGS.signature}, labels {labels}.")
        return 0

    app.run(run, argv=argv)


if __name__ == "__main__":
    main()
