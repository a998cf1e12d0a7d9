"""Images per second of each input pipeline, against the train step's images per second.

    python benchmarks/input_pipeline.py [--batch 32 --batches 40 --rounds 3]
        [--train-json /tmp/ts64.json ...] [--step-img-s fashion_mnist=100 ...] [--json]

Pipelines (all through sagan_tf.data, with their real decode/crop/resize/shuffle work):
  fashion_mnist_idx  the idx .gz files in /usr/share/datasets/fashion-mnist (32², 1 channel)
  image_folder       JPEGs generated into a temp dir (`--folder-images` of 96×80 RGB, 10 classes), at 64²
  tfds:imagenet2012  under tfds.testing.mock_data (random encoded images), at 64² and 128²
Each pipeline is iterated for `--batches` batches after 5 warm-up batches; rounds alternate between
pipelines and the median is reported. The train-step img/s comes from train_step.py --json outputs
(the fastest variant of the matching config) or from --step-img-s.
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
PIPELINES = ("fashion_mnist_idx", "image_folder_64", "tfds_imagenet2012_64", "tfds_imagenet2012_128")
MATCHING_PRESET = {"fashion_mnist_idx": "fashion_mnist", "image_folder_64": "imagenet64",
                   "tfds_imagenet2012_64": "imagenet64", "tfds_imagenet2012_128": "imagenet128"}


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


def build(name, batch, folder):
    from sagan_tf.data import fashion_mnist_dataset, image_folder_dataset, tfds_dataset

    if name == "fashion_mnist_idx":
        return fashion_mnist_dataset(data_dir=FASHION_DIR, batch_size=batch, image_channels=1)
    if name == "image_folder_64":
        return image_folder_dataset(folder, resolution=64, batch_size=batch, image_channels=3)
    if name.startswith("tfds_imagenet2012_"):
        return tfds_dataset("imagenet2012", resolution=int(name.rsplit("_", 1)[1]), batch_size=batch)
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
    parser.add_argument("--mock-examples", type=int, default=1000)
    parser.add_argument("--pipelines", default=",".join(PIPELINES))
    parser.add_argument("--train-json", nargs="*", default=[])
    parser.add_argument("--step-img-s", nargs="*", default=[], help="preset=img/s pairs")
    args = parser.parse_args(argv)
    import tensorflow_datasets as tfds

    step_img_s = step_img_s_from_json(args.train_json)
    step_img_s.update({k: float(v) for k, v in (pair.split("=") for pair in args.step_img_s)})
    names = [n for n in args.pipelines.split(",") if n]
    with tempfile.TemporaryDirectory() as folder, tfds.testing.mock_data(num_examples=args.mock_examples):
        start = time.perf_counter()
        make_image_folder(folder, args.folder_images)
        setup = {"image_folder_64": time.perf_counter() - start}
        iterators = {}
        for name in names:
            start = time.perf_counter()
            iterators[name] = iter(build(name, args.batch, folder))
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
    common.emit(args, dict(machine=common.machine_info(), rows=rows, times=times, step_img_s=step_img_s),
                [(f"Input pipelines: median of {args.rounds} rounds of {args.batches} batches of {args.batch} "
                  f"(setup = build + 5 warm-up batches)", rows, None)])


if __name__ == "__main__":
    main()
