"""Training: the SAGAN train step, checkpoints, monitoring callbacks and the run driver."""
from sagan_tf.training.gan import SAGAN
from sagan_tf.training.loop import build_model, train

__all__ = ["SAGAN", "build_model", "train"]
