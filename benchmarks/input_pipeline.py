"""Images per second of each input pipeline, against the train step's images per second.

    python benchmarks/input_pipeline.py [--batch 32 --batches 40 --rounds 3]
        [--train-json /tmp/ts64.json ...] [--step-img-s fashion_mnist=100 ...] [--json]

Pipelines (all through sagan_tf.data, with their real decode/crop/resize/shuffle work):
  fashion_mnist_idx  the idx .gz files in /usr/share/datasets/fashion-mnist (32², 1 channel)
  image_folder       JPEGs generated into a temp dir (`--folder-images` of 96×80 RGB, 10 classes), at 64²
  tfds_jpeg          a TFDS dataset really prepared on disk by a builder (`--tfds-examples` random
                     160×120 JPEGs in `--tfds-shards` record files, 1000 classes), read the way
                     tfds:imagenet2012 is, at 64² and 128²
Each pipeline is iterated for `--batches` batches after 5 warm-up batches; rounds alternate between
pipelines and the median is reported. The train-step img/s comes from train_step.py --json outputs
(the fastest variant of the matching config) or from --step-img-s.

A second table times resuming the TFDS pipeline: from building it at `start_step` to its first batch,
at step 0, half an epoch in and 10.5 epochs in, next to a naive reader that skips every record before
the resume point (what resuming costs when the reader cannot seek).
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

try:
    from benchmarks import common
except ImportError:  # run as a script from benchmarks/
    import common

FASHION_DIR = "/usr/share/datasets/fashion-mnist"
PIPELINES = ("fashion_mnist_idx", "image_folder_64", "tfds_jpeg_64", "tfds_jpeg_128")
MATCHING_PRESET = {"fashion_mnist_idx": "fashion_mnist", "image_folder_64": "imagenet64",
                   "tfds_jpeg_64": "imagenet64", "tfds_jpeg_128": "imagenet128"}
TFDS_NAME = "sagan_benchmark_jpegs"


def prepare_tfds(data_dir, count, shards, size=(160, 120), seed=0):
    """Prepares `count` random JPEGs with labels in `shards` record files, with TFDS's builder machinery."""
    import io

    import numpy as np
    import tensorflow_datasets as tfds
    from PIL import Image

    class SaganBenchmarkJpegs(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(encoding_format="jpeg"),
                "label": tfds.features.ClassLabel(num_classes=1000)}))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            rng = np.random.default_rng(seed)
            for i in range(count):
                out = io.BytesIO()
                Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(
                    out, format="JPEG", quality=90)
                yield i, {"image": out.getvalue(), "label": i % 1000}

    SaganBenchmarkJpegs(data_dir=data_dir).download_and_prepare(
        download_config=tfds.download.DownloadConfig(num_shards=shards))
    return data_dir


def make_image_folder(root, count, classes=10, size=(96, 80), seed=0):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for i in range(count):
        folder = os.path.join(root, f"class{i % classes:02d}")
        os.makedirs(folder, exist_ok=True)
        pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(os.path.join(folder, f"{i:05d}.jpg"), quality=90)
    return root


def build(name, batch, folder, tfds_dir=None, start_step=0):
    from sagan_tf.data import fashion_mnist_dataset, image_folder_dataset, tfds_dataset

    if name == "fashion_mnist_idx":
        return fashion_mnist_dataset(data_dir=FASHION_DIR, batch_size=batch, image_channels=1)
    if name == "image_folder_64":
        return image_folder_dataset(folder, resolution=64, batch_size=batch, image_channels=3)
    if name.startswith("tfds_jpeg_"):
        return tfds_dataset(TFDS_NAME, resolution=int(name.rsplit("_", 1)[1]), batch_size=batch, data_dir=tfds_dir,
                            start_step=start_step)
    raise ValueError(name)


def step_img_s_from_json(paths):
    """{preset: img/s of the fastest variant} from train_step.py --json outputs."""
    best = {}
    for path in paths:
        with open(path) as f:
            result = json.load(f)
        for group in result["groups"].values():
            for row in (group or {}).get("rows", []):
                if row["attention"] != "none":
                    best[result["config"]] = max(best.get(result["config"], 0.0), row["img/s"])
    return best


