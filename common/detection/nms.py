"""Batched greedy non-maximum suppression with a fixed number of outputs, in ``keras.ops``.

Why not ``keras_hub.layers.NonMaxSuppression`` (public in keras-hub 0.32): it is class-agnostic,
returns the kept boxes but not their indices (we need indices to carry scores, classes and
deltas along), drops a below-threshold box by zeroing its coordinates (so a box at the image
origin reads as "suppressed"), and builds tensors from the static batch size, which is None
when ``model.fit`` traces a ``tf.data`` pipeline without ``drop_remainder``. This module keeps
the exact greedy algorithm of ``tf.image.non_max_suppression`` (the unit tests compare kept
sets), works on a dynamic batch and returns indices.

Cost: ``max_output_size`` sequential steps of O(B * N) work each (a ``while_loop`` that stops
early once every image has run out of boxes). That is cheap for RPN proposals (N of a few
thousand) and detections; it is not meant for N in the hundreds of thousands.
"""

from __future__ import annotations

from keras import ops

from microrepro.common.detection.boxes import box_area, gather_rows

_NEG_INF = -1e30  # finite, so that jax/XLA never meets inf - inf


def non_max_suppression(
    boxes,
    scores,
    max_output_size: int,
    iou_threshold: float = 0.5,
    score_threshold: float | None = None,
    valid=None,
):
    """Greedy NMS per image.

    Repeatedly keeps the highest-scoring remaining box and removes every remaining box whose
    IoU with it is greater than ``iou_threshold`` (as ``tf.image.non_max_suppression``).

    Args:
        boxes: ``(B, N, 4)`` xyxy px (any consistent units).
        scores: ``(B, N)`` float; higher is better.
        max_output_size: K, the fixed number of output slots.
        iou_threshold: boxes overlapping a kept box with IoU > this are suppressed.
        score_threshold: if given, boxes with score <= this are never kept.
        valid: optional bool ``(B, N)``; False rows are never kept (padding).

    Returns:
        ``(indices, keep)``: ``indices`` int32 ``(B, K)`` into N, in decreasing score order,
        0 in unused slots; ``keep`` bool ``(B, K)``, True for the ``num_kept`` first slots.

    Inputs are treated as constants (``stop_gradient``): selection is not differentiable, and
    it keeps jax from differentiating through the ``while_loop``.
    """
    if int(max_output_size) <= 0:
        raise ValueError(f"max_output_size must be positive, got {max_output_size}")
    if not 0.0 <= float(iou_threshold) <= 1.0:
        raise ValueError(f"iou_threshold must be in [0, 1], got {iou_threshold}")
    k = int(max_output_size)
    boxes = ops.stop_gradient(ops.cast(boxes, "float32"))
    scores = ops.stop_gradient(ops.cast(scores, "float32"))
    n = boxes.shape[1]
    if n is None:
        raise ValueError("non_max_suppression needs a static number of boxes (axis 1)")

    alive = ops.ones_like(scores, dtype="bool")
    if valid is not None:
        alive = ops.logical_and(alive, ops.cast(valid, "bool"))
    if score_threshold is not None:
        alive = ops.logical_and(alive, ops.greater(scores, float(score_threshold)))
    live = ops.where(alive, scores, _NEG_INF)
    areas = box_area(boxes)
    positions = ops.arange(n, dtype="int32")[None, :]
    slots = ops.arange(k, dtype="int32")[None, :]
    batch = ops.shape(boxes)[0]
    indices0 = ops.zeros((batch, k), dtype="int32")
    keep0 = ops.zeros((batch, k), dtype="bool")
    x1, y1, x2, y2 = boxes[..., 0], boxes[..., 1], boxes[..., 2], boxes[..., 3]

    def cond(step, live, indices, keep):
        return ops.logical_and(step < k, ops.any(live > _NEG_INF / 2))

    def body(step, live, indices, keep):
        best = ops.cast(ops.argmax(live, axis=1), "int32")  # (B,)
        has_box = ops.take_along_axis(live, best[:, None], axis=1)[:, 0] > _NEG_INF / 2
        chosen = gather_rows(boxes, best[:, None])  # (B, 1, 4)
        ix1 = ops.maximum(x1, chosen[..., 0])
        iy1 = ops.maximum(y1, chosen[..., 1])
        ix2 = ops.minimum(x2, chosen[..., 2])
        iy2 = ops.minimum(y2, chosen[..., 3])
        inter = ops.maximum(ix2 - ix1, 0.0) * ops.maximum(iy2 - iy1, 0.0)
        union = areas + box_area(chosen) - inter
        # tf.image.non_max_suppression treats a zero union as IoU 0.
        iou = ops.where(union > 0, inter / ops.where(union > 0, union, 1.0), 0.0)
        suppress = ops.logical_or(iou > iou_threshold, ops.equal(positions, best[:, None]))
        live = ops.where(ops.logical_and(suppress, has_box[:, None]), _NEG_INF, live)
        this_slot = ops.equal(slots, step)
        indices = ops.where(ops.logical_and(this_slot, has_box[:, None]), best[:, None], indices)
        keep = ops.logical_or(keep, ops.logical_and(this_slot, has_box[:, None]))
        return step + 1, live, indices, keep

    _, _, indices, keep = ops.while_loop(cond, body, (ops.convert_to_tensor(0, "int32"), live, indices0, keep0))
    return indices, keep


def batched_nms(
    boxes,
    scores,
    classes,
    max_output_size: int,
    iou_threshold: float = 0.5,
    score_threshold: float | None = None,
    valid=None,
):
    """Class-aware NMS: boxes of different classes never suppress each other.

    Uses the coordinate-offset trick (torchvision ``batched_nms``): each class is moved to its
    own region of the plane, farther apart than any box extent, then one NMS runs on all.

    Args:
        boxes: ``(B, N, 4)`` xyxy px.
        scores: ``(B, N)``.
        classes: ``(B, N)`` int, any non-negative class ids.
        max_output_size, iou_threshold, score_threshold, valid: as :func:`non_max_suppression`.

    Returns:
        ``(indices (B, K) int32, keep (B, K) bool)`` as :func:`non_max_suppression`.
    """
    boxes = ops.stop_gradient(ops.cast(boxes, "float32"))
    span = ops.max(ops.abs(boxes)) * 2.0 + 1.0
    offsets = ops.cast(classes, "float32")[..., None] * span
    return non_max_suppression(boxes + offsets, scores, max_output_size, iou_threshold, score_threshold, valid)
