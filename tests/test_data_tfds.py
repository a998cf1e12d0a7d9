"""sagan_tf.data.tfds_pipeline on datasets prepared on disk by real TFDS builders (no mock_data: it replaces
the reader under test).

Two datasets: a tiny registered builder whose pixels tell which example was decoded (`tests.tiny_tfds`),
prepared in 1 or 4 record files, and TFDS's own `imagenet2012` builder run on a miniature ILSVRC2012 in the
real archive layout (`tests.miniature_ilsvrc`).
"""
import os
import threading

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from sagan_tf.data import tfds_pipeline
from tests import miniature_ilsvrc, tiny_tfds
from tests.tiny_tfds import NAME as TINY_NAME
from tests.tiny_tfds import NUM_EXAMPLES as TINY_N
from tests.tiny_tfds import example_index


@pytest.fixture(scope="module")
def tiny_data_dir(tmp_path_factory):
    return tiny_tfds.prepare(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="module")
def sharded_data_dir(tmp_path_factory):
    """The tiny dataset in 4 record files of 2, 3, 3 and 2 examples."""
    return tiny_tfds.prepare(tmp_path_factory.mktemp("tfds4"), num_shards=4)


@pytest.fixture(scope="module")
def ilsvrc(tmp_path_factory):
    """(manual_dir, data_dir) of the miniature ILSVRC2012, prepared by TFDS's imagenet2012 builder."""
    root = tmp_path_factory.mktemp("ilsvrc")
    manual_dir = str(miniature_ilsvrc.write(root / "manual"))
    data_dir = str(root / "tfds")  # does not exist yet: TFDS creates it
    tfds_pipeline.prepare_tfds("imagenet2012", data_dir=data_dir, manual_dir=manual_dir)
    return manual_dir, data_dir


def _take(ds, n):
    images, labels = zip(*[(x.numpy(), y.numpy()) for x, y in ds.take(n)])
    return np.stack(images), np.stack(labels)


def _tiny(data_dir, batch, n, **kwargs):
    return _take(tfds_pipeline.tfds_dataset(TINY_NAME, 8, batch, data_dir=data_dir, **kwargs), n)


def test_prepared_dataset_values_labels_and_epochs(tiny_data_dir):
    images, labels = _tiny(tiny_data_dir, 5, 6, seed=3)  # 3 epochs
    assert images.shape == (6, 5, 8, 8, 3) and images.dtype == np.float32
    index = example_index(images.reshape(30, 8, 8, 3))
    np.testing.assert_array_equal(labels.reshape(-1), index % 3)
    epochs = [tuple(index[TINY_N * e:TINY_N * (e + 1)]) for e in range(3)]
    assert all(sorted(epoch) == list(range(TINY_N)) for epoch in epochs)
    assert len(set(epochs)) == 3  # each epoch has its own order


@pytest.mark.parametrize("seed", [0, 1])
def test_pipeline_works_under_the_trainers_global_seed(tiny_data_dir, seed):
    # The trainer seeds everything with keras.utils.set_random_seed(config.seed) before building the data;
    # with seed 0 TFDS's own reader compared a tensor shuffle seed in Python and crashed.
    keras.utils.set_random_seed(seed)
    try:
        first = _tiny(tiny_data_dir, 5, 2, seed=seed)
    finally:
        tf.random.set_seed(None)
    again = _tiny(tiny_data_dir, 5, 2, seed=seed)
    np.testing.assert_array_equal(first[0], again[0])


def test_seed_changes_the_order(tiny_data_dir):
    def order(seed):
        return example_index(_tiny(tiny_data_dir, TINY_N, 1, seed=seed)[0][0])
    np.testing.assert_array_equal(order(0), order(0))
    assert not np.array_equal(order(0), order(1))


@pytest.mark.parametrize("shards, buffer", [(1, 10_000), (4, 3)])
@pytest.mark.parametrize("start_step", [1, 3, 4, 7])  # batches of 3 over 10: steps 3 and 6 straddle epochs
def test_resume_matches_an_uninterrupted_run(tiny_data_dir, sharded_data_dir, monkeypatch, shards, buffer,
                                             start_step):
    monkeypatch.setattr(tfds_pipeline, "RECORD_SHUFFLE_BUFFER", buffer)
    data_dir = tiny_data_dir if shards == 1 else sharded_data_dir
    full = _tiny(data_dir, 3, start_step + 3, seed=4, random_flip=True)
    resumed = _tiny(data_dir, 3, 3, seed=4, random_flip=True, start_step=start_step)
    np.testing.assert_array_equal(resumed[0], full[0][start_step:])
    np.testing.assert_array_equal(resumed[1], full[1][start_step:])


