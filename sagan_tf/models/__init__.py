"""The SAGAN networks and their architecture tables."""
from sagan_tf.models.architecture import RESOLUTIONS, attention_resolutions
from sagan_tf.models.discriminator import Discriminator
from sagan_tf.models.generator import Generator

__all__ = ["Generator", "Discriminator", "RESOLUTIONS", "attention_resolutions"]
