"""SavedModel export: signatures as saved_model_cli shows them, equality with the Keras EMA generator in a
fresh process (tf.saved_model.load and TF-Serving's session loader), deterministic seeded generation,
truncation, in-graph request checks, atomic version directories, CLI errors."""
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from export import saved_model as export_lib
from export import serving_config
from sagan_tf.run import run_dir
from sagan_tf.sampling.noise import noise_for_seeds
from tests.helpers import ROOT, run_cli, scratch_dir as _scratch, trained_run
from tests.shared_runs import EXPORT_DURING_SAVE, RES, Z_DIM, exported, keras_ema, sample_inputs

# --- restoring the EMA generator ---------------------------------------------------------------------

def test_restore_gives_the_ema_weights_in_float32_whatever_the_policy():
    import keras
    model_dir, model = trained_run()
    config = run_dir.read_config(model_dir)
    latest = run_dir.find_checkpoint(model_dir)
    assert latest.endswith("ckpt-2")
    keras.mixed_precision.set_global_policy("mixed_bfloat16")  # as a bf16 training process would have it
    generator = run_dir.restore_ema_generator(config, latest)
    assert generator.compute_dtype == "float32" and generator.variable_dtype == "float32"
    restored = generator.get_weights()
    ema = model.ema_generator.get_weights()
    assert len(restored) == len(ema) == len(generator.weights)
    assert all(np.array_equal(a, b) for a, b in zip(restored, ema))
    # The EMA (decay 0.9) differs from G after two steps, so this really is the ema_generator subtree.
    assert not all(np.array_equal(a, b) for a, b in zip(restored, model.generator.get_weights()))
    z, labels = sample_inputs()
    np.testing.assert_allclose(generator((z, labels)).numpy(), model.ema_generator((z, labels)).numpy(), atol=1e-6)


def test_chosen_checkpoint_and_checkpoint_errors(tmp_path):
    model_dir, _ = trained_run()
    config = run_dir.read_config(model_dir)
    first = os.path.join(model_dir, "checkpoints", "ckpt-1")
    assert run_dir.find_checkpoint(model_dir, first) == first
    assert run_dir.find_checkpoint(model_dir, os.path.join(model_dir, "checkpoints")).endswith("ckpt-2")
    old = run_dir.restore_ema_generator(config, first).get_weights()
    new = run_dir.restore_ema_generator(config, run_dir.find_checkpoint(model_dir)).get_weights()
    assert not all(np.array_equal(a, b) for a, b in zip(old, new))
    with pytest.raises(run_dir.RunDirError, match=re.escape(str(tmp_path / "ckpt-9"))):
        run_dir.find_checkpoint(model_dir, str(tmp_path / "ckpt-9"))
    # A run directory with its config but no checkpoint yet.
    empty = tmp_path / "fresh_run"
    empty.mkdir()
    shutil.copy(os.path.join(model_dir, "config.json"), empty / "config.json")
    with pytest.raises(run_dir.RunDirError, match="no checkpoint in .*fresh_run"):
        export_lib.export_run(str(empty), str(tmp_path / "export"))
    # A config that does not match the checkpoint fails instead of exporting fresh weights.
    with pytest.raises(run_dir.RunDirError, match=re.escape(first) + ".* does not hold this run's EMA generator"):
        run_dir.restore_ema_generator(dict(config, g_attention=[8]), first)


# --- the SavedModel ----------------------------------------------------------------------------------

def _parse_saved_model_cli(text):
    """{signature: {"inputs"|"outputs": {name: (dtype, shape)}}} from `saved_model_cli show --all`."""
    signatures, current, side, name, dtype = {}, None, None, None, None
    for line in text.splitlines():
        if match := re.match(r"signature_def\['(.+)'\]:", line):
            current = signatures.setdefault(match.group(1), {"inputs": {}, "outputs": {}})
        elif match := re.match(r"\s+(inputs|outputs)\['(.+)'\] tensor_info:", line):
            side, name = match.groups()
        elif match := re.match(r"\s+dtype: (\w+)", line):
            dtype = match.group(1)
        elif (match := re.match(r"\s+shape: (.+)", line)) and current is not None and name:
            current[side][name] = (dtype, match.group(1).strip())
            name = None
    return signatures


