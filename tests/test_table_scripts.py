"""The scripts that make the results table (scripts/fashion_mnist_seeds.sh, and
scripts/fashion_mnist_results.sh built on it): which runs they start, with what config, how a bad row is
refused, how a SIGTERM reaches the trainers, and what the results script does after the runs.

The trainer is replaced by a stub that records its arguments; the recorded flags are then parsed the
way trainers.fashion_mnist parses them (the real preset, ml_collections' --config.<field> overrides), so
a row whose flags do not make the config it names fails here.
"""
import contextlib
import pathlib
import signal
import subprocess
import time

import pytest
from absl import flags
from ml_collections import config_flags

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "fashion_mnist_seeds.sh"
RESULTS_SCRIPT = ROOT / "scripts" / "fashion_mnist_results.sh"
STUB = """#!/usr/bin/env bash
trap 'touch "$RECORD/$$.terminated"; kill $! 2>/dev/null; exit 0' TERM
for arg in "$@"; do case $arg in
  --model_dir=*) run=${arg##*/} dir=${arg#--model_dir=} ;;
  --json=*) json=${arg#--json=} ;;  # an evaluation or sweep writes its JSON there
  --export_base=*) mkdir -p "${arg#--export_base=}/1" ;;
esac; done
printf '%s\\n' "$@" > "$RECORD/$(date +%s%N).$$.args"  # in the order they were started
[ -z "${json:-}" ] || { mkdir -p "$(dirname "$json")" && echo "[]" > "$json"; }
[ -n "${dir:-}" ] || exit 0  # not a run (a plot, a sample sheet): nothing more to record
mkdir -p "$dir" && echo "{\\"run\\": \\"$run\\"}" > "$dir/config.json" && echo "{\\"step\\": 1}" > "$dir/eval_history.jsonl"
sed -n 's/^Cpus_allowed_list:[[:space:]]*//p' /proc/$$/status > "$RECORD/$run.tmp" && mv "$RECORD/$run.tmp" "$RECORD/$run.cores"
case " $HOLD " in *" all "* | *" $run "*) sleep 60 & wait ;; esac  # HOLD: the runs that keep running
case " $FAIL " in *" $run "*) exit 3 ;; esac  # FAIL: the runs that crash
"""


def script_env(tmp_path, **variables):
    """The environment that makes the script run the recording stub instead of the trainer."""
    record = tmp_path / "record"
    record.mkdir()
    stub = tmp_path / "python"
    stub.write_text(STUB)
    stub.chmod(0o755)
    env = {"PATH": "/usr/bin:/bin", "PYTHON": str(stub), "RECORD": str(record)}
    env.update({name: value for name, value in variables.items() if value is not None})
    return env, record


def recorded_calls(record):
    return [path.read_text().splitlines() for path in sorted(record.glob("*.args"))]


def run_script(tmp_path, seed, rows=None, precision=None, extra=(), fail=None, records=None):
    env, record = script_env(tmp_path, ROWS=rows, PRECISION=precision, FAIL=fail, RECORDS=records)
    out = tmp_path / "out"
    result = subprocess.run(["bash", str(SCRIPT), str(seed), str(out), "300", *extra], env=env,
                            capture_output=True, text=True, timeout=60)
    return result, recorded_calls(record), out


def parse(argv):
    """The config and model_dir trainers.fashion_mnist would get from `argv` (after `-m module`)."""
    assert argv[:2] == ["-m", "trainers.fashion_mnist"]
    argv = ["trainer", *argv[2:]]
    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", str(ROOT / "configs" / "fashion_mnist.py"), flag_values=values,
                                    sys_argv=argv)  # the --config.<field> overrides are read from sys_argv
    flags.DEFINE_string("model_dir", None, "", flag_values=values)
    flags.DEFINE_integer("train_steps", None, "", flag_values=values)
    values(argv)
    return values.config, values.model_dir, values.train_steps


def by_run(calls):
    parsed = [parse(argv) for argv in calls]
    return {pathlib.Path(model_dir).name: (config, steps) for config, model_dir, steps in parsed}


