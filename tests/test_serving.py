"""Serving the export: the in-process gRPC PredictionService driven by tensorflow-serving-api's client,
request validation (INVALID_ARGUMENT and the server keeps serving), warmup records, the client CLI over
gRPC and REST, and the real tensorflow_model_server when it is installed."""
import copy
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
from export.grpc_server import InProcessServer, RequestError
from sagan_tf.sampling.images import image_grid, to_uint8
from sagan_tf.sampling.noise import noise_for_seeds, sample_noise
from tests.helpers import ROOT, run_cli
from tests.shared_runs import CLASSES, RES, Z_DIM, exported, keras_ema, sample_inputs


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
    z = noise_for_seeds(tf.constant(seeds, tf.int64), tf.constant(truncations, tf.float32), Z_DIM)
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
    "batch_too_large": ("generate", _generate_inputs(257), r"'label' declares 257 rows.*between 1 and 256 rows"),
    "batch_mismatch": ("serving_default", {"z": z3, "label": np.int32([0, 1])},
                       r"z has\] \[3\] \[rows, label has\] \[2\]"),
    "non_finite_truncation": ("generate", _generate_inputs(2, truncation=np.nan), r"truncation must be finite.*nan"),
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


# --- TF-Serving's status codes ------------------------------------------------------------------------

MODEL_SPEC_ERRORS = {  # tensorflow_serving predict_util.cc and server_core.cc
    "unknown_signature": (dict(signature_name="sample"), "FAILED_PRECONDITION",
                          r'^Serving signature key "sample" not found\.'),
    "empty_model_name": (dict(name=""), "INVALID_ARGUMENT", r"^ModelSpec has no name specified\.$"),
    "version_label": (dict(version_label="stable"), "INVALID_ARGUMENT",
                      r"^Unrecognized servable version label: stable\b"),
}


@pytest.mark.parametrize("case", sorted(MODEL_SPEC_ERRORS))
def test_model_spec_errors_use_tf_serving_codes_and_messages(server, case):
    fields, code, pattern = MODEL_SPEC_ERRORS[case]
    z, labels = sample_inputs(2)
    request = raw_request("serving_default", {"z": z, "label": labels})
    for key, value in fields.items():
        setattr(request.model_spec, key, value)
    channel, stub = stub_for(server.address)
    with channel, pytest.raises(grpc.RpcError) as raised:
        stub.Predict(request, timeout=60)
    assert raised.value.code().name == code, raised.value
    assert re.search(pattern, raised.value.details()), raised.value.details()
    assert_serving_works(server.address)


# --- hostile clients: declared sizes, busy server, deadlines, silent calls -------------------------------

def test_a_small_request_declaring_a_huge_tensor_is_rejected_without_allocating_it(server):
    """69 bytes on the wire declaring z as [2000000, z_dim] and label as [2000000], with no values:
    checked from the declared shapes; the old server built 64 MB of zeros (1 GB at z_dim 128) first."""
    import tracemalloc
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "sagan"
    for key, dims, dtype in (("z", [2_000_000, Z_DIM], tf.float32), ("label", [2_000_000], tf.int32)):
        request.inputs[key].dtype = dtype.as_datatype_enum
        request.inputs[key].tensor_shape.dim.extend([tf.compat.v1.TensorShape([d]).as_proto().dim[0] for d in dims])
    assert request.ByteSize() <= 69
    channel, stub = stub_for(server.address)
    tracemalloc.start()  # numpy's allocations are traced, in every thread
    try:
        start = time.monotonic()
        with channel, pytest.raises(grpc.RpcError) as raised:
            stub.Predict(request, timeout=60)
        elapsed = time.monotonic() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * 2 ** 20, f"{peak} bytes traced while rejecting the request"
    assert elapsed < 5, elapsed
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert re.search(r"'label' declares 2000000 rows.*between 1 and 256 rows", raised.value.details()), \
        raised.value.details()
    assert_serving_works(server.address)