@pytest.mark.slow  # trains or runs CLIs for tens of seconds (docs/testing.md)
def test_saved_model_cli_shows_the_three_signatures():
    shown = _parse_saved_model_cli(subprocess_results()["saved_model_cli"])
    image = f"(-1, {RES}, {RES}, 1)"
    assert shown["serving_default"] == {
        "inputs": {"z": ("DT_FLOAT", f"(-1, {Z_DIM})"), "label": ("DT_INT32", "(-1)")},
        "outputs": {"images": ("DT_FLOAT", image)}}
    assert shown["generate"] == {
        "inputs": {"label": ("DT_INT32", "(-1)"), "seed": ("DT_INT64", "(-1)"), "truncation": ("DT_FLOAT", "(-1)")},
        "outputs": {"images": ("DT_UINT8", image), "png": ("DT_STRING", "(-1)")}}
    # tiny_config: one attention layer after the 16x16 block: 256 queries over 64 pooled keys.
    assert shown["attention"] == {
        "inputs": {"z": ("DT_FLOAT", f"(-1, {Z_DIM})"), "label": ("DT_INT32", "(-1)")},
        "outputs": {"images": ("DT_FLOAT", image), "attention_0": ("DT_FLOAT", "(-1, 256, 64)")}}


FRESH_PROCESS_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf
    from tensorflow.core.protobuf import config_pb2
    from sagan_tf.sampling.noise import noise_for_seeds

    version_dir, inputs_path, out_path = sys.argv[1:4]
    given = dict(np.load(inputs_path))
    out = {}
    loaded = tf.saved_model.load(version_dir)
    serve, generate, attention = (loaded.signatures[k] for k in ("serving_default", "generate", "attention"))
    z, labels = tf.constant(given["z"]), tf.constant(given["labels"])
    out["serving"] = serve(z=z, label=labels)["images"].numpy()
    att = attention(z=z, label=labels)
    out["attention_images"] = att["images"].numpy()
    out["attention_0"] = att["attention_0"].numpy()

    def gen(labels, seeds, truncations):
        result = generate(label=tf.constant(labels, tf.int32), seed=tf.constant(seeds, tf.int64),
                          truncation=tf.constant(truncations, tf.float32))
        return result["images"].numpy(), result["png"].numpy()

    seeds, gen_labels = [7, 8, 9, 7, 123456789012], [0, 1, 2, 0, 1]
    out["gen_a"], pngs = gen(gen_labels, seeds, [0.0] * 5)
    out["gen_b"], _ = gen(gen_labels, seeds, [0.0] * 5)
    out["gen_alone"], _ = gen([1], [8], [0.0])
    out["gen_tiny_t"], _ = gen(gen_labels, seeds, [0.05] * 5)
    out["png_decoded"] = np.stack([tf.io.decode_png(p).numpy() for p in pngs])
    # generate == serving_default on the sampler's z (the same generator behind both).
    z_t = noise_for_seeds(tf.constant(seeds, tf.int64), tf.constant([0.05] * 5), given["z"].shape[1])
    out["serve_on_sampled_tiny"] = serve(z=z_t, label=tf.constant(gen_labels, tf.int32))["images"].numpy()

    # TF-Serving loads the SavedModel into a TF1 session and feeds the signature's tensors from C++
    # without Python-side shape checks; a CallableOptions callable does the same here.
    errors = {}
    graph = tf.Graph()
    with graph.as_default():
        session = tf.compat.v1.Session(graph=graph)
        meta = tf.compat.v1.saved_model.loader.load(session, ["serve"], version_dir)

        def call(signature, feeds):
            sig = meta.signature_def[signature]
            names = sorted(feeds)
            fn = session._make_callable_from_options(config_pb2.CallableOptions(
                feed=[sig.inputs[k].name for k in names], fetch=[sig.outputs["images"].name]))
            return fn(*[feeds[k] for k in names])[0]

        out["session_serving"] = call("serving_default", {"z": given["z"], "label": given["labels"]})
        n = len(given["labels"])
        bad = {
            "z_width": ("serving_default", {"z": np.zeros((n, 5), np.float32), "label": given["labels"]}),
            "z_rows": ("serving_default", {"z": np.zeros((n + 1, given["z"].shape[1]), np.float32),
                                           "label": given["labels"]}),
            "label_range": ("serving_default", {"z": given["z"], "label": np.array([0, 1, 7, 0, -2], np.int32)}),
            "z_dtype": ("serving_default", {"z": given["z"].astype(np.float64), "label": given["labels"]}),
            "batch_max": ("generate", {"label": np.zeros(257, np.int32), "seed": np.zeros(257, np.int64),
                                       "truncation": np.zeros(257, np.float32)}),
            "batch_empty": ("generate", {"label": np.zeros(0, np.int32), "seed": np.zeros(0, np.int64),
                                         "truncation": np.zeros(0, np.float32)}),
            "seed_rows": ("generate", {"label": np.zeros(2, np.int32), "seed": np.zeros(3, np.int64),
                                       "truncation": np.zeros(2, np.float32)}),
            "truncation_nan": ("generate", {"label": np.zeros(3, np.int32), "seed": np.zeros(3, np.int64),
                                            "truncation": np.array([0.5, np.nan, np.inf], np.float32)}),
            "truncation_negative": ("generate", {"label": np.zeros(3, np.int32), "seed": np.zeros(3, np.int64),
                                                 "truncation": np.array([0.0, -1.0, 0.5], np.float32)}),
        }
        for key, (signature, feeds) in bad.items():
            try:
                call(signature, feeds)
                errors[key] = ["no error", ""]
            except Exception as error:
                errors[key] = [type(error).__name__, str(error)]
    np.savez(out_path, **out)
    print(json.dumps(errors))
