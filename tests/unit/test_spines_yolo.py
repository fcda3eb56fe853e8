"""tiny-YOLOv2 of the spines reproduction: layout, loss on hand-built inputs, decoding."""

from itertools import pairwise

import numpy as np
import pytest

from microrepro.reproductions.spines import tiny_yolo

ANCHORS = np.array([[0.738768, 0.874946], [2.42204, 2.65704], [4.30971, 7.04493]], np.float32)


def _conv_bn(cin, cout):
    return 9 * cin * cout + 4 * cout  # 3x3 kernel without bias + BN (gamma, beta, mean, var)


def test_tiny_yolo_voc_layout_parameter_count_and_stride():
    model = tiny_yolo.build_tiny_yolo(num_anchors=3, num_classes=1, in_channels=1)
    chans = [1, 16, 32, 64, 128, 256, 512, 1024, 1024]
    expected = sum(_conv_bn(a, b) for a, b in pairwise(chans)) + 1024 * 18 + 18
    assert model.count_params() == expected == 15_757_922
    convs = [layer for layer in model.layers if layer.__class__.__name__ == "Conv2D"]
    pools = [layer for layer in model.layers if layer.__class__.__name__ == "MaxPooling2D"]
    assert len(convs) == 9 and len(pools) == 6
    assert [p.strides for p in pools] == [(2, 2)] * 5 + [(1, 1)]
    out = model(np.zeros((1, 448, 448, 1), np.float32))
    assert tuple(out.shape) == (1, 14, 14, 18)  # released: 448 px -> 14x14 grid
    out = model(np.zeros((1, 224, 160, 1), np.float32))
    assert tuple(out.shape) == (1, 7, 5, 18)


def test_width_multiplier_and_input_checks():
    thin = tiny_yolo.build_tiny_yolo(width_multiplier=0.25)
    chans = [1, 8, 8, 16, 32, 64, 128, 256, 256]  # 16*0.25 = 4 -> floor of 8 channels
    expected = sum(_conv_bn(a, b) for a, b in pairwise(chans)) + 256 * 18 + 18
    assert thin.count_params() == expected
    with pytest.raises(ValueError, match="multiple of 32"):
        tiny_yolo.build_tiny_yolo(input_size=100)
    with pytest.raises(ValueError, match="width_multiplier"):
        tiny_yolo.build_tiny_yolo(width_multiplier=0)


def _iou(a, b):  # [cx, cy, w, h]
    ax1, ay1, ax2, ay2 = a[0] - a[2] / 2, a[1] - a[3] / 2, a[0] + a[2] / 2, a[1] + a[3] / 2
    bx1, by1, bx2, by2 = b[0] - b[2] / 2, b[1] - b[3] / 2, b[0] + b[2] / 2, b[1] + b[3] / 2
    inter = max(0, min(ax2, bx2) - max(ax1, bx1)) * max(0, min(ay2, by2) - max(ay1, by1))
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def test_yolo_loss_terms_on_a_hand_built_case():
    # 2x2 grid, all outputs 0: sigma = 0.5, exp = 1, every prediction sits on its anchor.
    y_pred = np.zeros((1, 2, 2, 18), np.float32)
    y_true = -np.ones((1, 3, 4), np.float32)
    y_true[0, 0] = [0.1, 0.1, 0.3, 0.3]  # centre (0.2, 0.2) -> cell (0, 0); 0.4 grid units -> anchor 0
    loss = tiny_yolo.YoloV2Loss(ANCHORS, object_scale=5, noobject_scale=1, ignore_thresh=0.6, rescore=True)
    terms = {k: float(np.asarray(v)[0]) for k, v in loss.terms(y_true, y_pred).items()}

    a0 = ANCHORS[0]
    coord = (2 - 0.2 * 0.2) * (
        (0.5 - 0.4) ** 2 + (0.5 - 0.4) ** 2 + np.log(0.4 / a0[0]) ** 2 + np.log(0.4 / a0[1]) ** 2
    )
    gt = (0.2, 0.2, 0.2, 0.2)
    iou_resp = _iou((0.25, 0.25, a0[0] / 2, a0[1] / 2), gt)
    obj = 5 * (iou_resp - 0.5) ** 2
    noobj = 0.0
    for j in range(2):
        for i in range(2):
            for a in range(3):
                if (j, i, a) == (0, 0, 0):
                    continue
                box = ((i + 0.5) / 2, (j + 0.5) / 2, ANCHORS[a][0] / 2, ANCHORS[a][1] / 2)
                if _iou(box, gt) < 0.6:
                    noobj += 0.25
    assert terms["coord"] == pytest.approx(coord, rel=1e-5)
    assert terms["obj"] == pytest.approx(obj, rel=1e-5)
    assert terms["noobj"] == pytest.approx(noobj, rel=1e-6)
    assert noobj == pytest.approx(2.75)  # no anchor overlaps the small box by 0.6: all 11 others count
    total = float(np.asarray(loss(y_true, y_pred)))
    assert total == pytest.approx(coord + obj + noobj, rel=1e-5)