def test_declared_shapes_and_sent_values_must_agree(server):
    servicer = server.servicer
    cases = {"more values than declared": ([0, 1, 2], [2], r"'label' declares shape \[2\].*sends 3 values"),
             "content of the wrong length": (None, [3], r"'label' declares shape \[3\].*tensor_content holds 8 bytes")}
    for what, (values, dims, pattern) in cases.items():
        z, _ = sample_inputs(dims[0])
        request = raw_request("serving_default", {"z": z, "label": np.zeros(dims[0], np.int32)})
        label = request.inputs["label"]
        label.ClearField("tensor_content")
        label.ClearField("int_val")
        if values is None:
            label.tensor_content = np.int32([0, 1]).tobytes()
        else:
            label.int_val.extend(values)
        with pytest.raises(RequestError) as raised:
            servicer.prepare(request)
        assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert re.search(pattern, raised.value.message), (what, raised.value.message)
    # No values at all is zeros, as TF's Tensor::FromProto reads it: accepted, within the limits.
    request = raw_request("serving_default", {"z": sample_inputs(2)[0], "label": np.zeros(2, np.int32)})
    request.inputs["label"].ClearField("tensor_content")
    np.testing.assert_array_equal(servicer.prepare(request)[1]["label"], [0, 0])


def test_a_response_over_the_send_limit_is_refused_before_running(server):
    clone = copy.copy(server.servicer)
    clone.max_send_bytes = 10_000  # one 32x32x1 float32 image is 4096 bytes
    z, labels = sample_inputs(3)
    with pytest.raises(RequestError) as raised:
        clone.prepare(raw_request("serving_default", {"z": z, "label": labels}))
    assert raised.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert re.search(r"3 rows would hold 12288 bytes.*send at most 2 rows", raised.value.message), raised.value.message
    assert clone.prepare(raw_request("serving_default", {"z": z[:2], "label": labels[:2]}))[0] == "serving_default"


class Gated:
    """A copy of a servicer (same loaded model, own counters) whose model runs wait for `gate`."""

    def __init__(self, servicer):
        from export.grpc_server import PredictionServicer
        self.servicer = copy.copy(servicer)
        self.servicer.counts = {key: 0 for key in servicer.counts}
        self.servicer.lock = threading.Lock()
        self.gate, self.entered = threading.Event(), threading.Semaphore(0)

        def run(prepared):
            self.entered.release()
            assert self.gate.wait(60), "the test never opened the gate"
            return PredictionServicer.run(self.servicer, prepared)

        self.servicer.run = run


def _wait_until(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.02)


def _valid_request(n=2, seed=5):
    z, labels = sample_inputs(n, seed=seed)
    return raw_request("serving_default", {"z": z, "label": labels}), keras_ema()((z, labels)).numpy()


def test_full_queue_answers_resource_exhausted_at_once(server):
    gated = Gated(server.servicer)
    with InProcessServer(gated.servicer, max_workers=1, max_queue=1) as busy:
        channel, stub = stub_for(busy.address)
        with channel:
            request, expected = _valid_request()
            running = stub.Predict.future(request, timeout=60)
            assert gated.entered.acquire(timeout=30)  # the one worker is busy
            queued = stub.Predict.future(request, timeout=60)
            _wait_until(lambda: busy._admitted == 2, 10, "the second request to be queued")
            start = time.monotonic()
            with pytest.raises(grpc.RpcError) as raised:
                stub.Predict(request, timeout=30)
            assert time.monotonic() - start < 5
            assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "server busy: 2 requests running or queued (limit 1 running + 1 queued)" in raised.value.details()
            gated.gate.set()
            for call in (running, queued):
                outputs = call.result(timeout=60).outputs
                np.testing.assert_allclose(tf.make_ndarray(outputs["images"]), expected, atol=1e-5)
    assert (gated.servicer.counts["rejected"], gated.servicer.counts["runs"], gated.servicer.counts["ok"]) == (1, 2, 2)


def test_a_request_whose_deadline_passes_in_the_queue_never_runs(server):
    gated = Gated(server.servicer)
    with InProcessServer(gated.servicer, max_workers=1, max_queue=4) as busy:
        channel, stub = stub_for(busy.address)
        with channel:
            request, expected = _valid_request()
            running = stub.Predict.future(request, timeout=60)
            assert gated.entered.acquire(timeout=30)
            with pytest.raises(grpc.RpcError) as raised:
                stub.Predict(request, timeout=0.5)
            assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            _wait_until(lambda: gated.servicer.counts["expired"] == 1, 10, "the server to drop the expired request")
            gated.gate.set()
            np.testing.assert_allclose(tf.make_ndarray(running.result(timeout=60).outputs["images"]), expected,
                                       atol=1e-5)
            stub.Predict(request, timeout=60)
    assert (gated.servicer.counts["runs"], gated.servicer.counts["ok"], gated.servicer.counts["expired"]) == (2, 2, 1)


