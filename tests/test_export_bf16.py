"""`--compute_dtype=bfloat16` exports: bfloat16 compute in the graph, float32 in and out, close to float32."""
import numpy as np
import pytest
import tensorflow as tf

from export import saved_model as export_lib
from sagan_tf.sampling.exported import read_info
from tests.helpers import run_cli, trained_run

BFLOAT16 = tf.bfloat16.as_datatype_enum

pytestmark = pytest.mark.slow  # float16 on CPU / two exports: about a minute in all (docs/testing.md)


def graph_dtypes(concrete):
    """Every dtype named in the attrs of the signature's graph and the functions it calls."""
    graph = concrete.graph.as_graph_def()
    nodes = list(graph.node) + [node for function in graph.library.function for node in function.node_def]
    return {attr.type for node in nodes for attr in node.attr.values() if attr.HasField("type")}


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    model_dir, _ = trained_run()
    base = tmp_path_factory.mktemp("exports")
    float32 = export_lib.export_run(model_dir, str(base), version=1, max_batch=8)
    bfloat16 = export_lib.export_run(model_dir, str(base), version=2, max_batch=8, compute_dtype="bfloat16")
    return float32, bfloat16


def test_bfloat16_export_computes_in_bfloat16_and_stays_close_to_float32(exports):
    float32, bfloat16 = (tf.saved_model.load(path).signatures["serving_default"] for path in exports)
    assert BFLOAT16 in graph_dtypes(bfloat16) and BFLOAT16 not in graph_dtypes(float32)
    rng = np.random.default_rng(0)
    z = tf.constant(rng.standard_normal((8, 8)), tf.float32)
    labels = tf.constant([0, 1, 2, 0, 1, 2, 0, 1], tf.int32)
    reference = float32(z=z, label=labels)["images"]
    images = bfloat16(z=z, label=labels)["images"]
    assert images.dtype == tf.float32 and images.shape == reference.shape  # float32 out, as the float32 export
    difference = np.abs(images.numpy() - reference.numpy())
    # The bounds test_precision puts on a bfloat16 generator against float32 (images in [-1, 1]); not zero,
    # or the graph did not compute in bfloat16.
    assert 0 < difference.max() <= 0.1 and difference.mean() <= 1e-2, (difference.max(), difference.mean())
    assert [read_info(path)["compute_dtype"] for path in exports] == ["float32", "bfloat16"]


def test_an_unknown_compute_dtype_is_named(tmp_path):
    model_dir, _ = trained_run()
    with pytest.raises(export_lib.ExportError, match="--compute_dtype='float16' is not one of"):
        export_lib.export_run(model_dir, str(tmp_path), compute_dtype="float16")
    result = run_cli("export.saved_model", f"--model_dir={model_dir}", f"--export_base={tmp_path}",
                     "--compute_dtype=int8")
    assert result.returncode != 0 and "int8" in result.stderr and "bfloat16" in result.stderr
    assert not list(tmp_path.iterdir())  # nothing written
