"""Sheets of samples from a trained generator: class sheets, interpolations, truncation rows, sample dumps.

Everything here works with a *sample function* ``fn(z, labels) -> images``: z float32 [B, z_dim],
labels int32 [B], images float [B, H, W, C] in [-1, 1]. :func:`as_sample_fn` makes one from

* a Keras :class:`~sagan_tf.models.Generator` (called as ``G((z, labels), training=False)``), or
* any callable that already has that signature (a SavedModel signature wrapped by the caller,
  a fake generator in a test).

Noise is drawn with numpy from an explicit seed, so a sheet is reproducible and independent of
TensorFlow's global RNG state.

Truncation (``truncation=t``, see :mod:`sagan_tf.sampling.noise`): z ~ N(0, I) truncated to ``[-t, t]``. A Keras
generator then samples with its batch-norm statistics recomputed for that truncation
(:func:`sagan_tf.sampling.standing_statistics.truncation_statistics`, restored afterwards), as BigGAN does: the
stored statistics belong to untruncated z. To sample with the stored statistics, pass
``as_sample_fn(generator)`` instead of the generator; any other callable (an exported generator) is used
as it is.

Class interpolation: the generator's only class input is an integer label that selects rows of
the conditional batch-norm gain/bias tables, and it has no public hook that accepts a mixture of
classes. Blending the tables would mean reaching into the layers' private embeddings, so
:func:`class_pair_sheet` (the ``interpolate_class`` mode of ``trainers.sample``) does *not*
interpolate between classes: it shows the same z under each of the two (or more) labels, one row
per label, which is what can be done honestly with the public interface.
"""
from __future__ import annotations

import contextlib
import dataclasses
import itertools
from typing import Callable, Iterator, Sequence

import keras
import numpy as np
import tensorflow as tf

from sagan_tf.sampling.images import image_grid, to_uint8
from sagan_tf.sampling.noise import check_truncation, sample_noise, truncate_noise
from sagan_tf.sampling.standing_statistics import truncation_statistics

__all__ = [
    "SampleFn",
    "Sheet",
    "as_sample_fn",
    "truncated_sample_fn",
    "generate",
    "balanced_labels",
    "check_labels",
    "class_sheet",
    "class_pair_sheet",
    "interpolate",
    "z_interpolation_sheet",
    "truncation_sheet",
    "generate_samples",
    "default_rows",
    "SHEET_MODES",
    "sheet",
]

SampleFn = Callable[[np.ndarray, np.ndarray], np.ndarray]

def as_sample_fn(generator) -> SampleFn:
    """``fn(z, labels) -> float32 ndarray images`` for a Keras generator or a callable of that form."""
    if isinstance(generator, keras.Model):
        @tf.function(reduce_retracing=True)
        def run(z, labels):
            return generator((z, labels), training=False)

        return lambda z, labels: np.asarray(run(np.asarray(z, np.float32), np.asarray(labels, np.int32)))
    if callable(generator):
        return lambda z, labels: np.asarray(generator(np.asarray(z, np.float32), np.asarray(labels, np.int32)),
                                            dtype=np.float32)
    raise TypeError(f"expected a keras generator or a callable fn(z, labels), got {type(generator).__name__}")


@contextlib.contextmanager
def truncated_sample_fn(generator, truncation, sample_fn: SampleFn | None = None) -> Iterator[SampleFn]:
    """The sample function of `generator` for noise truncated at `truncation` (None: untruncated): for a
    Keras generator and a truncation, the block runs inside `truncation_statistics` (batch-norm
    statistics of the truncated noise, the generator's own restored on leaving); otherwise it is
    `as_sample_fn(generator)` as it is. `sample_fn`: that function, made once by the caller (a sheet
    of several truncations then traces the generator once)."""
    sample_fn = sample_fn or as_sample_fn(generator)
    if isinstance(generator, keras.Model) and check_truncation(truncation) is not None:
        with truncation_statistics(generator, truncation):
            yield sample_fn
    else:
        yield sample_fn


