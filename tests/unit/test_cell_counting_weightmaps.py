"""Weight maps of the cell_counting paper (Sec. 4.2) and of its released code, on hand-built masks."""

import math

import numpy as np
import pytest
from skimage.draw import disk

from microrepro.reproductions.cell_counting.weightmaps import (
    RELEASED_MAX_WEIGHT,
    paper_weight_map,
    released_weight_map,
    weight_map,
)


def _disks(shape, centres, radius):
    mask = np.zeros(shape, np.int32)
    for k, centre in enumerate(centres, start=1):
        rr, cc = disk(centre, radius, shape=shape)
        mask[rr, cc] = k
    return mask


def test_paper_map_single_pixel_object_exact_values():
    mask = np.zeros((7, 7), np.int32)
    mask[3, 3] = 1  # a one-pixel object is its own border: d = 0 there
    w = paper_weight_map(mask, sigma=1.0, window_sigmas=10)
    assert w[3, 3] == pytest.approx(1.0 + 1.0)  # cell class weight + exp(0)
    assert w[3, 4] == pytest.approx(1.5 + math.exp(-0.5))  # d = 1
    assert w[3, 5] == pytest.approx(1.5 + math.exp(-2.0))  # d = 2
    assert w[5, 5] == pytest.approx(1.5 + math.exp(-4.0))  # d = sqrt(8)
    assert w.dtype == np.float32


def test_paper_map_distance_is_to_the_border_inside_the_cell_too():
    mask = np.zeros((9, 9), np.int32)
    mask[2:7, 2:7] = 1  # 5x5 square: border ring at rows/cols 2 and 6, centre 2 px inside
    w = paper_weight_map(mask, sigma=2.0, cell_weight=0.0, background_weight=0.0, window_sigmas=10)
    assert w[2, 4] == pytest.approx(1.0)  # on the border
    assert w[4, 4] == pytest.approx(math.exp(-4.0 / 8.0))  # centre: 2 px from the border
    assert w[0, 4] == pytest.approx(math.exp(-4.0 / 8.0))  # 2 px outside


def test_two_touching_disks_weigh_more_between_them_than_one_disk_alone():
    shape = (80, 120)
    two = _disks(shape, [(40, 40), (40, 81)], 20)  # 2 px gap (columns 60-61)
    one = np.where(two == 1, 1, 0).astype(np.int32)
    between = (40, 61)
    assert two[between] == 0 and one[between] == 0
    w_two, w_one = paper_weight_map(two), paper_weight_map(one)
    assert w_two[between] > w_one[between] + 0.9  # the second cell adds about exp(0) there
    # The sum over objects is exact: (two - bg) = (one_A - bg) + (one_B - bg) on background.
    only_b = np.where(two == 2, 1, 0).astype(np.int32)
    w_b = paper_weight_map(only_b)
    background = two == 0
    np.testing.assert_allclose(w_two[background] - 1.5, (w_one - 1.5)[background] + (w_b - 1.5)[background], atol=1e-5)


def test_paper_map_window_truncation_is_small():
    mask = _disks((200, 200), [(100, 100)], 15)
    full = paper_weight_map(mask, sigma=25.0, window_sigmas=10.0)
    windowed = paper_weight_map(mask, sigma=25.0, window_sigmas=3.0)
    assert np.max(np.abs(full - windowed)) < math.exp(-4.5) + 1e-6


def test_empty_mask_gives_class_weight_everywhere():
    w = paper_weight_map(np.zeros((5, 6), np.int32))
    np.testing.assert_array_equal(w, np.full((5, 6), 1.5, np.float32))
    np.testing.assert_array_equal(released_weight_map(np.zeros((5, 6), np.int32), maximum=None), np.ones((5, 6)))


def test_released_map_isolated_cell_is_flat_and_cells_weigh_1_5():
    mask = _disks((60, 60), [(30, 30)], 8)
    w = released_weight_map(mask, sigma=25.0, maximum=None)
    # One cell's Gaussian is <= 1 on background, and the map is clipped to >= 1: flat.
    np.testing.assert_allclose(w[mask == 0], 1.0)
    np.testing.assert_allclose(w[mask > 0], 1.5)
    normalised = released_weight_map(mask, sigma=25.0)
    assert normalised[mask > 0].max() == pytest.approx(1.5 / RELEASED_MAX_WEIGHT)


def test_released_map_between_two_cells_exact():
    mask = np.zeros((9, 15), np.int32)
    mask[4, 5] = 1
    mask[4, 9] = 2  # midpoint (4, 7) is 2 px from each
    w = released_weight_map(mask, sigma=2.0, band=100, maximum=None)
    assert w[4, 7] == pytest.approx(2 * math.exp(-4.0 / 8.0))
    assert w[4, 5] == pytest.approx(1.5)


def test_released_map_terms_only_inside_the_band():
    mask = np.zeros((9, 40), np.int32)
    mask[4, 10] = 1
    mask[4, 14] = 2
    w = released_weight_map(mask, sigma=20.0, band=5, maximum=None)  # band covers +-2 px
    assert w[4, 12] > 1.0
    assert w[4, 20] == pytest.approx(1.0)  # outside the dilation: no Gaussian term, clipped to 1


def test_weight_map_dispatch_and_errors():
    mask = _disks((20, 20), [(10, 10)], 4)
    np.testing.assert_array_equal(weight_map(mask, "none"), np.ones((20, 20), np.float32))
    np.testing.assert_allclose(weight_map(mask, "paper", sigma=3.0), paper_weight_map(mask, sigma=3.0))
    with pytest.raises(ValueError, match="unknown weight map kind"):
        weight_map(mask, "gaussian")
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        paper_weight_map(np.zeros((2, 3, 3), np.int32))
    with pytest.raises(ValueError, match="integer labels"):
        paper_weight_map(np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match="sigma"):
        paper_weight_map(mask, sigma=0)
