"""Serving the export: the in-process gRPC PredictionService driven by tensorflow-serving-api's client,
request validation (INVALID_ARGUMENT and the server keeps serving), warmup records, the client CLI over
gRPC and REST, and the real tensorflow_model_server when it is installed."""
import http.server
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from google.protobuf import json_format
from tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2, prediction_service_pb2_grpc

from export import client, serving_config
from export.grpc_server import InProcessServer
from export.signatures import sample_z
from sagan_tf.visualization import image_grid, to_uint8
from tests.helpers import ROOT
from tests.test_export import CLASSES, RES, Z_DIM, exported, keras_ema, sample_inputs


@pytest.fixture(scope="module")
def server():
    _, version_dir = exported()
    with InProcessServer(version_dir, model_name="sagan") as running:
        yield running


def stub_for(address):
    channel = grpc.insecure_channel(address)
    return channel, prediction_service_pb2_grpc.PredictionServiceStub(channel)


def raw_request(signature, inputs, model_name="sagan"):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature
    for key, value in inputs.items():
        request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
    return request


def expected_generate(labels, seeds, truncations):
    z = sample_z(tf.constant(seeds, tf.int64), tf.constant(truncations, tf.float32), Z_DIM)
    return to_uint8(keras_ema()((z, tf.constant(labels, tf.int32)), training=False).numpy())


def assert_serving_works(address):
    z, labels = sample_inputs(3, seed=5)
    out = client.predict_grpc(address, "sagan", "serving_default", {"z": z, "label": labels})
    np.testing.assert_allclose(out["images"], keras_ema()((z, labels)).numpy(), atol=1e-5)


# --- valid requests ----------------------------------------------------------------------------------

def test_grpc_predict_equals_the_local_model(server):
    z, labels = sample_inputs()
    images, maps = keras_ema()((z, labels), training=False, return_attention=True)
    out = client.predict_grpc(server.address, "sagan", "serving_default", {"z": z, "label": labels})
    assert set(out) == {"images"} and out["images"].dtype == np.float32
    np.testing.assert_allclose(out["images"], images.numpy(), atol=1e-5)

    out = client.predict_grpc(server.address, "sagan", "attention", {"z": z, "label": labels})
    np.testing.assert_allclose(out["attention_0"], maps[0].numpy(), atol=1e-5)
    np.testing.assert_allclose(out["images"], images.numpy(), atol=1e-5)

    labels, seeds, truncations = [2, 0, 1], [11, 12, 11], [0.0, 0.4, 0.0]
    inputs = {"label": np.int32(labels), "seed": np.int64(seeds), "truncation": np.float32(truncations)}
    out = client.predict_grpc(server.address, "sagan", "generate", inputs)
    assert out["images"].dtype == np.uint8 and out["png"].shape == (3,)
    assert np.abs(out["images"].astype(int) - expected_generate(labels, seeds, truncations).astype(int)).max() <= 1
    decoded = np.stack([np.asarray(Image.open(io.BytesIO(png)))[..., None] for png in out["png"]])
    np.testing.assert_array_equal(decoded, out["images"])
    # output_filter: only what was asked for.
    only = client.predict_grpc(server.address, "sagan", "generate", inputs, output_filter=["images"])
    assert set(only) == {"images"}
    np.testing.assert_array_equal(only["images"], out["images"])


def test_grpc_response_names_model_version_and_signature(server):
    channel, stub = stub_for(server.address)
    with channel:
        response = stub.Predict(raw_request("generate", {"label": np.int32([0]), "seed": np.int64([1]),
                                                         "truncation": np.float32([0.0])}), timeout=60)
    assert (response.model_spec.name, response.model_spec.version.value, response.model_spec.signature_name) == \
        ("sagan", 1, "generate")
    # An empty signature name means serving_default, as in TF-Serving.
    z, labels = sample_inputs(2)
    request = raw_request("", {"z": z, "label": labels})
    with grpc.insecure_channel(server.address) as channel:
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=60)
    assert response.model_spec.signature_name == "serving_default"


def test_model_metadata_lists_signature_inputs(server):
    shapes = client.signature_inputs_grpc(server.address, "sagan")
    assert shapes == {"serving_default": {"z": [-1, Z_DIM], "label": [-1]},
                      "attention": {"z": [-1, Z_DIM], "label": [-1]},
                      "generate": {"label": [-1], "seed": [-1], "truncation": [-1]}}


