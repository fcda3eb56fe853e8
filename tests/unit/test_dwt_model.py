"""dwt_mitosis phase-1 networks and the phase-2 feature CNN: shapes, wiring, loss values."""

from __future__ import annotations

import math

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from microrepro.reproductions.dwt_mitosis.model import (  # noqa: E402
    build_dwt_unet,
    build_feature_cnn,
    build_unet,
    feature_extractor,
    segmentation_loss,
)
from microrepro.reproductions.dwt_mitosis.wavelets import DWT, IWT  # noqa: E402


def test_dwt_unet_shapes_and_levels():
    model = build_dwt_unet((4, 8, 8), convs_per_block=4, input_size=(32, 32))
    out = model(np.zeros((2, 32, 32, 3), np.float32))
    assert tuple(out.shape) == (2, 32, 32, 2)
    assert sum(isinstance(layer, DWT) for layer in model.layers) == 2
    assert sum(isinstance(layer, IWT) for layer in model.layers) == 2
    # 4 convs per block: 3 encoder blocks + 2 decoder blocks
    convs = [layer for layer in model.layers if layer.name.startswith(("enc", "dec")) and "_conv" in layer.name]
    assert len(convs) == 5 * 4
    assert not any(isinstance(layer, keras.layers.MaxPooling2D) for layer in model.layers)
    # the DWT level sees 4x the channels of the level above (lossless sub-bands)
    assert model.get_layer("enc1_conv1").input.shape[-1] == 16
    assert model.get_layer("enc2_conv1").input.shape[-1] == 32


def test_batch_norm_momentum_is_pytorch_default():
    model = build_dwt_unet((4, 4), convs_per_block=1)
    momenta = {layer.momentum for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)}
    assert momenta == {0.9}
    model = build_unet((4, 4), convs_per_block=1, bn_momentum=0.5)
    assert {layer.momentum for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)} == {0.5}


def test_dwt_unet_any_size_when_unspecified():
    model = build_dwt_unet((4, 8), convs_per_block=1)
    assert tuple(model(np.zeros((1, 24, 40, 3), np.float32)).shape) == (1, 24, 40, 2)


def test_dwt_unet_add_skip():
    model = build_dwt_unet((4, 4), convs_per_block=1, skip="add")
    assert isinstance(model.get_layer("skip0"), keras.layers.Add)


def test_unet_shapes_and_pooling():
    model = build_unet((4, 8, 8), convs_per_block=2, input_size=(32, 32))
    assert tuple(model(np.zeros((1, 32, 32, 3), np.float32)).shape) == (1, 32, 32, 2)
    assert sum(isinstance(layer, keras.layers.MaxPooling2D) for layer in model.layers) == 2
    assert sum(isinstance(layer, keras.layers.Conv2DTranspose) for layer in model.layers) == 2


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"widths": (8,)}, "at least two"),
        ({"widths": (8, 8, 8), "input_size": (30, 32)}, r"divisible by 2\^2"),
        ({"widths": (8, 8), "convs_per_block": 0}, "convs_per_block"),
        ({"widths": (8, 8), "num_classes": 1}, "num_classes"),
        ({"widths": (8, 8), "skip": "sum"}, "skip"),
    ],
)
def test_dwt_unet_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_dwt_unet(**kwargs)


def test_loss_is_softmax_cross_entropy():
    loss = segmentation_loss()
    y = np.array([[[1, 0], [0, 0]]], np.int32)  # (1, 2, 2)
    zero = np.zeros((1, 2, 2, 2), np.float32)
    assert float(loss(y, zero)) == pytest.approx(math.log(2.0), abs=1e-6)
    # logits (a0, a1) = (0, 2) for every pixel: -log softmax = log(1 + e^2) for class 0, log(1 + e^-2) for 1
    logits = np.zeros((1, 2, 2, 2), np.float32)
    logits[..., 1] = 2.0
    expected = (3 * math.log(1 + math.e**2) + math.log(1 + math.e**-2)) / 4
    assert float(loss(y[..., None], logits)) == pytest.approx(expected, rel=1e-5)


def test_loss_positive_weight():
    y = np.array([[[1, 0]]], np.int32)
    zero = np.zeros((1, 1, 2, 2), np.float32)
    assert float(segmentation_loss(3.0)(y, zero)) == pytest.approx((3 + 1) / 2 * math.log(2.0), rel=1e-6)
    with pytest.raises(ValueError, match="positive_weight"):
        segmentation_loss(0.0)


def test_feature_cnn_and_extractor():
    model = build_feature_cnn(16, (4, 8), feature_dim=6)
    assert tuple(model(np.zeros((3, 16, 16, 3), np.float32)).shape) == (3, 2)
    extractor = feature_extractor(model)
    feats = np.asarray(extractor(np.ones((3, 16, 16, 3), np.float32)))
    assert feats.shape == (3, 6)
    assert (feats >= 0).all()  # ReLU features, as R-CNN's fc7
    with pytest.raises(ValueError, match="too small"):
        build_feature_cnn(4, (4, 8, 8))


def test_predict_prob_tiles_a_field_larger_than_the_tile():
    """A field over ``seg.predict_tile`` is segmented in overlapping tiles; away from the tile seams
    the stitched probabilities equal a one-pass prediction (a small net: receptive field < margin)."""
    from microrepro.common import config as config_lib
    from microrepro.reproductions.dwt_mitosis import segmentation
    from microrepro.reproductions.dwt_mitosis.config import DwtMitosisConfig

    keras.utils.set_random_seed(0)
    cfg = config_lib.merge(DwtMitosisConfig(), {"seg": {"widths": (4, 4), "convs_per_block": 1}}, "test")
    model = segmentation.build_seg_model(cfg, "dwt")
    field = (np.random.default_rng(0).random((96, 80, 3)) * 255).astype(np.uint8)
    whole = config_lib.merge(cfg, {"seg": {"predict_tile": 96}}, "test")
    tiled = config_lib.merge(cfg, {"seg": {"predict_tile": 48, "predict_overlap": 32}}, "test")
    (p_whole,) = segmentation.predict_prob(model, [field], whole)
    (p_tiled,) = segmentation.predict_prob(model, [field], tiled)
    assert p_tiled.shape == p_whole.shape == (96, 80) and p_tiled.dtype == np.float32
    np.testing.assert_allclose(p_tiled, p_whole, atol=1e-4)
    from microrepro.common.errors import UserError

    with pytest.raises(UserError, match="multiple of 2"):
        segmentation.predict_prob(model, [field], config_lib.merge(cfg, {"seg": {"predict_tile": 47}}, "test"))
