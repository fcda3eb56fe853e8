"""Inception-V2 backbone, Faster R-CNN wiring, the table of models and the spines config presets."""

import keras
import numpy as np
import pytest

from microrepro.common.errors import ConfigError
from microrepro.reproductions.spines import inception_v2
from microrepro.reproductions.spines.task import TASK


def test_inception_v2_endpoints_channels_and_stride():
    model = inception_v2.build_inception_v2(in_channels=3, width_multiplier=1.0, input_size=224)
    assert model.output_shape == (None, 14, 14, 576)  # Mixed_4e, stride 16
    # slim depths: Mixed_3b 256, Mixed_3c 320, Mixed_4a 576 (= 160 + 96 + 320 pooled)
    assert model.get_layer("Mixed_3b").output.shape[-1] == 256
    assert model.get_layer("Mixed_3c").output.shape[-1] == 320
    assert model.get_layer("Mixed_4a").output.shape[-1] == 576
    assert model.get_layer("Mixed_4a").output.shape[1] == 14
    assert model.count_params() == 4_273_048
    stride8 = inception_v2.build_inception_v2(1, 1.0, 224, final_endpoint="Mixed_3c")
    assert stride8.output_shape == (None, 28, 28, 320)
    head = inception_v2.build_second_stage(576)
    assert head.compute_output_shape((5, 14, 14, 576)) == (5, 7, 7, 1024)


