"""Train SAGAN on ImageNet (TFDS imagenet2012; the ILSVRC2012 tars in <data_dir>/downloads/manual).

    python -m trainers.imagenet --strategy=mirrored --data_dir=/data/tfds --model_dir=runs/imagenet128
"""
from absl import app

from trainers import common

common.define_flags("imagenet128.py")


def main(argv):
    del argv
    common.run()


if __name__ == "__main__":
    app.run(main)