def test_default_rows_are_the_default_recipe_and_no_attention(tmp_path):
    result, calls, out = run_script(tmp_path, seed=2)
    assert result.returncode == 0, result.stderr
    runs = by_run(calls)
    assert sorted(runs) == ["attention_s2", "no_attention_s2"]
    attention, steps = runs["attention_s2"]
    assert steps == 300
    assert (tuple(attention.g_attention), tuple(attention.d_attention)) == ((16,), (16,))
    assert attention.seed == 2 and attention.mixed_precision == "float32" and attention.g_ortho_reg == 0
    assert attention.eval_every == 1000
    assert attention.eval_reference_cache == f"{out}/reference_stats"
    none, _ = runs["no_attention_s2"]
    assert (tuple(none.g_attention), tuple(none.d_attention)) == ((), ())
    assert none.seed == 2


def test_placement_and_regulariser_rows(tmp_path):
    result, calls, _ = run_script(tmp_path, seed=0, rows="g32_d16 g32 ortho", precision="mixed_bfloat16",
                                  extra=("--config.log_every=7",))
    assert result.returncode == 0, result.stderr
    runs = by_run(calls)
    assert sorted(runs) == ["g32_d16_s0", "g32_s0", "ortho_s0"]
    placements = {name: (tuple(c.g_attention), tuple(c.d_attention)) for name, (c, _) in runs.items()}
    assert placements == {"g32_d16_s0": ((32,), (16,)), "g32_s0": ((32,), ()), "ortho_s0": ((16,), (16,))}
    assert [c.g_ortho_reg for name, (c, _) in sorted(runs.items())] == [0, 0, pytest.approx(1e-4)]
    assert {c.mixed_precision for c, _ in runs.values()} == {"mixed_bfloat16"}
    assert {c.log_every for c, _ in runs.values()} == {7}  # extra trainer flags reach every run


def test_unknown_row_is_refused_before_any_run(tmp_path):
    result, calls, _ = run_script(tmp_path, seed=0, rows="attention g64")
    assert result.returncode != 0
    assert "unknown row 'g64'" in result.stderr
    assert calls == []


