"""Sample-quality metrics computed from feature-network outputs (numpy, float64).

Every function here works on plain arrays of features or logits that a feature network
(:mod:`sagan_tf.evaluation.features`) produced, so the math is independent of TensorFlow and can
be checked against closed forms. All arithmetic is done in float64: FID in particular subtracts
large traces, and float32 loses several digits there.

* :func:`frechet_distance` / :func:`frechet_distance_from_stats` -- FID (Heusel et al. 2017).
* :func:`inception_score` -- IS (Salimans et al. 2016), from logits.
* :func:`kernel_inception_distance` -- KID (Binkowski et al. 2018), unbiased MMD^2 with a cubic
  polynomial kernel.
* :func:`precision_recall` -- improved precision and recall (Kynkaanniemi et al. 2019).
* :class:`GaussianStatsAccumulator` -- streaming mean/covariance so reference statistics of a
  large data set never need all its features in memory at once.

Only numpy is used at run time (scipy is a test-only dependency of this project).
"""
from __future__ import annotations

import numpy as np

__all__ = [
    "GaussianStatsAccumulator",
    "mean_and_covariance",
    "frechet_distance",
    "frechet_distance_from_stats",
    "inception_score",
    "kernel_inception_distance",
    "precision_recall",
]


def _as_feature_matrix(features, name: str, min_rows: int = 1) -> np.ndarray:
    """Return `features` as a finite float64 [N, D] matrix, or raise ValueError saying what is wrong."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D [num_samples, dim] array, got shape {x.shape}")
    if x.shape[0] < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} rows, got {x.shape[0]}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


# ----------------------------------------------------------------------------------------------
# Gaussian statistics
# ----------------------------------------------------------------------------------------------

def mean_and_covariance(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean [D] and unbiased (N-1) covariance [D, D] of features [N, D], in float64.

    The N-1 normalisation matches the reference FID implementations (TTUR, TF-GAN, pytorch-fid).
    """
    x = _as_feature_matrix(features, "features", min_rows=2)
    return x.mean(axis=0), np.cov(x, rowvar=False)


class GaussianStatsAccumulator:
    """Streaming mean and covariance of feature batches.

    Batches are merged with Chan et al.'s parallel update of (count, mean, sum of squared
    deviations), which stays accurate in float64 where the naive E[xx^T] - mu mu^T would cancel.
    Used for reference statistics over tens of thousands of images: memory is O(D^2), not O(N D).
    """

    def __init__(self):
        self.count = 0
        self._mean = None
        self._m2 = None  # sum over samples of (x - mean)(x - mean)^T

    def update(self, features) -> None:
        """Add a batch of features [B, D]."""
        x = _as_feature_matrix(features, "features")
        if self._mean is not None and x.shape[1] != self._mean.shape[0]:
            raise ValueError(f"feature dim changed from {self._mean.shape[0]} to {x.shape[1]}")
        n_b = x.shape[0]
        mean_b = x.mean(axis=0)
        centred = x - mean_b
        m2_b = centred.T @ centred
        if self._mean is None:
            self.count, self._mean, self._m2 = n_b, mean_b, m2_b
            return
        n_a = self.count
        n = n_a + n_b
        delta = mean_b - self._mean
        self._mean = self._mean + delta * (n_b / n)
        self._m2 = self._m2 + m2_b + np.outer(delta, delta) * (n_a * n_b / n)
        self.count = n

    @property
    def mean(self) -> np.ndarray:
        if self._mean is None:
            raise ValueError("no features were added")
        return self._mean.copy()

    @property
    def covariance(self) -> np.ndarray:
        """Unbiased (N-1) covariance, like :func:`mean_and_covariance`."""
        if self.count < 2:
            raise ValueError(f"a covariance needs at least 2 samples, got {self.count}")
        return self._m2 / (self.count - 1)


# ----------------------------------------------------------------------------------------------
# Frechet distance
# ----------------------------------------------------------------------------------------------

def _clip_round_off(eigvals: np.ndarray) -> np.ndarray:
    """Zero eigenvalues of a PSD matrix that are indistinguishable from round-off.

    eigh resolves eigenvalues only to about D * eps * max|eigenvalue|; below that an exact zero
    (a singular covariance) comes out as +-noise, and sqrt would turn noise of 1e-16 into 1e-8.
    """
    tol = eigvals.shape[0] * np.finfo(np.float64).eps * max(np.max(np.abs(eigvals)), 0.0)
    return np.where(eigvals > tol, eigvals, 0.0)


