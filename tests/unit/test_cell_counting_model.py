"""c-ResUNet structure, parameter count and the weighted BCE on hand-built inputs."""

import math
from itertools import pairwise

import numpy as np
import pytest

from microrepro.reproductions.cell_counting.model import WeightedBCE, build_c_resunet


def _conv(k, cin, cout):
    return k * k * cin * cout + cout


def _bn(c):
    return 4 * c  # gamma, beta, moving mean, moving variance


def _residual(cin, cout, k=3, shortcut=True):
    return _bn(cin) + _conv(k, cin, cout) + _bn(cout) + _conv(k, cout, cout) + (_conv(1, cin, cout) if shortcut else 0)


def expected_parameters(filters=(16, 32, 64), bridge=128, blocks=2):
    """Parameters of the released ResUnet (050_dev_model.py, n=4), counted layer by layer."""
    total = _conv(1, 3, 1) + _bn(1)  # colour -> grey
    total += _conv(3, 1, filters[0]) + _bn(filters[0]) + _conv(3, filters[0], filters[0])  # stem
    for cin, cout in pairwise(filters):
        total += _residual(cin, cout)
    total += _residual(filters[-1], bridge, k=5)
    total += (blocks - 1) * _residual(bridge, bridge, k=5, shortcut=False)
    below = bridge
    for width in reversed(filters):
        total += 2 * 2 * below * width + width  # transposed conv
        total += _residual(2 * width, width, shortcut=False)  # shortcut = the upsampled tensor
        below = width
    return total + _conv(1, filters[0], 1)


def test_released_widths_have_1_7_million_parameters():
    model = build_c_resunet()
    assert model.count_params() == expected_parameters() == 1_709_177


def test_smaller_widths_and_one_bridge_block():
    model = build_c_resunet((8, 16, 32), 64, bridge_blocks=1)
    assert model.count_params() == expected_parameters((8, 16, 32), 64, 1)


def test_layers_of_the_paper_are_there():
    model = build_c_resunet()
    assert tuple(model.get_layer("colour_to_grey_conv").kernel.shape) == (1, 1, 3, 1)
    assert tuple(model.get_layer("bridge1_conv1").kernel.shape) == (5, 5, 64, 128)
    assert tuple(model.get_layer("bridge2_conv2").kernel.shape) == (5, 5, 128, 128)
    assert tuple(model.get_layer("bridge1_shortcut").kernel.shape) == (1, 1, 64, 128)
    assert tuple(model.get_layer("dec0_up").kernel.shape) == (2, 2, 16, 32)  # 2x2 stride-2, (k, k, out, in)
    assert model.get_layer("heatmap").activation.__name__ == "sigmoid"
    out = np.asarray(model(np.zeros((2, 32, 48, 3), np.float32), training=False))
    assert out.shape == (2, 32, 48, 1)
    assert np.all((out > 0) & (out < 1))


def test_bad_widths_raise():
    with pytest.raises(ValueError, match="at least one level"):
        build_c_resunet(())
    with pytest.raises(ValueError, match="one bridge block"):
        build_c_resunet(bridge_blocks=0)  # would silently build a net without a bottleneck
    with pytest.raises(ValueError, match="filters"):  # Keras' own check
        build_c_resunet((16, 0, 64))
    with pytest.raises(ValueError, match="kernel_size"):  # Keras' own check
        build_c_resunet(bridge_kernel=0)


def test_weighted_bce_exact_value():
    # Two pixels: a cell pixel of map weight 2 and a background pixel of map weight 1, both p = 0.5.
    y_true = np.array([[[[1.0, 2.0], [0.0, 1.0]]]], np.float32)  # (1, 1, 2, 2): [mask, weight]
    y_pred = np.full((1, 1, 2, 1), 0.5, np.float32)
    ln2 = math.log(2.0)
    loss = WeightedBCE(cell_weight=1.5, background_weight=1.0)
    assert float(loss(y_true, y_pred)) == pytest.approx((1.5 * 2 * ln2 + 1.0 * 1 * ln2) / 2, rel=1e-5)
    plain = WeightedBCE(use_map=False)
    assert float(plain(y_true, y_pred)) == pytest.approx(ln2, rel=1e-5)


def test_weighted_bce_ignores_zero_weight_pixels_in_both_modes():
    # Weight 0 marks pixels augmentation filled from outside the crop.
    y_true = np.array([[[[1.0, 0.0], [0.0, 1.0]]]], np.float32)
    y_pred = np.array([[[[0.1], [0.5]]]], np.float32)
    ln2 = math.log(2.0)
    assert float(WeightedBCE()(y_true, y_pred)) == pytest.approx(ln2 / 2, rel=1e-5)
    assert float(WeightedBCE(use_map=False)(y_true, y_pred)) == pytest.approx(ln2 / 2, rel=1e-5)
