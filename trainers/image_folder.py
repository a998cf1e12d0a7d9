"""Train SAGAN on your own images: a folder with one sub-folder per class, or a flat folder of images.

    python -m trainers.image_folder --data_dir=photos/ --resolution=64 --model_dir=runs/photos

Before training it prints what it found: the images of each class and the label the class gets, and
every file left out, by reason (unreadable, not an image, a symlink leading out of the folder, ...).
The class name → label map is recorded in ``<model_dir>/config.json`` (``class_names``) and
``<model_dir>/classes.json``; ``trainers.sample --class_name=<name>`` samples a class by name.

* ``--resolution`` (32, 64, 128, 256) picks the architecture table and the attention placement of
  that resolution's preset (``sagan_tf.models.architecture.DEFAULT_ATTENTION``: 16² at 32, 32² at
  64 and 128, 64² at 256). ``--config.g_attention`` / ``--config.d_attention`` on the command line,
  or your own ``--config=<preset>``, win over that default. ``--config.resolution`` works the same.
* A class folder without a readable image is an error naming it; ``--drop_empty_classes`` leaves such
  folders out (with a warning) instead.
* ``--unconditional`` (or a folder with no sub-folder at all) trains with ``num_classes=0`` on every
  image under ``--data_dir``.
* Resuming (the same ``--model_dir``) with class folders that differ from the run's recorded ones
  fails, naming the differences, instead of silently relabelling the classes.
"""
from absl import app, flags

from trainers import common

common.define_flags("imagenet128.py")
flags.DEFINE_integer("resolution", None, "Image size: 32, 64, 128 or 256 (also sets that resolution's attention "
                     "placement unless --config.g_attention/--config.d_attention are given); default: the config's.")
flags.DEFINE_bool("unconditional", False, "Train without labels (num_classes=0) on every image under --data_dir, "
                  "whatever its sub-folders.")
flags.DEFINE_bool("drop_empty_classes", False, "Leave out class folders without a readable image (with a warning) "
                  "instead of failing.")
flags.mark_flag_as_required("data_dir")
FLAGS = flags.FLAGS

ATTENTION_FIELDS = ("g_attention", "d_attention")


def _explicit_fields():
    """Config fields given on the command line (--config.<field>=...)."""
    from ml_collections import config_flags
    return set(config_flags.get_override_values(FLAGS["config"]))


def _attention_overrides(resolution, explicit):
    """The resolution's preset attention placement for each attention field the user did not choose.

    A --config=<file> given by the user is their choice of every field, so nothing is changed then.
    """
    from sagan_tf.models.architecture import DEFAULT_ATTENTION
    if FLAGS["config"].present or resolution not in DEFAULT_ATTENTION:
        return {}  # an unknown resolution is reported by the config validation, naming it
    return {field: DEFAULT_ATTENTION[resolution] for field in ATTENTION_FIELDS if field not in explicit}


def _overrides():
    from sagan_tf.models.architecture import RESOLUTIONS
    from sagan_tf.run import files, run_dir  # tf.io.gfile: --data_dir may be file://, gs://, ...
    data_dir = FLAGS.data_dir
    if not files.isdir(data_dir):
        raise app.UsageError(f"--data_dir={data_dir} does not exist or is not a directory.")
    if FLAGS.resolution is not None and FLAGS.resolution not in RESOLUTIONS:
        raise app.UsageError(f"--resolution={FLAGS.resolution} is not allowed; allowed: {list(RESOLUTIONS)}.")
    explicit = _explicit_fields()
    overrides = {"dataset": "image_folder"}
    if FLAGS.resolution is not None:
        overrides["resolution"] = FLAGS.resolution
    overrides.update(_attention_overrides(overrides.get("resolution", FLAGS.config.resolution), explicit))

    from sagan_tf.data import image_folder as imf
    flat = not imf.has_class_folders(data_dir)
    unconditional = FLAGS.unconditional or flat
    selected = list(FLAGS.config.class_names) if "class_names" in explicit and not unconditional else None
    try:
        index = imf.scan_image_folder(data_dir, unconditional=unconditional, class_names=selected,
                                      drop_empty_classes=FLAGS.drop_empty_classes)
        imf.check_same_classes_as_run(FLAGS.model_dir, index)
    except ValueError as error:
        raise app.UsageError(str(error)) from error
    print(imf.format_summary(index))
    if flat and not FLAGS.unconditional:
        print("No class sub-folders: training unconditionally (num_classes=0).")
    num_classes = len(index.class_names)
    if "num_classes" in explicit and FLAGS.config.num_classes != num_classes:
        raise app.UsageError(f"--config.num_classes={FLAGS.config.num_classes}, but {data_dir} gives {num_classes} "
                             f"classes ({'unconditional' if unconditional else list(index.class_names)}): the "
                             "class count comes from the folder; drop the flag (or pass --unconditional).")
    if index.class_names:
        print(f"Class name -> label map: {run_dir.class_map_file(FLAGS.model_dir)}", flush=True)
    overrides.update(num_classes=num_classes, class_names=tuple(index.class_names))
    return overrides


def main(argv):
    del argv
    common.run(_overrides)


if __name__ == "__main__":
    app.run(main)