def _symmetric_psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Square root of a symmetric PSD matrix via eigh, zeroing round-off eigenvalues."""
    sym = (matrix + matrix.T) / 2.0
    eigvals, eigvecs = np.linalg.eigh(sym)
    return (eigvecs * np.sqrt(_clip_round_off(eigvals))) @ eigvecs.T


def _trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr(sqrtm(sigma1 @ sigma2)) for symmetric PSD sigma1, sigma2.

    sigma1 @ sigma2 is not symmetric, so its square root from a general method (scipy's
    Schur-based sqrtm) can pick up spurious imaginary parts and fail on singular inputs. But it is
    similar to the symmetric PSD matrix M = sqrt(sigma1) sigma2 sqrt(sigma1), so both have the same
    non-negative eigenvalues and tr(sqrtm(sigma1 sigma2)) = sum(sqrt(eig(M))). Two eigh calls on
    symmetric matrices are stable, always real and work for singular (N < D) covariances.
    """
    sqrt_sigma1 = _symmetric_psd_sqrt(sigma1)
    m = sqrt_sigma1 @ sigma2 @ sqrt_sigma1
    eigvals = np.linalg.eigvalsh((m + m.T) / 2.0)
    return float(np.sum(np.sqrt(_clip_round_off(eigvals))))


def frechet_distance_from_stats(mu1, sigma1, mu2, sigma2) -> float:
    """Frechet distance between the Gaussians N(mu1, sigma1) and N(mu2, sigma2).

    d^2 = ||mu1 - mu2||^2 + tr(sigma1) + tr(sigma2) - 2 tr(sqrtm(sigma1 sigma2)).

    Always returns a finite non-negative float for finite inputs: the matrix square root is taken
    through symmetric eigen-decompositions (see :func:`_trace_sqrt_product`), so singular
    covariances and round-off asymmetry are handled without NaN or imaginary parts. A result
    within round-off of zero (e.g. identical statistics) is clipped to 0.0.
    """
    mu1 = np.atleast_1d(np.asarray(mu1, dtype=np.float64))
    mu2 = np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, dtype=np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, dtype=np.float64))
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,):
        raise ValueError(f"means must be 1-D of the same length, got {mu1.shape} and {mu2.shape}")
    if sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(f"covariances must be [{d}, {d}], got {sigma1.shape} and {sigma2.shape}")
    for name, value in (("mu1", mu1), ("sigma1", sigma1), ("mu2", mu2), ("sigma2", sigma2)):
        if not np.all(np.isfinite(value)):
            raise ValueError(f"{name} contains NaN or infinite values")

    diff = mu1 - mu2
    trace_sqrt = _trace_sqrt_product(sigma1, sigma2)
    fid = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt
    return float(max(fid, 0.0))


def frechet_distance(features_a, features_b) -> float:
    """FID between two feature sets [N_a, D] and [N_b, D], each summarised by a Gaussian."""
    mu_a, sigma_a = mean_and_covariance(features_a)
    mu_b, sigma_b = mean_and_covariance(features_b)
    return frechet_distance_from_stats(mu_a, sigma_a, mu_b, sigma_b)


# ----------------------------------------------------------------------------------------------
# Inception score
# ----------------------------------------------------------------------------------------------

def _logsumexp(x: np.ndarray, axis: int, keepdims: bool = False) -> np.ndarray:
    """log(sum(exp(x))) along `axis` without overflow (shift by the max)."""
    m = np.max(x, axis=axis, keepdims=True)
    out = m + np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True))
    return out if keepdims else np.squeeze(out, axis=axis)


def inception_score(logits, splits: int = 10) -> tuple[float, float]:
    """Inception score exp(E_x[KL(p(y|x) || p(y))]) from classifier logits [N, K].

    The N samples are divided into `splits` contiguous, nearly equal parts (np.array_split, so no
    sample is dropped); p(y) is the mean prediction within each part, and the result is the mean
    and standard deviation of the per-part scores, as in Salimans et al. 2016. Everything is done
    in log space from the logits (log-softmax, log-mean-exp), so saturated predictions do not
    produce log(0).
    """
    z = _as_feature_matrix(logits, "logits")
    if not 1 <= splits <= z.shape[0]:
        raise ValueError(f"splits must be in [1, num_samples={z.shape[0]}], got {splits}")
    log_p = z - _logsumexp(z, axis=1, keepdims=True)  # log p(y|x)
    scores = []
    for part in np.array_split(log_p, splits, axis=0):
        log_py = _logsumexp(part, axis=0) - np.log(part.shape[0])  # log of mean_x p(y|x)
        kl = np.sum(np.exp(part) * (part - log_py), axis=1)
        scores.append(np.exp(np.mean(kl)))
    scores = np.asarray(scores)
    return float(scores.mean()), float(scores.std())


# ----------------------------------------------------------------------------------------------
# Kernel inception distance
# ----------------------------------------------------------------------------------------------

def _polynomial_kernel(x, y, degree, gamma, coef0):
    return (gamma * (x @ y.T) + coef0) ** degree


def _unbiased_mmd2(x: np.ndarray, y: np.ndarray, degree, gamma, coef0) -> float:
    """Unbiased MMD^2 estimate between equal-sized samples x, y [m, D]: diagonal terms excluded."""
    m = x.shape[0]
    k_xx = _polynomial_kernel(x, x, degree, gamma, coef0)
    k_yy = _polynomial_kernel(y, y, degree, gamma, coef0)
    k_xy = _polynomial_kernel(x, y, degree, gamma, coef0)
    sum_xx = k_xx.sum() - np.trace(k_xx)
    sum_yy = k_yy.sum() - np.trace(k_yy)
    return float((sum_xx + sum_yy) / (m * (m - 1)) - 2.0 * k_xy.sum() / (m * m))