def _silent_calls(channel, n):
    """`n` Predict calls that send their headers and never a request message, and the event that ends them."""
    release = threading.Event()

    def nothing():
        release.wait(60)
        return
        yield  # a generator that yields nothing

    call = channel.stream_unary("/tensorflow.serving.PredictionService/Predict",
                                request_serializer=predict_pb2.PredictRequest.SerializeToString,
                                response_deserializer=predict_pb2.PredictResponse.FromString)
    return [call.future(nothing(), timeout=60) for _ in range(n)], release


def test_silent_clients_do_not_starve_the_server(server):
    """More silent calls than worker threads: the old thread-pool server had every thread blocked
    reading their requests and a valid request timed out."""
    with InProcessServer(server.servicer, max_workers=2, read_timeout=60) as guarded:
        silent_channel = grpc.insecure_channel(guarded.address)
        silent, release = _silent_calls(silent_channel, 6)
        try:
            time.sleep(0.2)  # let them reach the server (a race here only makes the test weaker)
            request, expected = _valid_request()
            channel, stub = stub_for(guarded.address)
            with channel:
                response = stub.Predict(request, timeout=20)
            np.testing.assert_allclose(tf.make_ndarray(response.outputs["images"]), expected, atol=1e-5)
            assert not any(call.done() for call in silent)
        finally:
            release.set()
            silent_channel.close()


def test_silent_calls_hit_the_rpc_limit_then_time_out_and_free_it(server):
    servicer = copy.copy(server.servicer)
    servicer.counts, servicer.lock = {key: 0 for key in server.servicer.counts}, threading.Lock()
    with InProcessServer(servicer, maximum_concurrent_rpcs=3, read_timeout=3.0) as guarded:
        silent_channel = grpc.insecure_channel(guarded.address)
        silent, release = _silent_calls(silent_channel, 3)
        channel, stub = stub_for(guarded.address)
        request, expected = _valid_request()
        try:
            with channel:
                codes = []
                while len(codes) < 40 and grpc.StatusCode.RESOURCE_EXHAUSTED not in codes:
                    try:
                        stub.Predict(request, timeout=20)
                        codes.append(grpc.StatusCode.OK)
                    except grpc.RpcError as error:
                        codes.append(error.code())
                    time.sleep(0.02)
                assert codes[-1] == grpc.StatusCode.RESOURCE_EXHAUSTED, codes
                for call in silent:  # ended by the server after read_timeout, not by their own 60 s deadline
                    assert call.exception(timeout=20).code() == grpc.StatusCode.DEADLINE_EXCEEDED
                    assert "no request message within 3 s" in call.exception().details()
                assert servicer.counts["read_timeout"] == 3
                response = stub.Predict(request, timeout=20)
            np.testing.assert_allclose(tf.make_ndarray(response.outputs["images"]), expected, atol=1e-5)
        finally:
            release.set()
            silent_channel.close()


def test_a_request_over_the_receive_limit_is_resource_exhausted(server):
    with InProcessServer(server.servicer) as limited:
        z = np.zeros((256, Z_DIM), np.float32)
        request = raw_request("serving_default", {"z": z, "label": np.zeros(256, np.int32)})
        request.inputs["pad"].string_val.append(b"x" * (limited.servicer.max_message_bytes + 1))
        channel, stub = stub_for(limited.address)
        with channel, pytest.raises(grpc.RpcError) as raised:
            stub.Predict(request, timeout=30)
        assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, raised.value
        assert re.search(r"larger than max \(\d+ vs\. 4194304\)", raised.value.details()), raised.value.details()


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

def test_client_cli_writes_the_grid_over_grpc(server, tmp_path):
    out = tmp_path / "grid.png"
    result = run_cli("export.client", f"--server={server.address}", "--model_name=sagan", "--label=1,2",
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
    z = sample_noise(3, Z_DIM, 0.5, seed=4)
    assert np.abs(z).max() <= 0.5
    expected = to_uint8(keras_ema()((z, np.int32([0, 2, 0]))).numpy())
    assert np.abs(images.astype(int) - expected.astype(int)).max() <= 1
    np.testing.assert_array_equal(sample_noise(3, Z_DIM, seed=4), sample_noise(3, Z_DIM, 0, seed=4))


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
        request.model_spec.name = "sagan"
        response = self.servicer.get_model_metadata(request)
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
        result = run_cli("export.client", f"--server={address}", "--label=0,1,2", "--num=3",
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
