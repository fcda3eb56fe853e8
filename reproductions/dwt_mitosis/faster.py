"""Phase 2 with another detector: ``common/detection``'s Faster R-CNN on the DWT-net boxes.

The paper says any detector can follow the label generation ("any object detection method can be
employed here"); this is that second detector, sized for mitoses at ×40: a small stride-8
backbone trained from scratch and anchors of 24–64 px. Images are RGB uint8 ``(H, W, 3)``, all of
one square size (the backbone's input); boxes ``[x1, y1, x2, y2]`` px, ``(N, 4)`` float32.

Reference: dwt_mitosis Sec. 3.2; Ren et al. 2015 (Faster R-CNN).
"""

from __future__ import annotations

import math

import numpy as np

from microrepro.common.runs import Run
from microrepro.reproductions.dwt_mitosis.config import DwtMitosisConfig
from microrepro.reproductions.dwt_mitosis.data import ImageSet

FASTER = "faster_rcnn_phase2"


def faster_backbone(size: int, widths):
    """``len(widths)`` blocks of (stride-2 conv, conv), ReLU: ``(B, size, size, 3)`` → stride 2^len(widths)."""
    import keras

    inputs = keras.Input((size, size, 3))
    x = inputs
    for k, filters in enumerate(widths):
        x = keras.layers.Conv2D(filters, 3, strides=2, padding="same", activation="relu", name=f"down{k}")(x)
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"conv{k}")(x)
    return keras.Model(inputs, x, name="faster_backbone")


def build_faster(cfg: DwtMitosisConfig, size: int, seed: int):
    """Faster R-CNN of common/detection sized for mitoses (stride 2^len(widths), small anchors)."""
    from microrepro.common.detection.faster_rcnn import FasterRCNN, FasterRCNNConfig

    f = cfg.faster
    config = FasterRCNNConfig(
        num_classes=1, feature_stride=2 ** len(f.backbone_widths), anchor_sizes=f.anchor_sizes,
        rpn_conv_channels=128, rpn_pre_nms_top_k_train=2000, rpn_post_nms_top_k_train=256,
        rpn_pre_nms_top_k_test=1000, rpn_post_nms_top_k_test=128, head_fc_units=(256, 256),
        head_batch_size_per_image=64, score_threshold=0.0, detection_nms_iou=cfg.rcnn.nms_iou,
        max_detections=50, seed=seed,
    )
    return FasterRCNN(faster_backbone(size, f.backbone_widths), config)


def pad_boxes(boxes_list: list[np.ndarray], max_boxes: int) -> tuple[np.ndarray, np.ndarray]:
    """Per image ``(G_i, 4)`` boxes → ``(B, max_boxes, 4)`` float32 boxes and ``(B, max_boxes)`` int32 classes.

    Rows past an image's boxes are −1 (the suite's padding); boxes beyond ``max_boxes`` are dropped.
    """
    out = -np.ones((len(boxes_list), max_boxes, 4), np.float32)
    classes = -np.ones((len(boxes_list), max_boxes), np.int32)
    for k, boxes in enumerate(boxes_list):
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)[:max_boxes]
        out[k, : len(boxes)] = boxes
        classes[k, : len(boxes)] = 0
    return out, classes


def square_size(*image_sets: ImageSet) -> int | None:
    """The common side of every image of ``image_sets``, or None when they are not all one square size."""
    size = image_sets[0].images[0].shape[0]
    if any(img.shape[:2] != (size, size) for s in image_sets for img in s.images):
        return None
    return int(size)


def train_faster(run: Run, cfg: DwtMitosisConfig, name: str, train: ImageSet, boxes: list[np.ndarray], size: int):
    """Train the Faster R-CNN on ``boxes`` of ``train`` (Sec. 4.3 optimiser); weights in ``train/<name>/``.

    Returns:
        ``(model with its last weights, schedule_run entry)``.
    """
    import tensorflow as tf

    from microrepro.common import training
    from microrepro.common.pipeline import shard_by_data
    from microrepro.reproductions.dwt_mitosis.model import adam

    f = cfg.faster
    training.set_seed(run.seed)
    model = build_faster(cfg, size, run.seed)
    x = np.stack(train.images).astype(np.float32) / 255.0
    gt_boxes, gt_classes = pad_boxes(boxes, f.max_boxes)
    steps = f.steps_per_epoch or max(1, math.ceil(len(x) / f.batch_size))
    model.compile(optimizer=adam(f.lr, f.final_lr, f.epochs * steps), jit_compile=False)
    ds = (tf.data.Dataset.from_tensor_slices((x, {"boxes": gt_boxes, "classes": gt_classes}))
          .shuffle(len(x), seed=run.seed).repeat().batch(f.batch_size, drop_remainder=False).apply(shard_by_data))
    result = training.fit(model, ds, None, run_dir=run.run_dir, name=name, epochs=f.epochs, steps_per_epoch=steps,
                          monitor="loss", verbose=2, tensorboard=False)
    training.load_weights(model, run.run_dir, name, "last")
    return model, training.schedule_record(result, batch=f.batch_size, steps_per_epoch=steps)


def load_faster(run_dir, cfg: DwtMitosisConfig, name: str, size: int, seed: int):
    """The Faster R-CNN trained as ``name`` in ``run_dir`` for ``size`` px images (last weights)."""
    from microrepro.common import training

    return training.load_weights(build_faster(cfg, size, seed), run_dir, name, "last")


def faster_detect(model, images: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per image ``(boxes (K, 4) float32, scores (K,) float64 in [0, 1])``, unthresholded."""
    x = np.stack(images).astype(np.float32) / 255.0
    out = model.predict_detections(x)
    n = out["num_detections"].astype(int)
    boxes = [out["boxes"][i, : n[i]] for i in range(len(x))]
    scores = [out["scores"][i, : n[i]].astype(np.float64) for i in range(len(x))]
    return boxes, scores
