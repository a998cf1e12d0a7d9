"""benchmarks/soak_serving.py: its answer checks and raw HTTP/2 pieces (fast), and a short soak (slow)."""
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2

from benchmarks import raw_http2, soak_serving


def test_http2_frames_and_hpack_literals_are_encoded_as_the_rfcs_say():
    assert raw_http2.frame(raw_http2.SETTINGS, 0, 0) == b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
    assert raw_http2.frame(raw_http2.DATA, 1, 1, b"ab") == b"\x00\x00\x02\x00\x01\x00\x00\x00\x01ab"
    assert raw_http2.literal_header("te", "trailers") == b"\x00\x02te\x08trailers"
    assert raw_http2.grpc_message(b"xyz") == b"\x00\x00\x00\x00\x03xyz"


def test_grpc_status_is_read_from_a_literal_in_the_trailers():
    # As grpc's encoder wrote them in a soak: ':status' indexed, then literals with incremental indexing.
    block = b"\x88@\x0ccontent-type\x10application/grpc@\x0bgrpc-status\x014\x00\x0cgrpc-message\x03abc"
    assert raw_http2.grpc_status_in(block) == 4
    assert raw_http2.grpc_status_in(b"@\x0bgrpc-status\x0213") == 13
    assert raw_http2.grpc_status_in(b"\x88\xbe") is None  # indexed from the dynamic table: not decoded


def test_the_plan_has_the_hostile_share_spread_over_every_kind():
    calls = soak_serving.plan(1200, 0.1, 48, seed=3)
    kinds = [kind for kind, _ in calls]
    assert len(calls) == 1200 and kinds.count("valid") == 1080
    assert {kind: kinds.count(kind) for kind in soak_serving.HOSTILE_KINDS} == \
        {kind: 10 for kind in soak_serving.HOSTILE_KINDS}
    assert all(0 <= index < 48 for _, index in calls)
    assert calls == soak_serving.plan(1200, 0.1, 48, seed=3) != soak_serving.plan(1200, 0.1, 48, seed=4)


@pytest.fixture(scope="module")
def reference():
    return soak_serving.Reference(soak_serving.DEFAULT_SAVED_MODEL, seed=0, pool_size=6)


def _response(reference, index, change=None):
    signature, _, _, _, expected = reference.pool[index]
    response = predict_pb2.PredictResponse()
    response.model_spec.name, response.model_spec.signature_name = soak_serving.MODEL_NAME, signature
    for key, value in expected.items():
        response.outputs[key].CopyFrom(tf.make_tensor_proto(change(key, value) if change else value))
    return response.SerializeToString()


def test_the_answer_check_accepts_the_models_outputs_and_nothing_else(reference):
    for index in range(len(reference.pool)):
        assert reference.check(index, _response(reference, index), atol=1e-4) is None
    nudged = _response(reference, 0, lambda key, value: value + np.float32(1e-3))
    assert reference.check(0, nudged, atol=1e-4).startswith("images: off by up to 0.001")
    assert "answered as" in reference.check(0, _response(reference, 1), atol=1e-4)  # another signature's answer
    assert reference.check(3, _response(reference, 0), atol=1e-4)  # another request's answer
    uint8 = next(i for i, entry in enumerate(reference.pool) if entry[0] == "generate")
    off = _response(reference, uint8, lambda key, value: value if key != "images" else value ^ np.uint8(4))
    problem = reference.check(uint8, off, atol=1e-4)  # images 4 levels off, or PNGs that no longer match them
    assert problem == "images: off by up to 4 levels" or "does not decode to images" in problem, problem


@pytest.mark.slow  # ~1 min: a server subprocess and 500 calls, 40 of them hostile, 2 s read timeouts
def test_a_short_soak_gets_every_answer_right_and_every_code_expected():
    args = soak_serving.parse_args(["--calls=500", "--read_timeout=2", "--max_seconds=600", "--settle=15"])
    result = soak_serving.soak(args)
    targets = {row["target"]: row for row in result["targets"]}
    rows = {row["kind"]: row for row in result["rows"]}
    assert result["problems"] == [], result["problems"]
    for name in ("0 wrong answers", "0 unexpected codes", "no traceback in the server's log",
                 "every call made within --max_seconds", "exit status 0 after SIGTERM"):
        assert targets[name]["met"] == "yes", targets[name]
    assert all(rows[kind]["calls"] >= 3 for kind in soak_serving.HOSTILE_KINDS), rows
    assert sum(row["calls"] for row in rows.values()) == 500
    figures = {row["server"]: row for row in result["resources"]}
    for name in ("open fds", "threads"):  # back to their value after the warm-up, within a small slack
        assert figures[name]["end"] <= figures[name]["after warm-up"] + 2, figures[name]