def generate(sample_fn: SampleFn, z, labels, batch_size: int = 64) -> np.ndarray:
    """Images float32 [N, H, W, C] for z [N, z_dim] and labels [N], `batch_size` at a time."""
    z = np.asarray(z, np.float32)
    labels = np.asarray(labels, np.int32).reshape(-1)
    if z.ndim != 2 or z.shape[0] != labels.shape[0]:
        raise ValueError(f"z must be [N, z_dim] with one label per row, got z {z.shape} and labels {labels.shape}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    batches = [np.asarray(sample_fn(z[i:i + batch_size], labels[i:i + batch_size]), np.float32)
               for i in range(0, z.shape[0], batch_size)]
    return np.concatenate(batches)


def balanced_labels(num: int, labels: Sequence[int]) -> np.ndarray:
    """int32 [num]: `labels` repeated in order (sample i gets labels[i % len(labels)])."""
    labels = np.asarray(labels, np.int32).reshape(-1)
    if labels.size == 0:
        raise ValueError("at least one label is needed")
    return labels[np.arange(int(num)) % labels.size]


def check_labels(labels: Sequence[int], num_classes: int) -> list[int]:
    """`labels` as ints, each a class of a generator with `num_classes` (0: unconditional, label 0 only);
    a ValueError names the ones outside."""
    labels = [int(label) for label in labels]
    if not labels:
        raise ValueError("at least one label is needed")
    limit = max(int(num_classes), 1)  # an unconditional generator ignores its (zero) labels
    bad = [label for label in labels if not 0 <= label < limit]
    if bad:
        raise ValueError(f"labels {bad} are outside [0, {limit}) for a generator with num_classes={num_classes}")
    return labels


@dataclasses.dataclass
class Sheet:
    """A rows x columns sheet of samples.

    images: float32 [rows, columns, H, W, C] in [-1, 1]; labels: int32 [rows, columns];
    z: float32 [rows, columns, z_dim]; row_names: one caption per row (a label, a truncation...).
    """
    images: np.ndarray
    labels: np.ndarray
    z: np.ndarray
    row_names: list

    @property
    def rows(self) -> int:
        return int(self.images.shape[0])

    @property
    def columns(self) -> int:
        return int(self.images.shape[1])

    def grid(self) -> np.ndarray:
        """The sheet as one uint8 image [rows*H, columns*W, C]."""
        flat = self.images.reshape((-1,) + self.images.shape[2:])
        return image_grid(to_uint8(flat), self.rows)


def _sheet(generator, z, labels, row_names, batch_size, row_truncations):
    """The Sheet of z [rows, columns, z_dim] and labels [rows, columns]; row r sampled for the truncation
    row_truncations[r] (consecutive rows with the same one in one go)."""
    rows, columns = labels.shape
    images, plain = [], as_sample_fn(generator)
    for truncation, group in itertools.groupby(range(rows), key=lambda row: row_truncations[row]):
        group = list(group)
        with truncated_sample_fn(generator, truncation, plain) as sample_fn:
            images.append(generate(sample_fn, z[group].reshape(len(group) * columns, -1), labels[group].reshape(-1),
                                   batch_size))
    images = np.concatenate(images)
    return Sheet(images.reshape((rows, columns) + images.shape[1:]), labels.astype(np.int32),
                 z.astype(np.float32), list(row_names))


def class_sheet(generator, labels: Sequence[int], columns: int, z_dim: int, num_classes: int,
                truncation=None, seed=0, shared_noise: bool = False, batch_size: int = 64) -> Sheet:
    """One row per requested label, `columns` samples each.

    With ``shared_noise=False`` every cell has its own z (shows each class's variety); with
    ``shared_noise=True`` column j uses the same z in every row (shows what the label alone
    changes). The generator is called with exactly the labels in ``Sheet.labels``.
    """
    labels = check_labels(labels, num_classes)
    rng = np.random.default_rng(seed)
    if shared_noise:
        z = np.broadcast_to(sample_noise(columns, z_dim, truncation, rng), (len(labels), columns, z_dim))
    else:
        z = sample_noise(len(labels) * columns, z_dim, truncation, rng).reshape(len(labels), columns, z_dim)
    grid_labels = np.repeat(np.asarray(labels, np.int32)[:, None], columns, axis=1)
    return _sheet(generator, np.ascontiguousarray(z), grid_labels, [f"class {label}" for label in labels],
                  batch_size, [truncation] * len(labels))


