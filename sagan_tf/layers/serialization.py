"""Registration of the project's layers with Keras serialization (`keras.saving`)."""
from __future__ import annotations

import keras

__all__ = ["register"]

PACKAGE = "sagan_tf"


def register(cls: type) -> type:
    """Class decorator: makes `cls` loadable by `keras.saving`/`from_config` under `sagan_tf>Name`."""
    return keras.saving.register_keras_serializable(package=PACKAGE)(cls)