def test_inception_v2_width_multiplier_and_errors():
    thin = inception_v2.build_inception_v2(in_channels=1, width_multiplier=0.25, input_size=64)
    assert thin.output_shape == (None, 4, 4, 144)  # 24 + 48 + 48 + 24
    with pytest.raises(ValueError, match="final_endpoint"):
        inception_v2.build_inception_v2(final_endpoint="Mixed_9z")
    with pytest.raises(ValueError, match="width_multiplier"):
        inception_v2.build_inception_v2(width_multiplier=0.0)
    bns = [layer for layer in thin.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert bns and all(layer.momentum == 0.997 for layer in bns)  # slim / OD API batch_norm_decay
    fast = inception_v2.build_inception_v2(in_channels=1, width_multiplier=0.25, input_size=64, bn_momentum=0.9)
    assert all(layer.momentum == 0.9 for layer in fast.layers if isinstance(layer, keras.layers.BatchNormalization))
    with pytest.raises(ValueError, match="bn_momentum"):
        inception_v2.build_inception_v2(width_multiplier=0.25, bn_momentum=1.0)
    with pytest.raises(ConfigError, match="not available offline"):
        inception_v2.load_pretrained(thin, "imagenet")
    with pytest.raises(ConfigError, match="not available offline"):
        inception_v2.load_pretrained(thin, "coco")


def test_presets_differ_where_the_released_code_differs():
    paper = TASK.load_config("paper", "paper")
    released = TASK.load_config("released", "paper")
    schedule = lambda t: (t.optimizer, t.lr, t.steps)  # noqa: E731
    assert schedule(paper.faster_rcnn.train) == ("adam", 2e-5, 9000)
    assert schedule(released.faster_rcnn.train) == ("momentum", 2e-4, 60000)
    assert released.faster_rcnn.anchor_sizes == [64.0, 128.0, 256.0, 512.0]
    assert released.faster_rcnn.loc_loss_weight == 2.0 and released.faster_rcnn.keep_aspect_ratio
    assert paper.faster_rcnn.anchor_ratios == [1.0] and paper.faster_rcnn.proposals == 300
    assert paper.yolo.input_size == 448 and paper.yolo.train.weight_decay == 5e-4
    with pytest.raises(ConfigError, match="unknown key"):
        TASK.load_config("paper", "short", {"yolo": {"learning_rate": 1}})


def test_faster_rcnn_anchors_scale_with_the_input_size():
    from microrepro.reproductions.spines import train

    cfg = TASK.load_config("paper", "short")
    fr = train.faster_rcnn_config(cfg)
    assert fr.anchor_sizes == (12.0, 16.0, 24.0, 32.0)  # 24-64 px at 448 -> 12-32 px at 224
    assert fr.anchor_ratios == (1.0,) and fr.rpn_post_nms_top_k_test == 300 and fr.feature_stride == 8  # Mixed_3c


def test_timing_runs_one_image_at_a_time_after_a_warm_up_pass():
    import dataclasses

    from microrepro.datasets.base import Sample
    from microrepro.reproductions.spines import data as data_lib
    from microrepro.reproductions.spines import evaluate
    from microrepro.reproductions.spines.models import SPECS

    calls = []
    spec = dataclasses.replace(SPECS["yolov2"], detect=lambda model, cfg, prepared: calls.append(len(prepared)))
    cfg = TASK.load_config("paper", "smoke", {"timing_images": 3, "timing_repeats": 2})
    prepared = data_lib.prepare([Sample(id=str(i), image_array=np.zeros((20, 20), np.uint8)) for i in range(5)], 32)
    ms = evaluate.ms_per_image(spec, None, cfg, prepared)
    assert calls == [1] * (3 * (1 + 2)) and ms >= 0  # 3 images, batch 1: one warm-up pass, 2 timed passes


def test_one_table_of_models_names_section_threshold_and_sizes():
    from microrepro.reproductions.spines.models import MODELS, SPECS

    assert TASK.models == MODELS == ("yolov2", "faster_rcnn", "sp_cnn", "sp_cnn_hard", "sp_cnn_mse")
    assert TASK.default_model == "yolov2"
    cfg = TASK.load_config("released", "short")
    assert SPECS["yolov2"].input_size(cfg) == (224, False)
    assert SPECS["faster_rcnn"].input_size(cfg) == (224, True)  # released: keep_aspect_ratio
    assert SPECS["sp_cnn_mse"].input_size(cfg) == (128, False)
    assert [SPECS[m].threshold_rule(cfg) for m in MODELS] == ["fixed"] * 5
    assert SPECS["faster_rcnn"].configured_threshold(cfg) == 0.6  # the released F1 script's
    assert SPECS["sp_cnn"].configured_threshold(cfg) == cfg.sp_cnn.peak_threshold
    paper = TASK.load_config("paper", "short")
    assert [SPECS[m].threshold_rule(paper) for m in MODELS] == ["train_f1", "train_f1", "fixed", "fixed", "fixed"]
    assert SPECS["yolov2"].score_range == (0.0, 1.0) and SPECS["sp_cnn"].score_range[1] == float("inf")
    assert SPECS["yolov2"].nms_iou(paper) == paper.yolo.nms_iou and SPECS["sp_cnn"].nms_iou(paper) == 1.0
    with pytest.raises(Exception, match="unknown spines model"):
        TASK.check_model("resnet")


@pytest.mark.parametrize(("overrides", "key"), [
    ({"yolo": {"threshold_rule": "best"}}, "yolo.threshold_rule"),
    ({"faster_rcnn": {"threshold_rule": "max_f1"}}, "faster_rcnn.threshold_rule"),
    ({"matching": {"threshold_step": 0.0}}, "matching.threshold_step"),
    ({"matching": {"threshold_step": 0.95}}, "matching.threshold_step"),
    ({"matching": {"threshold_images": -1}}, "matching.threshold_images"),
    ({"sp_cnn": {"train": {"optimizer": "sgd"}}}, "sp_cnn.train.optimizer"),
])
def test_threshold_and_optimizer_values_are_config_errors_when_the_config_is_resolved(overrides, key):
    """The types of config.py refuse them, before any data is read or model trained (no hand checks left)."""
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        TASK.load_config("paper", "smoke", overrides)


def test_feature_endpoint_sets_the_rpn_stride():
    """The CPU schedules read Mixed_3c (stride 8 at 224 px = the paper's stride 16 at 448 px)."""
    from microrepro.common import config as config_lib
    from microrepro.reproductions.spines import train

    assert [inception_v2.endpoint_stride(e) for e in ("Mixed_3c", "Mixed_4e", "Mixed_5c")] == [8, 16, 32]
    short = TASK.load_config("paper", "short")
    assert train.faster_rcnn_config(short).feature_stride == 8
    assert train.faster_rcnn_config(short).rpn_positive_iou == 0.7  # OD API value, chosen by a val trial (README)
    paper = TASK.load_config("paper", "paper")
    assert (train.faster_rcnn_config(paper).feature_stride, train.faster_rcnn_config(paper).rpn_positive_iou) == (
        16, 0.7)
    assert TASK.load_config("paper", "long").faster_rcnn.feature_endpoint == "Mixed_3c"  # long extends short
    # merge checks the value against config.py's types: a ConfigError naming the key
    with pytest.raises(ConfigError, match="feature_endpoint"):
        train.faster_rcnn_config(config_lib.merge(paper, {"faster_rcnn": {"feature_endpoint": "Mixed_9z"}}, "test"))
    with pytest.raises(ConfigError, match="bn_momentum"):
        train.build_faster_rcnn(config_lib.merge(paper, {"faster_rcnn": {"bn_momentum": 1.5}}, "test"))
