"""Draw samples from a trained generator: sheets, interpolations, truncation, attention maps, .npz dumps.

    # one row per class (or per --labels), 8 samples each, from the latest EMA checkpoint
    python -m trainers.sample --model_dir=runs/fmnist --mode=sheet --out=sheet.png
    # z interpolated at a fixed class (one row per label), 10 steps, slerp
    python -m trainers.sample --model_dir=runs/fmnist --mode=interpolate_z --labels=0,7 --columns=10 \
        --interpolation=slerp --out=interp.png
    # the same z under two classes (see sagan_tf.sampling: no true class interpolation)
    python -m trainers.sample --model_dir=runs/fmnist --mode=interpolate_class --labels=5,7 --out=pair.png
    # rows of decreasing truncation (each row with batch-norm statistics recomputed for its truncation)
    python -m trainers.sample --model_dir=runs/fmnist --mode=truncation --truncations=none,1,0.5 --out=t.png
    # paper-figure-1 attention overlays (needs --model_dir)
    python -m trainers.sample --model_dir=runs/fmnist --mode=attention --query_points="8,8;24,16" --out=att.png
    # 10000 samples as uint8 images + int labels, from an exported SavedModel
    python -m trainers.sample --saved_model=export/1 --num=10000 --npz=samples.npz
    # one class by name (runs trained on an image folder: its classes.json)
    python -m trainers.sample --model_dir=runs/photos --class_name=cats --out=cats.png

Exactly one of --model_dir (EMA generator of the latest checkpoint, or --checkpoint) and
--saved_model (any SavedModel with a ``serving_default`` signature taking ``z`` float32
[-1, z_dim] and ``label`` int32 [-1] and returning ``images`` float32 [-1, H, W, C] in [-1, 1]).
A SavedModel's class count is read from ``assets.extra/sagan_export.json`` (written by
export.saved_model) when present, else pass --num_classes (or --labels).

Truncated sampling (--truncation, --mode=truncation) recomputes the batch-norm statistics for each
truncation (sagan_tf.sampling.standing_statistics): the stored ones belong to untruncated z, and truncated
samples degrade badly with them. A --saved_model written by export.saved_model is rebuilt as its
Keras generator for that; --notruncation_statistics samples with the stored statistics.

--class_name picks classes by name instead of --labels: the names of ``<model_dir>/classes.json``
(written by trainers.image_folder; else ``class_names`` in config.json), or of the export's
``assets.extra/classes.json``. An unknown name is an error listing the known ones.

--npz writes ``images`` (uint8 [N, H, W, C]) and ``labels`` (int32 [N]) for N = --num samples,
labels cycling through --labels (default every class), generated --batch_size at a time. The PNG
of --mode goes to --out (default ``<model_dir>/<mode>_step<step>.png``); with --npz and no --out
only the .npz is written.
"""
from absl import app, flags

FLAGS = flags.FLAGS
MODES = ("sheet", "interpolate_z", "interpolate_class", "truncation", "attention")
flags.DEFINE_string("model_dir", None, "Training run directory (config.json, checkpoints/).")
flags.DEFINE_string("checkpoint", None, "Checkpoint prefix or directory (default <model_dir>/checkpoints).")
flags.DEFINE_string("saved_model", None, "Exported SavedModel directory (serving_default signature).")
flags.DEFINE_enum("mode", "sheet", list(MODES), "What the PNG shows.")
flags.DEFINE_list("labels", None, "Class labels, e.g. 1,2 (rows of sheets; cycled for --npz).")
flags.DEFINE_list("class_name", None, "Class names instead of --labels, e.g. cats or cats,dogs (from the run's "
                  "classes.json, or the export's assets.extra/classes.json).")
flags.DEFINE_integer("columns", 8, "Samples per row, or interpolation steps.", lower_bound=1)
flags.DEFINE_integer("num", 64, "Number of samples written to --npz.", lower_bound=1)
flags.DEFINE_string("npz", None, "Write --num samples to this .npz (images uint8, labels int32).")
flags.DEFINE_string("out", None, "PNG output path.")
flags.DEFINE_float("truncation", None, "Truncate z to [-t, t] (default: none).")
flags.DEFINE_list("truncations", ["none", "2", "1", "0.5", "0.25"], "Rows of --mode=truncation ('none' = no "
                  "truncation).")
flags.DEFINE_bool("truncation_statistics", True, "With --truncation or --mode=truncation: sample with the "
                  "generator's batch-norm statistics recomputed for the truncated noise, as BigGAN does (a "
                  "--saved_model written by export.saved_model is rebuilt as a Keras generator for it). "
                  "--notruncation_statistics keeps the stored ones, those of untruncated z.")
