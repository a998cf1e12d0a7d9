"""TF-Serving side files of an export: `models.config`, `batching_parameters.txt`, warmup requests.

* ``models.config`` — a ``ModelServerConfig`` text proto (``model_config_list``) naming the model and
  its base path (the directory holding the numbered versions); pass it with ``--model_config_file``.
* ``batching_parameters.txt`` — a ``BatchingParameters`` text proto for ``--enable_batching
  --batching_parameters_file``. ``max_batch_size`` equals the export's ``max_batch``: batching merges
  requests along dim 0, and a merged batch above the graph's limit would fail requests that were each
  valid. ``num_batch_threads`` should match the serving machine's cores.
* ``<version>/assets.extra/tf_serving_warmup_requests`` — a TFRecord file of ``PredictionLog`` records
  (one ``PredictRequest`` per signature) that TF-Serving replays when it loads the version, so the
  first real request does not pay for graph initialisation.

The protos come from ``tensorflow-serving-api``, except ``BatchingParameters``, which that package does
not ship: :func:`parse_batching_parameters` checks our text against a copy of its field list
(``tensorflow_serving/servables/tensorflow/session_bundle_config.proto``, fields 1–7).
"""
import numpy as np
import tensorflow as tf
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format, wrappers_pb2
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2
from tensorflow_serving.config import model_server_config_pb2

from sagan_tf.run import files

MODELS_CONFIG = "models.config"
BATCHING_PARAMETERS = "batching_parameters.txt"
WARMUP_DIR = "assets.extra"
WARMUP_FILE = "tf_serving_warmup_requests"
DEFAULT_BATCHING = dict(batch_timeout_micros=2000, max_enqueued_batches=16, num_batch_threads=2)


def _quote(text):
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"') + '"'


def models_config_text(model_name, base_path, num_versions=1):
    """The ``model_config_list`` text proto serving the newest `num_versions` versions under `base_path`."""
    if not model_name:
        raise ValueError("model_name must not be empty")
    return (
        "model_config_list {\n"
        "  config {\n"
        f"    name: {_quote(model_name)}\n"
        f"    base_path: {_quote(base_path)}\n"
        '    model_platform: "tensorflow"\n'
        f"    model_version_policy {{ latest {{ num_versions: {int(num_versions)} }} }}\n"
        "  }\n"
        "}\n")


def batching_parameters_text(max_batch_size, batch_timeout_micros=DEFAULT_BATCHING["batch_timeout_micros"],
                             max_enqueued_batches=DEFAULT_BATCHING["max_enqueued_batches"],
                             num_batch_threads=DEFAULT_BATCHING["num_batch_threads"], allowed_batch_sizes=()):
    """A ``BatchingParameters`` text proto; `allowed_batch_sizes` (optional) must end at max_batch_size."""
    values = dict(max_batch_size=max_batch_size, batch_timeout_micros=batch_timeout_micros,
                  max_enqueued_batches=max_enqueued_batches, num_batch_threads=num_batch_threads)
    for name, value in values.items():
        if int(value) < (0 if name == "batch_timeout_micros" else 1):
            raise ValueError(f"batching {name}={value} is out of range")
    allowed = [int(size) for size in allowed_batch_sizes]
    if allowed and (allowed != sorted(set(allowed)) or allowed[-1] != int(max_batch_size)):
        raise ValueError(f"allowed_batch_sizes={allowed} must increase and end at max_batch_size={max_batch_size}")
    lines = [f"{name} {{ value: {int(value)} }}" for name, value in values.items()]
    lines += [f"allowed_batch_sizes: {size}" for size in allowed]
    return "\n".join(lines) + "\n"


def parse_models_config(text):
    """Parses ``models.config`` text into a ``tensorflow.serving.ModelServerConfig`` (raises on bad text)."""
    return text_format.Parse(text, model_server_config_pb2.ModelServerConfig())


_BATCHING_CLASS = None


