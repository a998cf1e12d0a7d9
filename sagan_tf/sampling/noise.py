"""Noise for the generator: z ~ N(0, I), optionally truncated to [-t, t]. One sampler with two faces:

* TensorFlow, stateless (:func:`stateless_truncated_normal`, :func:`noise_for_seeds`): a pure function
  of its key, inside a graph. The train step draws its z with it (untruncated, keyed by seed, step and
  purpose), the serving signature ``generate`` each row's z from that row's seed and truncation.
* numpy (:func:`truncated_normal`, :func:`truncate_noise`, :func:`sample_noise`, :func:`noise_batches`):
  drawn from an explicit seed (or a ``np.random.Generator``), so a sheet, an evaluation or a set of
  standing-statistics batches is a function of its seed alone, whatever else the process has drawn.

Truncation trick (BigGAN, Brock et al. 2019): each coordinate of z is drawn from N(0, 1) and every
coordinate with ``|z| > t`` is redrawn until it falls inside ``[-t, t]``, which is exactly a standard
normal truncated to ``[-t, t]``. Smaller t trades variety for fidelity. Both faces redraw alike: from
N(0, 1), accepting ``|x| <= t``, for t >= ``UNIFORM_PROPOSAL_BELOW``; below it from U(-t, t), accepting
with probability exp(-x²/2), where N(0, 1) would rarely land inside. (The two faces draw different
numbers from their seeds, the same law: tests/test_sampling.py holds both to scipy's truncnorm.)

One convention for "no truncation", at every entry point (the Python API, the CLIs, the serving
signature): ``t > 0`` (finite) truncates to [-t, t]; ``t = 0`` is no truncation, and so is None where
Python can say "not given"; anything else (negative, NaN, ±inf) is an error naming the value
(:func:`check_truncation`; in a graph :func:`truncation_checks`). 0 is the "off" value because a
float-only channel (a TF-Serving request, a JSON number, an unset proto field) has no None; a negative
or non-finite threshold is far more likely a caller's bug than a request, so it is refused rather than
read as "none".
"""
from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

__all__ = ["UNIFORM_PROPOSAL_BELOW", "MAX_TRUNCATION_ROUNDS", "check_truncation", "parse_truncations",
           "truncation_checks", "stateless_truncated_normal", "noise_for_seeds", "truncate_noise",
           "truncated_normal", "sample_noise", "noise_batches"]

#: Below this truncation a uniform proposal on [-t, t] accepts more often (>= exp(-t^2/2) >= 0.6) than
#: drawing from N(0, 1) (2*Phi(t) - 1 < 0.68). Both faces switch proposals here.
UNIFORM_PROPOSAL_BELOW = 1.0
#: Rejection rounds of the TF face before its final clip; each round accepts a redraw with probability
#: >= 0.6, so 64 rounds leave an entry unresolved with probability < 1e-14.
MAX_TRUNCATION_ROUNDS = 64
_ALLOWED = "a finite threshold t > 0 truncates z to [-t, t]; 0 (or None) is no truncation"


def check_truncation(truncation) -> float | None:
    """None for no truncation (None or 0), else the threshold as a float > 0; a ValueError names any other
    value (negative, NaN, ±inf, not a number)."""
    if truncation is None:
        return None
    try:
        t = float(truncation)
    except (TypeError, ValueError):
        raise ValueError(f"truncation={truncation!r} is not a number ({_ALLOWED})") from None
    if t == 0:
        return None
    if not (math.isfinite(t) and t > 0):
        raise ValueError(f"truncation={truncation!r} is not allowed: {_ALLOWED}")
    return t


def parse_truncations(items) -> list[float | None]:
    """Thresholds from text items ("none" or 0 = no truncation, else a finite number > 0); the ValueError
    names the offending item."""
    values = []
    for item in items:
        text = item.strip()
        if text.lower() == "none":
            values.append(None)
            continue
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"{text!r} is not a number or 'none'") from None
        try:
            values.append(check_truncation(value))
        except ValueError:
            raise ValueError(f"{text!r} must be a finite number > 0, or 0 or 'none' for no truncation") from None
    return values


# --- the TensorFlow face: stateless, in a graph --------------------------------------------------------

def truncation_checks(truncation: tf.Tensor) -> list:
    """The in-graph form of :func:`check_truncation` for a float tensor of thresholds: one assertion that
    every value is finite and >= 0, naming the others and their positions (InvalidArgumentError)."""
    truncation = tf.convert_to_tensor(truncation, tf.float32)
    bad = tf.logical_not(tf.logical_and(tf.math.is_finite(truncation), truncation >= 0))
    return [tf.debugging.Assert(
        tf.logical_not(tf.reduce_any(bad)),
        ["truncation must be finite and >= 0 (0: no truncation); not allowed:", tf.boolean_mask(truncation, bad),
         "at rows", tf.reshape(tf.where(bad), [-1])], summarize=16)]


