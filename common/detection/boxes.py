"""Box utilities in ``keras.ops``: IoU, R-CNN box coding, clipping, batched gathers.

Every function here takes and returns boxes as ``[x1, y1, x2, y2]`` in pixels ("xyxy",
x2/y2 the exclusive right/bottom edge, so width = x2 - x1), the suite-wide convention.
Internally ``keras.utils.bounding_boxes`` converts to ``yxyx`` (IoU) or ``center_xywh``
(box coding); that never leaks out. Nothing here uses normalised coordinates.

Padding: a batch of ground-truth boxes is ``(B, G_max, 4)`` with unused rows filled with
-1 (all four coordinates < 0); :func:`valid_boxes` and :func:`pairwise_iou` recognise them
by the same rule as ``keras.utils.bounding_boxes.compute_iou(use_masking=True)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
from keras import ops

#: Largest log-scale a decoded width/height delta may have: exp(4.135) = 1000/16, the clamp of
#: py-faster-rcnn / detectron2 that keeps exp() from overflowing while a head is untrained.
DEFAULT_SCALE_CLAMP = math.log(1000.0 / 16.0)

#: Box-coding weights of the RPN (deltas taken as they are) and of the second-stage head
#: (detectron2 / TF Object Detection API: (10, 10, 5, 5), i.e. variances 0.1, 0.1, 0.2, 0.2).
RPN_BOX_WEIGHTS = (1.0, 1.0, 1.0, 1.0)
HEAD_BOX_WEIGHTS = (10.0, 10.0, 5.0, 5.0)


def _check_weights(weights: Sequence[float]) -> tuple[float, float, float, float]:
    weights = tuple(float(w) for w in weights)
    if len(weights) != 4 or min(weights) <= 0:
        raise ValueError(f"box weights must be 4 positive numbers (wx, wy, ww, wh), got {weights}")
    return weights


def valid_boxes(boxes):
    """Which rows are real boxes rather than -1 padding.

    Args:
        boxes: ``(..., N, 4)`` xyxy px; padding rows have all coordinates < 0.

    Returns:
        bool ``(..., N)``.
    """
    return ops.greater_equal(ops.max(boxes, axis=-1), 0.0)


def box_area(boxes):
    """Area ``(x2 - x1) * (y2 - y1)`` of ``(..., 4)`` xyxy boxes (0 for inverted boxes)."""
    width = ops.maximum(boxes[..., 2] - boxes[..., 0], 0.0)
    height = ops.maximum(boxes[..., 3] - boxes[..., 1], 0.0)
    return width * height


def pairwise_iou(boxes1, boxes2, mask_padding: bool = True):
    """IoU of every box of ``boxes1`` with every box of ``boxes2``.

    A thin wrapper on ``keras.utils.bounding_boxes.compute_iou`` (which works in yxyx), with
    the padding mask of its ``use_masking=True``.

    Args:
        boxes1: ``(N, 4)`` or ``(B, N, 4)`` xyxy px.
        boxes2: ``(M, 4)`` or ``(B, M, 4)`` xyxy px.
        mask_padding: give -1 to every pair where either box is a -1 padding row.

    Returns:
        ``(N, M)`` or ``(B, N, M)`` float32 IoU in [0, 1] (-1 for padding pairs).
    """
    boxes1 = ops.cast(boxes1, "float32")
    boxes2 = ops.cast(boxes2, "float32")
    iou = keras.utils.bounding_boxes.compute_iou(boxes1, boxes2, bounding_box_format="xyxy")
    if not mask_padding:
        return iou
    # compute_iou(use_masking=True) applies the same rule but fails (keras 3.15) when only one of
    # the two inputs is batched, so the mask is applied here.
    valid = ops.logical_and(valid_boxes(boxes1)[..., :, None], valid_boxes(boxes2)[..., None, :])
    return ops.where(valid, iou, -1.0)


def elementwise_iou(boxes1, boxes2):
    """IoU of matching rows: ``(..., 4)`` and ``(..., 4)`` xyxy -> ``(...)`` (broadcasting)."""
    ix1 = ops.maximum(boxes1[..., 0], boxes2[..., 0])
    iy1 = ops.maximum(boxes1[..., 1], boxes2[..., 1])
    ix2 = ops.minimum(boxes1[..., 2], boxes2[..., 2])
    iy2 = ops.minimum(boxes1[..., 3], boxes2[..., 3])
    inter = ops.maximum(ix2 - ix1, 0.0) * ops.maximum(iy2 - iy1, 0.0)
    union = box_area(boxes1) + box_area(boxes2) - inter
    return inter / ops.maximum(union, keras.config.epsilon())


def encode_boxes(boxes, anchors, weights: Sequence[float] = RPN_BOX_WEIGHTS):
    """R-CNN box coding: the deltas that move ``anchors`` onto ``boxes``.

    ``t_x = w_x (x - x_a) / w_a``, ``t_y = w_y (y - y_a) / h_a``, ``t_w = w_w log(w / w_a)``,
    ``t_h = w_h log(h / h_a)`` with (x, y) box centres. Wraps
    ``keras.utils.bounding_boxes.encode_box_to_deltas`` (``center_xywh`` encoding, variance =
    1 / weights).

    Args:
        boxes: ``(..., N, 4)`` xyxy px, the targets.
        anchors: ``(N, 4)`` or ``(..., N, 4)`` xyxy px (broadcast against ``boxes``).
        weights: ``(w_x, w_y, w_w, w_h)``; (1, 1, 1, 1) for the RPN, (10, 10, 5, 5) for the head.

    Returns:
        ``(..., N, 4)`` float32 deltas ``[t_x, t_y, t_w, t_h]``.

    Reference:
        Girshick et al., "Rich feature hierarchies..." (R-CNN), Appendix C; Ren et al., Faster
        R-CNN, Sec. 3.1.2, eq. (2).
    """
    weights = _check_weights(weights)
    variance = [1.0 / w for w in weights]
    return keras.utils.bounding_boxes.encode_box_to_deltas(
        anchors=ops.cast(anchors, "float32"),
        boxes=ops.cast(boxes, "float32"),
        anchor_format="xyxy",
        box_format="xyxy",
        encoding_format="center_xywh",
        variance=variance,
    )


def decode_deltas(
    deltas, anchors, weights: Sequence[float] = RPN_BOX_WEIGHTS, scale_clamp: float = DEFAULT_SCALE_CLAMP
):
    """Inverse of :func:`encode_boxes`: apply ``deltas`` to ``anchors``.

    Args:
        deltas: ``(..., N, 4)`` ``[t_x, t_y, t_w, t_h]``.
        anchors: ``(N, 4)`` or ``(..., N, 4)`` xyxy px.
        weights: the weights the deltas were encoded with.
        scale_clamp: upper bound of ``t_w / w_w`` and ``t_h / w_h`` before ``exp`` (an untrained
            head can predict huge values; py-faster-rcnn and detectron2 clamp the same way).

    Returns:
        ``(..., N, 4)`` float32 xyxy px boxes.

    Reference:
        Ren et al., Faster R-CNN, Sec. 3.1.2, eq. (2).
    """
    weights = _check_weights(weights)
    deltas = ops.cast(deltas, "float32") / ops.convert_to_tensor(weights, "float32")
    deltas = ops.concatenate([deltas[..., :2], ops.minimum(deltas[..., 2:], scale_clamp)], axis=-1)
    return keras.utils.bounding_boxes.decode_deltas_to_boxes(
        anchors=ops.cast(anchors, "float32"),
        boxes_delta=deltas,
        anchor_format="xyxy",
        box_format="xyxy",
        encoded_format="center_xywh",
    )


def clip_boxes(boxes, height, width):
    """Clip ``(..., 4)`` xyxy px boxes to the image ``[0, width] x [0, height]``."""
    x1 = ops.clip(boxes[..., 0], 0.0, float(width))
    y1 = ops.clip(boxes[..., 1], 0.0, float(height))
    x2 = ops.clip(boxes[..., 2], 0.0, float(width))
    y2 = ops.clip(boxes[..., 3], 0.0, float(height))
    return ops.stack([x1, y1, x2, y2], axis=-1)


def xyxy_to_yxyx(boxes):
    """``[x1, y1, x2, y2]`` -> ``[y1, x1, y2, x2]`` (same units)."""
    return ops.stack([boxes[..., 1], boxes[..., 0], boxes[..., 3], boxes[..., 2]], axis=-1)


def gather_rows(values, indices):
    """Per-image gather along axis 1.

    Args:
        values: ``(B, N)`` or ``(B, N, ...)``.
        indices: ``(B, K)`` int, each in ``[0, N)``.

    Returns:
        ``(B, K)`` or ``(B, K, ...)``.
    """
    indices = ops.cast(indices, "int32")
    extra = len(values.shape) - 2
    for _ in range(extra):
        indices = ops.expand_dims(indices, -1)
    return ops.take_along_axis(values, indices, axis=1)
