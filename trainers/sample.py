"""Draw samples from a trained generator: sheets, interpolations, truncation, attention maps, .npz dumps.

    python -m trainers.sample --model_dir=runs/fmnist --mode=sheet --out=sheet.png      # one row per class
    python -m trainers.sample --model_dir=runs/fmnist --mode=interpolate_z --labels=0,7 --columns=10 \
        --interpolation=slerp --out=interp.png          # z interpolated at a fixed class, one row per label
    python -m trainers.sample --model_dir=runs/fmnist --mode=interpolate_class --labels=5,7 --out=pair.png
    python -m trainers.sample --model_dir=runs/fmnist --mode=truncation --truncations=none,1,0.5 --out=t.png
    python -m trainers.sample --model_dir=runs/fmnist --mode=attention --query_points="8,8;24,16" --out=att.png
    python -m trainers.sample --saved_model=export/1 --num=10000 --npz=samples.npz
    python -m trainers.sample --model_dir=runs/photos --class_name=cats --out=cats.png

The source is --model_dir (its latest checkpoint's EMA generator, or --checkpoint) or --saved_model (a
SavedModel whose serving_default maps ``z`` float32 [-1, z_dim] and ``label`` int32 [-1] to ``images``; its
class count from ``assets.extra/sagan_export.json``, else --num_classes or --labels). interpolate_class shows
the same z under each label (there is no true class interpolation). Truncated sampling recomputes the
batch-norm statistics for the truncation (an export is rebuilt as its Keras generator for it). --npz writes
``images`` uint8 [N, H, W, C] and ``labels`` int32 [N] (N = --num, labels cycling through --labels); the PNG
goes to --out (default ``<model_dir>/<mode>_step<step>.png``; with --npz and no --out, none). The library:
`sagan_tf.sampling` (generators, sheets, attention_maps; a plain sample function keeps the stored statistics).
"""
from absl import app, flags

from trainers.common import usage_errors as _usage

FLAGS = flags.FLAGS
MODES = ("sheet", "interpolate_z", "interpolate_class", "truncation", "attention")
flags.DEFINE_string("model_dir", None, "Training run directory (config.json, checkpoints/).")
flags.DEFINE_string("checkpoint", None, "Checkpoint prefix or directory (default <model_dir>/checkpoints).")
flags.DEFINE_string("saved_model", None, "Exported SavedModel directory (serving_default signature).")
flags.DEFINE_enum("mode", "sheet", list(MODES), "What the PNG shows.")
flags.DEFINE_list("labels", None, "Class labels, e.g. 1,2 (rows of sheets; cycled for --npz).")
flags.DEFINE_list("class_name", None, "Class names instead of --labels, e.g. cats,dogs (from classes.json).")
flags.DEFINE_integer("columns", 8, "Samples per row, or interpolation steps.", lower_bound=1)
flags.DEFINE_integer("num", 64, "Number of samples written to --npz.", lower_bound=1)
flags.DEFINE_string("npz", None, "Write --num samples to this .npz (images uint8, labels int32).")
flags.DEFINE_string("out", None, "PNG output path.")
flags.DEFINE_float("truncation", None, "Truncate z to [-t, t] (default, or 0: none).")
flags.DEFINE_list("truncations", ["none", "2", "1", "0.5", "0.25"], "Rows of --mode=truncation (none, 0: untruncated).")
flags.DEFINE_bool("truncation_statistics", True, "Truncated z is sampled with batch-norm statistics recomputed for "
                  "it, as BigGAN does; --notruncation_statistics keeps the stored ones, those of untruncated z.")
