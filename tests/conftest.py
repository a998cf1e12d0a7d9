"""Shared test setup.

TensorFlow is configured here, before anything initialises it: the one physical CPU is split into two
logical devices so MirroredStrategy tests can run on this machine, and TF's C++ logging is quieted.
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)


@pytest.fixture(autouse=True)
def _float32_policy_and_fresh_session():
    """Every test starts in float32 with fresh Keras name counters, whatever the previous one set."""
    keras.mixed_precision.set_global_policy("float32")
    keras.backend.clear_session()
    yield
    keras.mixed_precision.set_global_policy("float32")


@pytest.fixture(scope="session")
def two_device_strategy():
    """MirroredStrategy over the two logical CPUs (one object for the session: tests that share a traced
    model across a module need the strategy it was built under)."""
    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
