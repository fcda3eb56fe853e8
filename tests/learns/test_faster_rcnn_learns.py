"""Faster R-CNN (common/detection) overfits a handful of synthetic images, and runs under JAX.

The fixture: 8 noisy 128x128 images with 1-4 bright squares of 12-20 px each (made here, seeded).
A tiny stride-8 backbone must bring the training loss below half its start and reach F1 >= 0.7
(one-to-one matching at IoU >= 0.4, the spines paper's rule) on the training images.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

IMAGE = 128
MAX_BOXES = 4


def make_images(count: int = 8, seed: int = 0):
    """Noisy images with 1-4 non-overlapping bright squares; boxes padded with -1 rows."""
    rng = np.random.default_rng(seed)
    images = rng.normal(0.25, 0.08, (count, IMAGE, IMAGE, 3)).astype(np.float32)
    boxes = -np.ones((count, MAX_BOXES, 4), np.float32)
    classes = -np.ones((count, MAX_BOXES), np.int32)
    for i in range(count):
        placed, wanted = 0, int(rng.integers(1, MAX_BOXES + 1))
        for _ in range(200):
            if placed == wanted:
                break
            size = int(rng.integers(12, 21))
            x, y = (int(v) for v in rng.integers(2, IMAGE - size - 2, size=2))
            box = np.array([x, y, x + size, y + size], np.float32)
            taken = boxes[i, :placed]
            apart = np.all(
                (box[0] > taken[:, 2] + 3) | (box[2] < taken[:, 0] - 3)
                | (box[1] > taken[:, 3] + 3) | (box[3] < taken[:, 1] - 3)
            )
            if placed and not apart:
                continue
            images[i, y : y + size, x : x + size] += 0.6
            boxes[i, placed], classes[i, placed] = box, 0
            placed += 1
    return np.clip(images, 0.0, 1.0), boxes, classes


def box_f1(pred_boxes, gt_boxes, iou_threshold: float = 0.4) -> float:
    """F1 of one-to-one (Hungarian) matching at IoU >= threshold, summed over images."""
    tp = n_pred = n_gt = 0
    for pred, gt in zip(pred_boxes, gt_boxes, strict=True):
        n_pred, n_gt = n_pred + len(pred), n_gt + len(gt)
        if not len(pred) or not len(gt):
            continue
        ix1 = np.maximum(pred[:, None, 0], gt[None, :, 0])
        iy1 = np.maximum(pred[:, None, 1], gt[None, :, 1])
        ix2 = np.minimum(pred[:, None, 2], gt[None, :, 2])
        iy2 = np.minimum(pred[:, None, 3], gt[None, :, 3])
        inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
        area = lambda b: (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])  # noqa: E731
        iou = inter / (area(pred)[:, None] + area(gt)[None, :] - inter)
        rows, cols = linear_sum_assignment(-iou)
        tp += int(np.sum(iou[rows, cols] >= iou_threshold))
    return 2 * tp / max(n_pred + n_gt, 1)


def tiny_model(seed: int = 0):
    import keras

    from microrepro.common.detection.faster_rcnn import FasterRCNN, FasterRCNNConfig

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((IMAGE, IMAGE, 3))
    x = inputs
    for filters in (16, 32, 32):  # three stride-2 convs: stride 8, 16x16 features
        x = keras.layers.Conv2D(filters, 3, strides=2, padding="same", activation="relu")(x)
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
    config = FasterRCNNConfig(
        num_classes=1,
        feature_stride=8,
        anchor_sizes=(14.0, 20.0),
        anchor_ratios=(1.0,),
        rpn_conv_channels=32,
        rpn_batch_size_per_image=64,
        rpn_pre_nms_top_k_train=256,
        rpn_post_nms_top_k_train=32,
        rpn_pre_nms_top_k_test=256,
        rpn_post_nms_top_k_test=16,
        head_fc_units=(64,),
        head_batch_size_per_image=32,
        score_threshold=0.5,
        max_detections=10,
        seed=seed,
    )
    return FasterRCNN(keras.Model(inputs, x, name="tiny_backbone"), config)


def _detections_as_lists(detections):
    return [detections["boxes"][i, : detections["num_detections"][i]] for i in range(len(detections["boxes"]))]


def test_faster_rcnn_overfits_synthetic_squares():
    import keras

    images, boxes, classes = make_images()
    model = tiny_model()
    model.compile(optimizer=keras.optimizers.Adam(2e-3))
    start = time.time()
    history = model.fit(images, {"boxes": boxes, "classes": classes}, batch_size=4, epochs=60, verbose=0, shuffle=True)
    seconds = time.time() - start
    losses = history.history["loss"]
    detections = model.predict_detections(images, batch_size=8)
    gt = [b[b[:, 0] >= 0] for b in boxes]
    f1 = box_f1(_detections_as_lists(detections), gt)
    print(f"loss {losses[0]:.3f} -> {losses[-1]:.3f}, F1 {f1:.3f}, {seconds:.0f} s")
    assert losses[-1] < 0.5 * losses[0]
    assert f1 >= 0.7
    assert set(np.unique(detections["classes"])) <= {-1, 0}


JAX_SCRIPT = r"""
import json, os, sys
sys.path.insert(0, {test_dir!r})
import numpy as np
import keras
from test_faster_rcnn_learns import make_images, tiny_model
images, boxes, classes = make_images(count=2)
model = tiny_model()
model.compile(optimizer=keras.optimizers.Adam(1e-3))
before = np.array(model.box_head.classifier.kernel)
history = model.fit(images, {{"boxes": boxes, "classes": classes}}, batch_size=2, epochs=2, verbose=0)
after = np.array(model.box_head.classifier.kernel)
detections = model.predict_detections(images, batch_size=2)
print("RESULT " + json.dumps({{
    "backend": keras.backend.backend(),
    "losses": history.history["loss"],
    "head_changed": float(np.abs(after - before).max()),
    "shapes": {{k: list(v.shape) for k, v in detections.items()}},
}}))
"""


@pytest.mark.slow  # 2-3 min of XLA compilation on CPU; backend parity of the suite is in tests/unit/test_backends.py
def test_faster_rcnn_trains_and_predicts_under_jax(tmp_path):
    pytest.importorskip("jax")
    script = tmp_path / "jax_run.py"
    script.write_text(JAX_SCRIPT.format(test_dir=str(Path(__file__).parent)))
    env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="2", JAX_PLATFORMS="cpu")
    done = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    result = json.loads(lines[-1][len("RESULT ") :])
    assert result["backend"] == "jax"
    assert len(result["losses"]) == 2 and all(np.isfinite(result["losses"]))
    assert result["head_changed"] > 0  # the box head, run inside compute_loss, got gradients
    assert result["shapes"] == {"boxes": [2, 10, 4], "scores": [2, 10], "classes": [2, 10], "num_detections": [2]}
