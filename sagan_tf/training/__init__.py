"""Training: the SAGAN train step, strategies, checkpoints, monitoring callbacks and the run driver."""
from sagan_tf.training.gan import SAGAN
from sagan_tf.training.loop import build_model, train
from sagan_tf.training.strategy import get_strategy

__all__ = ["SAGAN", "build_model", "train", "get_strategy"]
