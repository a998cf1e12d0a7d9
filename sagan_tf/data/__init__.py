"""Input pipelines for SAGAN training: Fashion-MNIST idx files, image folders and TFDS datasets.

Every pipeline yields `(images float32 [B, H, W, C] in [-1, 1], labels int32 [B])` batched by the GLOBAL
batch size `B`, forever, in an order fixed by `seed`, and can resume exactly at any step
(`start_step`); see `sagan_tf.data.common` for how. Every directory (`data_dir`, `manual_dir`) may be a
local path or a URI TensorFlow has a filesystem for (``file:///...``, ``gs://...``): files are listed and
read through `tf.io.gfile`.

`build_dataset(config)` picks the pipeline named by `config.dataset`:

* ``"fashion_mnist_idx"``: the original Fashion-MNIST idx files, 32x32 (`fashion_mnist.py`);
* ``"image_folder"``: a directory with one sub-folder per class (`image_folder/`);
* ``"tfds:<name>"``: a TFDS image-classification dataset, e.g. ``"tfds:imagenet2012"``,
  ``"tfds:cifar10"`` (`tfds_pipeline.py`).
"""
from __future__ import annotations

import tensorflow as tf

from sagan_tf.data.common import center_crop_and_resize, to_model_range
from sagan_tf.data.fashion_mnist import (FASHION_MNIST_CLASSES, IdxFormatError, fashion_mnist_dataset,
                                         load_fashion_mnist)
from sagan_tf.data.fashion_mnist import DEFAULT_DIR as FASHION_MNIST_DIR
from sagan_tf.data.fashion_mnist import RESOLUTION as FASHION_MNIST_RESOLUTION
from sagan_tf.data.image_folder import (image_folder_class_names, image_folder_dataset,
                                        scan_image_folder)
from sagan_tf.data import tfds_pipeline
from sagan_tf.data.tfds_pipeline import tfds_dataset

__all__ = [
    "FASHION_MNIST_CLASSES", "FASHION_MNIST_DIR", "IdxFormatError", "build_dataset", "describe_share",
    "center_crop_and_resize", "fashion_mnist_dataset", "image_folder_class_names",
    "image_folder_dataset", "is_tfds", "load_fashion_mnist", "prepare_dataset", "scan_image_folder",
    "split_size", "tfds_dataset", "tfds_name", "TFDS_PREFIX", "to_model_range",
]

#: How `config.dataset` names a TFDS dataset: "tfds:<builder name>[:<version>][/<config>]".
TFDS_PREFIX = "tfds:"
_ALLOWED_FORMS = "'fashion_mnist_idx', 'image_folder', 'tfds:<name>' (e.g. 'tfds:imagenet2012')"
#: Examples per split of the Fashion-MNIST idx files.
_FASHION_MNIST_SPLIT_SIZES = {"train": 60000, "test": 10000}


def is_tfds(dataset: str) -> bool:
    """Whether `config.dataset` names a TFDS dataset (whose data_dir TFDS creates and fills)."""
    return str(dataset).startswith(TFDS_PREFIX) and len(str(dataset)) > len(TFDS_PREFIX)


def tfds_name(dataset: str) -> str:
    """The TFDS builder name (with any version or config) of a `config.dataset` for which `is_tfds`."""
    return str(dataset)[len(TFDS_PREFIX):]


def prepare_dataset(config, *, data_dir: str | None = None, wait: bool = False) -> str | None:
    """Makes sure the data `config` trains on is ready; returns a line for the log, or None.

    Only TFDS datasets need preparing (from `config.manual_dir`, once). In a multi-worker run the chief
    calls this with `wait=False` and prepares; the other workers call it with `wait=True` and wait for
    the chief, up to `config.data_prepare_timeout` seconds (see `tfds_pipeline.prepare_tfds`).
    """
    if not is_tfds(config.dataset):
        return None
    name = tfds_name(config.dataset)
    builder = tfds_pipeline.prepare_tfds(name, data_dir=data_dir, manual_dir=config.manual_dir, wait=wait,
                                            timeout=float(config.data_prepare_timeout))
    return f"TFDS dataset {builder.name} {builder.version} ready in {builder.data_dir}"


def describe_share(config, data_dir: str | None,
                   input_context: tf.distribute.InputContext | None = None) -> str:
    """One line for the log: what this input pipeline of a TFDS dataset reads."""
    name = tfds_name(config.dataset)
    return tfds_pipeline.pipeline_share(tfds_pipeline.tfds_builder(name, data_dir), "train", input_context)