def test_concurrent_requests_all_answered_correctly(server):
    z, labels = sample_inputs(4, seed=9)
    expected = keras_ema()((z, labels)).numpy()
    results, failures = [], []

    def worker():
        try:
            for _ in range(3):
                results.append(client.predict_grpc(server.address, "sagan", "serving_default",
                                                   {"z": z, "label": labels})["images"])
        except Exception as error:  # collected, asserted below
            failures.append(error)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not failures and len(results) == 12
    for images in results:
        np.testing.assert_allclose(images, expected, atol=1e-5)


# --- invalid requests --------------------------------------------------------------------------------

def _generate_inputs(n, label=0, truncation=0.0):
    return {"label": np.full([n], label, np.int32), "seed": np.arange(n, dtype=np.int64),
            "truncation": np.full([n], truncation, np.float32)}


z3, labels3 = sample_inputs(3)
BAD_REQUESTS = {
    "dtype": ("serving_default", {"z": z3.astype(np.float64), "label": labels3}, r"'z'.*must be float32, got float64"),
    "label_dtype": ("generate", {**_generate_inputs(2), "label": np.zeros(2, np.int64)}, r"'label'.*int32, got int64"),
    "z_width": ("serving_default", {"z": np.zeros((3, Z_DIM + 1), np.float32), "label": labels3},
                rf"'z'.*shape \[-1, {Z_DIM}\].*got \[3, {Z_DIM + 1}\]"),
    "label_range": ("serving_default", {"z": z3, "label": np.int32([0, 3, 1])},
                    r"label values must be in \[0, 3\); out of range:\] \[3\] \[at rows\] \[1\]"),
    "negative_label": ("generate", _generate_inputs(2, label=-1), r"out of range:\] \[-1 -1\]"),
    "batch_too_large": ("generate", _generate_inputs(257), r"between 1 and 256; label has\] \[257\]"),
    "batch_mismatch": ("serving_default", {"z": z3, "label": np.int32([0, 1])},
                       r"z has\] \[3\] \[rows, label has\] \[2\]"),
    "non_finite_truncation": ("generate", _generate_inputs(2, truncation=np.nan), r"truncation must be finite.*nan"),
    "unknown_signature": ("sample", {"z": z3, "label": labels3}, r"signature key 'sample' not found"),
    "missing_input": ("serving_default", {"z": z3}, r"Missing but required: \{label\}"),
    "extra_input": ("serving_default", {"z": z3, "label": labels3, "seed": np.int64([1, 2, 3])},
                    r"Sent extra: \{seed\}"),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_requests_get_invalid_argument_and_the_server_keeps_serving(server, case):
    signature, inputs, pattern = BAD_REQUESTS[case]
    with pytest.raises(client.ServingError) as raised:
        client.predict_grpc(server.address, "sagan", signature, inputs)
    assert raised.value.code == "INVALID_ARGUMENT", raised.value
    assert re.search(pattern, raised.value.message), raised.value.message
    assert_serving_works(server.address)


def test_unknown_model_or_version_is_not_found(server):
    z, labels = sample_inputs(2)
    for kwargs in ({"model_name": "other"}, {"model_name": "sagan", "version": 7}):
        name = kwargs.pop("model_name")
        with pytest.raises(client.ServingError) as raised:
            client.predict_grpc(server.address, name, "serving_default", {"z": z, "label": labels}, **kwargs)
        assert raised.value.code == "NOT_FOUND", raised.value
    with pytest.raises(client.ServingError, match="INVALID_ARGUMENT.*output tensor alias not found.*pixels"):
        client.predict_grpc(server.address, "sagan", "serving_default", {"z": z, "label": labels},
                            output_filter=["pixels"])
    assert_serving_works(server.address)


# --- warmup and serving files ------------------------------------------------------------------------

def test_warmup_records_parse_and_succeed_against_the_server(server):
    _, version_dir = exported()
    logs = serving_config.read_warmup(os.path.join(version_dir, serving_config.WARMUP_DIR, serving_config.WARMUP_FILE))
    assert [log.WhichOneof("log_type") for log in logs] == ["predict_log"] * 3
    requests = [log.predict_log.request for log in logs]
    assert sorted(r.model_spec.signature_name for r in requests) == ["attention", "generate", "serving_default"]
    channel, stub = stub_for(server.address)
    with channel:
        for request in requests:
            response = stub.Predict(request, timeout=60)
            assert "images" in response.outputs, request.model_spec.signature_name


# --- the client --------------------------------------------------------------------------------------

def run_module(module, *args, timeout=300, **popen):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout, **popen)


