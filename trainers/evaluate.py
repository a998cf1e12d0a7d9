"""Score a trained generator: FID, IS, KID, precision/recall and conditional accuracy.

    python -m trainers.evaluate --model_dir=runs/fmnist --num_samples=10000 \
        --feature_network=classifier:runs/fmnist_classifier [--reference_split=test] \
        [--reference_cache=runs/reference_stats] [--checkpoint_dir=runs/fmnist/best] [--json=out.json]
    python -m trainers.evaluate --saved_model=pretrained/fashion_mnist/2 \
        --feature_network=classifier:pretrained/fashion_mnist_classifier [--preset=fashion_mnist]

The EMA generator is restored (float32) from the latest checkpoint of ``<model_dir>/checkpoints`` (or
--checkpoint_dir / a --checkpoint prefix), or rebuilt from an export of export.saved_model
(--saved_model; its real data set is that of configs/<--preset>.py, its step the one the export records). Real-data statistics come from the config's data set
(--reference_split, default "test" for Fashion-MNIST, "train" otherwise) and are cached under
--reference_cache (default ``<model_dir>/reference_stats``), named by feature network, data set and count.
Prints a table (metric, value, network) and writes JSON (default ``<model_dir>/eval_<step>.json``). Feature
networks (nothing is downloaded): ``classifier:<dir>`` (trainers.classifier), ``savedmodel:<dir>``
(TF-GAN-style Inception SavedModel), ``keras_inception:<weights.h5>``.
"""
import os
import tempfile

from absl import app, flags

from trainers.common import usage_errors

FLAGS = flags.FLAGS

flags.DEFINE_string("model_dir", None, "Training run directory (config.json, checkpoints/).")
flags.DEFINE_string("saved_model", None, "Instead of --model_dir: an export of export.saved_model (the generator is "
                    "rebuilt from it, weights and batch-norm statistics as exported).")
flags.DEFINE_string("preset", "fashion_mnist", "With --saved_model: configs/<preset>.py names the real data set.")
flags.DEFINE_string("checkpoint_dir", None, "Directory whose latest checkpoint is evaluated "
                    "(default <model_dir>/checkpoints; <model_dir>/best for the best-FID one).")
flags.DEFINE_string("checkpoint", None, "A checkpoint prefix (e.g. .../ckpt-2000); overrides --checkpoint_dir.")
flags.DEFINE_integer("num_samples", 10000, "Generated images to score.", lower_bound=2)
flags.DEFINE_string("feature_network", None,
                    "KIND:PATH with KIND classifier, savedmodel or keras_inception.")
flags.DEFINE_string("reference_cache", None, "Cache .npz file or directory for the real-data statistics "
                    "(default <model_dir>/reference_stats).")
flags.DEFINE_string("reference_split", None, "Real-data split (default: test for Fashion-MNIST, else train).")
flags.DEFINE_integer("num_reference", 0, "Real images for the statistics (0: --num_samples, at most the split).",
                     lower_bound=0)
flags.DEFINE_integer("num_real_features", 0, "Real features kept for KID and precision/recall "
                     "(0: min(--num_reference, --num_samples)).", lower_bound=0)
flags.DEFINE_string("data_dir", None, "Dataset location (default: the config's).")
flags.DEFINE_integer("batch_size", 100, "Images per generator/feature-network call.", lower_bound=1)
flags.DEFINE_float("truncation", None, "Truncate z to [-t, t] (default, or 0: none).")
flags.DEFINE_bool("truncation_statistics", True, "With --truncation: sample the EMA generator with its "
                  "batch-norm statistics recomputed for the truncated noise, as BigGAN does. "
                  "--notruncation_statistics keeps the stored ones, those of untruncated z.")
flags.DEFINE_integer("seed", 0, "Seeds the noise and labels.")
flags.DEFINE_string("real_split", None, "Score real images of this split (e.g. train) instead of the generator: the "
                    "real-vs-real FID and the classifier's conditional accuracy on real data, for comparison.")
flags.DEFINE_string("json", None, "Output JSON path (default <model_dir>/eval_<step>.json; with --saved_model, "
                    "none unless given).")
flags.register_multi_flags_validator(
    ["model_dir", "saved_model"], lambda values: (values["model_dir"] is None) != (values["saved_model"] is None),
    message="give exactly one of --model_dir (a training run) and --saved_model (an export)")


def _preset_config(name):
    """configs/<name>.py's config; a UsageError naming --preset if there is none."""
    import importlib
    try:
        return importlib.import_module(f"configs.{name}").get_config()
    except ModuleNotFoundError as error:
        raise app.UsageError(f"--preset={name}: no configs/{name}.py ({error})") from error


