"""Metrics checked against closed forms and direct (naive) numpy / scipy computations."""
import numpy as np
import pytest
import scipy.linalg
from scipy.special import softmax

from sagan_tf.evaluation import metrics


def _rng(seed=0):
    return np.random.default_rng(seed)


# ----------------------------------------------------------------------------------------------
# FID
# ----------------------------------------------------------------------------------------------

def _fid_with_scipy_sqrtm(a, b):
    """The textbook formula as in the TTUR / pytorch-fid reference code."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def test_fid_matches_scipy_sqrtm_on_random_data():
    rng = _rng(1)
    a = rng.normal(size=(300, 12))
    b = rng.normal(size=(250, 12)) @ rng.normal(size=(12, 12)) * 0.5 + 0.3
    expected = _fid_with_scipy_sqrtm(a, b)
    assert expected > 1.0
    assert metrics.frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)


def test_fid_closed_form_for_diagonal_gaussians():
    rng = _rng(2)
    mu1, mu2 = rng.normal(size=7), rng.normal(size=7)
    var1, var2 = rng.uniform(0.1, 3.0, size=7), rng.uniform(0.1, 3.0, size=7)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(var1 + var2 - 2 * np.sqrt(var1 * var2))
    got = metrics.frechet_distance_from_stats(mu1, np.diag(var1), mu2, np.diag(var2))
    assert got == pytest.approx(expected, rel=1e-12)


def test_fid_of_mean_shift_is_squared_shift_norm():
    x = _rng(3).normal(size=(100, 6))
    shift = np.array([1.0, -2.0, 0.5, 0.0, 0.0, 3.0])
    assert metrics.frechet_distance(x, x + shift) == pytest.approx(shift @ shift, rel=1e-9)


def test_fid_of_identical_sets_is_zero_and_argument_order_does_not_matter():
    rng = _rng(4)
    x = rng.normal(size=(200, 16))
    y = rng.normal(size=(150, 16)) * 2.0
    assert metrics.frechet_distance(x, x) == pytest.approx(0.0, abs=1e-9)
    assert metrics.frechet_distance(x, y) == pytest.approx(metrics.frechet_distance(y, x), rel=1e-10)


def test_fid_with_singular_covariances_is_finite_and_matches_nuclear_norm_reference():
    # N < D: both covariances have rank N - 1, the regime where scipy's sqrtm of sigma1 @ sigma2
    # is ill-posed. Reference: with sigma = A^T A, tr sqrtm(sigma1 sigma2) equals the nuclear norm
    # of A1 A2^T, a small [N1, N2] matrix whose SVD is accurate; no covariance or sqrtm is formed.
    rng = _rng(5)
    a = rng.normal(size=(10, 40))
    b = rng.normal(size=(12, 40)) * 1.5 + 0.2
    a1 = (a - a.mean(0)) / np.sqrt(len(a) - 1)
    a2 = (b - b.mean(0)) / np.sqrt(len(b) - 1)
    trace_sqrt = np.linalg.svd(a1 @ a2.T, compute_uv=False).sum()
    expected = (np.sum((a.mean(0) - b.mean(0)) ** 2) + np.sum(a1 ** 2) + np.sum(a2 ** 2)
                - 2 * trace_sqrt)
    got = metrics.frechet_distance(a, b)
    assert np.isfinite(got)
    assert got == pytest.approx(expected, rel=1e-11)


def test_fid_rejects_nan_instead_of_returning_it():
    x = _rng(6).normal(size=(20, 3))
    x[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        metrics.frechet_distance(x, x)


def test_streaming_stats_match_numpy_cov():
    x = _rng(7).normal(size=(103, 5)) * 10 + 1000.0  # large offset: tests the stable update
    acc = metrics.GaussianStatsAccumulator()
    for batch in np.array_split(x, [1, 40, 41, 90]):
        acc.update(batch)
    assert acc.count == 103
    np.testing.assert_allclose(acc.mean, x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(acc.covariance, np.cov(x, rowvar=False), rtol=1e-9)


# ----------------------------------------------------------------------------------------------
# Inception score
# ----------------------------------------------------------------------------------------------

def test_inception_score_of_uniform_predictions_is_one():
    mean, std = metrics.inception_score(np.zeros((50, 10)), splits=5)
    assert mean == pytest.approx(1.0, abs=1e-12)
    assert std == pytest.approx(0.0, abs=1e-12)


def test_inception_score_of_confident_evenly_spread_predictions_is_num_classes():
    num_classes = 7
    labels = np.arange(10 * num_classes) % num_classes  # each of the 10 splits holds every class
    logits = 1000.0 * np.eye(num_classes)[labels]  # exp(1000) would overflow a naive softmax
    mean, std = metrics.inception_score(logits, splits=10)
    assert mean == pytest.approx(num_classes, rel=1e-9)
    assert std == pytest.approx(0.0, abs=1e-9)


def test_inception_score_matches_naive_formula():
    logits = _rng(8).normal(size=(60, 5)) * 3.0
    splits = 3
    scores = []
    for part in np.split(logits, splits):
        p = softmax(part, axis=1)
        py = p.mean(0, keepdims=True)
        scores.append(np.exp(np.mean(np.sum(p * np.log(p / py), axis=1))))
    mean, std = metrics.inception_score(logits, splits=splits)
    assert mean == pytest.approx(np.mean(scores), rel=1e-10)
    assert std == pytest.approx(np.std(scores), rel=1e-8)
    assert mean > 1.5  # the check above would be vacuous for near-uniform predictions


# ----------------------------------------------------------------------------------------------
# KID
# ----------------------------------------------------------------------------------------------

def _naive_unbiased_mmd2(x, y, degree, gamma, coef0):
    k = lambda u, v: (gamma * np.dot(u, v) + coef0) ** degree  # noqa: E731
    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


@pytest.mark.parametrize("degree,gamma,coef0", [(3, None, 1.0), (2, 0.3, 0.5)])
def test_kid_with_one_whole_set_subset_matches_naive_mmd(degree, gamma, coef0):
    rng = _rng(9)
    x = rng.normal(size=(15, 4))
    y = rng.normal(size=(15, 4)) + 0.7
    expected = _naive_unbiased_mmd2(x, y, degree, 1 / 4 if gamma is None else gamma, coef0)
    mean, std = metrics.kernel_inception_distance(
        x, y, num_subsets=1, subset_size=1000, degree=degree, gamma=gamma, coef0=coef0)
    assert mean == pytest.approx(expected, rel=1e-10)
    assert std == 0.0


def test_kid_is_near_zero_for_same_distribution_and_positive_for_shifted():
    rng = _rng(10)
    real = rng.normal(size=(400, 8))
    same = rng.normal(size=(400, 8))
    shifted = rng.normal(size=(400, 8)) + 0.5
    kid_same, std_same = metrics.kernel_inception_distance(real, same, num_subsets=20, subset_size=200)
    kid_shift, _ = metrics.kernel_inception_distance(real, shifted, num_subsets=20, subset_size=200)
    assert abs(kid_same) < 0.02
    assert kid_shift > 0.1
    assert kid_shift > 10 * (abs(kid_same) + std_same)


def test_kid_is_reproducible_from_seed_and_clips_subset_size():
    rng = _rng(11)
    a, b = rng.normal(size=(30, 3)), rng.normal(size=(50, 3))
    first = metrics.kernel_inception_distance(a, b, num_subsets=5, subset_size=1000, seed=3)
    again = metrics.kernel_inception_distance(a, b, num_subsets=5, subset_size=1000, seed=3)
    other = metrics.kernel_inception_distance(a, b, num_subsets=5, subset_size=1000, seed=4)
    assert first == again
    assert first != other


# ----------------------------------------------------------------------------------------------
# Precision / recall
# ----------------------------------------------------------------------------------------------

def _naive_precision_recall(real, fake, k):
    def radii(x):
        d = np.linalg.norm(x[:, None, :] - x[None, :, :], axis=-1)
        return np.sort(d, axis=1)[:, k]  # column 0 is the point itself

    def coverage(manifold, r, queries):
        d = np.linalg.norm(queries[:, None, :] - manifold[None, :, :], axis=-1)
        return np.mean([np.any(d[i] <= r) for i in range(len(queries))])

    return coverage(real, radii(real), fake), coverage(fake, radii(fake), real)


def test_precision_recall_matches_brute_force():
    rng = _rng(12)
    real = rng.normal(size=(40, 5))
    fake = rng.normal(size=(50, 5)) * 0.6 + 0.8  # partial overlap, narrower: precision != recall
    expected = _naive_precision_recall(real, fake, k=3)
    assert 0.0 < expected[0] < 1.0 and 0.0 < expected[1] < 1.0 and expected[0] != expected[1]
    got = metrics.precision_recall(real, fake, k=3, batch_size=7)  # batches that don't divide N
    assert got == pytest.approx(expected, abs=1e-12)


def test_precision_recall_of_identical_sets_is_one_and_of_far_apart_sets_is_zero():
    x = _rng(13).normal(size=(60, 8))
    assert metrics.precision_recall(x, x.copy(), k=3) == (1.0, 1.0)
    assert metrics.precision_recall(x, x + 100.0, k=3) == (0.0, 0.0)