def class_pair_sheet(generator, labels: Sequence[int], columns: int, z_dim: int, num_classes: int,
                     truncation=None, seed=0, batch_size: int = 64) -> Sheet:
    """The same `columns` noise vectors under each label in `labels` (usually two), one row per label.

    This stands in for interpolation *between* classes, which the generator's public interface
    cannot do (see the module docstring): compare rows to see what the class changes for a fixed z.
    """
    if len(labels) < 2:
        raise ValueError(f"class_pair_sheet needs at least two labels, got {list(labels)}")
    return class_sheet(generator, labels, columns, z_dim, num_classes, truncation, seed, shared_noise=True,
                       batch_size=batch_size)


def interpolate(z0, z1, num_steps: int, method: str = "linear") -> np.ndarray:
    """`num_steps` points from z0 to z1 (both included): [num_steps, z_dim].

    ``method="linear"`` is a straight line (stays inside a truncation box, since the box is convex);
    ``"slerp"`` follows the great circle, keeping the norm typical of high-dimensional Gaussians.
    """
    if num_steps < 2:
        raise ValueError(f"num_steps must be >= 2, got {num_steps}")
    z0, z1 = np.asarray(z0, np.float64), np.asarray(z1, np.float64)
    alphas = np.linspace(0.0, 1.0, num_steps)[:, None]
    if method == "linear":
        return ((1 - alphas) * z0 + alphas * z1).astype(np.float32)
    if method == "slerp":
        n0, n1 = np.linalg.norm(z0), np.linalg.norm(z1)
        cos = np.clip(np.dot(z0, z1) / max(n0 * n1, 1e-12), -1.0, 1.0)
        omega = np.arccos(cos)
        if omega < 1e-6:  # (anti-)parallel endpoints: fall back to the straight line
            return ((1 - alphas) * z0 + alphas * z1).astype(np.float32)
        result = (np.sin((1 - alphas) * omega) * z0 + np.sin(alphas * omega) * z1) / np.sin(omega)
        return result.astype(np.float32)
    raise ValueError(f"unknown interpolation method {method!r}; expected 'linear' or 'slerp'")


def z_interpolation_sheet(generator, labels: Sequence[int], num_steps: int, z_dim: int, num_classes: int,
                          truncation=None, seed=0, method: str = "linear", batch_size: int = 64) -> Sheet:
    """One row per label: z interpolated between two random endpoints (own pair per row) at that fixed class."""
    labels = check_labels(labels, num_classes)
    rng = np.random.default_rng(seed)
    ends = sample_noise(2 * len(labels), z_dim, truncation, rng).reshape(len(labels), 2, z_dim)
    z = np.stack([interpolate(a, b, num_steps, method) for a, b in ends])
    grid_labels = np.repeat(np.asarray(labels, np.int32)[:, None], num_steps, axis=1)
    return _sheet(generator, z, grid_labels, [f"class {label}" for label in labels], batch_size,
                  [truncation] * len(labels))


