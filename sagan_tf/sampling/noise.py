"""Noise for the generator: z ~ N(0, I), optionally truncated, drawn with numpy from an explicit seed.

Truncation trick (BigGAN, Brock et al. 2019): each coordinate of z is drawn from N(0, 1) and every
coordinate with ``|z| > t`` is redrawn until it falls inside ``[-t, t]``, which is exactly a
standard normal truncated to ``[-t, t]``. Smaller t trades variety for fidelity. ``t=None`` (or
inf) is the plain normal the generator was trained on.

Numpy, not TensorFlow's RNG: a sheet, an evaluation or a set of standing-statistics batches is a
function of its seed alone, whatever else the process has drawn.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["check_truncation", "parse_truncations", "truncate_noise", "truncated_normal", "sample_noise",
           "noise_batches"]

# Below this truncation a uniform proposal on [-t, t] accepts more often (>= exp(-t^2/2) >= 0.6)
# than drawing from N(0, 1) (2*Phi(t) - 1 < 0.68).
_UNIFORM_PROPOSAL_BELOW = 1.0


def check_truncation(truncation):
    """None for 'no truncation', else the threshold as a float > 0."""
    if truncation is None:
        return None
    t = float(truncation)
    if math.isnan(t) or t <= 0:
        raise ValueError(f"truncation must be > 0 (or None/inf for none), got {truncation}")
    return None if math.isinf(t) else t


def parse_truncations(items) -> list[float | None]:
    """Thresholds from text items ("none"/"inf" = no truncation, else a finite number > 0); the
    ValueError names the offending item."""
    values = []
    for item in items:
        text = item.strip().lower()
        if text in ("none", "inf"):
            values.append(None)
            continue
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"{item.strip()!r} is not a number or 'none'") from None
        if not value > 0 or math.isinf(value):
            raise ValueError(f"{item.strip()!r} must be a finite number > 0, or 'none'")
        values.append(value)
    return values


def _rng(seed) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def truncate_noise(z, truncation, seed=None) -> np.ndarray:
    """Return a copy of `z` in which every entry with ``|z| > truncation`` is redrawn inside.

    Entries already inside ``[-t, t]`` are kept. If `z` is standard normal, the result is exactly
    standard normal truncated to ``[-t, t]``: redrawn entries come from that truncated law
    (rejection from N(0, 1) for t >= 1; from a uniform proposal on [-t, t] accepted with
    probability exp(-x^2/2) for small t, where N(0, 1) proposals would rarely land inside).
    `truncation` None or inf returns `z` unchanged (as float32).
    """
    t = check_truncation(truncation)
    z = np.array(z, dtype=np.float32, copy=True)
    if t is None:
        return z
    rng = _rng(seed)
    flat = z.reshape(-1)
    outside = np.flatnonzero(np.abs(flat) > t)
    while outside.size:
        if t < _UNIFORM_PROPOSAL_BELOW:
            proposal = rng.uniform(-t, t, outside.size)
            accepted = rng.uniform(size=outside.size) < np.exp(-0.5 * proposal ** 2)
        else:
            proposal = rng.standard_normal(outside.size)
            accepted = np.abs(proposal) <= t
        flat[outside[accepted]] = proposal[accepted]
        outside = outside[~accepted]
    # Rounding to float32 can never leave [-t, t] by more than the float32 rounding of t itself.
    np.clip(flat, -np.float32(t), np.float32(t), out=flat)
    return z


def truncated_normal(shape, truncation=None, seed=None) -> np.ndarray:
    """float32 samples of N(0, 1) truncated to ``[-truncation, truncation]`` (plain N(0, 1) for None/inf)."""
    rng = _rng(seed)
    return truncate_noise(rng.standard_normal(shape), truncation, rng)


def sample_noise(num: int, z_dim: int, truncation=None, seed=None) -> np.ndarray:
    """z float32 [num, z_dim] for the generator, optionally truncated."""
    return truncated_normal((int(num), int(z_dim)), truncation, seed)


def noise_batches(z_dim: int, num_classes: int, num_batches: int = 16, batch_size: int = 64, seed: int = 0,
                  truncation=None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Fixed (z, labels) batches: z ~ N(0, I) (truncated to [-truncation, truncation] if given), labels
    uniform over the classes (the first k of n batches are the k batches drawn alone).

    The untruncated batches do not depend on `truncation`'s resampling: it draws from a stream of its
    own, so the batches for t keep every coordinate of the untruncated ones that lies inside [-t, t].
    """
    rng = np.random.default_rng(seed)
    batches = [(rng.standard_normal((batch_size, z_dim)).astype(np.float32),
                rng.integers(0, max(num_classes, 1), batch_size).astype(np.int32)) for _ in range(num_batches)]
    if check_truncation(truncation) is None:
        return batches
    resample = np.random.default_rng([seed, 1])
    return [(truncate_noise(z, truncation, resample), labels) for z, labels in batches]
