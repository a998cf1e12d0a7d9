"""scripts/plot_eval_history.py: reading the history the periodic evaluation writes, and the plot."""
import importlib.util
import json
import pathlib

import numpy as np
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
    assert plot.main([f"run a={tmp_path / 'a'}", f"two={tmp_path / 'a'},{tmp_path / 'a'}", f"--out={out}"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot.parse_run("x=y/z") == ("x", ["y/z"]) and plot.parse_run("runs/abc/") == ("abc", ["runs/abc/"])
    assert plot.parse_run("seeds=r/0,r/1,r/2") == ("seeds", ["r/0", "r/1", "r/2"])


def three_seeds(tmp_path):
    """Three runs of one recipe: seed 2 was not evaluated at step 1000."""
    values = {0: (30.0, 4.0, 0.80), 1: (20.0, 5.0, 0.85), 2: (None, 3.0, 0.90)}
    for seed, (fid_1000, fid_2000, accuracy) in values.items():
        records = [{"step": 2000, "metrics": {"fid/net": fid_2000, "conditional_accuracy/net": accuracy,
                                              "kid/net": fid_2000 / 100}}]
        if fid_1000 is not None:
            records.insert(0, {"step": 1000, "metrics": {"fid/net": fid_1000}})
        write_history(tmp_path / f"s{seed}", records)
    return [str(tmp_path / f"s{seed}") for seed in values]


def test_seeds_are_the_mean_and_sample_std_at_the_steps_all_of_them_evaluated(tmp_path):
    histories = [plot.read_history(path) for path in three_seeds(tmp_path)]
    steps, means, stds = plot.seed_series(histories, "fid")
    assert steps == [2000]  # step 1000 is missing from seed 2
    assert means == pytest.approx([np.mean([4.0, 5.0, 3.0])]) and stds == pytest.approx([np.std([4.0, 5.0, 3.0],
                                                                                                  ddof=1)])
    table = plot.seed_table([("default", ["a", "b", "c"], histories)], 2000)
    row = table.splitlines()[2]
    assert row.startswith("| default | 3 | 4.000 ± 1.000 | 0.040 ± 0.010 |  |")  # IS was never measured
    assert row.endswith("| 0.850 ± 0.050 |")
    with pytest.raises(ValueError, match=r"default: a, b did not evaluate step 2000"):
        plot.seed_table([("default", ["a", "b", "c"], [{}, {}, histories[0]])], 2000)


def test_the_cli_prints_the_seed_table_without_a_plot(tmp_path, capsys):
    paths = three_seeds(tmp_path)
    assert plot.main([f"default={','.join(paths)}", "--table_step=2000"]) == 0
    assert "| default | 3 | 4.000 ± 1.000 |" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        plot.main([f"default={','.join(paths)}", "--table_step=1000"])
    assert "did not evaluate step 1000" in capsys.readouterr().err


def test_fid_axis_is_log_with_plain_1_2_5_labels_and_draws_the_seed_means(tmp_path):
    pytest.importorskip("matplotlib")
    fids = {0: (20.0, 12.0, 2.0), 1: (14.0, 10.0, 2.4)}  # two seeds: the mean line is (17, 11, 2.2)
    for seed, values in fids.items():
        write_history(tmp_path / f"s{seed}", [{"step": 1000 * (i + 1), "metrics": {"fid/net": fid}}
                                              for i, fid in enumerate(values)])
    histories = [plot.read_history(str(tmp_path / f"s{seed}")) for seed in fids]
    figure = plot.plot([("default", ["s0", "s1"], histories)], "title")
    fid_axis = figure.axes[0]
    assert fid_axis.get_yscale() == "log"
    figure.canvas.draw()
    low, high = fid_axis.get_ylim()
    labels = [tick.get_text() for tick, value in zip(fid_axis.get_yticklabels(), fid_axis.get_yticks())
              if low <= value <= high]
    assert labels == ["2", "5", "10", "20"]  # not a lone "10^1"
    assert all(not tick.get_text() for tick in fid_axis.yaxis.get_minorticklabels())
    [mean_line] = fid_axis.get_lines()
    assert list(mean_line.get_xdata()) == [1000, 2000, 3000]
    assert list(mean_line.get_ydata()) == pytest.approx([17.0, 11.0, 2.2])


def naive_welch_p(a, b):
    """Two-sided p of Welch's t-test from its textbook formula (Welch–Satterthwaite degrees of freedom)."""
    from scipy import stats
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    t = (np.mean(a) - np.mean(b)) / np.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    return 2 * stats.t.sf(abs(t), df)


def test_welch_table_is_the_difference_of_means_and_welchs_p(tmp_path, capsys):
    pytest.importorskip("scipy")
    recipes = {"base": [(2.0, 0.90), (2.6, 0.91), (2.3, 0.89)], "other": [(1.5, 0.85), (2.5, 0.88)]}
    for name, runs in recipes.items():
        for seed, (fid, accuracy) in enumerate(runs):
            write_history(tmp_path / f"{name}{seed}", [{"step": 10, "metrics": {
                "fid/net": fid, "conditional_accuracy/net": accuracy, "kid/net": fid / 100, "is/net": 8.0 + fid,
                "precision/net": accuracy, "recall/net": 1 - accuracy}}])
    arguments = [f"{name}={','.join(str(tmp_path / f'{name}{seed}') for seed in range(len(runs)))}"
                 for name, runs in recipes.items()]
    assert plot.main(arguments + ["--table_step=10", "--welch"]) == 0
    header, _, *rows = capsys.readouterr().out.split("\n\n")[1].strip().splitlines()
    assert header == "| metric | base − other | p |"
    cells = {row.strip("|").split("|")[0].strip(): row.strip("|").split("|")[1:] for row in rows}
    assert list(cells) == ["FID", "KID", "IS", "precision", "recall", "conditional accuracy"]
    base_fid, other_fid = [f for f, _ in recipes["base"]], [f for f, _ in recipes["other"]]
    base_acc, other_acc = [a for _, a in recipes["base"]], [a for _, a in recipes["other"]]
    assert cells["FID"][0].strip() == f"+{np.mean(base_fid) - np.mean(other_fid):.2f}"  # 2 decimals above 1
    assert float(cells["FID"][1]) == pytest.approx(naive_welch_p(base_fid, other_fid), abs=0.005)
    assert cells["conditional accuracy"][0].strip() == f"+{np.mean(base_acc) - np.mean(other_acc):.3f}"
    assert float(cells["conditional accuracy"][1]) == pytest.approx(naive_welch_p(base_acc, other_acc), abs=0.005)
    assert cells["recall"][0].strip().startswith("−")  # base's recall is lower: a unicode minus, like the pages
    base = ("base", [], [plot.read_history(str(tmp_path / f"base{s}")) for s in range(3)])
    one_run = ("one run", [], [plot.read_history(str(tmp_path / "other0"))])
    assert "one run" not in plot.welch_table([base, one_run, ("other", [], base[2][:2])], 10)  # no variance
    with pytest.raises(ValueError, match="two runs of each: base has 3, and another"):
        plot.welch_table([base, one_run], 10)
    with pytest.raises(SystemExit):
        plot.main(arguments + ["--welch", f"--out={tmp_path / 'x.png'}"])
    assert "--welch needs --table_step" in capsys.readouterr().err