def truncation_sheet(generator, truncations: Sequence, columns: int, z_dim: int, num_classes: int,
                     labels: Sequence[int] | None = None, seed=0, batch_size: int = 64) -> Sheet:
    """One row per truncation value; column j has the same label and the same base noise in every row.

    The base noise is one N(0, 1) draw; each row truncates it with :func:`truncate_noise` (same
    resampling seed per row), so coordinates already inside a row's box are unchanged and the rows
    differ only where truncation acts. Labels cycle through `labels` (default: all classes).
    """
    if not truncations:
        raise ValueError("at least one truncation value is needed")
    labels = check_labels(labels if labels is not None else range(max(num_classes, 1)), num_classes)
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((columns, z_dim))
    resample_seed = int(rng.integers(2 ** 31))
    z = np.stack([truncate_noise(base, t, np.random.default_rng(resample_seed)) for t in truncations])
    grid_labels = np.broadcast_to(balanced_labels(columns, labels), (len(truncations), columns))
    names = ["no truncation" if check_truncation(t) is None else f"truncation {float(t):g}" for t in truncations]
    return _sheet(generator, z, np.ascontiguousarray(grid_labels), names, batch_size, list(truncations))


def generate_samples(generator, num: int, z_dim: int, num_classes: int, labels: Sequence[int] | None = None,
                     truncation=None, seed=0, batch_size: int = 64):
    """`num` samples as (uint8 images [num, H, W, C], int32 labels [num]), generated `batch_size` at a time.

    Labels cycle through `labels` (default: every class), so classes are balanced. Noise is drawn
    per batch from one seeded stream, so memory holds one float batch plus the uint8 result.
    """
    if num < 1:
        raise ValueError(f"num must be >= 1, got {num}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    all_labels = balanced_labels(num, check_labels(labels if labels is not None else range(max(num_classes, 1)),
                                                    num_classes))
    rng = np.random.default_rng(seed)
    images = None
    with truncated_sample_fn(generator, truncation) as sample_fn:
        for start in range(0, num, batch_size):
            batch_labels = all_labels[start:start + batch_size]
            batch = to_uint8(sample_fn(sample_noise(batch_labels.size, z_dim, truncation, rng), batch_labels))
            if images is None:
                images = np.empty((num,) + batch.shape[1:], np.uint8)
            images[start:start + batch.shape[0]] = batch
    return images, all_labels


def default_rows(num_classes: int, limit: int = 10) -> list[int]:
    """The labels a sheet shows when none are asked for: every class, or `limit` spread evenly over them."""
    classes = max(num_classes, 1)
    if classes <= limit:
        return list(range(classes))
    return sorted({int(v) for v in np.linspace(0, classes - 1, limit).round()})


SHEET_MODES = ("sheet", "interpolate_z", "interpolate_class", "truncation")


def sheet(mode: str, generator, labels: Sequence[int] | None, columns: int, z_dim: int, num_classes: int,
          truncation=None, truncations: Sequence = (None, 1.0, 0.5), interpolation: str = "linear", seed=0,
          batch_size: int = 64) -> Sheet:
    """The sheet of one of :data:`SHEET_MODES` (`labels` None: :func:`default_rows`):

    * ``sheet``: one row per label, `columns` samples each;
    * ``interpolate_z``: per label, z interpolated between two draws in `columns` (>= 2) steps;
    * ``interpolate_class``: the same z under each of (the first two of) the labels (see the module doc);
    * ``truncation``: one row per threshold of `truncations`, the same z truncated each time.
    """
    rows = list(labels) if labels is not None else default_rows(num_classes)
    common = dict(z_dim=z_dim, num_classes=num_classes, seed=seed, batch_size=batch_size)
    if mode == "sheet":
        return class_sheet(generator, rows, columns, truncation=truncation, **common)
    if mode == "interpolate_z":
        return z_interpolation_sheet(generator, rows, max(columns, 2), truncation=truncation, method=interpolation,
                                     **common)
    if mode == "interpolate_class":
        pair = rows if labels is not None else rows[:2]
        if len(pair) < 2:
            raise ValueError(f"interpolate_class needs two labels, got {pair}")
        return class_pair_sheet(generator, pair, columns, truncation=truncation, **common)
    if mode == "truncation":
        return truncation_sheet(generator, truncations, columns, labels=labels, **common)
    raise ValueError(f"unknown sheet mode {mode!r}; one of {SHEET_MODES}")
