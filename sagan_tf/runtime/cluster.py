"""Which worker this process is in a multi-worker run, and what every worker must agree on before training."""
from __future__ import annotations

import tensorflow as tf

__all__ = ["is_chief", "num_workers", "check_same_start_step"]


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True on the worker that owns model_dir (always, except on non-chief multi-worker tasks)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    return resolver.task_type in ("chief", None) or (
        resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in resolver.cluster_spec().as_dict())


def check_same_start_step(strategy: tf.distribute.Strategy, start: int, model_dir: str) -> None:
    """Multi-worker runs only: every worker must have restored the same step, or they would train
    different step counts and wait on each other's collectives. (They do when `model_dir` is storage
    they all read; a worker given a local `model_dir` would start again from step 0.)"""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return
    # Sums over all replicas of (1, step, step²): all steps are equal iff n·Σstep² = (Σstep)², exact in float64.
    values = strategy.experimental_distribute_values_from_function(
        lambda context: tf.constant([1.0, start, float(start) ** 2], tf.float64))
    n, total, squares = strategy.reduce(tf.distribute.ReduceOp.SUM, values, axis=None).numpy()
    if n * squares != total * total:
        raise RuntimeError(f"the workers restored different steps (this one: {start}, mean {total / n:g}) from "
                           f"{model_dir}/checkpoints: --model_dir must be storage every worker reads "
                           f"(GCS, NFS), the same on all of them.")


def num_workers(strategy: tf.distribute.Strategy) -> int:
    """Hosts taking part in the run (1 unless multi-worker with a cluster in TF_CONFIG)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return 1
    spec = resolver.cluster_spec().as_dict()
    return max(1, sum(len(spec.get(job, ())) for job in ("chief", "worker")))