flags.DEFINE_enum("interpolation", "linear", ["linear", "slerp"], "Path between the two z of --mode=interpolate_z.")
flags.DEFINE_integer("seed", 0, "Seeds the noise.")
flags.DEFINE_integer("batch_size", 64, "Images per generator call.", lower_bound=1)
flags.DEFINE_integer("num_classes", None, "Classes of a --saved_model that does not record them.", lower_bound=0)
flags.DEFINE_integer("layer", 0, "Attention layer shown by --mode=attention.")
flags.DEFINE_string("query_points", None, "Query pixels 'y,x;y,x;...' for --mode=attention (default: 4 points).")
flags.DEFINE_integer("scale", 4, "Upscaling of --mode=attention images.", lower_bound=1)


def _parse_labels():
    if FLAGS.labels is None:
        return None
    try:
        return [int(label) for label in FLAGS.labels]
    except ValueError as error:
        raise app.UsageError(f"--labels={','.join(FLAGS.labels)} must be comma-separated integers") from error


def _parse_truncations():
    from sagan_tf.sampling.noise import parse_truncations

    try:
        return parse_truncations(FLAGS.truncations)
    except ValueError as error:
        raise app.UsageError(f"--truncations: {error}") from error


def _parse_query_points():
    if FLAGS.query_points is None:
        return None
    try:
        points = [tuple(int(v) for v in item.split(",")) for item in FLAGS.query_points.split(";") if item.strip()]
    except ValueError as error:
        raise app.UsageError(f"--query_points={FLAGS.query_points!r} must look like 'y,x;y,x'") from error
    if not points or any(len(p) != 2 for p in points):
        raise app.UsageError(f"--query_points={FLAGS.query_points!r} must look like 'y,x;y,x'")
    return points


def _check_flags():
    from sagan_tf.run import files, run_dir  # imports TF: after the flag parsing above

    if bool(FLAGS.model_dir) == bool(FLAGS.saved_model):
        raise app.UsageError("pass exactly one of --model_dir and --saved_model")
    if FLAGS.labels is not None and FLAGS.class_name is not None:
        raise app.UsageError("pass --labels or --class_name, not both")
    if FLAGS.saved_model:
        if not files.exists(files.join(FLAGS.saved_model, "saved_model.pb")):
            raise app.UsageError(f"--saved_model={FLAGS.saved_model} holds no saved_model.pb")
        if FLAGS.mode == "attention" and (FLAGS.out or not FLAGS.npz):
            raise app.UsageError("--mode=attention needs --model_dir (a SavedModel does not return attention maps)")
        if not FLAGS.out and not FLAGS.npz:
            raise app.UsageError("with --saved_model pass --out=<png> and/or --npz=<npz>")
    elif not run_dir.is_run_dir(FLAGS.model_dir):
        raise app.UsageError(f"--model_dir={FLAGS.model_dir} holds no config.json (not a training run)")
    if FLAGS.truncation is not None and not FLAGS.truncation > 0:
        raise app.UsageError(f"--truncation={FLAGS.truncation} must be > 0")


def _source_error(error):
    return app.UsageError(f"--{'model_dir' if FLAGS.model_dir else 'saved_model'}: {error}")


def _class_names():
    """The class names of the run (--model_dir) or export (--saved_model); [] if none. Read before any
    network is restored, so a wrong --class_name fails at once."""
    from sagan_tf.run import class_map, run_dir
    from sagan_tf.sampling.exported import read_class_names

    try:
        if FLAGS.model_dir:
            return class_map.run_class_names(FLAGS.model_dir, run_dir.read_config(FLAGS.model_dir))
        return read_class_names(FLAGS.saved_model)
    except ValueError as error:  # RunDirError, NotAnExportError, a bad classes.json
        raise _source_error(error) from error


def _load_generator(truncated):
    """(generator or sample function, z_dim, num_classes or None, step, run config or None) of the flags' source.

    `truncated` (and --truncation_statistics): an export written by export.saved_model is rebuilt as its
    Keras generator, so that its batch-norm statistics can be recomputed for the truncation."""
    from sagan_tf.run import run_dir
    from sagan_tf.sampling.exported import ExportedGenerator, keras_generator, read_info

    try:
        if FLAGS.model_dir:
            restored = run_dir.load_ema_generator(FLAGS.model_dir, FLAGS.checkpoint)
            print(f"sampling the EMA generator of {restored.checkpoint}")
            config = restored.config
            return restored.generator, int(config.z_dim), int(config.num_classes), restored.step, config
        if truncated and FLAGS.truncation_statistics and read_info(FLAGS.saved_model).get("model"):
            generator = keras_generator(FLAGS.saved_model)
            print(f"sampling the generator of {FLAGS.saved_model}, its batch-norm statistics recomputed for the "
                  "truncation")
            return generator, int(generator.spec["z_dim"]), int(generator.spec["num_classes"]), None, None
        if truncated:
            why = "it records no model fields to rebuild it from" if FLAGS.truncation_statistics else \
                "--notruncation_statistics"
            print(f"note: {FLAGS.saved_model} samples truncated z with the batch-norm statistics it was exported "
                  f"with ({why})")
        generator = ExportedGenerator(FLAGS.saved_model, FLAGS.num_classes)
        return generator, generator.z_dim, generator.num_classes, None, None
    except ValueError as error:  # RunDirError, NotAnExportError
        raise _source_error(error) from error


