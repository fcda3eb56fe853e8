"""MITOS-RCNN model parts: VGG-16 names and strides, L2 norm, conv3+4 fusion, eq. (2) weights, shapes."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from microrepro.common.errors import ConfigError
from microrepro.reproductions.mitos_rcnn import backbone as backbone_lib
from microrepro.reproductions.mitos_rcnn import model as model_lib
from microrepro.reproductions.mitos_rcnn.config import MitosRCNNConfig


def tiny_model_config(input_size: int = 64):
    cfg = MitosRCNNConfig().model
    cfg.input_size = input_size
    cfg.backbone.pretrained, cfg.backbone.width_multiplier = "none", 0.125
    for r in (cfg.rpn1, cfg.rpn2):
        r.conv_channels, r.batch_size_per_image = 8, 16
        r.pre_nms_top_k_train = r.pre_nms_top_k_test = 50
        r.post_nms_top_k_train = r.post_nms_top_k_test = 8
    cfg.fused_channels, cfg.head_fc_units, cfg.head_batch_size_per_image, cfg.max_detections = 8, [16], 8, 5
    return cfg


def test_rpn_box_loss_weight_eq2():
    assert model_lib.rpn_box_loss_weight(10, "anchor_locations", 256, 2560) == 1.0
    assert model_lib.rpn_box_loss_weight(10, "anchor_locations", 64, 256) == 2.5
    assert model_lib.rpn_box_loss_weight(10, "sampled", 64, 256) == 10.0
    with pytest.raises(ConfigError, match="box_loss_normaliser"):
        model_lib.rpn_box_loss_weight(10, "other", 1, 1)


def test_vgg16_layer_names_and_strides():
    vgg = backbone_lib.build_vgg16(64, width_multiplier=0.125, blocks=5)
    names = [layer.name for layer in vgg.layers if "conv" in layer.name]
    assert names == [f"block{b}_conv{c}" for b, n in enumerate((2, 2, 3, 3, 3), 1) for c in range(1, n + 1)]
    out = vgg(np.zeros((1, 64, 64, 3), np.float32))
    shapes = {k: tuple(v.shape) for k, v in out.items()}
    assert shapes == {"conv3": (1, 16, 16, 32), "conv4": (1, 8, 8, 64), "conv5": (1, 4, 4, 64)}
    four = backbone_lib.build_vgg16(299, width_multiplier=0.125, blocks=4)
    assert "conv5" not in four.output and not any("block5" in layer.name for layer in four.layers)
    shapes = {k: tuple(v.shape) for k, v in four(np.zeros((1, 299, 299, 3), np.float32)).items()}
    assert shapes == {"conv3": (1, 74, 74, 32), "conv4": (1, 37, 37, 64)}  # 299 -> 149 -> 74 -> 37


def test_vgg16_pretrained_errors_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="width_multiplier=1.0"):
        backbone_lib.build_vgg16(64, width_multiplier=0.5, pretrained="imagenet")
    with pytest.raises(ConfigError, match="not a file"):
        backbone_lib.build_vgg16(64, pretrained=str(tmp_path / "missing.h5"))
    with pytest.raises(ConfigError, match="blocks"):
        backbone_lib.build_vgg16(64, blocks=3)


def test_caffe_preprocess_exact():
    out = backbone_lib.CaffePreprocess()(np.float32([[[[1.0, 0.0, 0.5]]]]))
    np.testing.assert_allclose(np.asarray(out)[0, 0, 0], [127.5 - 103.939, 0 - 116.779, 255 - 123.68], rtol=1e-6)


def test_l2_normalization_learnable_and_plain():
    x = np.float32([[[[3.0, 4.0]]]])
    np.testing.assert_allclose(np.asarray(backbone_lib.L2Normalization(True, 10.0)(x)), [[[[6.0, 8.0]]]], rtol=1e-6)
    layer = backbone_lib.L2Normalization(False, 2.0)
    np.testing.assert_allclose(np.asarray(layer(x)), [[[[1.2, 1.6]]]], rtol=1e-6)
    assert not layer.trainable_weights
    learnable = backbone_lib.L2Normalization(True, 10.0)
    learnable(x)
    assert [tuple(w.shape) for w in learnable.trainable_weights] == [(2,)]


def test_conv34_fusion_shapes_even_and_odd():
    fusion = backbone_lib.Conv34Fusion(conv4_channels=6, out_channels=5)
    out = fusion(np.ones((2, 10, 10, 4), np.float32), np.ones((2, 5, 5, 6), np.float32))
    assert tuple(out.shape) == (2, 10, 10, 5)
    odd = backbone_lib.Conv34Fusion(conv4_channels=6, out_channels=5)
    assert tuple(odd(np.ones((1, 11, 11, 4), np.float32), np.ones((1, 5, 5, 6), np.float32)).shape) == (1, 11, 11, 5)
    with pytest.raises(ConfigError, match="l2_norm"):
        backbone_lib.Conv34Fusion(4, l2_norm="other")


def test_build_model_three_variants_and_output_shapes():
    cfg = tiny_model_config()
    images = np.random.default_rng(0).random((2, 64, 64, 3)).astype(np.float32)
    kinds = {"faster_rcnn_conv5": "FasterRCNN", "faster_rcnn_conv4": "FasterRCNN", "mitos_rcnn": "MitosRCNN"}
    for key, kind in kinds.items():
        model = model_lib.build_model(key, cfg, seed=0)
        assert type(model).__name__ == kind
        out = model(images, training=False)
        assert tuple(out["boxes"].shape) == (2, 5, 4) and tuple(out["classes"].shape) == (2, 5)
        assert set(np.unique(np.asarray(out["classes"]))) <= {-1, 0, 1}
    with pytest.raises(ConfigError, match="unknown model"):
        model_lib.build_model("yolo", cfg)


def test_mitos_rcnn_cascade_anchor_grids_and_loss_terms():
    cfg = tiny_model_config()
    model = model_lib.build_model("mitos_rcnn", cfg, seed=0)
    assert model.anchors1.shape == (8 * 8 * 9, 4)  # conv4_3, stride 8, 3 sizes x 3 ratios
    assert model.anchors2.shape == (16 * 16, 4)  # conv3+4, stride 4, one 64 px square
    np.testing.assert_allclose(model.anchors2[0], [2 - 32, 2 - 32, 2 + 32, 2 + 32])
    assert model.rpn1_box_weight == pytest.approx(10 * 16 / 64)
    assert model.rpn2_box_weight == pytest.approx(10 * 16 / 256)
    images = np.random.default_rng(1).random((2, 64, 64, 3)).astype(np.float32)
    boxes = np.float32([[[10, 10, 30, 30], [-1, -1, -1, -1]], [[30, 20, 50, 40], [5, 5, 25, 25]]])
    classes = np.int32([[0, -1], [0, 1]])
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    history = model.fit(images, {"boxes": boxes, "classes": classes}, batch_size=2, epochs=1, verbose=0)
    logged = set(history.history)
    assert {"loss", *model_lib.MitosRCNN.LOSS_NAMES} <= logged
    assert np.isfinite(history.history["loss"][0])


def test_init_hidden_layers_normal_he_and_error():
    layer = keras.layers.Dense(400)
    layer.build((None, 300))
    model_lib.init_hidden_layers([layer], 0.01, seed=0)
    assert np.std(np.asarray(layer.kernel)) == pytest.approx(0.01, rel=0.05)  # Sec. IV-B.4: N(0, 0.01)
    model_lib.init_hidden_layers([layer], 0.0, seed=0)
    assert np.std(np.asarray(layer.kernel)) == pytest.approx(np.sqrt(2 / 300), rel=0.1)  # He normal (truncated)
    with pytest.raises(ConfigError, match="init_std"):
        model_lib.init_hidden_layers([layer], -1.0)


def test_make_optimizer_paper_sgd_and_errors():
    from microrepro.reproductions.mitos_rcnn.train import make_optimizer

    train = MitosRCNNConfig().train
    sgd = make_optimizer(train)
    assert isinstance(sgd, keras.optimizers.SGD)
    assert float(sgd.momentum) == 0.9 and float(sgd.weight_decay) == pytest.approx(5e-4)
    assert float(np.asarray(sgd.learning_rate)) == pytest.approx(1e-3)
    train.optimizer, train.clipnorm = "adam", 10.0  # the CPU schedules
    adam = make_optimizer(train)
    assert isinstance(adam, keras.optimizers.Adam) and adam.clipnorm == 10.0
    train.optimizer = "rmsprop"
    with pytest.raises(ConfigError, match="optimizer"):
        make_optimizer(train)
