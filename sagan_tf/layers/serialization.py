"""Registration of the project's layers with Keras serialization (`keras.saving`)."""
import keras

PACKAGE = "sagan_tf"


def register(cls):
    """Class decorator: makes `cls` loadable by `keras.saving`/`from_config` under `sagan_tf>Name`."""
    return keras.saving.register_keras_serializable(package=PACKAGE)(cls)
