"""A quiet start (sagan_tf.runtime.quiet_start): the CLIs print no TensorFlow start-up notices unless the
user set TF_CPP_MIN_LOG_LEVEL, and every other line, a real error among them, still prints."""
import os
import subprocess
import sys
import textwrap

from sagan_tf.runtime.quiet_start import is_start_up_notice
from tests.helpers import ROOT

NOTICES = ("absl::InitializeLog", "oneDNN custom operations", "Could not find cuda drivers", "failed call to cuInit")


def run(args, level=None):
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = str(ROOT)
    if level is not None:
        env["TF_CPP_MIN_LOG_LEVEL"] = level
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_export_cli_starts_quietly_and_still_prints_its_error(tmp_path):
    args = ["-m", "export.saved_model", f"--model_dir={tmp_path / 'missing'}", f"--export_base={tmp_path / 'e'}"]
    quiet = run(args)
    assert quiet.returncode == 1
    assert quiet.stderr.strip().splitlines() == [f"error: model_dir '{tmp_path / 'missing'}' does not exist or "
                                                 "is not a directory."], quiet.stderr
    # The user's own TF_CPP_MIN_LOG_LEVEL leaves TensorFlow's output as it is: here, its notices.
    loud = run(args, level="0")
    assert loud.returncode == 1 and "does not exist" in loud.stderr
    assert any(notice in loud.stderr for notice in NOTICES), loud.stderr


def test_trainer_cli_starts_quietly(tmp_path):
    result = run(["-m", "trainers.fashion_mnist", f"--model_dir={tmp_path / 'run'}", f"--data_dir={tmp_path / 'no'}"])
    assert result.returncode == 1
    assert not any(notice in result.stderr for notice in NOTICES), result.stderr
    assert f"--data_dir={tmp_path / 'no'} does not exist." in result.stderr
    assert not (tmp_path / "run").exists()


def test_captured_lines_other_than_the_notices_are_written_back_even_when_the_block_raises():
    script = textwrap.dedent("""
        import os, sys
        from sagan_tf.runtime.quiet_start import start_up_notices_dropped
        try:
            with start_up_notices_dropped():
                os.write(2, b"I0000 00:00:1.0  1 port.cc:153] oneDNN custom operations are on. You may see\\n")
                os.write(2, b"E0000 00:00:1.0  1 cuda_platform.cc:52] failed call to cuInit: INTERNAL\\n")
                os.write(2, b"E0000 00:00:1.0  1 kernel.cc:1] a real error\\n")
                print("from python", file=sys.stderr)
                raise ValueError("boom")
        except ValueError:
            print("raised", file=sys.stderr)
    """)
    result = run(["-c", script])
    assert result.stderr.splitlines() == ["E0000 00:00:1.0  1 kernel.cc:1] a real error", "from python", "raised"]


def test_the_hook_is_installed_only_for_python_dash_m():
    script = "import sys, export, trainers; print([type(f).__name__ for f in sys.meta_path if 'Quiet' in type(f).__name__])"
    result = run(["-c", script])
    assert result.stdout.strip() == "[]" and "TF_CPP_MIN_LOG_LEVEL" not in result.stdout


def test_notice_patterns_match_only_the_notices():
    assert is_start_up_notice("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR")
    assert is_start_up_notice("I0000 00:00:1796644151.432186   31290 cudart_stub.cc:31] Could not find cuda drivers "
                              "on your machine, GPU will not be used.")
    assert not is_start_up_notice("E0000 00:00:1.0 1 cuda_platform.cc:52] failed to allocate 10 GiB")
    assert not is_start_up_notice("error: --data_dir=/x does not exist.")
