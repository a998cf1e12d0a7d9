"""Request bytes that do not decode, and the server's log of refused calls.

Undecodable bytes get TF-Serving's INTERNAL, with a message naming the expected message type (they used to
get UNKNOWN "Unexpected <class 'DecodeError'>" and a ~20-line traceback from the event loop each); a
flood of them writes a bounded number of one-line records; a server whose stderr is a pipe that
nobody reads keeps answering (it used to stop once the tracebacks filled the pipe).
"""
import copy
import io
import logging
import re
import signal
import socket
import subprocess
import sys
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from export import client
from export.grpc_server import InProcessServer, PredictionServicer
from tests.helpers import CLI_ENV, ROOT
from tests.shared_runs import exported, keras_ema, sample_inputs

PREDICT = "/tensorflow.serving.PredictionService/Predict"
METADATA = "/tensorflow.serving.PredictionService/GetModelMetadata"
UNDECODABLE = {  # each checked below not to decode as a PredictRequest
    "random bytes": bytes([0xFF, 0xFE, 0x00, 0x17, 0x80, 0x80]),
    "a bare tag": b"\x0a",
    "a length past the end": b"\x0a\x05abc",
    "text": b"hello world, this is not a protobuf",
}


@pytest.fixture(scope="module")
def servicer():
    _, version_dir = exported()
    return PredictionServicer(version_dir)


def valid_request(n=2, seed=5):
    z, labels = sample_inputs(n, seed=seed)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "sagan"
    request.inputs["z"].CopyFrom(tf.make_tensor_proto(z))
    request.inputs["label"].CopyFrom(tf.make_tensor_proto(labels))
    return request, keras_ema()((z, labels)).numpy()


def raw_call(channel, method=PREDICT):
    """A unary call that sends bytes as they are and returns the response bytes."""
    return channel.unary_unary(method, request_serializer=None, response_deserializer=None)


def assert_answers_valid_requests(address, timeout=30):
    request, expected = valid_request()
    with grpc.insecure_channel(address) as channel:
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=timeout)
    np.testing.assert_allclose(tf.make_ndarray(response.outputs["images"]), expected, atol=1e-5)


def test_the_undecodable_payloads_do_not_decode():
    truncated = valid_request()[0].SerializeToString()[:-3]
    for payload in [*UNDECODABLE.values(), truncated]:
        with pytest.raises(Exception, match="Error parsing message"):
            predict_pb2.PredictRequest.FromString(payload)


def test_undecodable_bytes_get_tf_servings_code_and_a_message_naming_the_expected_message(servicer):
    truncated = valid_request()[0].SerializeToString()[:-3]
    with InProcessServer(servicer, log_stream=io.StringIO()) as server, \
            grpc.insecure_channel(server.address) as channel:
        for what, payload in [*UNDECODABLE.items(), ("a truncated PredictRequest", truncated)]:
            with pytest.raises(grpc.RpcError) as raised:
                raw_call(channel)(payload, timeout=30)
            assert raised.value.code() == grpc.StatusCode.INTERNAL, (what, raised.value)
            pattern = (r"^could not parse the request as tensorflow\.serving\.PredictRequest: .+ "
                       rf"\({len(payload)} bytes? received\)\. This method takes a serialized "
                       r"tensorflow\.serving\.PredictRequest")
            assert re.search(pattern, raised.value.details()), (what, raised.value.details())
        with pytest.raises(grpc.RpcError) as raised:
            raw_call(channel, METADATA)(UNDECODABLE["random bytes"], timeout=30)
        assert raised.value.code() == grpc.StatusCode.INTERNAL, raised.value
        assert "could not parse the request as tensorflow.serving.GetModelMetadataRequest" in raised.value.details()
        # Bytes that do decode are validated as before: an empty PredictRequest has no model name.
        with pytest.raises(grpc.RpcError) as raised:
            raw_call(channel)(b"", timeout=30)
        assert (raised.value.code(), raised.value.details()) == (grpc.StatusCode.INVALID_ARGUMENT,
                                                                 "ModelSpec has no name specified.")
        assert_answers_valid_requests(server.address)


def test_a_flood_of_undecodable_requests_writes_a_few_lines_and_no_traceback(servicer, caplog):
    log = io.StringIO()
    caplog.set_level(logging.WARNING)  # gRPC logs a handler's unexpected exceptions through `logging`
    with InProcessServer(servicer, log_stream=log, log_limit=5, log_interval=600) as server:
        with grpc.insecure_channel(server.address) as channel:
            call = raw_call(channel)
            codes = []
            for i in range(200):
                try:
                    call(UNDECODABLE["random bytes"] * (1 + i % 7), timeout=30)
                except grpc.RpcError as error:
                    codes.append(error.code())
        assert codes == [grpc.StatusCode.INTERNAL] * 200
        assert_answers_valid_requests(server.address)
    lines = log.getvalue().splitlines()  # stop() closed the log: the suppressed count is written
    assert len(lines) == 6, lines
    assert all(re.match(r"export\.grpc_server: refused request \(undecodable\): Predict from \S+: INTERNAL: "
                        r"could not parse the request as tensorflow\.serving\.PredictRequest", line)
               for line in lines[:5]), lines
    assert re.match(r"export\.grpc_server: suppressed 195 similar messages \(undecodable\) in the last \d+ s$",
                    lines[5]), lines[5]
    assert all(len(line) < 400 for line in lines)
    assert "Traceback" not in log.getvalue() and "Traceback" not in caplog.text
    assert not [record for record in caplog.records if record.name.startswith("grpc")], caplog.text


