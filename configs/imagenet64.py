"""ImageNet 64×64: the 128² recipe one block shallower, attention at 32² in both networks."""
from sagan_tf.config import default_config


def get_config():
    config = default_config()
    config.resolution = 64
    return config
