"""scripts/plot_eval_history.py: reading the history the periodic evaluation writes, and the plot."""
import importlib.util
import json
import pathlib

import pytest

from sagan_tf.evaluation import periodic

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "scripts" / "plot_eval_history.py"
spec = importlib.util.spec_from_file_location("plot_eval_history", SCRIPT)
plot = importlib.util.module_from_spec(spec)
spec.loader.exec_module(plot)


def write_history(run_dir, records):
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / periodic.HISTORY_FILE).write_text("".join(json.dumps(r) + "\n" for r in records))


def test_history_file_name_matches_the_library():
    assert plot.HISTORY_FILE == periodic.HISTORY_FILE


def test_last_record_per_step_wins_and_steps_are_sorted(tmp_path):
    write_history(tmp_path, [{"step": 2000, "metrics": {"fid/net": 9.0}},
                             {"step": 1000, "metrics": {"fid/net": 20.0, "conditional_accuracy/net": 0.5}},
                             {"step": 2000, "metrics": {"fid/net": 8.0}}])  # a resumed run re-evaluated 2000
    history = plot.read_history(str(tmp_path))
    assert list(history) == [1000, 2000]
    assert plot.metric_series(history, "fid") == ([1000, 2000], [20.0, 8.0])
    assert plot.metric_series(history, "conditional_accuracy") == ([1000], [0.5])


def test_bad_history_names_file_and_line(tmp_path):
    (tmp_path / periodic.HISTORY_FILE).write_text('{"step": 1, "metrics": {}}\nnot json\n')
    with pytest.raises(ValueError, match=r"eval_history.jsonl:2"):
        plot.read_history(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="eval_every"):
        plot.read_history(str(tmp_path / "missing"))


def test_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    write_history(tmp_path / "a", [{"step": s, "metrics": {"fid/net": 10.0 / s}} for s in (1, 2, 3)])
    out = tmp_path / "fig.png"
    assert plot.main([f"run a={tmp_path / 'a'}", f"--out={out}"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot.parse_run("x=y/z") == ("x", "y/z") and plot.parse_run("runs/abc/") == ("abc", "runs/abc/")