@contextlib.contextmanager
def started(script, *args, env):
    """`bash script args...` running in the background; killed on the way out if it still runs."""
    process = subprocess.Popen(["bash", str(script), *map(str, args)], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()


def wait_until(condition, timeout=30):
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return condition()


def stop(process):
    """SIGTERM, as a session's end or a scheduler sends it; the script's exit status."""
    process.send_signal(signal.SIGTERM)
    return process.wait(timeout=20)


def test_sigterm_reaches_both_trainers(tmp_path):
    """A SIGTERM to the script must reach the trainers themselves (they checkpoint on it), not only the
    shells that started them: killing those would leave both trainers running."""
    env, record = script_env(tmp_path, HOLD="all", ROWS="attention no_attention g32")
    with started(SCRIPT, 0, tmp_path / "out", env=env) as script:
        assert wait_until(lambda: len(recorded_calls(record)) == 2), "the script did not start both trainers"
        assert stop(script) == 143
    assert len(list(record.glob("*.terminated"))) == 2, script.stderr.read()
    assert len(recorded_calls(record)) == 2  # the stopped script started no further row


def test_rows_are_dealt_to_the_cores_and_each_core_goes_on_alone(tmp_path):
    """CORES="1 0" deals attention and g32 to core 1, no_attention to core 0; g32 starts as soon as
    attention ends, while no_attention (held) is still running on the other core."""
    env, record = script_env(tmp_path, HOLD="no_attention_s0", ROWS="attention no_attention g32", CORES="1 0")
    with started(SCRIPT, 0, tmp_path / "out", env=env) as script:
        wait_until(lambda: len(list(record.glob("*.cores"))) == 3)
        cores = {path.stem: path.read_text().strip() for path in record.glob("*.cores")}
        assert cores == {"attention_s0": "1", "no_attention_s0": "0", "g32_s0": "1"}, script.stderr.read()
        assert script.poll() is None  # no_attention is still running
        assert stop(script) == 143
    assert len(list(record.glob("*.terminated"))) == 1  # the held run was stopped


def test_a_crashed_run_stops_its_core_only_and_fails_the_script(tmp_path):
    result, calls, _ = run_script(tmp_path, seed=0, rows="attention no_attention g32 g32_d16", fail="attention_s0")
    assert result.returncode == 3
    assert sorted(by_run(calls)) == ["attention_s0", "g32_d16_s0", "no_attention_s0"]  # g32 was after it on core 0


def test_results_script_stops_both_trainers_on_sigterm_and_evaluates_nothing(tmp_path):
    env, record = script_env(tmp_path, HOLD="attention_s0 no_attention_s0", PRETRAINED=str(tmp_path / "pre"),
                             FIGURES=str(tmp_path / "figures"))
    with started(RESULTS_SCRIPT, tmp_path / "out", 300, env=env) as script:
        assert wait_until(lambda: len(recorded_calls(record)) == 2), script.stderr.read()
        runs = by_run(recorded_calls(record))
        assert sorted(runs) == ["attention_s0", "no_attention_s0"]
        assert tuple(runs["no_attention_s0"][0].g_attention) == () and tuple(runs["attention_s0"][0].g_attention) == (16,)
        assert stop(script) == 143
    assert len(list(record.glob("*.terminated"))) == 2  # both trainers got the SIGTERM (and checkpoint on it)
    assert len(recorded_calls(record)) == 2  # no further run, sweep, figure or export after the stop
    assert not (tmp_path / "pre").exists()


def flag(argv, name):
    return next((arg.split("=", 1)[1] for arg in argv if arg.startswith(f"--{name}=")), None)


def test_results_script_trains_every_cell_then_sweeps_tabulates_and_exports(tmp_path):
    """Every placement and the regulariser for each seed; the two sweeps of seed 0 (skipped when rerun);
    the table and the t-tests over exactly those runs; the export replacing version 1 whole, no other."""
    pretrained = tmp_path / "pre"
    (pretrained / "1").mkdir(parents=True)
    (pretrained / "1" / "old_model").write_text("")
    (pretrained / "2").mkdir()
    (pretrained / "2" / "shipped_model").write_text("")
    env, record = script_env(tmp_path, SEEDS="0 1", PRETRAINED=str(pretrained), FIGURES=str(tmp_path / "fig"),
                             EXPORT_RUN="attention_s0", RECORDS=str(tmp_path / "records"))
    out = tmp_path / "out"
    result = subprocess.run(["bash", str(RESULTS_SCRIPT), str(out), "300"], env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    calls = recorded_calls(record)
    trainers = [argv for argv in calls if argv[:2] == ["-m", "trainers.fashion_mnist"]]
    runs = by_run(trainers)
    placements = ["attention", "g32", "g32_d16", "no_attention"]
    assert sorted(runs) == sorted(f"{row}_s{seed}" for seed in (0, 1) for row in placements + ["ortho"])
    assert len(trainers) == 10 and all(steps == 300 for _, steps in runs.values())
    assert runs["ortho_s0"][0].g_ortho_reg == 1e-4 and runs["attention_s0"][0].g_ortho_reg == 0
    assert {tuple(runs[f"g32_d16_s{seed}"][0].d_attention) for seed in (0, 1)} == {(16,)}
    assert calls.index(trainers[-1]) < min(calls.index(argv) for argv in calls if argv not in trainers)

    sweeps = [argv for argv in calls if argv[0] == "scripts/truncation_sweep.py"]
    measured = [flag(argv, "model_dir") for argv in sweeps if flag(argv, "model_dir")]
    assert sorted(measured) == [str(out / "attention_s0"), str(out / "ortho_s0")]
    shown = [argv for argv in sweeps if "--from_json" in argv]
    assert [argv[argv.index("--from_json") + 1:argv.index("--from_json") + 3] for argv in shown] == [[
        f"default={out / 'attention_s0' / 'truncation.json'}",
        f"g_ortho_reg=1e-4={out / 'ortho_s0' / 'truncation.json'}"]]
    assert (out / "ortho_s0" / "truncation.json").is_file() and not (out / "ortho_s0" / "truncation.tmp.json").exists()
    records = tmp_path / "records"
    assert sorted(path.name for path in records.iterdir()) == sorted(runs)  # every run kept, the sweeps with theirs
    assert sorted(path.name for path in (records / "ortho_s0").iterdir()) == [
        "config.json", "eval_history.jsonl", "truncation.json"]
    assert (records / "ortho_s0" / "truncation.json").read_text() == (out / "ortho_s0" / "truncation.json").read_text()
    assert not (records / "g32_s1" / "truncation.json").exists()

    table, welch = [argv for argv in calls if argv[0] == "scripts/plot_eval_history.py"]
    assert flag(table, "table_step") == flag(welch, "table_step") == "300" and "--welch" in welch
    rows = dict(arg.rsplit("=", 1) for arg in table if not arg.startswith("--") and "=" in arg)
    assert rows["no attention"] == f"{out / 'no_attention_s0'},{out / 'no_attention_s1'}"
    assert rows["32² in G only"] == f"{out / 'g32_s0'},{out / 'g32_s1'}"
    assert rows["default + g_ortho_reg"] == f"{out / 'ortho_s0'},{out / 'ortho_s1'}"
    compared = [arg.rsplit("=", 1)[0] for arg in welch if not arg.startswith("--") and "=" in arg]
    assert compared == ["default", "no attention", "32² G, 16² D", "32² G only", "ortho"]

    [export] = [argv for argv in calls if argv[:2] == ["-m", "export.saved_model"]]
    assert flag(export, "model_dir") == str(out / "attention_s0")
    assert sorted(p.name for p in pretrained.iterdir()) == ["1", "2"] and not (pretrained / "1" / "old_model").exists()
    assert (pretrained / "2" / "shipped_model").exists()  # the shipped version is not the seed table's to replace
    assert not pathlib.Path(f"{pretrained}.tmp").exists()

    for path in record.glob("*.args"):
        path.unlink()
    del env["EXPORT_RUN"]  # a rerun without it keeps the committed generator and its figures
    rerun = subprocess.run(["bash", str(RESULTS_SCRIPT), str(out), "300"], env=env, capture_output=True, text=True,
                           timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    again = recorded_calls(record)
    assert not [argv for argv in again if flag(argv, "model_dir") and argv[0].endswith("sweep.py")]  # swept already
    assert [argv[0] for argv in again if argv[0].startswith("scripts/")][-1] == "scripts/plot_eval_history.py"
    assert not [argv for argv in again if argv[:2] in (["-m", "export.saved_model"], ["-m", "trainers.sample"])]


def test_records_keep_the_scores_of_finished_runs_only(tmp_path):
    records = tmp_path / "records"
    result, _, out = run_script(tmp_path, seed=1, rows="attention no_attention g32", fail="no_attention_s1",
                                records=str(records))
    assert result.returncode == 3
    assert sorted(path.name for path in records.iterdir()) == ["attention_s1", "g32_s1"]  # not the crashed run
    for run in ("attention_s1", "g32_s1"):
        assert sorted(path.name for path in (records / run).iterdir()) == ["config.json", "eval_history.jsonl"]
        assert (records / run / "config.json").read_text() == (out / run / "config.json").read_text()
        assert (records / run / "config.json").read_text().strip() == f'{{"run": "{run}"}}'
    (tmp_path / "held").mkdir()
    env, record = script_env(tmp_path / "held", HOLD="all", RECORDS=str(tmp_path / "held_records"))
    with started(SCRIPT, 0, tmp_path / "held_out", env=env) as script:
        assert wait_until(lambda: len(recorded_calls(record)) == 2)
        assert stop(script) == 143
    assert not (tmp_path / "held_records").exists()  # a stopped run has not finished: nothing recorded
