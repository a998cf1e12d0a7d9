"""The tf.distribute strategy factory behind `--strategy` (`sagan_tf.runtime.replicas` calls a network under
the strategy it returns)."""
from __future__ import annotations

import tensorflow as tf

__all__ = ["split_cpu", "get_strategy"]

STRATEGIES = ("default", "one_device", "mirrored", "multi_worker_mirrored", "tpu")


def split_cpu(num_devices: int) -> None:
    """Splits the physical CPU into `num_devices` logical devices (must run before TF initialises),
    so mirrored training can be tried and tested on a CPU-only machine."""
    if num_devices <= 1:
        return
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * num_devices)
    except RuntimeError as error:
        raise RuntimeError(f"--num_cpu_devices={num_devices} must be applied before TensorFlow initialises: "
                           f"{error}") from error


def get_strategy(name: str = "default", tpu: str | None = None, num_cpu_devices: int = 0) -> tf.distribute.Strategy:
    """Returns the strategy called `name` (one of STRATEGIES)."""
    if name not in STRATEGIES:
        raise ValueError(f"--strategy={name!r} is not known; allowed: {list(STRATEGIES)}.")
    split_cpu(num_cpu_devices)
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "one_device":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    if name == "mirrored":
        devices = [d.name for d in tf.config.list_logical_devices("GPU")]
        devices = devices or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    if name == "multi_worker_mirrored":
        return tf.distribute.MultiWorkerMirroredStrategy()
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or "")
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as error:
        raise RuntimeError(f"--strategy=tpu: no TPU found at --tpu={tpu!r} ({error}). Run on a Cloud TPU VM with "
                           f"--tpu=local, or pass --tpu=<TPU name or grpc://address>.") from error
    return tf.distribute.TPUStrategy(resolver)
