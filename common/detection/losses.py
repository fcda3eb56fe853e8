"""Faster R-CNN losses of both stages, in ``keras.ops``.

Both stages use the multi-task loss of Fast R-CNN eq. (1) / Faster R-CNN eq. (1):
``L = L_cls + lambda * L_box`` with ``L_box`` a smooth L1 over the positives only. The weight
``lambda`` is applied by the caller (``FasterRCNNConfig``): 1 in Faster R-CNN as normalised
here, 10 in MITOS-RCNN eq. (2), 2 in the spines authors' released TF-OD-API config.

Normalisation: both terms are divided by the number of SAMPLED entries in the batch (anchors
for the RPN, ROIs for the head), as detectron2 and the TF Object Detection API do; with 256
sampled anchors this matches the paper's ``N_reg``/``lambda`` balance (Sec. 3.1.2).
"""

from __future__ import annotations

from keras import ops


def smooth_l1(x, beta: float = 1.0):
    """Elementwise smooth L1: ``0.5 x^2 / beta`` if ``|x| < beta`` else ``|x| - 0.5 beta``.

    Equals ``keras.losses.Huber(delta=beta) / beta``; ``beta = 0`` is plain L1. Fast R-CNN uses
    beta 1 (sigma 1); py-faster-rcnn's RPN uses sigma 3, i.e. beta = 1/9.
    """
    if beta < 0:
        raise ValueError(f"smooth L1 beta must be >= 0, got {beta}")
    absolute = ops.abs(x)
    if beta == 0:
        return absolute
    return ops.where(absolute < beta, 0.5 * ops.square(x) / beta, absolute - 0.5 * beta)


def rpn_losses(logits, deltas, labels, box_targets, beta: float = 1.0 / 9.0):
    """Objectness binary cross-entropy and box smooth L1 of the RPN.

    Args:
        logits: ``(B, A)`` objectness logits.
        deltas: ``(B, A, 4)`` predicted box deltas.
        labels: ``(B, A)`` int, 1 positive, 0 negative, -1 not sampled (from ``rpn_targets``).
        box_targets: ``(B, A, 4)`` encoded targets.
        beta: smooth L1 transition point.

    Returns:
        ``(class_loss, box_loss)`` scalars, each summed over the batch and divided by the number
        of sampled anchors.

    Reference:
        Ren et al., Faster R-CNN, Sec. 3.1.2, eq. (1).
    """
    labels = ops.cast(labels, "int32")
    sampled = ops.cast(labels >= 0, "float32")
    positive = ops.cast(ops.equal(labels, 1), "float32")
    count = ops.maximum(ops.sum(sampled), 1.0)
    logits = ops.cast(logits, "float32")
    bce = ops.binary_crossentropy(positive, logits, from_logits=True)
    class_loss = ops.sum(bce * sampled) / count
    box = ops.sum(smooth_l1(ops.cast(deltas, "float32") - ops.cast(box_targets, "float32"), beta), axis=-1)
    box_loss = ops.sum(box * positive) / count
    return class_loss, box_loss


def select_class_deltas(box_deltas, classes):
    """The deltas of each ROI's class: ``(B, S, C, 4)`` and ``(B, S)`` (0 = bg) -> ``(B, S, 4)``.

    A class-agnostic head (C = 1) uses its only slot; background rows read class 1's slot (and
    are masked out by the caller).
    """
    if box_deltas.shape[2] == 1:
        return box_deltas[:, :, 0, :]
    index = ops.maximum(ops.cast(classes, "int32") - 1, 0)
    return ops.take_along_axis(box_deltas, index[..., None, None], axis=2)[:, :, 0, :]


def head_losses(class_logits, box_deltas, classes, box_targets, weights, beta: float = 1.0):
    """Softmax cross-entropy over ``num_classes + 1`` and smooth L1 on the foreground ROIs.

    Args:
        class_logits: ``(B, S, C + 1)``, column 0 = background.
        box_deltas: ``(B, S, C, 4)`` per-class deltas (or ``(B, S, 1, 4)`` class-agnostic).
        classes: ``(B, S)`` int, 0 background, c + 1 foreground class c.
        box_targets: ``(B, S, 4)`` encoded targets.
        weights: ``(B, S)`` 1 for sampled ROIs, 0 for filler rows.
        beta: smooth L1 transition point (Fast R-CNN: 1).

    Returns:
        ``(class_loss, box_loss)`` scalars divided by the number of sampled ROIs.

    Reference:
        Girshick, Fast R-CNN, Sec. 2.3, eq. (1)-(3).
    """
    classes = ops.cast(classes, "int32")
    weights = ops.cast(weights, "float32")
    count = ops.maximum(ops.sum(weights), 1.0)
    ce = ops.sparse_categorical_crossentropy(classes, ops.cast(class_logits, "float32"), from_logits=True)
    class_loss = ops.sum(ce * weights) / count
    chosen = select_class_deltas(ops.cast(box_deltas, "float32"), classes)
    box = ops.sum(smooth_l1(chosen - ops.cast(box_targets, "float32"), beta), axis=-1)
    foreground = ops.cast(classes > 0, "float32") * weights
    box_loss = ops.sum(box * foreground) / count
    return class_loss, box_loss