""")


@functools.lru_cache(maxsize=None)
def subprocess_results():
    """Runs `saved_model_cli show --all` and the fresh-process check script side by side (each is mostly
    TensorFlow start-up); returns {"saved_model_cli": stdout, "fresh": (outputs, errors)}."""
    _, version_dir = exported()
    command = shutil.which("saved_model_cli")
    args = [command] if command else [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]
    cli = subprocess.Popen(args + ["show", "--all", "--dir", version_dir], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    try:
        fresh = _fresh_process(version_dir)
    finally:
        cli_out, cli_err = cli.communicate(timeout=300)
    assert cli.returncode == 0, cli_err[-2000:]
    return {"saved_model_cli": cli_out, "fresh": fresh}


def fresh_process_results():
    return subprocess_results()["fresh"]


def _fresh_process(version_dir):
    z, labels = sample_inputs()
    work = tempfile.mkdtemp(dir=_scratch())
    inputs_path, out_path, script = (os.path.join(work, name) for name in ("in.npz", "out.npz", "check.py"))
    np.savez(inputs_path, z=z, labels=labels)
    with open(script, "w") as f:
        f.write(FRESH_PROCESS_SCRIPT)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, script, version_dir, inputs_path, out_path], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    errors = json.loads(result.stdout.strip().splitlines()[-1])
    return dict(np.load(out_path)), errors


def test_fresh_process_serving_default_and_attention_equal_the_keras_ema_generator():
    out, _ = fresh_process_results()
    z, labels = sample_inputs()
    images, maps = keras_ema()((z, labels), training=False, return_attention=True)
    np.testing.assert_allclose(out["serving"], images.numpy(), atol=1e-5)
    assert out["serving"].dtype == np.float32 and np.abs(out["serving"]).max() <= 1.0
    np.testing.assert_allclose(out["attention_images"], images.numpy(), atol=1e-5)
    np.testing.assert_allclose(out["attention_0"], maps[0].numpy(), atol=1e-5)
    # TF-Serving's way of loading (TF1 session, restore op) gives the same numbers.
    np.testing.assert_allclose(out["session_serving"], images.numpy(), atol=1e-5)


def test_keras_generator_rebuilds_the_exported_ema_generator_variable_for_variable(tmp_path):
    from sagan_tf.sampling.exported import NotAnExportError, keras_generator

    _, version_dir = exported()
    rebuilt, ema = keras_generator(version_dir), keras_ema()
    assert len(rebuilt.variables) == len(ema.variables)
    for mine, theirs in zip(rebuilt.variables, ema.variables):  # the same layers in the same order
        assert mine.path.split("/", 1)[1] == theirs.path.split("/", 1)[1]
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy(), err_msg=mine.path)
    z, labels = sample_inputs()
    np.testing.assert_allclose(rebuilt((z, labels), training=False).numpy(),
                               ema((z, labels), training=False).numpy(), atol=1e-6)
    # A SavedModel that does not record its model fields cannot be rebuilt, and says so.
    foreign = str(tmp_path / "foreign")
    shutil.copytree(version_dir, foreign)
    os.remove(os.path.join(foreign, "assets.extra", "sagan_export.json"))
    with pytest.raises(NotAnExportError, match="records no model fields"):
        keras_generator(foreign)


def test_fresh_process_generate_is_deterministic_per_seed_and_truncates():
    out, _ = fresh_process_results()
    a = out["gen_a"]
    assert a.dtype == np.uint8 and a.shape == (5, RES, RES, 1)
    np.testing.assert_array_equal(a, out["gen_b"])            # same call twice
    np.testing.assert_array_equal(a[0], a[3])                  # same seed and label in one batch
    np.testing.assert_array_equal(a[1], out["gen_alone"][0])   # a row does not depend on its batch
    assert not np.array_equal(a[0], a[2]) and not np.array_equal(a[1], a[4])  # other seeds differ
    assert not np.array_equal(a, out["gen_tiny_t"])            # a tiny truncation changes the images
    np.testing.assert_array_equal(out["png_decoded"], a)       # the PNGs hold the uint8 images
    from sagan_tf.sampling.images import to_uint8
    # generate = to_uint8(generator(noise_for_seeds(seed, t))); one step of rounding slack between graphs.
    expected = to_uint8(out["serve_on_sampled_tiny"]).astype(int)
    assert np.abs(out["gen_tiny_t"].astype(int) - expected).max() <= 1


def test_fresh_session_rejects_bad_inputs_with_invalid_argument_naming_the_value():
    _, errors = fresh_process_results()
    expected = {
        "z_width": r"z must have shape \[batch, 8\].*\[5 5\]",  # TF prints [batch, width] = [5 5]
        "z_rows": r"z must have one row per label row: z has\] \[6\]",
        "label_range": r"label values must be in \[0, 3\); out of range:\] \[7 -2\] \[at rows\] \[2 4\]",
        "z_dtype": r"float|double",
        "batch_max": r"batch size must be between 1 and 256; label has\] \[257\]",
        "batch_empty": r"batch size must be between 1 and 256; label has\] \[0\]",
        "seed_rows": r"seed must have one row per label row: seed has\] \[3\] \[rows, label has\] \[2\]",
        "truncation_nan": r"truncation must be finite.*\[nan inf\] \[at rows\] \[1 2\]",
        "truncation_negative": r"truncation must be finite and >= 0.*\[-1\] \[at rows\] \[1\]",
    }
    for key, pattern in expected.items():
        kind, message = errors[key]
        assert kind == "InvalidArgumentError", (key, kind, message[:500])
        assert re.search(pattern, message), (key, message[:800])


def test_noise_for_seeds_is_a_per_seed_truncated_normal():
    sampler = tf.function(lambda seeds, t: noise_for_seeds(seeds, t, Z_DIM))
    seeds = tf.range(400, dtype=tf.int64)
    plain = sampler(seeds, tf.zeros([400])).numpy()
    for t, mean_abs in ((0.01, 0.0050), (0.1, 0.0500), (0.5, 0.2448), (1.0, 0.4599), (2.5, 0.7724)):
        z = sampler(seeds, tf.fill([400], t)).numpy()
        assert np.abs(z).max() <= np.float32(t), t
        # E|Z| for Z ~ N(0,1) truncated to [-t, t]: checks the accept/reject law on both proposal paths.
        assert abs(np.abs(z).mean() - mean_abs) < 0.03 * max(t, 0.2), (t, np.abs(z).mean())
        # Coordinates already inside the box are kept.
        inside = np.abs(plain) <= t
        np.testing.assert_array_equal(z[inside], plain[inside])
    assert np.abs(plain).max() > 2.5  # untruncated
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"truncation must be finite and >= 0"):
        sampler(seeds, tf.fill([400], -3.0))  # one convention: 0 is none, a negative threshold an error
    np.testing.assert_array_equal(sampler(seeds, tf.fill([400], 1e30)).numpy(), plain)
    alone = sampler(tf.constant([17], tf.int64), tf.constant([0.3])).numpy()
    np.testing.assert_array_equal(alone[0], sampler(seeds, tf.fill([400], 0.3)).numpy()[17])
    # A per-row truncation: rows follow their own t.
    mixed = sampler(seeds[:4], tf.constant([0.0, 0.2, 0.0, 0.2])).numpy()
    assert np.abs(mixed[1::2]).max() <= 0.2 and np.abs(mixed[0::2]).max() > 0.2


# --- export directories ------------------------------------------------------------------------------

def test_export_base_layout_and_serving_files():
    base, version_dir = exported()
    assert sorted(os.listdir(base)) == ["1", serving_config.BATCHING_PARAMETERS, serving_config.MODELS_CONFIG]
    # While the SavedModel was written, export_base showed only a hidden temp dir (no version yet).
    assert os.path.dirname(EXPORT_DURING_SAVE["path"]) == base
    assert os.path.basename(EXPORT_DURING_SAVE["path"]).startswith(".")
    assert [name for name in EXPORT_DURING_SAVE["listing"] if not name.startswith(".")] == []
    for name in ("saved_model.pb", "variables", "assets.extra"):
        assert os.path.exists(os.path.join(version_dir, name)), name
    with open(os.path.join(version_dir, "assets.extra", export_lib.INFO_FILE)) as f:
        info = json.load(f)
    assert info["step"] == 2 and info["model"]["z_dim"] == Z_DIM
    # Provenance without the training machine's paths: the run's name and the checkpoint relative to it.
    model_dir = trained_run()[0]
    assert (info["run"], info["checkpoint"]) == (os.path.basename(model_dir), os.path.join("checkpoints", "ckpt-2"))
    assert os.path.dirname(os.path.abspath(model_dir)) not in json.dumps(info)
    assert info["limits"]["max_batch"] == 256 and info["dtype"] == "float32"
    with open(os.path.join(base, serving_config.MODELS_CONFIG)) as f:
        config = serving_config.parse_models_config(f.read())
    (entry,) = config.model_config_list.config
    assert (entry.name, entry.base_path, entry.model_platform) == ("sagan", base, "tensorflow")
    with open(os.path.join(base, serving_config.BATCHING_PARAMETERS)) as f:
        batching = serving_config.parse_batching_parameters(f.read())
    # Merged batches must stay within the graph's limit.
    assert batching.max_batch_size.value == info["limits"]["max_batch"]
    assert batching.num_batch_threads.value >= 1


def test_provenance_names_the_run_and_a_checkpoint_relative_to_it():
    assert export_lib.provenance("/data/runs/fmnist/", "/data/runs/fmnist/checkpoints/ckpt-600") == {
        "run": "fmnist", "checkpoint": "checkpoints/ckpt-600"}
    assert export_lib.provenance("gs://bucket/runs/a", "gs://bucket/runs/a/checkpoints/ckpt-7") == {
        "run": "a", "checkpoint": "checkpoints/ckpt-7"}
    # A checkpoint outside the run directory (or in a sibling sharing its prefix) keeps only its name.
    assert export_lib.provenance("/data/runs/a", "/data/runs/ab/ckpt-3") == {"run": "a", "checkpoint": "ckpt-3"}
    assert export_lib.provenance("runs/a", "elsewhere/ckpt-3") == {"run": "a", "checkpoint": "ckpt-3"}


def test_serving_file_checks_can_fail():
    from google.protobuf.text_format import ParseError
    with pytest.raises(ParseError, match='"tensorflow.serving.BatchingParameters" has no field named "max_batch_sizes"'):
        serving_config.parse_batching_parameters("max_batch_sizes { value: 8 }\n")
    with pytest.raises(ParseError, match='"tensorflow.serving.ModelConfig" has no field named "nam"'):
        serving_config.parse_models_config("model_config_list { config { nam: 'x' } }")
    with pytest.raises(ValueError, match="allowed_batch_sizes"):
        serving_config.batching_parameters_text(64, allowed_batch_sizes=[8, 32])
    text = serving_config.models_config_text("gan", '/models/with "quote"')
    assert serving_config.parse_models_config(text).model_config_list.config[0].base_path == '/models/with "quote"'


def test_next_version_ignores_hidden_and_non_numeric_entries(tmp_path):
    assert export_lib.next_version(str(tmp_path / "missing")) == 1
    for name in ("1", "3", ".tmp-export-abc", "abc", "10.bak"):
        (tmp_path / name).mkdir()
    (tmp_path / "12").write_text("a file, not a version")
    assert export_lib.existing_versions(str(tmp_path)) == [1, 3]
    assert export_lib.next_version(str(tmp_path)) == 4


def test_failed_export_leaves_no_version_dir_and_no_temp_dir(tmp_path, monkeypatch):
    model_dir, _ = trained_run()
    base = tmp_path / "export"
    base.mkdir()
    (base / "1").mkdir()  # an existing version: the export goes to 2
    seen = {}

    def failing_save(module, path, signatures=None, **kwargs):
        # Half a SavedModel in the temp dir, then the disk "fills up".
        seen["path"] = path
        seen["listing"] = sorted(os.listdir(base))
        with open(os.path.join(path, "saved_model.pb"), "wb") as f:
            f.write(b"\x08\x01partial")
        raise OSError("No space left on device")

    monkeypatch.setattr(tf.saved_model, "save", failing_save)
    monkeypatch.setattr("export.signatures.GeneratorServing.signatures", lambda self: {})  # skip tracing
    with pytest.raises(OSError, match=re.escape(f"could not write export version 2 to {base / '2'} (OSError: No "
                                                "space left on device); nothing was published")):
        export_lib.export_run(model_dir, str(base))
    # While writing, the only new entry was a hidden temp dir inside export_base (TF-Serving ignores it).
    assert os.path.dirname(seen["path"]) == str(base)
    assert os.path.basename(seen["path"]).startswith(export_lib.TEMP_PREFIX)
    assert [name for name in seen["listing"] if not name.startswith(".")] == ["1"]
    # Afterwards: no version 2, no temp dir, no serving files from a failed export.
    assert sorted(os.listdir(base)) == ["1"]


def test_existing_version_is_refused_before_any_work():
    model_dir, _ = trained_run()
    base, _ = exported()
    pattern = re.escape(os.path.join(base, "1")) + ".*already exists.*next free: 2"
    with pytest.raises(export_lib.ExportError, match=pattern):
        export_lib.export_run(model_dir, base, version=1)
    assert export_lib.existing_versions(base) == [1]


@pytest.mark.slow
def test_statistics_truncation_exports_the_statistics_of_truncated_z(tmp_path):
    from sagan_tf.sampling.standing_statistics import truncation_statistics

    model_dir, _ = trained_run()
    with pytest.raises(export_lib.ExportError, match=r"--statistics_truncation=-1.0 must be a finite threshold"):
        export_lib.export_run(model_dir, str(tmp_path / "bad"), statistics_truncation=-1.0)
    assert not (tmp_path / "bad").exists()
    version_dir = export_lib.export_run(model_dir, str(tmp_path / "export"), statistics_truncation=0.5)
    loaded = tf.saved_model.load(version_dir)
    z, labels = sample_inputs()
    served = loaded.signatures["serving_default"](z=tf.constant(z), label=tf.constant(labels))["images"].numpy()
    ema = run_dir.load_ema_generator(model_dir).generator
    with truncation_statistics(ema, 0.5):
        expected = ema((z, labels), training=False).numpy()
    np.testing.assert_allclose(served, expected, atol=1e-5)
    assert np.abs(served - ema((z, labels), training=False).numpy()).max() > 1e-3  # the stored ones differ
    with open(os.path.join(version_dir, "assets.extra", "sagan_export.json")) as f:
        assert json.load(f)["statistics_truncation"] == 0.5


def test_cli_errors_name_the_missing_path(tmp_path):
    missing = tmp_path / "no_run"
    result = run_cli("export.saved_model", f"--model_dir={missing}", f"--export_base={tmp_path / 'e'}")
    assert result.returncode == 1 and f"{missing}" in result.stderr and "does not exist" in result.stderr
    missing.mkdir()
    result = run_cli("export.saved_model", f"--model_dir={missing}", f"--export_base={tmp_path / 'e'}")
    assert result.returncode == 1 and str(missing / "config.json") in result.stderr
    assert not (tmp_path / "e").exists()


@pytest.mark.slow
def test_cli_exports_a_chosen_checkpoint_as_the_next_version(tmp_path):
    model_dir, _ = trained_run()
    base = tmp_path / "export"
    (base / "4").mkdir(parents=True)
    first = os.path.join(model_dir, "checkpoints", "ckpt-1")
    result = run_cli("export.saved_model", f"--model_dir={model_dir}", f"--export_base={base}",
                     f"--checkpoint={first}", "--serving_base_path=/models/sagan", "--max_batch=32")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Exported SavedModel: {base / '5'}" in result.stdout
    loaded = tf.saved_model.load(str(base / "5"))
    z, labels = sample_inputs()
    served = loaded.signatures["serving_default"](z=tf.constant(z), label=tf.constant(labels))["images"].numpy()
    config = run_dir.read_config(model_dir)
    expected = run_dir.restore_ema_generator(config, first)((z, labels)).numpy()
    np.testing.assert_allclose(served, expected, atol=1e-5)
    assert not np.allclose(served, keras_ema()((z, labels)).numpy(), atol=1e-5)  # ckpt-2 differs
    with open(base / serving_config.MODELS_CONFIG) as f:
        assert serving_config.parse_models_config(f.read()).model_config_list.config[0].base_path == "/models/sagan"
    with open(base / serving_config.BATCHING_PARAMETERS) as f:
        assert serving_config.parse_batching_parameters(f.read()).max_batch_size.value == 32
    with pytest.raises(tf.errors.InvalidArgumentError, match="between 1 and 32"):
        loaded.signatures["generate"](label=tf.zeros([33], tf.int32), seed=tf.zeros([33], tf.int64),
                                      truncation=tf.zeros([33]))
