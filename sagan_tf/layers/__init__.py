"""SAGAN building blocks: spectral normalization, self-attention, conditional BN, residual blocks.

The names below are imported when first used (PEP 562), so that `sagan_tf.layers.initializers.INITIALIZERS`
(read by `sagan_tf.config` while a trainer parses its flags) does not import Keras and TensorFlow.
"""
import importlib

_MODULES = {
    "SelfAttention": "attention",
    "ConditionalBatchNormalization": "conditional_bn",
    "INITIALIZERS": "initializers",
    "get_initializer": "initializers",
    "DiscriminatorBlock": "resblocks",
    "GeneratorBlock": "resblocks",
    "SpectralNormalization": "spectral_norm",
}

__all__ = ["SpectralNormalization", "SelfAttention", "ConditionalBatchNormalization", "GeneratorBlock",
           "DiscriminatorBlock", "INITIALIZERS", "get_initializer"]


def __getattr__(name):
    if name not in _MODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_MODULES[name]}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