def main(argv=None):
    parser = common.add_common_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--folder-images", type=int, default=1000)
    parser.add_argument("--tfds-examples", type=int, default=30000)
    parser.add_argument("--tfds-shards", type=int, default=64)
    parser.add_argument("--resume-rounds", type=int, default=3)
    parser.add_argument("--pipelines", default=",".join(PIPELINES))
    parser.add_argument("--train-json", nargs="*", default=[])
    parser.add_argument("--step-img-s", nargs="*", default=[], help="preset=img/s pairs")
    args = parser.parse_args(argv)
    step_img_s = step_img_s_from_json(args.train_json)
    step_img_s.update({k: float(v) for k, v in (pair.split("=") for pair in args.step_img_s)})
    names = [n for n in args.pipelines.split(",") if n]
    with tempfile.TemporaryDirectory() as folder, tempfile.TemporaryDirectory() as tfds_dir:
        start = time.perf_counter()
        make_image_folder(folder, args.folder_images)
        setup = {"image_folder_64": time.perf_counter() - start}
        start = time.perf_counter()
        prepare_tfds(tfds_dir, args.tfds_examples, args.tfds_shards)
        tfds_prepare_s = time.perf_counter() - start
        iterators = {}
        for name in names:
            start = time.perf_counter()
            iterators[name] = iter(build(name, args.batch, folder, tfds_dir))
            for _ in range(5):
                next(iterators[name])
            setup[name] = setup.get(name, 0.0) + time.perf_counter() - start

        def consume(iterator):
            def run():
                for _ in range(args.batches):
                    images, _ = next(iterator)
                return images
            return run

        times = common.interleaved({n: consume(it) for n, it in iterators.items()}, rounds=args.rounds, warmup=0,
                                   sync=lambda images: images.numpy())
        resume_rows = resume_table(tfds_dir, args)
    rows = []
    for name in names:
        img_s = args.batch * args.batches / common.median(times[name])
        preset = MATCHING_PRESET[name]
        row = {"pipeline": name, "batch": args.batch, "img/s": img_s, "setup_s": setup[name],
               "train_config": preset}
        if preset in step_img_s:
            row["step_img/s"] = step_img_s[preset]
            row["pipeline/step"] = img_s / step_img_s[preset]
            row["target_10x"] = "met" if img_s >= 10 * step_img_s[preset] else "NOT met"
        rows.append(row)
    common.emit(args, dict(machine=common.machine_info(), rows=rows, times=times, step_img_s=step_img_s,
                           resume=resume_rows, tfds_prepare_s=tfds_prepare_s),
                [(f"Input pipelines: median of {args.rounds} rounds of {args.batches} batches of {args.batch} "
                  f"(setup = build + 5 warm-up batches)", rows, None),
                 (f"Resuming tfds_jpeg_64 ({args.tfds_examples} records in {args.tfds_shards} files, batch "
                  f"{args.batch}): seconds from building at start_step to the first batch, median of "
                  f"{args.resume_rounds}", resume_rows, None)])


def resume_table(tfds_dir, args):
    """Time to the first batch when resuming at step 0, half an epoch in and 10.5 epochs in."""
    import tensorflow as tf

    from sagan_tf.data import tfds_pipeline

    steps_per_epoch = args.tfds_examples / args.batch
    points = {"step 0": 0, "half an epoch": int(0.5 * steps_per_epoch), "10.5 epochs": int(10.5 * steps_per_epoch)}
    shard = tfds_pipeline.shard_for(tfds_pipeline.tfds_builder(TFDS_NAME, data_dir=tfds_dir), "train")

    def naive(step):  # reads (and drops) every record before the resume point within its epoch
        skip = step * args.batch % args.tfds_examples
        return tf.data.TFRecordDataset(list(shard.files)).skip(skip).batch(args.batch)

    rows = []
    for label, step in points.items():
        seek, skip = [], []
        for _ in range(args.resume_rounds):
            start = time.perf_counter()
            next(iter(build("tfds_jpeg_64", args.batch, None, tfds_dir, start_step=step)))[0].numpy()
            seek.append(time.perf_counter() - start)
            start = time.perf_counter()
            next(iter(naive(step))).numpy()
            skip.append(time.perf_counter() - start)
        rows.append({"resume at": label, "step": step, "sagan_tf_s": common.median(seek),
                     "naive_skip_s": common.median(skip)})
    base = rows[0]["sagan_tf_s"]
    for row in rows:
        row["vs step 0"] = row["sagan_tf_s"] / base
    return rows


if __name__ == "__main__":
    main()