def _check_flags():
    from sagan_tf.evaluation.features import feature_network_spec  # imports TF: after absl's own flag checks
    from sagan_tf.run import files, run_dir
    from sagan_tf.sampling.noise import check_truncation

    if FLAGS.saved_model is not None:
        from sagan_tf.sampling import exported
        if not exported.is_saved_model(FLAGS.saved_model):
            raise app.UsageError(f"--saved_model={FLAGS.saved_model} holds no saved_model.pb (not an export)")
        if FLAGS.real_split or FLAGS.checkpoint or FLAGS.checkpoint_dir:
            raise app.UsageError("--real_split, --checkpoint and --checkpoint_dir need --model_dir, not --saved_model")
    elif not run_dir.is_run_dir(FLAGS.model_dir):
        raise app.UsageError(f"--model_dir={FLAGS.model_dir} holds no config.json (not a training run)")
    if not FLAGS.feature_network:
        raise app.UsageError("--feature_network is required: classifier:<dir> (train one with "
                             "python -m trainers.classifier), savedmodel:<dir> or keras_inception:<file.h5>")
    with usage_errors(f"--feature_network={FLAGS.feature_network}"):
        _, path = feature_network_spec(FLAGS.feature_network)
    if not files.exists(path):
        raise app.UsageError(f"--feature_network={FLAGS.feature_network}: {path} does not exist")
    with usage_errors(f"--truncation={FLAGS.truncation}"):
        FLAGS.truncation = check_truncation(FLAGS.truncation)  # None: untruncated
    for name in ("checkpoint_dir", "data_dir"):
        value = getattr(FLAGS, name)
        if value is not None and not files.isdir(value):
            raise app.UsageError(f"--{name}={value} is not a directory")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    _check_flags()
    from sagan_tf import sampling
    from sagan_tf.data import real_images
    from sagan_tf.evaluation import load_feature_network, runner
    from sagan_tf.run import files, run_dir

    if FLAGS.real_split:
        with usage_errors(f"--real_split={FLAGS.real_split}"):  # RunDirError, ReferenceSplitError
            config = run_dir.read_config(FLAGS.model_dir)
            generator = real_images.real_split_sample_fn(config, FLAGS.real_split, FLAGS.num_samples,
                                                         FLAGS.batch_size, FLAGS.data_dir, seed=FLAGS.seed)
        checkpoint, step = f"real:{FLAGS.real_split}", None
    elif FLAGS.saved_model:
        from sagan_tf.sampling import exported
        config = _preset_config(FLAGS.preset)
        with usage_errors(f"--saved_model={FLAGS.saved_model}"):  # NotAnExportError
            generator = exported.keras_generator(FLAGS.saved_model)
        checkpoint, step = FLAGS.saved_model, exported.read_info(FLAGS.saved_model).get("step")
        config.update({field: generator.spec[field] for field in ("num_classes", "z_dim")})
    else:
        with usage_errors(f"--model_dir={FLAGS.model_dir}"):  # RunDirError
            restored = run_dir.load_ema_generator(FLAGS.model_dir, FLAGS.checkpoint or FLAGS.checkpoint_dir)
        generator, config, checkpoint, step = restored.generator, restored.config, restored.checkpoint, restored.step
    network = load_feature_network(FLAGS.feature_network)
    num_reference = FLAGS.num_reference or FLAGS.num_samples
    num_real_features = FLAGS.num_real_features or min(num_reference, FLAGS.num_samples)
    cache = FLAGS.reference_cache
    if cache is None and FLAGS.saved_model:  # not beside the export: it may be a committed or served directory
        cache = os.path.join(tempfile.gettempdir(), "sagan_tf_reference_stats")
    with usage_errors(f"--reference_split={FLAGS.reference_split or '(default)'}"):  # ReferenceSplitError
        reference, reference_name, num_reference = runner.run_reference(
            config, network, FLAGS.model_dir or "", num_reference, num_real_features, FLAGS.batch_size,
            split=FLAGS.reference_split, cache=cache, data_dir=FLAGS.data_dir)
    num_real_features = min(num_real_features, num_reference)
    if not FLAGS.truncation_statistics:  # a plain callable is sampled with the stored statistics
        generator = sampling.as_sample_fn(generator)
    metrics = runner.evaluate_generator(
        generator, network, reference, FLAGS.num_samples, FLAGS.batch_size, config.num_classes, z_dim=config.z_dim,
        truncation=FLAGS.truncation, seed=FLAGS.seed, dataset_name=real_images.canonical_dataset_name(config.dataset))
    print(f"{checkpoint} (step {step}): {FLAGS.num_samples} {'real images' if FLAGS.real_split else 'samples'} vs "
          f"{num_reference} images of {reference_name}, feature network {network.name}")
    print(runner.format_table(metrics))

    recomputed = FLAGS.truncation is not None and FLAGS.truncation_statistics and not FLAGS.real_split
    record = {"step": step, "checkpoint": checkpoint, "network": network.name, "network_spec": FLAGS.feature_network,
              "network_fingerprint": getattr(network, "fingerprint", None), "num_samples": FLAGS.num_samples,
              "truncation": FLAGS.truncation, "seed": FLAGS.seed,
              "batch_norm_statistics": "recomputed for the truncation" if recomputed else "stored",
              "reference": {"dataset": reference_name, "num": int(reference["num"]), "num_features": num_real_features},
              "metrics": metrics}
    if FLAGS.saved_model and not FLAGS.json:
        return
    name = f"real_{FLAGS.real_split}" if FLAGS.real_split else step if step is not None else "latest"
    out = FLAGS.json or run_dir.eval_record_file(FLAGS.model_dir, name)
    files.atomic_write_json(out, record, indent=2)
    print(f"wrote {out}")


if __name__ == "__main__":
    app.run(main)
