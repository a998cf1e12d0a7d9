"""Train SAGAN on a folder of images with one sub-folder per class.

    python -m trainers.image_folder --data_dir=photos/ --resolution=64 --model_dir=runs/photos

The number of classes comes from the sub-folders; --resolution picks the architecture table.
"""
from absl import app, flags

from trainers import common

common.define_flags("imagenet128.py")
flags.DEFINE_integer("resolution", None, "Image size (32, 64, 128 or 256); default: the config's.")
flags.mark_flag_as_required("data_dir")
FLAGS = flags.FLAGS


def _overrides():
    from sagan_tf.data import image_folder_class_names
    classes = image_folder_class_names(FLAGS.data_dir)
    overrides = {"dataset": "image_folder", "num_classes": len(classes)}
    if FLAGS.resolution:
        overrides["resolution"] = FLAGS.resolution
    return overrides


def main(argv):
    del argv
    common.run(_overrides)


if __name__ == "__main__":
    app.run(main)