def test_a_bug_in_a_handler_is_answered_internal_with_one_line_not_a_traceback(servicer, caplog):
    broken = copy.copy(servicer)
    broken.prepare = lambda request: {}["no such key"]
    log = io.StringIO()
    caplog.set_level(logging.WARNING)
    with InProcessServer(broken, log_stream=log) as server, grpc.insecure_channel(server.address) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        for _ in range(3):
            with pytest.raises(grpc.RpcError) as raised:
                stub.Predict(valid_request()[0], timeout=30)
            assert raised.value.code() == grpc.StatusCode.INTERNAL
            assert re.match(r"internal server error: KeyError: 'no such key' \(at test_serving_undecodable\.py:\d+\)$",
                            raised.value.details()), raised.value.details()
    lines = log.getvalue().splitlines()
    assert len(lines) == 3 and all("refused request (internal): Predict" in line for line in lines), lines
    assert "Traceback" not in caplog.text and not [r for r in caplog.records if r.name.startswith("grpc")]


def test_calls_whose_deadline_passes_before_their_status_is_sent_log_no_traceback(servicer, caplog):
    """1 ms deadlines: the server often finds the deadline passed and refuses the call after gRPC has
    already ended it; context.abort then fails (ExecuteBatchError). The soak found each such call
    logged with two tracebacks by gRPC."""
    log = io.StringIO()
    caplog.set_level(logging.WARNING)
    request = valid_request()[0].SerializeToString()
    with InProcessServer(servicer, log_stream=log, log_limit=1000) as server:
        with grpc.insecure_channel(server.address) as channel:
            call = raw_call(channel)
            codes = set()
            for _ in range(100):
                try:
                    call(request, timeout=0.001)
                    codes.add(grpc.StatusCode.OK)
                except grpc.RpcError as error:
                    codes.add(error.code())
        assert codes <= {grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.OK}, codes
        assert_answers_valid_requests(server.address)
    assert "Traceback" not in caplog.text and not [r for r in caplog.records if r.name.startswith("grpc")], \
        caplog.text[-3000:]
    assert "refused request (internal)" not in log.getvalue(), log.getvalue()[-2000:]


@pytest.mark.parametrize("kwargs, message", [(dict(log_limit=0), r"log_limit=0 must be >= 1"),
                                             (dict(log_interval=0), r"log_interval=0 must be > 0 seconds")])
def test_bad_log_settings_are_refused_before_loading_the_model(kwargs, message):
    with pytest.raises(ValueError, match=message):
        InProcessServer("/nonexistent/export", **kwargs)


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow  # a server subprocess (TensorFlow start-up)
def test_a_server_whose_stderr_pipe_nobody_reads_keeps_answering_a_flood_of_bad_requests():
    """The server's stderr is a pipe that this test does not read until the end. Its log limit is set
    so high that the flood's lines (~300 bytes each) overflow the pipe (64 KiB): the writer thread
    blocks and drops lines, the event loop does not. (Before: ~2 KB of traceback per undecodable
    request, written from the event loop; a few dozen filled the pipe and every call then hung.)"""
    base, _ = exported()
    port = _free_port()
    process = subprocess.Popen([sys.executable, "-m", "export.grpc_server", f"--saved_model={base}", f"--port={port}",
                                "--log_limit=100000"], cwd=ROOT, env=CLI_ENV, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:  # up when it answers metadata
            try:
                client.signature_inputs_grpc(address, "sagan", timeout=2)
                break
            except client.ServingError:
                assert process.poll() is None, "the server exited during start-up"
                assert time.monotonic() < deadline, "the server did not start within 120 s"
                time.sleep(0.5)
        flood, start = 600, time.monotonic()
        with grpc.insecure_channel(address) as channel:
            call = raw_call(channel)
            for i in range(flood):
                with pytest.raises(grpc.RpcError) as raised:
                    call(UNDECODABLE["text"] + bytes([i % 256]), timeout=10)
                assert raised.value.code() == grpc.StatusCode.INTERNAL, (i, raised.value)
        flood_seconds = time.monotonic() - start
        assert_answers_valid_requests(address, timeout=30)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)  # read only now
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    err = err.decode("utf-8", "replace")
    assert process.returncode == 0, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    refused = err.count("refused request (undecodable): Predict")
    dropped = sum(int(n) for n in re.findall(r"dropped (\d+) log lines: the log stream did not keep up", err))
    assert refused + dropped == flood, (refused, dropped, err[-2000:])
    assert refused * 300 > 64 * 1024, "the flood's lines did not exceed the pipe's buffer: test the bigger flood"
    print(f"\n{flood} undecodable requests in {flood_seconds:.1f} s; {refused} lines written, {dropped} dropped")