def test_client_cli_writes_the_grid_over_grpc(server, tmp_path):
    out = tmp_path / "grid.png"
    result = run_module("export.client", f"--server={server.address}", "--model_name=sagan", "--label=1,2",
                        "--num=4", "--signature=generate", "--seed=40", "--truncation=0.7", f"--out={out}")
    assert result.returncode == 0, result.stderr[-2000:]
    grid = np.asarray(Image.open(out))
    expected = expected_generate([1, 2, 1, 2], [40, 41, 42, 43], [0.7] * 4)
    assert grid.shape == (2 * RES, 2 * RES)  # 4 images, 2 rows, grayscale
    assert np.abs(grid.astype(int) - image_grid(expected, 2)[..., 0].astype(int)).max() <= 1
    # What the CLI prints (and exits 1 on) for a bad request: the server's status and message.
    with pytest.raises(client.ServingError, match=r"INVALID_ARGUMENT: .*out of range:\] \[5 5\]"):
        client.request_images("generate", [5], num=2, server=server.address)


def test_client_serving_default_uses_metadata_z_dim_and_its_truncation(server):
    images = client.request_images("serving_default", [0, 2], num=3, seed=4, truncation=0.5, server=server.address,
                                   batch=2)  # two requests: 2 + 1
    z = client.sample_z(3, Z_DIM, seed=4, truncation=0.5)
    assert np.abs(z).max() <= 0.5
    expected = to_uint8(keras_ema()((z, np.int32([0, 2, 0]))).numpy())
    assert np.abs(images.astype(int) - expected.astype(int)).max() <= 1
    np.testing.assert_array_equal(client.sample_z(3, Z_DIM, seed=4), client.sample_z(3, Z_DIM, seed=4, truncation=0))


class FakeRestServing(http.server.BaseHTTPRequestHandler):
    """TF-Serving's REST API in front of the in-process servicer, writing JSON as TF-Serving does:
    columnar "outputs", a bare value for one-output signatures, raw bytes for strings not named *_bytes."""

    servicer = None

    def log_message(self, *args):
        pass

    def _reply(self, status, body):
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        assert self.path == "/v1/models/sagan/metadata", self.path
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        response = self.servicer.GetModelMetadata(request, context=None)  # context is only used on errors
        # As TF-Serving's ToJsonString: proto field names, the Any unpacked into a SignatureDefMap.
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_map)
        body = {"model_spec": json_format.MessageToDict(response.model_spec, preserving_proto_field_name=True),
                "metadata": {"signature_def": json_format.MessageToDict(signature_map,
                                                                        preserving_proto_field_name=True)}}
        self._reply(200, json.dumps(body).encode())

    def do_POST(self):
        from export.grpc_server import RequestError
        assert self.path == "/v1/models/sagan:predict", self.path
        payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        signature = payload.get("signature_name", "serving_default")
        sig = self.servicer.signature_defs[signature]
        inputs = {key: np.asarray(value, tf.dtypes.as_dtype(sig.inputs[key].dtype).as_numpy_dtype)
                  for key, value in payload["inputs"].items()}
        try:
            response = self.servicer.predict(raw_request(signature, inputs))
        except RequestError as error:
            return self._reply(400, json.dumps({"error": error.message}).encode())
        outputs = {key: tf.make_ndarray(proto) for key, proto in response.outputs.items()}
        as_json = {key: (value.tolist() if value.dtype != object
                         else [v.decode("utf-8", "surrogateescape") for v in value]) for key, value in outputs.items()}
        body = {"outputs": as_json if len(as_json) > 1 else next(iter(as_json.values()))}
        self._reply(200, json.dumps(body, ensure_ascii=False).encode("utf-8", "surrogateescape"))


def test_client_rest_path_against_a_tf_serving_style_endpoint(server, tmp_path):
    handler = type("Handler", (FakeRestServing,), {"servicer": server.servicer})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        rest = client.request_images("generate", [1], num=3, seed=7, truncation=0.0, rest=url)
        grpc_images = client.request_images("generate", [1], num=3, seed=7, truncation=0.0, server=server.address)
        np.testing.assert_array_equal(rest, grpc_images)
        rest = client.request_images("serving_default", [0, 1], num=2, seed=3, rest=url)  # z_dim from metadata
        np.testing.assert_array_equal(rest, client.request_images("serving_default", [0, 1], num=2, seed=3,
                                                                  server=server.address))
        with pytest.raises(client.ServingError, match="HTTP 400.*label values must be in"):
            client.request_images("generate", [9], num=1, rest=url)
    finally:
        httpd.shutdown()
        httpd.server_close()


