"""`train(config, model_dir, strategy)`: the whole training run, resumable, driven by `fit`.

    config → validate → build SAGAN + optimizers in strategy.scope() → restore latest checkpoint →
    dataset positioned at that step → fit(steps = train_steps − step) with the monitoring callbacks.

With `steps_per_execution=k` each call of the compiled train function runs k steps and the callbacks
run between calls; their cadences are validated multiples of k (sagan_tf.config), and the dataset is cut
at train_steps, so a last execution of fewer than k steps ends the run exactly there.
"""
from __future__ import annotations

import contextlib
import functools
import shutil
import tempfile

import keras
import ml_collections
import tensorflow as tf

from sagan_tf.config import validate_config
from sagan_tf.data import build_dataset, describe_share, is_tfds, prepare_dataset
from sagan_tf.evaluation.periodic import build_periodic_evaluation
from sagan_tf.losses import get_losses
from sagan_tf.run import files, run_dir
from sagan_tf.run.class_map import write_class_map
from sagan_tf.run.run_lock import RunLock
from sagan_tf.runtime import lock_holding, stop_signals
from sagan_tf.runtime.cluster import check_same_start_step, is_chief, num_workers
from sagan_tf.runtime.precision import agree_on_precision, resume_precision
from sagan_tf.runtime.replicas import distributed_call, replica_major_order
from sagan_tf.training import callbacks as cb
from sagan_tf.training.checkpointing import CheckpointManager, check_resume_config, make_checkpoint
from sagan_tf.training.gan import SAGAN
from sagan_tf.training.optimizers import make_optimizers

__all__ = [
    "build_model",
    "training_data",
    "replica_major",
    "execution_segments",
    "write_config",
    "holding",
    "train",
]


def build_model(config: ml_collections.ConfigDict, strategy: tf.distribute.Strategy) -> SAGAN:
    """A compiled SAGAN whose variables live under `strategy`, initialised from `config.seed`."""
    keras.utils.set_random_seed(config.seed)
    with strategy.scope():
        model = SAGAN.from_experiment(config)
        g_opt, d_opt = make_optimizers(config)
        d_loss_fn, g_loss_fn = get_losses(config.loss)
        model.compile(g_optimizer=g_opt, d_optimizer=d_opt, d_loss_fn=d_loss_fn, g_loss_fn=g_loss_fn,
                      jit_compile=bool(config.jit_compile),
                      steps_per_execution=int(config.steps_per_execution))
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        _work_around_keras_fit_under_multi_worker(model)
    return model


def _work_around_keras_fit_under_multi_worker(model):
    """Two Keras 3 (3.15) `fit` failures under MultiWorkerMirroredStrategy, fixed on this model instance:

    * fit() first takes a batch to build the model symbolically and all-reduces it eagerly, which fails
      on the (images, labels) tuple; compile() has already built every weight, so that step is skipped.
    * fit() reduces the step's logs with `strategy.reduce("MEAN", v, axis=0)`, which fails on scalars
      ("Invalid reduction dimension 0", tensorflow/tensorflow#72388): the logs get a length-1 axis and
      are reduced to their mean over all replicas.
    """
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None
    train_step = model.train_step
    model.train_step = lambda data: {name: tf.reshape(value, [1]) for name, value in train_step(data).items()}


def training_data(config: ml_collections.ConfigDict, strategy: tf.distribute.Strategy, data_dir: str | None,
                  start_step: int, num_steps: int | None = None) -> tf.data.Dataset | tf.distribute.DistributedDataset:
    """The training batches (`n_dis × batch_size` rows a step), positioned at `start_step`; only
    `num_steps` of them when given (so that a last, shorter execution ends the run there).

    One pipeline for the whole run, which tf.distribute splits between the replicas (and, on several
    hosts, each host keeps its rows), except for TFDS data on several hosts: there every host builds its
    own pipeline over its share of the record files (`strategy.distribute_datasets_from_function`), so
    that no image is read or decoded on more than one host.
    """
    data_config = config.copy_and_resolve_references()
    data_config.batch_size = config.batch_size * config.n_dis
    if is_tfds(config.dataset) and num_workers(strategy) > 1:
        def per_host(input_context):
            print(describe_share(data_config, data_dir, input_context), flush=True)
            return _take(build_dataset(data_config, data_dir=data_dir, start_step=start_step,
                                       input_context=input_context), num_steps)
        return strategy.distribute_datasets_from_function(per_host)
    if is_tfds(config.dataset):
        print(describe_share(data_config, data_dir), flush=True)
    return _take(replica_major(build_dataset(data_config, data_dir=data_dir, start_step=start_step), config, strategy),
                 num_steps)


