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
    """Wide kernels (fan_in < filters: [8, 64], [3, 3, 2, 40] as [18, 40]) take the small Gram matrix
    WWᵀ, tall and square ones WᵀW: either way the value and gradient of the off-diagonal formula on WᵀW,
    to float64 rounding."""
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
    # float32 kernels (computed in float32) against the float64 reference: the value within 1e-5 relative,
    # the gradient within 1e-5 of its largest entry (measured: ≤ 3e-7 and ≤ 4e-7 for these shapes; the
    # kernel's own rounding to float32 is ~6e-8 relative).
    as_float32 = tf.Variable(kernel.astype(np.float32))
    with tf.GradientTape() as tape:
        penalty32 = orthogonal_penalty([as_float32])
    assert penalty32.dtype == tf.float32
    np.testing.assert_allclose(float(penalty32), expected, rtol=1e-5)
    np.testing.assert_allclose(tape.gradient(penalty32, as_float32).numpy(), expected_grad, rtol=0,
                               atol=1e-5 * np.abs(expected_grad).max())


def test_orthogonal_penalty_sums_in_float32_unless_every_kernel_is_float64():
    import tensorflow as tf

    from sagan_tf.losses import orthogonal_penalty
    rng = np.random.default_rng(3)
    kernels = [rng.standard_normal((3, 7)), rng.standard_normal((6, 2))]
    mixed = orthogonal_penalty([tf.constant(kernels[0]), tf.constant(kernels[1], tf.float32)])
    assert mixed.dtype == tf.float32
    np.testing.assert_allclose(float(mixed), sum(_naive_penalty_and_gradient(k)[0] for k in kernels), rtol=1e-5)
    empty = orthogonal_penalty([])
    assert empty.dtype == tf.float32 and float(empty) == 0.0


@pytest.mark.parametrize("shape", [(4, 20000), (20000, 4)])
def test_orthogonal_penalty_of_a_very_wide_or_tall_kernel_forms_only_the_small_gram_matrix(shape):
    """[4, 20000], like G's input layer at 128² ([z, 16384]): WᵀW would be 20000² (1.6 GB in float32,
    3.2 GB here in float64). No tensor of the traced penalty and gradient is larger than the kernel
    itself, in either orientation (a tall kernel must not form WWᵀ either); value and gradient checked
    against the identity with the columns' norms in numpy."""
    import tensorflow as tf

    from sagan_tf.losses import orthogonal_penalty
    w = np.random.default_rng(2).standard_normal(shape)
    variable = tf.Variable(w, dtype=tf.float64)

    @tf.function
    def penalty_and_gradient():
        with tf.GradientTape() as tape:
            penalty = orthogonal_penalty([variable])
        return penalty, tape.gradient(penalty, variable)

    graph = penalty_and_gradient.get_concrete_function().graph
    sizes = [output.shape.num_elements() for op in graph.get_operations() for output in op.outputs]
    assert None not in sizes, "every shape is static"
    assert max(sizes) <= w.size, f"a tensor of {max(sizes)} elements: the {max(shape)}² Gram matrix"
    penalty, gradient = penalty_and_gradient()
    if shape[0] > shape[1]:  # tall: the naive reference's WᵀW is only 4²
        expected, expected_grad = _naive_penalty_and_gradient(w)
    else:  # ‖WᵀW ⊙ (1 − I)‖²_F = ‖WWᵀ‖²_F − Σ_j ‖w_j‖⁴; 2W(WᵀW ⊙ (1 − I)) = 2(WWᵀW − W·diag(‖w_j‖²))
        gram, norms = w @ w.T, np.sum(w ** 2, axis=0)
        expected, expected_grad = 0.5 * (np.sum(gram ** 2) - np.sum(norms ** 2)), 2 * (gram @ w - w * norms)
    np.testing.assert_allclose(float(penalty), expected, rtol=1e-12)
    np.testing.assert_allclose(gradient.numpy(), expected_grad, rtol=1e-9, atol=1e-9)
