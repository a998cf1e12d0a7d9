"""Train SAGAN on ImageNet (TFDS imagenet2012, prepared offline from the ILSVRC2012 tars).

    python -m trainers.imagenet --strategy=mirrored --data_dir=/data/tfds --config.manual_dir=/data/ilsvrc \\
        --model_dir=runs/imagenet128
"""
from absl import app

from trainers import common

common.define_flags("imagenet128.py")
main = common.main

if __name__ == "__main__":
    app.run(main)