def _labels_by_name(class_names):
    from sagan_tf.run.class_map import labels_for_names

    source = f"--model_dir={FLAGS.model_dir}" if FLAGS.model_dir else f"--saved_model={FLAGS.saved_model}"
    try:
        return labels_for_names([name.strip() for name in FLAGS.class_name], class_names, source)
    except ValueError as error:
        raise app.UsageError(f"--class_name={','.join(FLAGS.class_name)}: {error}") from error


def _attention_grid(generator, config, labels, num_classes, query_points):
    import numpy as np

    from sagan_tf import sampling
    from sagan_tf.sampling.attention_maps import attention_figure
    from sagan_tf.sampling.standing_statistics import truncation_statistics

    if not generator.attention_layers:
        raise app.UsageError(f"--mode=attention: the generator of {FLAGS.model_dir} has no attention layer")
    if not -len(generator.attention_layers) <= FLAGS.layer < len(generator.attention_layers):
        raise app.UsageError(f"--layer={FLAGS.layer}: the generator has {len(generator.attention_layers)} "
                             "attention layer(s)")
    resolution = int(config.resolution)
    for y, x in query_points or []:
        if not (0 <= y < resolution and 0 <= x < resolution):
            raise app.UsageError(f"--query_points: ({y}, {x}) is outside the {resolution}x{resolution} image")
    rows = labels if labels is not None else sampling.default_rows(num_classes, limit=4)
    z = sampling.sample_noise(len(rows), int(config.z_dim), FLAGS.truncation, FLAGS.seed)
    truncation = FLAGS.truncation if FLAGS.truncation_statistics else None
    with truncation_statistics(generator, truncation):
        return attention_figure(generator, z, np.asarray(rows, np.int32), query_points, FLAGS.layer,
                                scale=FLAGS.scale)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    _check_flags()
    labels = _parse_labels()
    truncations = _parse_truncations() if FLAGS.mode == "truncation" else None
    query_points = _parse_query_points()
    from sagan_tf import sampling
    from sagan_tf.run import files
    from sagan_tf.sampling.images import save_png

    class_names = _class_names()
    if FLAGS.class_name is not None:
        labels = _labels_by_name(class_names)
    generator, z_dim, num_classes, step, config = _load_generator(
        truncated=FLAGS.truncation is not None or FLAGS.mode == "truncation")
    # A plain callable is sampled with the stored statistics (sagan_tf.sampling's module doc).
    sampled = generator if FLAGS.truncation_statistics else sampling.as_sample_fn(generator)
    if num_classes is None:
        if labels is None:
            raise app.UsageError(f"--saved_model={FLAGS.saved_model} does not record its number of classes: "
                                 "pass --num_classes or --labels")
        num_classes = max(labels) + 1
    if labels is not None:
        bad = [label for label in labels if not 0 <= label < max(num_classes, 1)]
        if bad:
            raise app.UsageError(f"--labels {bad} outside [0, {max(num_classes, 1)}) (num_classes={num_classes})")
    if class_names:
        shown = list(labels if labels is not None else range(len(class_names)))
        print("labels: " + ", ".join(f"{label}={class_names[label]}" for label in shown[:20])
              + (", ..." if len(shown) > 20 else ""))

    if FLAGS.npz:
        images, npz_labels = sampling.generate_samples(sampled, FLAGS.num, z_dim, num_classes, labels,
                                                       FLAGS.truncation, FLAGS.seed, FLAGS.batch_size)
        files.atomic_save_npz(FLAGS.npz, images=images, labels=npz_labels.astype("int32"))
        print(f"wrote {FLAGS.npz}: images {images.dtype.name} {list(images.shape)}, labels int32 "
              f"[{npz_labels.shape[0]}]")
        if not FLAGS.out:
            return
    if FLAGS.mode == "attention":
        grid = _attention_grid(generator, config, labels, num_classes, query_points)
    else:
        try:
            grid = sampling.sheet(FLAGS.mode, sampled, labels, FLAGS.columns, z_dim, num_classes,
                                  truncation=FLAGS.truncation, truncations=truncations,
                                  interpolation=FLAGS.interpolation, seed=FLAGS.seed,
                                  batch_size=FLAGS.batch_size).grid()
        except ValueError as error:
            raise app.UsageError(f"--mode={FLAGS.mode}: {error}") from error
    out = FLAGS.out or files.join(FLAGS.model_dir, f"{FLAGS.mode}_step{step}.png")
    save_png(out, grid)
    print(f"wrote {out} ({FLAGS.mode}, {grid.shape[1]}x{grid.shape[0]})")


if __name__ == "__main__":
    app.run(main)
