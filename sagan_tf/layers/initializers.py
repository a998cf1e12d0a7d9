"""Weight initialisers selectable by name in the config (`config.init`)."""
from __future__ import annotations

# Keras is imported by get_initializer only: sagan_tf.config reads INITIALIZERS before TensorFlow starts.

__all__ = ["INITIALIZERS", "get_initializer"]

# Names accepted by `config.init`, mapped to Keras initializer configs. A fresh initializer is made
# for every layer so no two layers share a seeded instance.
INITIALIZERS = {
    "orthogonal": {"class_name": "Orthogonal", "config": {"gain": 1.0}},   # BigGAN's default; the SAGAN reference code uses glorot
    "normal": {"class_name": "RandomNormal", "config": {"mean": 0.0, "stddev": 0.02}},  # N(0, 0.02)
    "glorot": {"class_name": "GlorotUniform", "config": {}},
}


def get_initializer(name: str) -> keras.initializers.Initializer:
    """Returns a new Keras initializer for `name` (one of INITIALIZERS)."""
    import keras

    if name not in INITIALIZERS:
        raise ValueError(f"Unknown init {name!r}; allowed: {sorted(INITIALIZERS)}.")
    return keras.initializers.get(dict(INITIALIZERS[name]))