def test_yolo_loss_empty_image_is_pure_noobject_and_collisions_keep_one():
    y_pred = np.zeros((2, 2, 2, 18), np.float32)
    y_true = -np.ones((2, 2, 4), np.float32)
    # image 1: two identical boxes claim the same cell and anchor; only one may be responsible.
    y_true[1, 0] = y_true[1, 1] = [0.1, 0.1, 0.3, 0.3]
    loss = tiny_yolo.YoloV2Loss(ANCHORS, rescore=False)
    terms = {k: np.asarray(v) for k, v in loss.terms(y_true, y_pred).items()}
    assert terms["coord"][0] == 0 and terms["obj"][0] == 0
    assert terms["noobj"][0] == pytest.approx(12 * 0.25)
    assert terms["obj"][1] == pytest.approx(5 * (1 - 0.5) ** 2)  # rescore=False: target 1, one slot
    assert terms["noobj"][1] == pytest.approx(11 * 0.25)


def test_decode_detections_maps_zero_output_to_anchor_boxes():
    y_pred = np.zeros((1, 1, 1, 18), np.float32)
    y_pred[0, 0, 0, 4] = 10.0  # anchor 0 confident, the others sigma(0) = 0.5
    dets = tiny_yolo.decode_detections(y_pred, ANCHORS, (32, 32), score_threshold=0.6, nms_iou=0.45)
    boxes, scores = dets[0]
    assert len(boxes) == 1
    w, h = ANCHORS[0] * 32
    np.testing.assert_allclose(boxes[0], [16 - w / 2, 16 - h / 2, 16 + w / 2, 16 + h / 2], rtol=1e-5)
    assert scores[0] == pytest.approx(1 / (1 + np.exp(-10.0)), rel=1e-6)


def test_pretrained_darknet_offline_is_a_clear_error(tmp_path):
    from microrepro.common.errors import ConfigError

    model = tiny_yolo.build_tiny_yolo(width_multiplier=0.25)
    assert "random" in tiny_yolo.load_pretrained(model, "none")
    with pytest.raises(ConfigError, match="darknet"):
        tiny_yolo.load_pretrained(model, "darknet")
    with pytest.raises(ConfigError, match="no such weights file"):
        tiny_yolo.load_pretrained(model, str(tmp_path / "missing.weights.h5"))
    path = tmp_path / "w.weights.h5"
    model.save_weights(str(path))
    other = tiny_yolo.build_tiny_yolo(width_multiplier=0.25)
    assert str(path) in tiny_yolo.load_pretrained(other, str(path))
    np.testing.assert_array_equal(other.get_weights()[0], model.get_weights()[0])


def _random_case(rng, grid_h, grid_w, batch=2):
    y_pred = rng.normal(0.0, 1.0, (batch, grid_h, grid_w, 18)).astype(np.float32)
    y_true = -np.ones((batch, 4, 4), np.float32)
    for b in range(batch):
        for g in range(3):
            x, y = rng.uniform(0.05, 0.7, 2)
            y_true[b, g] = [x, y, x + rng.uniform(0.05, 0.3), y + rng.uniform(0.05, 0.3)]
    return y_true, y_pred


def test_yolo_loss_with_unknown_grid_size_in_a_tf_graph_matches_eager(rng):
    # Multi-scale batches reach the TensorFlow graph with a None grid size: the one-hot depth is
    # then a tensor (under JAX it is always a Python int, see the next test).
    import tensorflow as tf

    loss = tiny_yolo.YoloV2Loss(ANCHORS)
    spec = [tf.TensorSpec((None, None, 4)), tf.TensorSpec((None, None, None, 18))]
    graph = tf.function(loss.call, input_signature=spec)
    for grid_h, grid_w in ((2, 2), (3, 5)):
        y_true, y_pred = _random_case(rng, grid_h, grid_w)
        np.testing.assert_allclose(graph(y_true, y_pred).numpy(), np.asarray(loss.call(y_true, y_pred)), rtol=1e-6)


JIT_SCRIPT = r"""
import json, sys, numpy as np, jax, keras
from microrepro.reproductions.spines import tiny_yolo
anchors = np.array(json.loads(sys.argv[1]), np.float32)
loss = tiny_yolo.YoloV2Loss(anchors)
cases = json.loads(sys.stdin.read())
jitted = jax.jit(loss.call)  # the grid size comes from a traced shape: must stay a Python int
print(json.dumps([[np.asarray(jitted(np.float32(t), np.float32(p))).tolist(),
                   np.asarray(loss.call(np.float32(t), np.float32(p))).tolist()] for t, p in cases]))
"""


def test_yolo_loss_traces_under_jax_jit_for_every_grid_size(rng):
    import json
    import os
    import subprocess
    import sys

    pytest.importorskip("jax")
    cases = [_random_case(rng, h, w) for h, w in ((2, 2), (3, 3), (4, 6))]
    tf_values = [np.asarray(tiny_yolo.YoloV2Loss(ANCHORS)(t, p)) for t, p in cases]
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(
        [sys.executable, "-c", JIT_SCRIPT, json.dumps(ANCHORS.tolist())], env=env, capture_output=True, text=True,
        input=json.dumps([[t.tolist(), p.tolist()] for t, p in cases]), timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    for (jitted, eager), tf_value in zip(results, tf_values, strict=True):
        np.testing.assert_allclose(jitted, eager, rtol=1e-5)
        # ``call`` gives per-image losses; the Loss object (TF here) averages them over the batch
        np.testing.assert_allclose(np.mean(jitted), tf_value, rtol=1e-5)
