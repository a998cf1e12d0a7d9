"""steps_per_execution=k: the same run as k=1, step for step.

A k=1 and a k=4 run of 10 steps from the same seed and data (k=4: executions of 4, 4, then 2 steps,
the dataset cut at train_steps). The checkpoints, final weights, logged scalars and sample frames must
be bitwise equal: the same ops on the same CPU, only grouped into longer executions. The slow test
resumes both to 14 (k=4 from step 10, not a multiple of 4: 2 aligning steps, then 2 more).
"""
import numpy as np
import pytest
import tensorflow as tf

from sagan_tf.config import validate_config
from sagan_tf.training import callbacks as cb
from sagan_tf.training import train
from sagan_tf.training.loop import execution_segments
from tests.helpers import random_dataset_fn, tiny_config


def run_config(per_execution, train_steps):
    return tiny_config(train_steps=train_steps, steps_per_execution=per_execution, checkpoint_every=4,
                       sample_every=4, log_every=4, keep_checkpoints=10)


def run(root, per_execution, train_steps):
    config = run_config(per_execution, train_steps)
    return train(config, str(root / f"k{per_execution}"), dataset_fn=random_dataset_fn(config), verbose=0)


def read_events(directory):
    """({tag: {step: float}}, {tag: {step: encoded PNG}}) from the run's train/ events."""
    scalars, images = {}, {}
    for path in sorted(directory.glob("events*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                plugin = value.metadata.plugin_data.plugin_name
                if plugin == "scalars":
                    scalars.setdefault(value.tag, {})[event.step] = float(tf.make_ndarray(value.tensor))
                elif plugin == "images":
                    images.setdefault(value.tag, {})[event.step] = value.tensor.string_val[2]
    return scalars, images


def checkpoint_state(model_dir, step):
    reader = tf.train.load_checkpoint(str(model_dir / "checkpoints" / f"ckpt-{step}"))
    # save_counter counts the saves of one process (a resumed one starts again): not run state.
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if not name.startswith("save_counter")}


def saved_steps(model_dir):
    return sorted(int(path.name[len("ckpt-"):-len(".index")]) for path in (model_dir / "checkpoints").glob("ckpt-*.index"))


def assert_same_checkpoints(root, steps):
    for step in steps:
        a, b = checkpoint_state(root / "k1", step), checkpoint_state(root / "k4", step)
        assert sorted(a) == sorted(b)
        for name in a:
            np.testing.assert_array_equal(a[name], b[name], err_msg=f"ckpt-{step}: {name}")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("steps_per_execution")
    return dict(root=root, k1=run(root, 1, 10), k4=run(root, 4, 10))


@pytest.mark.slow  # trains or runs CLIs for tens of seconds (docs/testing.md)
def test_a_run_ends_exactly_at_train_steps_when_the_last_execution_is_shorter(runs):
    assert int(runs["k4"].step) == int(runs["k1"].step) == 10


@pytest.mark.slow  # trains or runs CLIs for tens of seconds (docs/testing.md)
def test_checkpoints_are_written_at_the_same_steps_with_the_same_contents(runs):
    assert saved_steps(runs["root"] / "k1") == saved_steps(runs["root"] / "k4") == [4, 8, 10]
    assert_same_checkpoints(runs["root"], (4, 8, 10))


@pytest.mark.slow  # trains or runs CLIs for tens of seconds (docs/testing.md)
def test_final_weights_are_identical(runs):
    for a, b in zip(runs["k1"].weights, runs["k4"].weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)


@pytest.mark.slow  # trains or runs CLIs for tens of seconds (docs/testing.md)
def test_logged_scalars_and_sample_frames_are_those_of_their_steps(runs):
    """k=4 logs the last step of each execution: at the log steps (multiples of 4) the same values as k=1."""
    scalars1, images1 = read_events(runs["root"] / "k1" / "train")
    scalars4, images4 = read_events(runs["root"] / "k4" / "train")
    for tag in ("d_loss", "g_loss", "d_real", "d_fake", "d_grad_norm", "g_sigma_max"):
        assert sorted(scalars1[tag]) == sorted(scalars4[tag]) == [4, 8], tag
        assert [scalars4[tag][s] for s in (4, 8)] == [scalars1[tag][s] for s in (4, 8)], tag
    assert sorted(images4["ema_samples"]) == sorted(images1["ema_samples"]) == [4, 8, 10]
    for step in (4, 8, 10):
        assert images4["ema_samples"][step] == images1["ema_samples"][step], step


@pytest.mark.slow  # two more train() calls
def test_a_resume_from_a_step_that_is_not_a_multiple_realigns_and_stays_exact(runs):
    k1, k4 = run(runs["root"], 1, 14), run(runs["root"], 4, 14)  # k=4: steps 10-12, then 12-14
    assert int(k1.step) == int(k4.step) == 14
    assert saved_steps(runs["root"] / "k4") == [4, 8, 10, 12, 14]
    assert_same_checkpoints(runs["root"], (12, 14))


def test_cadences_must_be_multiples_of_steps_per_execution():
    validate_config(tiny_config(steps_per_execution=4, checkpoint_every=8, sample_every=4, log_every=4, train_steps=10))
    for field, value in (("checkpoint_every", 6), ("sample_every", 2), ("log_every", 10), ("eval_every", 5)):
        config = tiny_config(steps_per_execution=4, checkpoint_every=8, sample_every=4, log_every=4)
        config[field] = value
        config.eval_feature_network = "classifier:/nowhere"
        with pytest.raises(ValueError, match=rf"config\.{field}={value} is not a multiple of "
                                             rf"config\.steps_per_execution=4.*e\.g\. {-(-value // 4) * 4}\)"):
            validate_config(config)
    for bad in (0, -1, True):
        with pytest.raises(ValueError, match=rf"config\.steps_per_execution={bad!r} is not allowed"):
            validate_config(tiny_config(steps_per_execution=bad))


def test_execution_segments_align_a_resume_then_run_whole_executions():
    assert execution_segments(0, 12, 4) == [(0, 12)]
    assert execution_segments(6, 12, 4) == [(6, 8), (8, 12)]
    assert execution_segments(6, 7, 4) == [(6, 7)]
    assert execution_segments(8, 10, 4) == [(8, 10)]
    assert execution_segments(5, 12, 1) == [(5, 12)]


class FakeModel:
    """Stands for the SAGAN model: a device step that must be read only once per fit."""

    def __init__(self, step):
        self.reads, self._step = 0, step

    @property
    def step(self):
        self.reads += 1
        return tf.constant(self._step)


def test_step_counter_counts_on_the_host_and_stops_at_the_last_shorter_execution():
    model, counter = FakeModel(6), cb.StepCounter()
    counter.set_model(model)
    counter.set_params({"steps": 10})
    counter.on_train_begin()
    seen = []
    for end_batch in (3, 7, 11):  # Keras reports the last batch index of each 4-step execution
        counter.on_train_batch_end(end_batch)
        seen.append(cb.current_step(model))
    assert seen == [10, 14, 16] and model.reads == 1
    counter.on_train_end()
    assert cb.current_step(model) == 6 and model.reads == 2  # outside fit: read from the model again