def kernel_inception_distance(features_a, features_b, num_subsets: int = 100,
                              subset_size: int = 1000, degree: int = 3, gamma: float | None = None,
                              coef0: float = 1.0, seed: int = 0) -> tuple[float, float]:
    """KID: unbiased MMD^2 with the kernel k(x, y) = (gamma x.y + coef0)^degree, gamma = 1/D.

    Returns (mean, std) over `num_subsets` pairs of random subsets, each drawn without
    replacement, of `subset_size` samples from each set (clipped to the smaller set's size, as
    in Binkowski et al.'s reference code). Unlike FID the estimator is unbiased, so it can be
    slightly negative when the two distributions match. `seed` makes the subsets reproducible.
    """
    a = _as_feature_matrix(features_a, "features_a", min_rows=2)
    b = _as_feature_matrix(features_b, "features_b", min_rows=2)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature dims differ: {a.shape[1]} vs {b.shape[1]}")
    if num_subsets < 1:
        raise ValueError(f"num_subsets must be >= 1, got {num_subsets}")
    gamma = 1.0 / a.shape[1] if gamma is None else float(gamma)
    m = min(int(subset_size), a.shape[0], b.shape[0])
    if m < 2:
        raise ValueError(f"subset_size must be >= 2, got {subset_size}")
    rng = np.random.default_rng(seed)
    values = np.empty(num_subsets)
    for i in range(num_subsets):
        x = a[rng.choice(a.shape[0], m, replace=False)]
        y = b[rng.choice(b.shape[0], m, replace=False)]
        values[i] = _unbiased_mmd2(x, y, degree, gamma, coef0)
    return float(values.mean()), float(values.std())


# ----------------------------------------------------------------------------------------------
# Improved precision and recall
# ----------------------------------------------------------------------------------------------

def _squared_distance_batches(x: np.ndarray, y: np.ndarray, batch_size: int):
    """Yield (row_slice, squared distances [B, len(y)]) between row batches of x and all of y.

    Uses ||a||^2 - 2 a.b + ||b||^2 (one matmul per batch), so memory is batch_size * len(y)
    rather than len(x) * len(y) * D. Round-off negatives are clipped to 0.
    """
    y_sq = np.einsum("ij,ij->i", y, y)
    for start in range(0, x.shape[0], batch_size):
        xb = x[start:start + batch_size]
        xb_sq = np.einsum("ij,ij->i", xb, xb)
        d2 = xb_sq[:, None] - 2.0 * (xb @ y.T) + y_sq[None, :]
        yield slice(start, start + xb.shape[0]), np.maximum(d2, 0.0)


def _knn_radii_squared(x: np.ndarray, k: int, batch_size: int) -> np.ndarray:
    """Squared distance from each row of x to its k-th nearest other row of x.

    The point itself sits at distance 0, so the k-th neighbour is index k of the sorted row.
    """
    radii = np.empty(x.shape[0])
    for rows, d2 in _squared_distance_batches(x, x, batch_size):
        radii[rows] = np.partition(d2, k, axis=1)[:, k]
    return radii


def _fraction_in_manifold(manifold: np.ndarray, radii_sq: np.ndarray, queries: np.ndarray,
                          batch_size: int) -> float:
    """Fraction of `queries` inside at least one k-NN ball around a `manifold` point."""
    inside = np.zeros(queries.shape[0], dtype=bool)
    for rows, d2 in _squared_distance_batches(queries, manifold, batch_size):
        inside[rows] = np.any(d2 <= radii_sq[None, :], axis=1)
    return float(inside.mean())


def precision_recall(real_features, fake_features, k: int = 3,
                     batch_size: int = 1000) -> tuple[float, float]:
    """Improved precision and recall of Kynkaanniemi et al. 2019 (k-NN manifold estimate).

    Each set's manifold is the union of balls centred on its samples with radius the distance to
    the sample's k-th nearest neighbour in the same set. Precision is the fraction of fake samples
    inside the real manifold (are generated images realistic?); recall is the fraction of real
    samples inside the fake manifold (does the generator cover the data?). Distances are
    computed `batch_size` rows at a time, so 10k x 10k samples of 2048-d features need about
    batch_size * 10k floats of scratch memory.
    """
    real = _as_feature_matrix(real_features, "real_features")
    fake = _as_feature_matrix(fake_features, "fake_features")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"feature dims differ: {real.shape[1]} vs {fake.shape[1]}")
    if not 1 <= k < min(real.shape[0], fake.shape[0]):
        raise ValueError(f"k must be in [1, min(num_real, num_fake) - 1], got {k}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    real_radii = _knn_radii_squared(real, k, batch_size)
    fake_radii = _knn_radii_squared(fake, k, batch_size)
    precision = _fraction_in_manifold(real, real_radii, fake, batch_size)
    recall = _fraction_in_manifold(fake, fake_radii, real, batch_size)
    return precision, recall