def stateless_truncated_normal(shape, key, truncation=None, max_rounds: int = MAX_TRUNCATION_ROUNDS) -> tf.Tensor:
    """float32 N(0, 1) of `shape` from the stateless-RNG `key` (2 integers), truncated to [-t, t].

    `truncation` None or 0: exactly ``tf.random.stateless_normal(shape, key)``. Otherwise a number or a
    float32 scalar tensor t (t <= 0 in a tensor: no truncation; callers check it first,
    :func:`truncation_checks`): entries inside the box are kept, and redraw round i replaces those
    outside by accepted proposals drawn with the keys (key[0], key[1] + 2i + 1) and (key[0], key[1] + 2i + 2)
    (see the module docstring for the proposals). The final clip only guards float rounding and the
    (astronomically unlikely) round limit."""
    key = tf.convert_to_tensor(key)
    z = tf.random.stateless_normal(shape, seed=key)
    if truncation is None or (isinstance(truncation, (int, float)) and check_truncation(truncation) is None):
        return z
    truncation = tf.cast(truncation, tf.float32)
    limit = tf.where(truncation > 0, truncation, tf.constant(math.inf, tf.float32))

    def outside(z):
        return tf.abs(z) > limit

    def cond(i, z):
        return tf.logical_and(i < max_rounds, tf.reduce_any(outside(z)))

    def body(i, z):
        round_key = tf.stack([key[0], key[1] + tf.cast(2 * i + 1, key.dtype)])
        coin_key = tf.stack([key[0], key[1] + tf.cast(2 * i + 2, key.dtype)])
        normal = tf.random.stateless_normal(shape, seed=round_key)
        uniform = tf.random.stateless_uniform(shape, seed=round_key, minval=-1.0, maxval=1.0) * limit
        coin = tf.random.stateless_uniform(shape, seed=coin_key)
        small = limit < UNIFORM_PROPOSAL_BELOW
        proposal = tf.where(small, uniform, normal)
        accepted = tf.where(small, coin < tf.exp(-0.5 * tf.square(uniform)), tf.abs(normal) <= limit)
        return i + 1, tf.where(tf.logical_and(outside(z), accepted), proposal, z)

    _, z = tf.while_loop(cond, body, [tf.constant(0, tf.int32), z])
    return tf.clip_by_value(z, -limit, limit)


def noise_for_seeds(seeds, truncations, z_dim: int, max_rounds: int = MAX_TRUNCATION_ROUNDS) -> tf.Tensor:
    """float32 [batch, z_dim]: row i drawn from `seeds[i]` (int64 [batch]) alone, with the key (seed, 0),
    truncated at `truncations[i]` (float32 [batch]; 0: none). Row i depends only on (seed[i],
    truncation[i]), never on the other rows. The truncations are checked first: a negative or non-finite
    one fails with InvalidArgumentError naming it (:func:`truncation_checks`)."""
    seeds = tf.convert_to_tensor(seeds, tf.int64)
    truncations = tf.convert_to_tensor(truncations, tf.float32)
    with tf.control_dependencies(truncation_checks(truncations)):
        truncations = tf.identity(truncations)
    zero = tf.constant(0, tf.int64)
    return tf.map_fn(lambda row: stateless_truncated_normal([int(z_dim)], tf.stack([row[0], zero]), row[1], max_rounds),
                     (seeds, truncations), fn_output_signature=tf.TensorSpec([int(z_dim)], tf.float32),
                     parallel_iterations=16)


# --- the numpy face: from an explicit seed -------------------------------------------------------------

def _rng(seed) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def truncate_noise(z, truncation, seed=None) -> np.ndarray:
    """Return a copy of `z` in which every entry with ``|z| > truncation`` is redrawn inside.

    Entries already inside ``[-t, t]`` are kept. If `z` is standard normal, the result is exactly
    standard normal truncated to ``[-t, t]``: redrawn entries come from that truncated law (the
    proposals of the module docstring). `truncation` None or 0 returns `z` unchanged (as float32).
    """
    t = check_truncation(truncation)
    z = np.array(z, dtype=np.float32, copy=True)
    if t is None:
        return z
    rng = _rng(seed)
    flat = z.reshape(-1)
    outside = np.flatnonzero(np.abs(flat) > t)
    while outside.size:
        if t < UNIFORM_PROPOSAL_BELOW:
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
    """float32 samples of N(0, 1) truncated to ``[-truncation, truncation]`` (plain N(0, 1) for None or 0)."""
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