flags.DEFINE_enum("interpolation", "linear", ["linear", "slerp"], "Path between the two z of --mode=interpolate_z.")
flags.DEFINE_integer("seed", 0, "Seeds the noise.")
flags.DEFINE_integer("batch_size", 64, "Images per generator call.", lower_bound=1)
flags.DEFINE_integer("num_classes", None, "Classes of a --saved_model that does not record them.", lower_bound=0)
flags.DEFINE_integer("layer", 0, "Attention layer shown by --mode=attention.")
flags.DEFINE_string("query_points", None, "Query pixels 'y,x;y,x;...' for --mode=attention (default: 4 points).")
flags.DEFINE_integer("scale", 4, "Upscaling of --mode=attention images.", lower_bound=1)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    for wrong, message in (
            (bool(FLAGS.model_dir) == bool(FLAGS.saved_model), "pass exactly one of --model_dir and --saved_model"),
            (FLAGS.labels is not None and FLAGS.class_name is not None, "pass --labels or --class_name, not both"),
            (FLAGS.saved_model and FLAGS.mode == "attention" and (FLAGS.out or not FLAGS.npz),
             "--mode=attention needs --model_dir (a SavedModel does not return attention maps)"),
            (FLAGS.saved_model and not FLAGS.out and not FLAGS.npz, "with --saved_model pass --out and/or --npz")):
        if wrong:
            raise app.UsageError(message)
    from sagan_tf import sampling  # imports TF: after the checks above
    from sagan_tf.run import class_map, files, run_dir
    from sagan_tf.sampling import attention_maps, generators, noise
    from sagan_tf.sampling.images import save_png

    with _usage(f"--truncation={FLAGS.truncation}"):
        truncation = noise.check_truncation(FLAGS.truncation)  # None: untruncated
    with _usage(f"--labels={','.join(FLAGS.labels or ())}"):
        labels = None if FLAGS.labels is None else [int(label) for label in FLAGS.labels]
    with _usage("--truncations"):
        truncations = noise.parse_truncations(FLAGS.truncations) if FLAGS.mode == "truncation" else None
    with _usage("--query_points"):
        query_points = attention_maps.parse_query_points(FLAGS.query_points)
    source = f"--model_dir={FLAGS.model_dir}" if FLAGS.model_dir else f"--saved_model={FLAGS.saved_model}"
    with _usage(source):  # read before a network is restored: a wrong --class_name, a run without config.json
        class_names = generators.class_names(model_dir=FLAGS.model_dir, saved_model=FLAGS.saved_model)
    if FLAGS.class_name is not None:
        with _usage(f"--class_name={','.join(FLAGS.class_name)}"):
            labels = class_map.labels_for_names([name.strip() for name in FLAGS.class_name], class_names, source)
    with _usage(source):
        loaded = generators.load_generator(
            model_dir=FLAGS.model_dir, checkpoint=FLAGS.checkpoint, saved_model=FLAGS.saved_model,
            num_classes=FLAGS.num_classes, labels=labels, recompute_statistics=FLAGS.truncation_statistics,
            truncated=truncation is not None or FLAGS.mode == "truncation")
    sampled = loaded.generator if FLAGS.truncation_statistics else sampling.as_sample_fn(loaded.generator)
    z_dim, num_classes = loaded.z_dim, loaded.num_classes
    if class_names:
        print(class_map.describe_labels(labels, class_names))

    if FLAGS.npz:
        images, npz_labels = sampling.generate_samples(sampled, FLAGS.num, z_dim, num_classes, labels,
                                                       truncation, FLAGS.seed, FLAGS.batch_size)
        files.atomic_save_npz(FLAGS.npz, images=images, labels=npz_labels.astype("int32"))
        print(f"wrote {FLAGS.npz}: images uint8 {list(images.shape)}, labels int32 [{npz_labels.shape[0]}]")
        if not FLAGS.out:
            return
    with _usage(f"--mode={FLAGS.mode}"):
        if FLAGS.mode == "attention":
            grid = attention_maps.attention_sheet(loaded.generator, labels, z_dim, num_classes, truncation,
                                                  FLAGS.seed, query_points, FLAGS.layer, FLAGS.scale,
                                                  FLAGS.truncation_statistics)
        else:
            grid = sampling.sheet(FLAGS.mode, sampled, labels, FLAGS.columns, z_dim, num_classes, truncation,
                                  truncations, FLAGS.interpolation, FLAGS.seed, FLAGS.batch_size).grid()
    out = FLAGS.out or run_dir.sheet_file(FLAGS.model_dir, FLAGS.mode, loaded.step)
    save_png(out, grid)
    print(f"wrote {out} ({FLAGS.mode}, {grid.shape[1]}x{grid.shape[0]})")


if __name__ == "__main__":
    app.run(main)
