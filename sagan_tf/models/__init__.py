"""The SAGAN networks and their architecture tables.

The names below are imported when first used (PEP 562): `sagan_tf.models.architecture` (the tables
`sagan_tf.config` validates against while a trainer parses its flags) imports neither Keras nor TensorFlow.
"""
import importlib

_MODULES = {
    "RESOLUTIONS": "architecture",
    "attention_resolutions": "architecture",
    "Discriminator": "discriminator",
    "Generator": "generator",
}

__all__ = ["Generator", "Discriminator", "RESOLUTIONS", "attention_resolutions"]


def __getattr__(name):
    if name not in _MODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_MODULES[name]}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
