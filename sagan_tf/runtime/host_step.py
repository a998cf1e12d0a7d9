"""The run's G step as the host knows it during `fit`, without reading the device every step.

`training.callbacks.StepCounter` (the first callback of a run) keeps the count in the model attribute
`HOST_STEP`; every callback that works in G steps, the training ones and `evaluation.periodic`'s alike,
reads it with :func:`current_step`. Outside `fit` the attribute is None and the step is read from the
model's `step` variable.
"""
__all__ = ["HOST_STEP", "current_step"]

HOST_STEP = "_host_step"


def current_step(model) -> int:
    """The run's step: StepCounter's count during fit, else `model.step` read from the device."""
    step = getattr(model, HOST_STEP, None)
    return int(model.step.numpy()) if step is None else step
