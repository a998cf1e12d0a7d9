"""scripts/truncation_sweep.py: the cells it measures, its table, and a sweep of a real (tiny) export."""
import argparse
import importlib.util
import json
import pathlib

import numpy as np
import pytest

from export import saved_model as export_lib
from sagan_tf import sampling
from sagan_tf.evaluation import classifier as classifier_lib
from sagan_tf.evaluation import load_feature_network, runner
from sagan_tf.sampling.exported import keras_generator
from sagan_tf.sampling.noise import noise_batches
from sagan_tf.sampling.standing_statistics import StandingStatistics
from tests.helpers import class_sensitive_generator

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "scripts" / "truncation_sweep.py"
spec = importlib.util.spec_from_file_location("truncation_sweep", SCRIPT)
sweep = importlib.util.module_from_spec(spec)
spec.loader.exec_module(sweep)


def test_truncations_and_statistics_are_parsed_and_bad_values_named():
    assert sweep.parse_truncations("none, 2,0.5,0") == [None, 2.0, 0.5, None]
    for bad in ("inf", "-1", "nan", "1e999", "big"):
        with pytest.raises(argparse.ArgumentTypeError, match=repr(bad)):
            sweep.parse_truncations(f"1,{bad}")
    assert sweep.parse_statistics("stored") == ["stored"]
    with pytest.raises(argparse.ArgumentTypeError, match="'fresh'"):
        sweep.parse_statistics("recomputed,fresh")


def test_no_truncation_is_measured_once():
    assert sweep.cells([None, 1.0], ["recomputed", "stored"]) == [(None, "stored"), (1.0, "recomputed"),
                                                                 (1.0, "stored")]


@pytest.mark.slow
def test_a_sweep_of_an_export_scores_each_cell_as_the_runner_does(tmp_path):
    """A tiny export against real Fashion-MNIST test images with an (untrained) classifier: the recomputed
    cell is runner.evaluate_generator of the rebuilt Keras generator, the stored one that of its plain
    sample function, and the two differ."""
    generator = class_sensitive_generator(3)  # with stored standing statistics, as an exported run has
    StandingStatistics(generator)(noise_batches(generator.spec["z_dim"], 3, 4, 32, seed=5))
    version_dir = export_lib.export_generator(generator, str(tmp_path / "export"))
    network_dir = tmp_path / "classifier"
    model = classifier_lib.build_classifier(image_size=32, image_channels=1, num_classes=10, width=4, feature_dim=8)
    classifier_lib.save_classifier(model, str(network_dir), dataset_name="fashion_mnist")
    out = tmp_path / "sweep.json"
    assert sweep.main([f"--saved_model={version_dir}", f"--feature_network=classifier:{network_dir}",
                       f"--reference_cache={tmp_path / 'refs'}", "--num_samples=48", "--batch_size=16",
                       "--truncations=none,0.5", f"--json={out}"]) == 0
    records = json.loads(out.read_text())
    assert [(r["truncation"], r["statistics"]) for r in records] == [(None, "stored"), (0.5, "recomputed"),
                                                                     (0.5, "stored")]
    network = load_feature_network(f"classifier:{network_dir}")
    from configs.fashion_mnist import get_config
    reference, _, _ = runner.run_reference(get_config(), network, "", 48, 48, 16, cache=str(tmp_path / "refs"))
    generator = keras_generator(version_dir)
    common = dict(z_dim=generator.spec["z_dim"], truncation=0.5, seed=0, dataset_name="fashion_mnist")
    recomputed = runner.evaluate_generator(generator, network, reference, 48, 16, 3, **common)
    stored = runner.evaluate_generator(sampling.as_sample_fn(generator), network, reference, 48, 16, 3, **common)
    assert records[1]["metrics"] == pytest.approx(recomputed, rel=1e-6)
    assert records[2]["metrics"] == pytest.approx(stored, rel=1e-6)
    assert not np.isclose(recomputed["fid/fashion_mnist_classifier"], stored["fid/fashion_mnist_classifier"])
    table = sweep.markdown_table(records).splitlines()
    assert len(table) == 5 and table[3].startswith("| 0.5 | recomputed | ")


