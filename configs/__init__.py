"""Presets: one module per resolution and data set, each with ``get_config()``."""
import importlib


def load(name: str):
    """configs/<name>.py's config; a ValueError naming `name` and the presets there are if it is none of them."""
    import pkgutil
    names = sorted(module.name for module in pkgutil.iter_modules(__path__))
    if name not in names:
        raise ValueError(f"no preset {name!r} (configs/{name}.py); the presets are {names}")
    return importlib.import_module(f"{__name__}.{name}").get_config()
