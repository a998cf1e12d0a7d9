"""Attention overlays: the hot region is where the attention weight sits, for the right query."""
import numpy as np
import pytest

from sagan_tf.models import Generator
from sagan_tf.sampling import attention_maps as am
from tests.helpers import tiny_config

SIZE = 32  # image side; the attention layer runs at 16x16 (N = 256), pooled keys at 8x8 (M = 64)


def one_hot_attention(key_cell, key_grid=(8, 8), num_queries=256, batch=1):
    """Every query puts all its weight on one key cell (row, col)."""
    attention = np.zeros((batch, num_queries, key_grid[0] * key_grid[1]), np.float32)
    attention[..., key_cell[0] * key_grid[1] + key_cell[1]] = 1.0
    return attention


def cell_mask(cell, cell_size, size=SIZE):
    mask = np.zeros((size, size), bool)
    mask[cell[0] * cell_size:(cell[0] + 1) * cell_size, cell[1] * cell_size:(cell[1] + 1) * cell_size] = True
    return mask


@pytest.mark.parametrize("key_grid, cell", [((8, 8), (2, 5)), ((16, 16), (11, 3))])
def test_all_weight_on_one_key_cell_heats_exactly_that_cells_area(key_grid, cell):
    attention = one_hot_attention(cell, key_grid)[0]
    cell_size = SIZE // key_grid[0]
    heat = am.attention_heatmaps(attention, [(28, 1)], (SIZE, SIZE))[0]
    np.testing.assert_array_equal(heat == 1.0, cell_mask(cell, cell_size))
    assert heat[~cell_mask(cell, cell_size)].max() == 0.0


def test_overlay_hottest_pixels_are_the_cell_area():
    cell, query = (2, 5), (28, 1)  # query marker far from the hot cell
    image = np.zeros((1, SIZE, SIZE, 1), np.float32)  # mid grey
    overlay = am.attention_overlays(image, one_hot_attention(cell), [query], alpha=0.6, marker_size=1)[0, 0]
    assert overlay.dtype == np.uint8 and overlay.shape == (SIZE, SIZE, 3)
    marker = np.all(overlay == am.MARKER_COLOR, axis=-1)
    assert marker[query] and marker.sum() == 5  # a cross of arm 1 at the query point
    brightness = overlay.astype(int).sum(-1)
    brightness[marker] = 0
    np.testing.assert_array_equal(brightness == brightness.max(), cell_mask(cell, 4))
    assert brightness.max() > brightness[~cell_mask(cell, 4) & ~marker].max()


def test_query_points_select_their_own_row_of_the_map():
    # Query q attends to the key cell that contains it, so each overlay's hot cell is under its query.
    attention = np.zeros((1, 256, 64), np.float32)
    for qy in range(16):
        for qx in range(16):
            attention[0, qy * 16 + qx, (qy // 2) * 8 + qx // 2] = 1.0
    points = [(3, 29), (29, 3), (17, 9)]  # asymmetric: swapping y and x would move the hot cell
    heat = am.attention_heatmaps(attention[0], points, (SIZE, SIZE))
    for (y, x), h in zip(points, heat):
        np.testing.assert_array_equal(h == 1.0, cell_mask((y // 4, x // 4), 4))


def test_scaled_and_smooth_overlays_keep_the_peak_in_the_cell():
    cell = (6, 1)
    overlays = am.attention_overlays(np.zeros((2, SIZE, SIZE, 3), np.float32), one_hot_attention(cell, batch=2),
                                     [(0, 31), (31, 31)], scale=3, smooth=True, marker_size=0)
    assert overlays.shape == (2, 2, 3 * SIZE, 3 * SIZE, 3)
    heat = am.attention_heatmaps(one_hot_attention(cell)[0], [(0, 0)], (SIZE, SIZE), smooth=True)[0]
    peak = np.unravel_index(np.argmax(heat), heat.shape)
    assert cell_mask(cell, 4)[peak]


def test_maps_that_are_not_grids_are_rejected():
    with pytest.raises(ValueError, match="grid"):
        am.attention_heatmaps(np.ones((256, 60), np.float32), [(0, 0)], (SIZE, SIZE))
    with pytest.raises(ValueError, match="outside"):
        am.attention_heatmaps(np.ones((256, 64), np.float32), [(32, 0)], (SIZE, SIZE))


def test_attention_figure_from_the_tiny_generator():
    generator = Generator(tiny_config(), dtype="float32")
    generator.build()
    z = np.random.default_rng(0).standard_normal((2, generator.spec["z_dim"])).astype(np.float32)
    figure = am.attention_figure(generator, z, np.array([0, 2], np.int32), [(4, 4), (16, 20), (30, 2)], scale=2)
    assert figure.dtype == np.uint8 and figure.shape == (2 * 2 * SIZE, 4 * 2 * SIZE, 3)
    with pytest.raises(ValueError, match="layer=1"):
        am.attention_figure(generator, z, np.array([0, 2], np.int32), layer=1)