def _batching_parameters_class():
    """``tensorflow.serving.BatchingParameters`` built from its field list (not shipped in the pip package)."""
    global _BATCHING_CLASS
    if _BATCHING_CLASS is None:
        pool = descriptor_pool.DescriptorPool()
        pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
        proto = descriptor_pb2.FileDescriptorProto(name="sagan_batching_parameters.proto",
                                                   package="tensorflow.serving", syntax="proto3",
                                                   dependency=["google/protobuf/wrappers.proto"])
        message = proto.message_type.add(name="BatchingParameters")
        F = descriptor_pb2.FieldDescriptorProto
        int64, string = ".google.protobuf.Int64Value", ".google.protobuf.StringValue"
        fields = [("max_batch_size", int64), ("batch_timeout_micros", int64), ("max_enqueued_batches", int64),
                  ("num_batch_threads", int64), ("thread_pool_name", string)]
        for number, (name, type_name) in enumerate(fields, start=1):
            message.field.add(name=name, number=number, type=F.TYPE_MESSAGE, type_name=type_name,
                              label=F.LABEL_OPTIONAL)
        message.field.add(name="allowed_batch_sizes", number=6, type=F.TYPE_INT64, label=F.LABEL_REPEATED)
        message.field.add(name="pad_variable_length_inputs", number=7, type=F.TYPE_BOOL, label=F.LABEL_OPTIONAL)
        pool.Add(proto)
        descriptor = pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters")
        _BATCHING_CLASS = message_factory.GetMessageClass(descriptor)
    return _BATCHING_CLASS


def parse_batching_parameters(text):
    """Parses ``batching_parameters.txt`` into a BatchingParameters message (raises on unknown fields)."""
    return text_format.Parse(text, _batching_parameters_class()())


def write_serving_files(export_base, model_name, base_path, max_batch_size, **batching):
    """Writes ``models.config`` and ``batching_parameters.txt`` into `export_base` (atomically each)."""
    config = models_config_text(model_name, base_path)
    batch = batching_parameters_text(max_batch_size, **batching)
    parse_models_config(config)
    parse_batching_parameters(batch)
    paths = {"models_config": files.join(export_base, MODELS_CONFIG),
             "batching_parameters": files.join(export_base, BATCHING_PARAMETERS)}
    files.atomic_write_text(paths["models_config"], config)
    files.atomic_write_text(paths["batching_parameters"], batch)
    return paths


# --- warmup ------------------------------------------------------------------------------------------

def warmup_inputs(z_dim, seed=0):
    """{signature: {input: ndarray}}: small valid requests for every signature (label 0, fixed noise)."""
    rng = np.random.default_rng(seed)
    return {
        "serving_default": {"z": rng.standard_normal((1, z_dim)).astype(np.float32),
                            "label": np.zeros([1], np.int32)},
        "generate": {"label": np.zeros([2], np.int32), "seed": np.array([0, 1], np.int64),
                     "truncation": np.array([0.0, 0.5], np.float32)},
        "attention": {"z": rng.standard_normal((1, z_dim)).astype(np.float32), "label": np.zeros([1], np.int32)},
    }


def warmup_logs(model_name, z_dim):
    """``PredictionLog`` records, one ``PredictRequest`` per signature."""
    logs = []
    for signature, inputs in warmup_inputs(z_dim).items():
        request = predict_pb2.PredictRequest()
        request.model_spec.name = model_name
        request.model_spec.signature_name = signature
        for key, value in inputs.items():
            request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
        logs.append(prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request)))
    return logs


def write_warmup(saved_model_dir, model_name, z_dim):
    """Writes ``<saved_model_dir>/assets.extra/tf_serving_warmup_requests``; returns its path."""
    directory = files.join(saved_model_dir, WARMUP_DIR)
    files.makedirs(directory)
    path = files.join(directory, WARMUP_FILE)
    with tf.io.TFRecordWriter(path) as writer:
        for log in warmup_logs(model_name, z_dim):
            writer.write(log.SerializeToString())
    return path


def read_warmup(path):
    """The ``PredictionLog`` records of a warmup file (raises if a record does not parse)."""
    logs = []
    for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
        log = prediction_log_pb2.PredictionLog()
        log.ParseFromString(record)
        logs.append(log)
    return logs