def test_resume_never_opens_the_files_before_the_resume_point(tmp_path, monkeypatch):
    # Resuming at the start of epoch 0's last file: every other file of that epoch is made unreadable
    # after the uninterrupted run, so the resumed pipeline fails if it reads any of them.
    monkeypatch.setattr(tfds_pipeline, "RECORD_SHUFFLE_BUFFER", 1)
    data_dir = tiny_tfds.prepare(tmp_path, num_shards=4)
    builder = tfds.builder(TINY_NAME, data_dir=data_dir)
    shard = tfds_pipeline.shard_for(builder, "train")
    order = tf.random.experimental.stateless_shuffle(
        tf.range(4, dtype=tf.int64), seed=tfds_pipeline.common.epoch_key(5, 0)).numpy()
    records_before_last = sum(shard.takes[i] for i in order[:3])  # batch size 1: that many steps
    expected = _tiny(data_dir, 1, shard.takes[order[3]], seed=5, start_step=records_before_last)
    for i in order[:3]:
        with open(shard.files[i], "wb") as f:
            f.write(b"not a tfrecord")
    resumed = _tiny(data_dir, 1, shard.takes[order[3]], seed=5, start_step=records_before_last)
    np.testing.assert_array_equal(resumed[0], expected[0])
    with pytest.raises(tf.errors.DataLossError):  # and a run from step 0 does read them
        _tiny(data_dir, 1, TINY_N, seed=5)


@pytest.mark.parametrize("shards, pipelines, expected_sizes", [
    (4, 2, [5, 5]),     # whole files per pipeline: files 0+2 and 1+3 (2+3 and 3+2 examples)
    (1, 2, [5, 5]),     # one file: every 2nd record
    (1, 3, [4, 3, 3]),  # every 3rd record
])
def test_each_input_pipeline_reads_a_disjoint_share(tiny_data_dir, sharded_data_dir, shards, pipelines,
                                                    expected_sizes):
    data_dir = tiny_data_dir if shards == 1 else sharded_data_dir
    builder = tfds.builder(TINY_NAME, data_dir=data_dir)
    shares = []
    for index in range(pipelines):
        context = tf.distribute.InputContext(pipelines, index, pipelines)  # one replica per pipeline
        shard = tfds_pipeline.shard_for(builder, "train", context)
        assert shard.num_examples == expected_sizes[index]
        if shards > 1:
            assert shard.stride == 1 and len(shard.files) == 2
        global_batch = 2 * pipelines  # per-replica batch 2
        ds = tfds_pipeline.tfds_dataset(TINY_NAME, 8, global_batch, data_dir=data_dir, seed=6,
                                        input_context=context)
        assert ds.element_spec[0].shape[0] == 2
        assert ds.options().experimental_distribute.auto_shard_policy == tf.data.experimental.AutoShardPolicy.OFF
        n = shard.num_examples
        images, _ = _take(ds.unbatch().batch(n), 2)  # this pipeline's first two epochs
        epochs = [example_index(images[e]) for e in range(2)]
        if shards > 1:  # whole files: the same share every epoch, in another order
            assert sorted(epochs[0]) == sorted(epochs[1]) and list(epochs[0]) != list(epochs[1])
        shares.append(epochs)
    for epoch in range(2):  # in every epoch the pipelines split the dataset between them
        per_pipeline = [set(share[epoch]) for share in shares]
        assert sum(map(len, per_pipeline)) == TINY_N and set().union(*per_pipeline) == set(range(TINY_N))


def test_input_pipeline_resume_is_exact(sharded_data_dir):
    context = tf.distribute.InputContext(2, 1, 2)

    def take(step, n):
        return _take(tfds_pipeline.tfds_dataset(TINY_NAME, 8, 4, data_dir=sharded_data_dir, seed=7,
                                                random_flip=True, start_step=step, input_context=context), n)
    full = take(0, 8)
    np.testing.assert_array_equal(take(5, 3)[0], full[0][5:])


def test_miniature_ilsvrc_every_image_decodes_with_its_colour_and_label(ilsvrc):
    _, data_dir = ilsvrc
    names = miniature_ilsvrc.train_file_names()
    label_of = tfds.builder("imagenet2012", data_dir=data_dir).info.features["label"].str2int
    expected = sorted((label_of(name.split("_")[0]), miniature_ilsvrc.expected_colour(name)) for name in names)
    images, labels = _take(tfds_pipeline.tfds_dataset("imagenet2012", 16, len(names), data_dir=data_dir), 1)
    assert images.shape == (1, len(names), 16, 16, 3)
    pixels = np.round((images[0] + 1) * 127.5)
    assert np.all(np.abs(pixels - pixels[:, :1, :1]) <= 2)  # solid (JPEG rounding)
    got = sorted(zip(labels[0].tolist(), [tuple(p) for p in pixels[:, 0, 0].astype(int).tolist()]))
    for (label, colour), (want_label, want_colour) in zip(got, expected):
        assert label == want_label
        assert np.max(np.abs(np.subtract(colour, want_colour))) <= 3, (label, colour, want_colour)
    # the grayscale JPEG came out as 3 equal channels, the CMYK one and the PNG in their RGB colours
    gray = miniature_ilsvrc.expected_colour(miniature_ilsvrc.GRAY_FILE)
    assert any(c[0] == c[1] == c[2] and abs(c[0] - gray[0]) <= 2 for _, c in got)


