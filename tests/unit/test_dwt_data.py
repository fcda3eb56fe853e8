"""dwt_mitosis inputs: any image as users have it becomes the RGB uint8 both phases take."""

from __future__ import annotations

import numpy as np
import pytest

from microrepro.common.errors import DataError
from microrepro.reproductions.dwt_mitosis.data import to_rgb8


def test_to_rgb8_accepts_grey_rgba_16_bit_and_float():
    rgb = np.random.default_rng(0).integers(0, 256, (6, 5, 3)).astype(np.uint8)
    np.testing.assert_array_equal(to_rgb8(rgb), rgb)
    rgba = np.dstack([rgb, np.full((6, 5), 7, np.uint8)])
    np.testing.assert_array_equal(to_rgb8(rgba), rgb)
    np.testing.assert_array_equal(to_rgb8(rgb.astype(np.uint16) * 257), rgb)
    np.testing.assert_array_equal(to_rgb8(rgb.astype(np.float32) / 255), rgb)
    np.testing.assert_array_equal(to_rgb8(rgb.astype(np.float64)), rgb)  # floats on a 0..255 scale
    grey = rgb[..., 0]
    for image in (grey, grey[..., None]):
        out = to_rgb8(image)
        assert out.shape == (6, 5, 3) and out.dtype == np.uint8
        np.testing.assert_array_equal(out[..., 2], grey)
    wide = to_rgb8(np.linspace(-10.0, 4000.0, 30).reshape(6, 5))  # another float range: min..max
    assert wide.min() == 0 and wide.max() == 255


def test_to_rgb8_rejects_other_shapes():
    with pytest.raises(DataError, match="shape"):
        to_rgb8(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(DataError, match="shape"):
        to_rgb8(np.zeros((2, 4, 4, 3), np.uint8))
