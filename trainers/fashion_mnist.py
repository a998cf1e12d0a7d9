"""Train SAGAN on Fashion-MNIST from the Debian idx files (the embedded default).

    python -m trainers.fashion_mnist --model_dir=runs/fmnist [--train_steps=N] [--config.ch=32]
"""
from absl import app

from trainers import common

common.define_flags("fashion_mnist.py")
main = common.main

if __name__ == "__main__":
    app.run(main)
