"""SAGAN building blocks: spectral normalization, self-attention, conditional BN, residual blocks."""
from sagan_tf.layers.attention import SelfAttention
from sagan_tf.layers.conditional_bn import ConditionalBatchNormalization
from sagan_tf.layers.initializers import INITIALIZERS, get_initializer
from sagan_tf.layers.resblocks import DiscriminatorBlock, GeneratorBlock
from sagan_tf.layers.spectral_norm import SpectralNormalization

__all__ = ["SpectralNormalization", "SelfAttention", "ConditionalBatchNormalization", "GeneratorBlock",
           "DiscriminatorBlock", "INITIALIZERS", "get_initializer"]
