"""Losses against their formulas."""
import numpy as np
import pytest

from sagan_tf.losses import get_losses

REAL = np.array([2.0, 0.5, -1.0, 1.0], np.float32)
FAKE = np.array([-2.0, 0.3, 1.5, -1.0], np.float32)


def test_hinge_matches_paper_formula():
    d_loss, g_loss = get_losses("hinge")
    np.testing.assert_allclose(d_loss(REAL, FAKE).numpy(), np.maximum(0, 1 - REAL) + np.maximum(0, 1 + FAKE))
    np.testing.assert_allclose(g_loss(FAKE).numpy(), -FAKE)
    assert float(np.mean(d_loss(REAL, FAKE).numpy())) == pytest.approx((0 + .5 + 2 + 0) / 4 + (0 + 1.3 + 2.5 + 0) / 4)


def test_non_saturating_matches_formula():
    d_loss, g_loss = get_losses("non_saturating")
    softplus = lambda x: np.log1p(np.exp(x))
    np.testing.assert_allclose(d_loss(REAL, FAKE).numpy(), softplus(-REAL) + softplus(FAKE), rtol=1e-6)
    np.testing.assert_allclose(g_loss(FAKE).numpy(), softplus(-FAKE), rtol=1e-6)


def test_unknown_loss_is_named():
    with pytest.raises(ValueError, match="'wgan'"):
        get_losses("wgan")


def _naive_penalty_and_gradient(kernel):
    w = kernel.reshape(-1, kernel.shape[-1]).astype(np.float64)
    off = (w.T @ w) * (1 - np.eye(w.shape[1]))
    return 0.5 * np.sum(off ** 2), (2 * w @ off).reshape(kernel.shape)  # BigGAN's update: 2 W (WᵀW ⊙ (1 − I))


def test_orthogonal_penalty_and_its_gradient_match_biggans_formula():
    import tensorflow as tf

    from sagan_tf.losses import orthogonal_penalty
    rng = np.random.default_rng(0)
    kernels = [rng.standard_normal((5, 3)).astype(np.float32), rng.standard_normal((3, 3, 2, 4)).astype(np.float32)]
    variables = [tf.Variable(k) for k in kernels]
    with tf.GradientTape() as tape:
        penalty = orthogonal_penalty(variables)
    grads = tape.gradient(penalty, variables)
    naive = [_naive_penalty_and_gradient(k) for k in kernels]
    assert float(penalty) == pytest.approx(sum(p for p, _ in naive), rel=1e-5)
    for grad, (_, expected) in zip(grads, naive):
        np.testing.assert_allclose(grad.numpy(), expected, rtol=1e-4, atol=1e-5)
    # Orthogonal filters of any norms cost nothing: only the overlaps between filters count.
    q, _ = np.linalg.qr(rng.standard_normal((6, 4)))
    assert float(orthogonal_penalty([(q * [1.0, 3.0, 0.5, 2.0]).astype(np.float32)])) == pytest.approx(0, abs=1e-8)


@pytest.mark.parametrize("shape", [(8, 64), (3, 3, 2, 40), (5, 5), (20, 6)])
def test_orthogonal_penalty_is_the_off_diagonal_formula_in_float64_for_wide_tall_and_square_kernels(shape):
    """Wide kernels (fan_in < filters) take the small Gram matrix WWᵀ: the same value and gradient as
    the off-diagonal formula on WᵀW, to float64 rounding."""
    import tensorflow as tf

    from sagan_tf.losses import orthogonal_penalty
    kernel = np.random.default_rng(1).standard_normal(shape)
    variable = tf.Variable(kernel, dtype=tf.float64)
    with tf.GradientTape() as tape:
        penalty = orthogonal_penalty([variable])
    expected, expected_grad = _naive_penalty_and_gradient(kernel)
    assert penalty.dtype == tf.float64
    np.testing.assert_allclose(float(penalty), expected, rtol=1e-12)
    np.testing.assert_allclose(tape.gradient(penalty, variable).numpy(), expected_grad, rtol=1e-10, atol=1e-10)
    # float32 kernels: the same within float32 rounding of sums over at most 64² terms.
    as_float32 = tf.Variable(kernel.astype(np.float32))
    np.testing.assert_allclose(float(orthogonal_penalty([as_float32])), expected, rtol=1e-5)


def test_orthogonal_penalty_of_a_very_wide_kernel_never_forms_its_filters_gram_matrix():
    """[4, 20000], like G's input layer at 128² ([z, 16384]): WᵀW would be 20000² (1.6 GB in float32).
    Value and gradient from WWᵀ, checked against the identity with the columns' norms in numpy."""
    import tensorflow as tf

    from sagan_tf.losses import orthogonal_penalty
    w = np.random.default_rng(2).standard_normal((4, 20000))
    variable = tf.Variable(w, dtype=tf.float64)
    with tf.GradientTape() as tape:
        penalty = orthogonal_penalty([variable])
    gram, norms = w @ w.T, np.sum(w ** 2, axis=0)
    np.testing.assert_allclose(float(penalty), 0.5 * (np.sum(gram ** 2) - np.sum(norms ** 2)), rtol=1e-12)
    np.testing.assert_allclose(tape.gradient(penalty, variable).numpy(), 2 * (gram @ w - w * norms), rtol=1e-9,
                               atol=1e-9)
