"""A tiny TFDS image dataset that tests prepare on disk with TFDS's real builder machinery.

Example i is a solid image of value 20 * i + 10 (of varying aspect ratio) with label i % 3, so a reader
can tell from the pixels which example it decoded. Importing this module registers the builder.
"""
import numpy as np
import tensorflow_datasets as tfds

NAME = "sagan_data_test_images"
NUM_EXAMPLES = 10


class SaganDataTestImages(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3)),
            "label": tfds.features.ClassLabel(num_classes=3)}))

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        for i in range(NUM_EXAMPLES):
            yield i, {"image": np.full((12, 12 + 3 * i, 3), 20 * i + 10, np.uint8), "label": i % 3}


def prepare(data_dir, num_shards=None):
    """Prepares the dataset in `data_dir` (in `num_shards` record files, TFDS's choice by default)."""
    tfds.builder(NAME, data_dir=str(data_dir)).download_and_prepare(
        download_config=tfds.download.DownloadConfig(num_shards=num_shards))
    return str(data_dir)


def example_index(images):
    """Example index of each solid tiny image in `images` ([N, H, W, C] in [-1, 1]), asserting it is solid."""
    values = np.round((np.asarray(images) + 1) * 127.5)
    assert np.all(values == values[:, :1, :1, :1])
    return ((values[:, 0, 0, 0] - 10) / 20).astype(int)