# --- demo server CLI and the real model server -------------------------------------------------------

def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except Exception:  # not up yet
            pass
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.mark.slow
def test_grpc_server_cli_serves_until_sigterm(tmp_path):
    base, _ = exported()
    port = _free_port()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT))
    process = subprocess.Popen([sys.executable, "-m", "export.grpc_server", f"--saved_model={base}", f"--port={port}"],
                               cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        address = f"127.0.0.1:{port}"
        _wait_for(lambda: client.signature_inputs_grpc(address, "sagan", timeout=2), 120, "the demo server")
        assert_serving_works(address)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err[-2000:]
    assert "version 1" in out and "1 ok" in out


@pytest.mark.slow
def test_server_keeps_serving_under_mixed_load(server):
    """Bounded load: 8 threads x 25 requests (a third invalid) against the in-process server."""
    z, labels = sample_inputs(8, seed=2)
    expected = keras_ema()((z, labels)).numpy()
    failures, codes, latencies = [], [], []

    def worker(k):
        for i in range(25):
            sent = time.monotonic()
            try:
                if (k + i) % 3 == 0:
                    client.predict_grpc(server.address, "sagan", "generate", _generate_inputs(2, label=CLASSES),
                                        timeout=60)
                    failures.append("invalid request answered")
                else:
                    out = client.predict_grpc(server.address, "sagan", "serving_default", {"z": z, "label": labels},
                                              timeout=60)
                    if not np.allclose(out["images"], expected, atol=1e-5):
                        failures.append("wrong values")
                    latencies.append(time.monotonic() - sent)
            except client.ServingError as error:
                codes.append(error.code)
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    start = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert time.monotonic() - start < 600
    assert not failures, failures[:5]
    assert codes and set(codes) == {"INVALID_ARGUMENT"}
    assert len(latencies) + len(codes) == 8 * 25
    p50, p99 = np.percentile(latencies, [50, 99]) * 1000
    print(f"\nserving under load: 8 clients x 25 requests, {len(latencies)} valid ok, {len(codes)} invalid -> "
          f"INVALID_ARGUMENT; valid latency p50 {p50:.0f} ms, p99 {p99:.0f} ms")
    assert_serving_works(server.address)


def test_real_tensorflow_model_server_with_the_shipped_config(tmp_path):
    binary = shutil.which("tensorflow_model_server")
    if binary is None:
        pytest.skip("tensorflow_model_server is not installed (see docs/serving.md for the container)")
    base, _ = exported()
    grpc_port, rest_port = _free_port(), _free_port()
    process = subprocess.Popen(
        [binary, f"--port={grpc_port}", f"--rest_api_port={rest_port}",
         f"--model_config_file={os.path.join(base, serving_config.MODELS_CONFIG)}", "--enable_batching",
         f"--batching_parameters_file={os.path.join(base, serving_config.BATCHING_PARAMETERS)}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        address = f"127.0.0.1:{grpc_port}"
        _wait_for(lambda: client.signature_inputs_grpc(address, "sagan", timeout=2), 120, "tensorflow_model_server")
        out = tmp_path / "served.png"
        result = run_module("export.client", f"--server={address}", "--label=0,1,2", "--num=3",
                            "--signature=generate", "--seed=5", f"--out={out}")
        assert result.returncode == 0, result.stderr[-2000:]
        expected = expected_generate([0, 1, 2], [5, 6, 7], [0.0] * 3)
        grid = np.asarray(Image.open(out))
        assert np.abs(grid.astype(int) - image_grid(expected, 1)[..., 0].astype(int)).max() <= 1
        with pytest.raises(client.ServingError) as raised:
            client.predict_grpc(address, "sagan", "generate", _generate_inputs(2, label=CLASSES))
        assert raised.value.code == "INVALID_ARGUMENT" and "label values must be in" in raised.value.message
        rest = client.request_images("generate", [0, 1, 2], num=3, seed=5, rest=f"http://127.0.0.1:{rest_port}")
        assert np.abs(rest.astype(int) - expected.astype(int)).max() <= 1
    finally:
        process.terminate()
        try:
            process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
