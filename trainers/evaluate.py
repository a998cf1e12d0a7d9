"""Score a trained generator: FID, IS, KID, precision/recall and conditional accuracy.

    python -m trainers.evaluate --model_dir=runs/fmnist --num_samples=10000 \
        --feature_network=classifier:runs/fmnist_classifier [--reference_split=test] \
        [--reference_cache=runs/reference_stats] [--checkpoint_dir=runs/fmnist/best] [--json=out.json]
    python -m trainers.evaluate --saved_model=pretrained/fashion_mnist/2 \
        --feature_network=classifier:pretrained/fashion_mnist_classifier [--preset=fashion_mnist]

The EMA generator is restored (float32) from the latest checkpoint of ``<model_dir>/checkpoints`` (or
--checkpoint_dir / a --checkpoint prefix), or rebuilt from an export (--saved_model; its data set is
configs/<--preset>.py's). Real-data statistics come from the data set (--reference_split, default "test"
for Fashion-MNIST, "train" otherwise), cached under --reference_cache (default
``<model_dir>/reference_stats``; for an export, the system temp directory).
Prints a table (metric, value, network) and writes JSON (default ``<model_dir>/eval_<step>.json``). Feature
networks (nothing is downloaded): ``classifier:<dir>`` (trainers.classifier), ``savedmodel:<dir>``
(TF-GAN-style Inception SavedModel), ``keras_inception:<weights.h5>``.
"""
from absl import app, flags

import configs
from trainers.common import usage_errors

FLAGS = flags.FLAGS

flags.DEFINE_string("model_dir", None, "Training run directory (config.json, checkpoints/).")
flags.DEFINE_string("saved_model", None, "Instead of --model_dir: an export of export.saved_model (rebuilt from it).")
flags.DEFINE_string("preset", "fashion_mnist", "With --saved_model: configs/<preset>.py names the real data set.")
flags.DEFINE_string("checkpoint_dir", None, "Directory whose latest checkpoint is evaluated "
                    "(default <model_dir>/checkpoints; <model_dir>/best for the best-FID one).")
flags.DEFINE_string("checkpoint", None, "A checkpoint prefix (e.g. .../ckpt-2000); overrides --checkpoint_dir.")
flags.DEFINE_integer("num_samples", 10000, "Generated images to score.", lower_bound=2)
flags.DEFINE_string("feature_network", None, "KIND:PATH with KIND classifier, savedmodel or keras_inception.")
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
    from sagan_tf.evaluation import runner, scoring
    from sagan_tf.run import files, run_dir

    if FLAGS.real_split:
        with usage_errors(f"--real_split={FLAGS.real_split}"):  # RunDirError, ReferenceSplitError
            source = scoring.real_split_source(FLAGS.model_dir, FLAGS.real_split, FLAGS.num_samples,
                                               FLAGS.batch_size, FLAGS.data_dir, FLAGS.seed)
    elif FLAGS.saved_model:
        with usage_errors(f"--preset={FLAGS.preset}"):  # an unknown preset
            config = configs.load(FLAGS.preset)
        with usage_errors(f"--saved_model={FLAGS.saved_model}"):  # NotAnExportError
            source = scoring.export_source(FLAGS.saved_model, config)
    else:
        with usage_errors(f"--model_dir={FLAGS.model_dir}"):  # RunDirError
            source = scoring.run_source(FLAGS.model_dir, FLAGS.checkpoint or FLAGS.checkpoint_dir)
    with usage_errors(f"--reference_split={FLAGS.reference_split or '(default)'}"):  # ReferenceSplitError
        record = scoring.score(
            source, FLAGS.feature_network, num_samples=FLAGS.num_samples, batch_size=FLAGS.batch_size,
            num_reference=FLAGS.num_reference, num_real_features=FLAGS.num_real_features,
            model_dir=FLAGS.model_dir or "", reference_split=FLAGS.reference_split, reference_cache=FLAGS.reference_cache,
            data_dir=FLAGS.data_dir, truncation=FLAGS.truncation, truncation_statistics=FLAGS.truncation_statistics,
            seed=FLAGS.seed)
    print(runner.format_table(record["metrics"]))
    if FLAGS.saved_model and not FLAGS.json:
        return
    name = f"real_{FLAGS.real_split}" if FLAGS.real_split else source.step if source.step is not None else "latest"
    out = FLAGS.json or run_dir.eval_record_file(FLAGS.model_dir, name)
    files.atomic_write_json(out, record, indent=2)
    print(f"wrote {out}")


if __name__ == "__main__":
    app.run(main)
