"""The second stage: ROI features -> class scores and per-class box deltas, and its decoding.

Classes: the head predicts ``num_classes + 1`` logits, column 0 = background; decoded detections
give the suite's 0-based foreground class ids.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import ops

from microrepro.common.detection.boxes import HEAD_BOX_WEIGHTS, clip_boxes, decode_deltas, gather_rows
from microrepro.common.detection.nms import batched_nms
from microrepro.common.detection.roi_align import roi_align, roi_pool
from microrepro.common.serialize import constructor_config

ROI_OPS = ("align", "align_max", "pool")


def extract_rois(features, rois, op: str, output_size: int, spatial_scale: float, sampling_ratio: int):
    """ROI features by name: "align" (ROI Align, mean), "align_max" (TF-OD-API crop + max-pool),
    "pool" (Fast R-CNN quantised ROI pooling). ``(B, H, W, C)``, ``(B, R, 4)`` -> ``(B, R, P, P, C)``."""
    if op == "align":
        return roi_align(features, rois, output_size, spatial_scale, sampling_ratio, reduce="mean")
    if op == "align_max":
        return roi_align(features, rois, output_size, spatial_scale, sampling_ratio, reduce="max")
    if op == "pool":
        return roi_pool(features, rois, output_size, spatial_scale, sampling_ratio)
    raise ValueError(f"roi op must be one of {ROI_OPS}, got {op!r}")


@keras.saving.register_keras_serializable(package="microrepro")
class BoxHead(keras.layers.Layer):
    """ROI features -> flatten -> FC layers (ReLU) -> class logits and per-class box deltas.

    Args:
        num_classes: foreground classes C (the head predicts C + 1 logits).
        spatial_scale: 1 / stride of the feature map the ROIs are cut from.
        roi_size: P, ROI output bins per side (7 in Fast/Faster R-CNN).
        sampling_ratio: samples per bin side (see ``roi_align`` / ``roi_pool``).
        roi_op: "align", "align_max" or "pool" (see :func:`extract_rois`).
        fc_units: hidden FC widths, e.g. (1024, 1024); () feeds the pooled features straight to
            the two sibling layers.
        class_agnostic: one set of deltas for all classes instead of one per class.

    Call:
        ``features`` ``(B, H, W, Cf)``, ``rois`` ``(B, R, 4)`` xyxy px ->
        ``(class_logits (B, R, C + 1), box_deltas (B, R, C or 1, 4))``.

    Reference:
        Girshick, Fast R-CNN, Sec. 2 and Fig. 1 (two sibling outputs); sibling layers initialised
        N(0, 0.01) (classes) and N(0, 0.001) (boxes) as in Sec. 2.2.
    """

    def __init__(
        self,
        num_classes: int,
        spatial_scale: float,
        roi_size: int = 7,
        sampling_ratio: int = 2,
        roi_op: str = "align",
        fc_units: Sequence[int] = (1024, 1024),
        class_agnostic: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if int(num_classes) <= 0:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        if roi_op not in ROI_OPS:
            raise ValueError(f"roi_op must be one of {ROI_OPS}, got {roi_op!r}")
        self.num_classes = int(num_classes)
        self.spatial_scale = float(spatial_scale)
        self.roi_size = int(roi_size)
        self.sampling_ratio = int(sampling_ratio)
        self.roi_op = roi_op
        self.fc_units = tuple(int(u) for u in fc_units)
        self.class_agnostic = bool(class_agnostic)
        # Under a mixed dtype policy Keras would cast the rois (pixel coordinates) to bf16 / fp16: they stay
        # float32, ROI Align reads the features in float32, and the FC layers cast their own inputs.
        self.autocast = False
        self.fcs = [keras.layers.Dense(u, activation="relu", name=f"fc{i + 1}") for i, u in enumerate(self.fc_units)]
        self.classifier = keras.layers.Dense(
            self.num_classes + 1, kernel_initializer=keras.initializers.RandomNormal(stddev=0.01), name="class_logits"
        )
        self.num_box_sets = 1 if self.class_agnostic else self.num_classes
        self.regressor = keras.layers.Dense(
            4 * self.num_box_sets, kernel_initializer=keras.initializers.RandomNormal(stddev=0.001), name="box_deltas"
        )

    def build(self, features_shape):
        width = self.roi_size * self.roi_size * int(features_shape[-1])
        for layer, units in zip(self.fcs, self.fc_units, strict=True):
            layer.build((None, None, width))
            width = units
        self.classifier.build((None, None, width))
        self.regressor.build((None, None, width))
        self.built = True

    def call(self, features, rois):
        features = ops.cast(features, "float32")
        pooled = extract_rois(features, rois, self.roi_op, self.roi_size, self.spatial_scale, self.sampling_ratio)
        batch, count = ops.shape(pooled)[0], rois.shape[1]
        x = ops.reshape(pooled, (batch, count, self.roi_size * self.roi_size * features.shape[-1]))
        for layer in self.fcs:
            x = layer(x)
        logits = self.classifier(x)
        deltas = ops.reshape(self.regressor(x), (batch, count, self.num_box_sets, 4))
        return logits, deltas

    def get_config(self):
        names = ("num_classes", "spatial_scale", "roi_size", "sampling_ratio", "roi_op", "fc_units", "class_agnostic")
        return constructor_config(self, names, super().get_config())


def decode_detections(
    rois,
    class_logits,
    box_deltas,
    image_size: Sequence[int],
    roi_valid=None,
    box_weights: Sequence[float] = HEAD_BOX_WEIGHTS,
    score_threshold: float = 0.05,
    nms_iou: float = 0.5,
    max_detections: int = 100,
):
    """Final detections: softmax, per-class box decoding, score threshold, per-class NMS.

    Args:
        rois: ``(B, R, 4)`` xyxy px, the proposals the head ran on.
        class_logits: ``(B, R, C + 1)``.
        box_deltas: ``(B, R, C or 1, 4)``.
        image_size: ``(height, width)`` px; boxes are clipped to it.
        roi_valid: optional bool ``(B, R)`` (padding proposals give no detection).
        box_weights: head coding weights.
        score_threshold: keep class scores strictly above this.
        nms_iou: per-class NMS threshold.
        max_detections: K, output slots per image.

    Returns:
        dict ``boxes`` ``(B, K, 4)`` xyxy px (-1 rows unused), ``scores`` ``(B, K)`` (0 unused),
        ``classes`` ``(B, K)`` int32 0-based (-1 unused), ``num_detections`` ``(B,)`` int32.
        Detections are sorted by decreasing score.
    """
    rois = ops.cast(rois, "float32")
    num_classes = class_logits.shape[-1] - 1
    count = rois.shape[1]
    probabilities = ops.softmax(ops.cast(class_logits, "float32"), axis=-1)[..., 1:]  # (B, R, C)
    boxes = decode_deltas(box_deltas, rois[:, :, None, :], box_weights)  # (B, R, C or 1, 4)
    boxes = clip_boxes(boxes, image_size[0], image_size[1])
    boxes = ops.broadcast_to(boxes, (ops.shape(boxes)[0], count, num_classes, 4))
    batch = ops.shape(boxes)[0]
    boxes = ops.reshape(boxes, (batch, count * num_classes, 4))
    scores = ops.reshape(probabilities, (batch, count * num_classes))
    classes = ops.broadcast_to(ops.arange(num_classes, dtype="int32")[None, None, :], (batch, count, num_classes))
    classes = ops.reshape(classes, (batch, count * num_classes))
    width, height = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
    valid = ops.logical_and(width > 0, height > 0)
    if roi_valid is not None:
        per_class = ops.repeat(ops.cast(roi_valid, "bool")[..., None], num_classes, axis=2)
        valid = ops.logical_and(valid, ops.reshape(per_class, (batch, -1)))
    index, keep = batched_nms(boxes, scores, classes, int(max_detections), nms_iou, score_threshold, valid)
    return {
        "boxes": ops.where(keep[..., None], gather_rows(boxes, index), -1.0),
        "scores": ops.where(keep, gather_rows(scores, index), 0.0),
        "classes": ops.where(keep, gather_rows(classes, index), -1),
        "num_detections": ops.sum(ops.cast(keep, "int32"), axis=1),
    }