def test_miniature_ilsvrc_validation_split_has_tfds_validation_labels(ilsvrc):
    _, data_dir = ilsvrc
    builder = tfds.builder("imagenet2012", data_dir=data_dir)
    _, labels = _take(tfds_pipeline.tfds_dataset("imagenet2012", 8, 4, split="validation", data_dir=data_dir), 1)
    want = sorted(builder.info.features["label"].str2int(w) for w in miniature_ilsvrc.VALIDATION_SYNSETS)
    assert sorted(labels[0].tolist()) == want


def test_manual_dir_without_the_train_tar_names_it_and_writes_nothing(tmp_path):
    manual_dir = miniature_ilsvrc.write(tmp_path / "manual")
    os.remove(manual_dir / "ILSVRC2012_img_train.tar")
    data_dir = tmp_path / "tfds"
    with pytest.raises(FileNotFoundError, match=r"lacks ILSVRC2012_img_train.tar"):
        tfds_pipeline.prepare_tfds("imagenet2012", data_dir=str(data_dir), manual_dir=str(manual_dir))
    assert not data_dir.exists()


def test_truncated_tar_is_named_and_a_prepared_dataset_is_kept(tmp_path, ilsvrc):
    manual_dir = miniature_ilsvrc.write(tmp_path / "manual")
    train_tar = manual_dir / "ILSVRC2012_img_train.tar"
    with open(train_tar, "r+b") as f:
        f.truncate(os.path.getsize(train_tar) // 2)
    data_dir = tmp_path / "tfds"
    with pytest.raises(ValueError, match=rf"{train_tar} is truncated: member 'n0\d+\.tar'"):
        tfds_pipeline.prepare_tfds("imagenet2012", data_dir=str(data_dir), manual_dir=str(manual_dir))
    assert not data_dir.exists()
    # An already prepared dataset is used as it is: the bad archive is not even opened.
    _, prepared = ilsvrc
    builder = tfds_pipeline.prepare_tfds("imagenet2012", data_dir=prepared, manual_dir=str(manual_dir))
    assert builder.info.splits["train"].num_examples == len(miniature_ilsvrc.train_file_names())


def test_unprepared_dataset_without_manual_dir_explains(tmp_path):
    with pytest.raises(FileNotFoundError, match="not prepared.*manual_dir"):
        tfds_pipeline.tfds_dataset(TINY_NAME, 8, 2, data_dir=str(tmp_path))


def test_manual_dir_without_the_archives_refuses_to_download(tmp_path):
    manual_dir = tmp_path / "manual"
    manual_dir.mkdir()
    with pytest.raises(FileNotFoundError, match="cifar-10-binary.tar.gz"):
        tfds_pipeline.tfds_dataset("cifar10", 8, 2, data_dir=str(tmp_path / "data"), manual_dir=str(manual_dir))


def test_a_waiting_worker_returns_once_the_chief_has_prepared(tmp_path):
    data_dir = str(tmp_path / "tfds")
    chief = threading.Timer(0.3, tiny_tfds.prepare, args=(data_dir,))
    chief.start()
    try:
        builder = tfds_pipeline.prepare_tfds(TINY_NAME, data_dir=data_dir, wait=True, timeout=60,
                                                poll_seconds=0.05)
    finally:
        chief.join()
    assert builder.is_prepared() and builder.info.splits["train"].num_examples == TINY_N


def test_a_waiting_worker_times_out_with_a_clear_error(tmp_path):
    with pytest.raises(TimeoutError, match=rf"{TINY_NAME}.*not prepared in .* within 0.2 s.*chief"):
        tfds_pipeline.prepare_tfds(TINY_NAME, data_dir=str(tmp_path), wait=True, timeout=0.2, poll_seconds=0.05)


def test_a_split_that_does_not_exist_is_named(tiny_data_dir):
    with pytest.raises(ValueError, match=r"no split 'validation'.*\['train'\]"):
        tfds_pipeline.tfds_dataset(TINY_NAME, 8, 2, data_dir=tiny_data_dir, split="validation")
