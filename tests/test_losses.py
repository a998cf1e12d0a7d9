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