def replica_major(dataset: tf.data.Dataset, config: ml_collections.ConfigDict,
                  strategy: tf.distribute.Strategy) -> tf.data.Dataset:
    """`dataset`'s steps (n_dis batches of batch_size rows each) with their rows reordered so that every
    replica's share of each D update's batch is the share one device would give it
    (`replicas.replica_major_order`): with n_dis > 1 on N replicas, D update k still sees the real
    images of batch k. Unchanged for n_dis = 1, one replica, or an already distributed dataset."""
    replicas = strategy.num_replicas_in_sync
    if config.n_dis == 1 or replicas == 1 or not isinstance(dataset, tf.data.Dataset):
        return dataset
    order = tf.constant(replica_major_order(config.batch_size, config.n_dis, replicas), tf.int32)
    return dataset.map(lambda images, labels: (tf.gather(images, order), tf.gather(labels, order)),
                       num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _take(dataset, num_steps):
    """The first `num_steps` batches of a tf.data pipeline (an already distributed one is left whole)."""
    if num_steps is None or not isinstance(dataset, tf.data.Dataset):
        return dataset
    return dataset.take(num_steps)


def execution_segments(start: int, end: int, steps_per_execution: int) -> list[tuple[int, int]]:
    """The [(first, last)) step ranges `fit` is called for: one, unless `start` is not a multiple of
    `steps_per_execution` (a resume of a run whose train_steps, or steps_per_execution, differed). Then
    the steps up to the next multiple run first, so that every later execution ends on a multiple and
    the callbacks' cadences (multiples of it) stay exact."""
    aligned = min(end, -(-start // steps_per_execution) * steps_per_execution)
    return [(a, b) for a, b in ((start, aligned), (aligned, end)) if b > a]


def write_config(config: ml_collections.ConfigDict, model_dir: str) -> None:
    run_dir.write_config(model_dir, config)
    if config.class_names:  # the name -> label map, to sample a class by name (sagan_tf.run.class_map)
        write_class_map(model_dir, config.class_names)


def holding(model_dir: str) -> contextlib.AbstractContextManager[RunLock]:
    """Holds the run lock of `model_dir` for the body (`sagan_tf.runtime.lock_holding`): released on any
    exit, a stop signal while it is being taken and a second signal's forced exit included; a lock this
    process already holds (a trainer CLI takes it before TensorFlow starts) is kept, not taken twice."""
    return lock_holding.holding_run_lock(model_dir)


def train(config: ml_collections.ConfigDict, model_dir: str, strategy: tf.distribute.Strategy | None = None,
          **kwargs) -> SAGAN:
    """Trains (or resumes) to `config.train_steps` G steps; returns the SAGAN model (see `_train`).

    Around the run: SIGTERM/SIGINT are handled from here on (`sagan_tf.runtime.stop_signals`: before `fit` a
    signal stops cleanly, a second one exits at once); the chief checks that a resume keeps the run's
    model config (ConfigMismatchError naming each differing field, nothing on disk changed) and holds
    `<model_dir>/.lock` for the life of the run (RunLockedError naming the holder if another writer has
    it; released on any exit).
    """
    strategy = strategy or tf.distribute.get_strategy()
    validate_config(config, strategy.num_replicas_in_sync)  # a bad config creates nothing, not even the lock
    previous_handlers = stop_signals.install()
    try:
        if not is_chief(strategy):
            return _train(config, model_dir, strategy=strategy, **kwargs)
        check_resume_config(config, model_dir)  # before anything in model_dir changes
        with holding(model_dir):
            return _train(config, model_dir, strategy=strategy, **kwargs)
    finally:
        stop_signals.restore(previous_handlers)


def _train(config, model_dir, strategy=None, data_dir=None, dataset_fn=None, verbose=1, extra_callbacks=()):
    """Trains (or resumes) to `config.train_steps` G steps; returns the SAGAN model.

    `dataset_fn(start_step)` may replace the configured pipeline (tests); it must yield batches of
    `n_dis × batch_size` (images, labels), positioned at `start_step` (a tf.data.Dataset is laid out for
    the replicas as the configured pipeline is, `replica_major`, and cut where the run ends).
    `extra_callbacks` run after the run's own (tests record the step logs with one).
    """
    strategy = strategy or tf.distribute.get_strategy()
    validate_config(config, strategy.num_replicas_in_sync)
    # config.json names the policy; "auto" keeps a resumed run's (a resume on another CPU changes nothing)
    config.mixed_precision = agree_on_precision(strategy, resume_precision(config.mixed_precision, model_dir, strategy))
    chief = is_chief(strategy)
    if dataset_fn is None:  # before anything is written; other workers wait here while the chief prepares
        ready = prepare_dataset(config, data_dir=data_dir, wait=not chief)
        if ready:
            print(ready, flush=True)
    # Non-chief workers write to a scratch directory that is removed afterwards (TF's multi-worker pattern).
    out_dir = model_dir if chief else tempfile.mkdtemp(prefix="sagan-worker-")
    files.makedirs(out_dir)
    try:
        model = build_model(config, strategy)
        manager = CheckpointManager(model, run_dir.checkpoint_dir(out_dir), keep=config.keep_checkpoints)
        # Resume from the chief's checkpoints on every worker (falling back from unreadable ones; only the
        # chief repairs the directory), then record the config: config.json changes only once the
        # checkpoints it describes have been restored into this config's networks.
        restorer = manager if chief else CheckpointManager(model, run_dir.checkpoint_dir(model_dir), repair=False)
        start = restorer.restore_latest()
        if chief:
            write_config(config, model_dir)
        check_same_start_step(strategy, start, model_dir)
        remaining = config.train_steps - start
        if remaining <= 0:
            print(f"{model_dir}: already at step {start} >= train_steps={config.train_steps}; nothing to do.")
            return model
        print(f"{'Resuming at' if start else 'Starting from'} step {start}; training to step {config.train_steps} "
              f"on {strategy.num_replicas_in_sync} replica(s).", flush=True)
        writer = tf.summary.create_file_writer(run_dir.tensorboard_dir(out_dir))
        throughput = cb.Throughput(config.batch_size * config.n_dis)
        checkpointing = cb.Checkpointing(manager, config.checkpoint_every)
        callbacks = [
            cb.StepCounter(),  # first: the others read the step it counts
            cb.NonFiniteGuard(),
            throughput,
            cb.ConfigSummary(writer, config.to_json_best_effort(indent=2)),
            cb.ScalarSummaries(writer, config.log_every, throughput),
            cb.EMAStatistics((config.sample_every, config.checkpoint_every, config.eval_every), config.z_dim,
                             config.num_classes, seed=config.seed),
            cb.SampleGrid(writer, run_dir.samples_dir(out_dir), config.sample_every, config.z_dim,
                          config.num_classes, seed=config.seed),
            checkpointing,
            cb.StopOnSignal(),
            *extra_callbacks,
            cb.ProgressBar(),
        ]
        if config.eval_every:
            # Loads the feature network and computes (or loads) the reference statistics now, before step 1.
            evaluation = build_periodic_evaluation(config, make_checkpoint(model), out_dir, writer,
                                                   data_dir=data_dir, strategy=strategy,
                                                   call=functools.partial(distributed_call, strategy=strategy))
            callbacks.insert(callbacks.index(checkpointing), evaluation)  # after EMAStatistics, before checkpointing
        for first, end in execution_segments(start, config.train_steps, int(config.steps_per_execution)):
            if dataset_fn is None:
                dataset = training_data(config, strategy, data_dir, first, end - first)
            else:
                dataset = _take(replica_major(dataset_fn(first), config, strategy), end - first)
            model.fit(dataset, epochs=1, steps_per_epoch=end - first, callbacks=callbacks, verbose=verbose,
                      shuffle=False)  # the pipelines shuffle, deterministically
            if model.stop_training:  # a signal: checkpointed at the step it stopped
                break
        return model
    finally:
        if not chief:
            shutil.rmtree(out_dir, ignore_errors=True)