def build_dataset(config, *, data_dir: str | None = None, start_step: int = 0,
                  split: str = "train",
                  input_context: tf.distribute.InputContext | None = None) -> tf.data.Dataset:
    """Builds the training (or evaluation) pipeline that `config` describes.

    Config fields read (`sagan_tf.config.default_config` defines them all):
      dataset: which pipeline, see the module docstring.
      batch_size: GLOBAL batch size.
      resolution: output size; must be 32 for fashion_mnist_idx.
      image_channels: 1 or 3.
      num_classes, class_names (image_folder only): 0 pools every image with label 0; class_names
        picks the class folders (label i = class_names[i]); num_classes must match the folder (see
        `image_folder_dataset`).
      seed, random_flip.
      manual_dir (TFDS only): archives to prepare a TFDS dataset offline.

    Args:
      config: the run's config (an `ml_collections.ConfigDict`).
      data_dir: the image folder (required for image_folder); the TFDS data_dir; the idx directory
        (default `FASHION_MNIST_DIR`).
      start_step: first batch to produce, for resuming (see `sagan_tf.data.common`).
      split: dataset split; image folders only have "train".
      input_context: TFDS only: build input pipeline `input_context.input_pipeline_id` of several,
        reading only its share of the files, batched per replica (for
        `strategy.distribute_datasets_from_function`).

    Raises:
      ValueError: unknown `config.dataset`, or fields that do not fit the chosen pipeline.
    """
    name = str(config.dataset)
    if input_context is not None and not is_tfds(name):
        raise ValueError(f"dataset {name!r} has no per-worker input pipelines (input_context); only TFDS "
                         "datasets do, the others are split between workers row by row")
    common_args = dict(batch_size=int(config.batch_size), seed=int(config.seed), start_step=start_step,
                       random_flip=bool(config.random_flip))

    if name == "fashion_mnist_idx":
        resolution = config.resolution
        if resolution != FASHION_MNIST_RESOLUTION:
            raise ValueError(f"dataset 'fashion_mnist_idx' yields {FASHION_MNIST_RESOLUTION}x"
                             f"{FASHION_MNIST_RESOLUTION} images but config.resolution is "
                             f"{resolution}; use 'tfds:fashion_mnist' for other resolutions")
        return fashion_mnist_dataset(data_dir=data_dir or FASHION_MNIST_DIR, split=split,
                                     image_channels=int(config.image_channels), **common_args)

    image_args = dict(resolution=int(config.resolution),
                      image_channels=int(config.image_channels), **common_args)
    if name == "image_folder":
        return image_folder_dataset(data_dir, num_classes=config.num_classes,
                                    **_image_folder_selection(config, data_dir, split), **image_args)
    if is_tfds(name):
        return tfds_dataset(tfds_name(name), split=split, data_dir=data_dir,
                            manual_dir=config.manual_dir, input_context=input_context,
                            **image_args)
    raise ValueError(f"unknown dataset {name!r}; expected one of {_ALLOWED_FORMS}")


def _image_folder_selection(config, data_dir: str | None, split: str) -> dict:
    """The `unconditional` / `class_names` arguments that pick the images of an image folder for `config`
    (the same for the pipeline and for `split_size`); checks `data_dir` and `split`."""
    if data_dir is None:
        raise ValueError("dataset 'image_folder' needs a directory: pass data_dir=")
    if split != "train":
        raise ValueError(f"dataset 'image_folder' has no splits, got split={split!r}")
    return dict(unconditional=config.num_classes == 0, class_names=list(config.class_names or ()) or None)


def split_size(config, split: str = "train", data_dir: str | None = None) -> int:
    """How many examples one epoch of `build_dataset(config, data_dir=data_dir, split=split)` holds.

    The pipelines repeat forever, so this is the most images of a split that can be read without counting
    one twice (what a reference of real images must be capped at):

    * fashion_mnist_idx: 60000 ("train") or 10000 ("test");
    * image_folder: the readable images that `scan_image_folder` finds with the config's
      `num_classes == 0` / `class_names` selection (the scan of an unchanged folder is cached, so after
      `build_dataset` this decodes nothing again);
    * tfds:<name>: the records of the split as TFDS records them (`info.splits[split]`), slices such as
      "train[:10%]" included. The dataset is prepared first if it is not (as `build_dataset` does).

    Raises:
      ValueError: unknown `config.dataset` or split, or fields that do not fit the chosen pipeline.
      FileNotFoundError: the image folder does not exist, or a TFDS dataset is not prepared and cannot be.
    """
    name = str(config.dataset)
    if name == "fashion_mnist_idx":
        if split not in _FASHION_MNIST_SPLIT_SIZES:
            raise ValueError(f"unknown Fashion-MNIST split {split!r}; expected one of "
                             f"{sorted(_FASHION_MNIST_SPLIT_SIZES)}")
        return _FASHION_MNIST_SPLIT_SIZES[split]
    if name == "image_folder":
        return len(scan_image_folder(data_dir, **_image_folder_selection(config, data_dir, split)))
    if is_tfds(name):
        builder = tfds_pipeline.prepare_tfds(tfds_name(name), data_dir=data_dir,
                                                manual_dir=config.manual_dir)
        return tfds_pipeline.shard_for(builder, split).num_examples
    raise ValueError(f"unknown dataset {name!r}; expected one of {_ALLOWED_FORMS}")
