"""ImageNet 128×128, the paper's main setting (ch=64, attention at 32² in G and D, batch 256)."""
from sagan_tf.config import default_config


def get_config():
    return default_config()