def test_bad_sources_are_named(tmp_path, capsys):
    with pytest.raises(SystemExit):
        sweep.main([f"--saved_model={tmp_path / 'missing'}", "--feature_network=classifier:x"])
    assert "missing is not a directory" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        sweep.main([f"--saved_model={tmp_path}", "--feature_network=classifier:x"])
    assert "holds no saved_model.pb" in capsys.readouterr().err


def sweep_records(fids, precisions, recalls, statistics="recomputed"):
    """Records as --json writes them: an untruncated cell, then one per threshold 2, 1, 0.5."""
    records = []
    for t, fid, p, r in zip((None, 2.0, 1.0, 0.5), fids, precisions, recalls):
        metrics = {"fid/fashion_mnist_classifier": fid, "precision/fashion_mnist_classifier": p,
                   "recall/fashion_mnist_classifier": r}
        records.append({"truncation": t, "statistics": "stored" if t is None else statistics, "metrics": metrics})
    return records


def test_sweeps_from_json_are_tabulated_and_drawn_one_colour_each(tmp_path, capsys):
    plain = sweep_records([2.0, 1.9, 2.4, 4.1], [0.91, 0.92, 0.93, 0.94], [0.48, 0.45, 0.32, 0.18])
    ortho = sweep_records([2.2, 2.0, 2.1, 2.9], [0.90, 0.92, 0.94, 0.95], [0.47, 0.46, 0.36, 0.25])
    stored = sweep_records([2.0, 3.4, 25.0, 55.0], [0.9] * 4, [0.4] * 4, statistics="stored")[1:]
    (tmp_path / "plain.json").write_text(json.dumps(plain + stored))
    (tmp_path / "ortho.json").write_text(json.dumps(ortho))
    out = tmp_path / "figure.png"
    series = [sweep.parse_sweep(f"default={tmp_path / 'plain.json'}"), sweep.parse_sweep(str(tmp_path / "ortho.json"))]
    assert [label for label, _ in series] == ["default", "ortho"]  # a bare path is labelled by its file name
    assert sweep.show(series, ["recomputed"], str(out), "t") == 0
    assert out.stat().st_size > 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("| sweep | truncation | BN statistics | FID |")
    assert table[2] == "| default | none | stored | 2 |  | 0.91 | 0.48 |  |  |"  # FID, KID, P, R, IS, acc
    assert [row.split(" | ")[:3] for row in table[2:10]] == (
        [["| default", t, s] for t, s in (("none", "stored"), ("2", "recomputed"), ("1", "recomputed"),
                                         ("0.5", "recomputed"))]
        + [["| ortho", t, s] for t, s in (("none", "stored"), ("2", "recomputed"), ("1", "recomputed"),
                                       ("0.5", "recomputed"))])
    assert len(table) == 11 and table[10] == f"wrote {out}"  # the stored cells of 'default' were left out

    figure = sweep.plot(series, str(out), "t")
    fid_axis, precision_axis, recall_axis = figure.axes
    drawn = [(line.get_color(), list(line.get_xdata()), list(line.get_ydata())) for line in fid_axis.get_lines()
             if len(line.get_xdata()) > 2]
    assert drawn == [("C0", [0, 1, 2], [1.9, 2.4, 4.1]), ("C0", [0, 1, 2], [3.4, 25.0, 55.0]),
                     ("C1", [0, 1, 2], [2.0, 2.1, 2.9])]
    assert [line.get_linestyle() for line in fid_axis.get_lines() if len(line.get_xdata()) > 2] == ["-", "--", "-"]
    assert [list(line.get_ydata()) for line in recall_axis.get_lines() if len(line.get_xdata()) > 2][2] == [
        0.46, 0.36, 0.25]
    assert [tick.get_text() for tick in precision_axis.get_xticklabels()] == ["2", "1", "0.5"]


def test_from_json_names_a_file_that_is_not_a_sweep(tmp_path):
    (tmp_path / "bad.json").write_text(json.dumps({"fid": 1.0}))
    with pytest.raises(argparse.ArgumentTypeError, match="bad.json is not a list of this script's records"):
        sweep.parse_sweep(f"x={tmp_path / 'bad.json'}")
    with pytest.raises(argparse.ArgumentTypeError, match="missing.json"):
        sweep.parse_sweep(f"x={tmp_path / 'missing.json'}")
