"""Training targets of the two stages: anchor labels for the RPN, sampled ROIs for the box head.

Fixed shapes throughout (jit/XLA friendly): ground truth arrives padded, ``gt_boxes (B, G, 4)``
xyxy px with -1 rows and ``gt_classes (B, G)`` int with -1; sampling draws random keys
(``keras.random.uniform``, seedable with an int or a ``keras.random.SeedGenerator``) and keeps
the lowest-ranked candidates, so the number of outputs never depends on the data.

Class ids: ``gt_classes`` are the suite's 0-based foreground classes; the head's targets use
0 = background and ``c + 1`` for foreground class ``c``.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import keras_hub
from keras import ops

from microrepro.common.detection.boxes import (
    HEAD_BOX_WEIGHTS,
    RPN_BOX_WEIGHTS,
    encode_boxes,
    gather_rows,
    pairwise_iou,
    valid_boxes,
)

POSITIVE, NEGATIVE, IGNORE = 1, 0, -1


def _check_fraction(value: float, name: str) -> None:
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")


def match_anchors(iou, positive_iou: float = 0.7, negative_iou: float = 0.3, allow_low_quality: bool = True):
    """Label each anchor positive / negative / ignored from its IoU with the ground truth.

    Positive when its best IoU >= ``positive_iou``; negative when < ``negative_iou``; ignored in
    between. With ``allow_low_quality`` the anchor(s) with the highest IoU for each ground-truth
    box are positive too (all tied ones, as py-faster-rcnn), provided that IoU is > 0.
    The threshold part is ``keras_hub.layers.BoxMatcher``; its own ``force_match_for_each_col``
    is not used because it would force-match padding columns and keeps only one of tied anchors.

    Args:
        iou: ``(B, A, G)`` IoU, -1 for padding ground truth (see ``pairwise_iou``).
        positive_iou: IoU at or above which an anchor is positive.
        negative_iou: IoU below which an anchor is negative.
        allow_low_quality: make each ground truth's best anchors positive.

    Returns:
        ``(matched_gt (B, A) int32, labels (B, A) int32 in {1, 0, -1})``. ``matched_gt`` is the
        argmax ground truth (meaningful where labels == 1).

    Reference:
        Ren et al., Faster R-CNN, Sec. 3.1.2 ("Loss Function": the two positive rules).
    """
    if not negative_iou <= positive_iou:
        raise ValueError(f"negative_iou ({negative_iou}) must not exceed positive_iou ({positive_iou})")
    matcher = keras_hub.layers.BoxMatcher(
        thresholds=[float(negative_iou), float(positive_iou)],
        match_values=[NEGATIVE, IGNORE, POSITIVE],
    )
    matched_gt, labels = matcher(iou)
    if allow_low_quality:
        best_per_gt = ops.max(iou, axis=1, keepdims=True)  # (B, 1, G)
        is_best = ops.logical_and(ops.equal(iou, best_per_gt), best_per_gt > 0.0)
        labels = ops.where(ops.any(is_best, axis=2), POSITIVE, labels)
    return ops.cast(matched_gt, "int32"), ops.cast(labels, "int32")


def _rank_within(mask, keys):
    """0-based rank of each True entry of ``mask`` by ascending ``keys`` (others: >= count)."""
    keyed = ops.where(mask, keys, 2.0 + keys)  # keys in [0, 1): masked-out entries sort last
    order = ops.argsort(keyed, axis=-1)
    return ops.cast(ops.argsort(order, axis=-1), "int32")


def sample_balanced(labels, num_samples: int, positive_fraction: float, seed=None):
    """Choose at most ``num_samples`` labelled entries per image, at most a fraction positive.

    Positives are drawn at random up to ``int(num_samples * positive_fraction)``; negatives fill
    the rest (if there are enough). Works on any fixed ``(B, N)``.

    Args:
        labels: ``(B, N)`` int in {1 positive, 0 negative, -1 ignore}.
        num_samples: samples per image.
        positive_fraction: largest share of positives.
        seed: int, ``keras.random.SeedGenerator`` or None.

    Returns:
        ``(sampled_positive, sampled_negative)``, two bool ``(B, N)``.
    """
    if int(num_samples) <= 0:
        raise ValueError(f"num_samples must be positive, got {num_samples}")
    _check_fraction(positive_fraction, "positive_fraction")
    positive = ops.equal(labels, POSITIVE)
    negative = ops.equal(labels, NEGATIVE)
    keys = keras.random.uniform(ops.shape(labels), seed=seed)
    max_positive = int(int(num_samples) * float(positive_fraction))
    chosen_positive = ops.logical_and(positive, _rank_within(positive, keys) < max_positive)
    num_negative = int(num_samples) - ops.sum(ops.cast(chosen_positive, "int32"), axis=1, keepdims=True)
    chosen_negative = ops.logical_and(negative, _rank_within(negative, keys) < num_negative)
    return chosen_positive, chosen_negative


def rpn_targets(
    anchors,
    gt_boxes,
    positive_iou: float = 0.7,
    negative_iou: float = 0.3,
    batch_size_per_image: int = 256,
    positive_fraction: float = 0.5,
    box_weights: Sequence[float] = RPN_BOX_WEIGHTS,
    anchor_valid=None,
    seed=None,
):
    """Sampled objectness labels and box targets of every anchor.

    Args:
        anchors: ``(A, 4)`` shared or ``(B, A, 4)`` per-image xyxy px (a cascaded RPN passes the
            previous stage's proposals here).
        gt_boxes: ``(B, G, 4)`` xyxy px, -1 padding rows.
        positive_iou, negative_iou: labelling thresholds (paper: 0.7 / 0.3).
        batch_size_per_image: anchors sampled per image (paper: 256).
        positive_fraction: at most this share positive (paper: 0.5).
        box_weights: box coding weights (RPN: 1, 1, 1, 1).
        anchor_valid: optional bool ``(A,)`` or ``(B, A)``; False anchors are ignored (e.g. the
            paper's cross-boundary anchors, or padding proposals of a previous stage).
        seed: int, ``keras.random.SeedGenerator`` or None.

    Returns:
        dict with ``labels`` ``(B, A)`` int32 (1 sampled positive, 0 sampled negative, -1 not
        sampled), ``box_targets`` ``(B, A, 4)`` float32 deltas to the matched ground truth
        (zeros where not positive), ``matched_gt`` ``(B, A)`` int32.

    Reference:
        Ren et al., Faster R-CNN, Sec. 3.1.2 and 3.1.3 (256 anchors, up to 1:1).
    """
    gt_boxes = ops.cast(gt_boxes, "float32")
    anchors = ops.cast(anchors, "float32")
    iou = pairwise_iou(anchors, gt_boxes)  # (B, A, G)
    if len(iou.shape) == 2:  # no batch anywhere: (A, G)
        iou = iou[None]
    if anchor_valid is not None:
        anchor_valid = ops.cast(anchor_valid, "bool")
        if len(anchor_valid.shape) == 1:
            anchor_valid = anchor_valid[None, :]
        # Hidden from matching too, so a ground truth's "best anchor" is a usable one.
        iou = ops.where(anchor_valid[..., None], iou, -1.0)
    matched_gt, labels = match_anchors(iou, positive_iou, negative_iou)
    if anchor_valid is not None:
        labels = ops.where(anchor_valid, labels, IGNORE)
    chosen_positive, chosen_negative = sample_balanced(labels, batch_size_per_image, positive_fraction, seed)
    sampled = ops.where(chosen_positive, POSITIVE, ops.where(chosen_negative, NEGATIVE, IGNORE))
    matched_boxes = gather_rows(gt_boxes, matched_gt)
    targets = encode_boxes(matched_boxes, anchors, box_weights)
    targets = ops.where(chosen_positive[..., None], targets, 0.0)
    return {"labels": ops.cast(sampled, "int32"), "box_targets": targets, "matched_gt": matched_gt}


def head_targets(
    proposals,
    gt_boxes,
    gt_classes,
    proposal_valid=None,
    batch_size_per_image: int = 128,
    positive_fraction: float = 0.25,
    foreground_iou: float = 0.5,
    background_iou_low: float = 0.0,
    box_weights: Sequence[float] = HEAD_BOX_WEIGHTS,
    add_gt_to_proposals: bool = True,
    seed=None,
):
    """Sample ROIs for the second stage and give each its class and box target.

    Foreground: best IoU >= ``foreground_iou``; background: IoU in ``[background_iou_low,
    foreground_iou)``; the rest is never sampled. The ground-truth boxes are appended to the
    proposals first (``add_gt_to_proposals``), which gives the head positives while the RPN is
    still poor.

    Args:
        proposals: ``(B, P, 4)`` xyxy px.
        gt_boxes: ``(B, G, 4)`` xyxy px, -1 padding rows.
        gt_classes: ``(B, G)`` int, 0-based foreground classes, -1 padding.
        proposal_valid: optional bool ``(B, P)``; False proposals are never sampled.
        batch_size_per_image: ROIs per image, S (Fast R-CNN: 128, detectron2: 512).
        positive_fraction: largest foreground share (Fast R-CNN: 0.25).
        foreground_iou: Fast R-CNN 0.5.
        background_iou_low: 0.1 in Fast R-CNN, 0.0 in later code (keeps easy negatives).
        box_weights: head box coding weights (10, 10, 5, 5 by default).
        add_gt_to_proposals: append the ground truth to the candidates.
        seed: int, ``keras.random.SeedGenerator`` or None.

    Returns:
        dict, with ``S' = min(S, P + G)`` rows per image, sampled ones first:
        ``rois`` ``(B, S', 4)`` xyxy px; ``classes`` ``(B, S')`` int32 (0 background, c + 1
        foreground); ``box_targets`` ``(B, S', 4)`` (zeros for background); ``weights``
        ``(B, S')`` float32 (1 sampled, 0 filler); ``foreground`` ``(B, S')`` bool.

    Reference:
        Girshick, Fast R-CNN, Sec. 2.3 ("Mini-batch sampling").
    """
    _check_fraction(foreground_iou, "foreground_iou")
    if not 0.0 <= background_iou_low <= foreground_iou:
        raise ValueError(f"background_iou_low must be in [0, foreground_iou], got {background_iou_low}")
    proposals = ops.stop_gradient(ops.cast(proposals, "float32"))
    gt_boxes = ops.cast(gt_boxes, "float32")
    gt_classes = ops.cast(gt_classes, "int32")
    gt_valid = valid_boxes(gt_boxes)
    if proposal_valid is None:
        proposal_valid = valid_boxes(proposals)
    candidates, candidate_valid = proposals, ops.cast(proposal_valid, "bool")
    if add_gt_to_proposals:
        candidates = ops.concatenate([proposals, gt_boxes], axis=1)
        candidate_valid = ops.concatenate([candidate_valid, gt_valid], axis=1)

    iou = pairwise_iou(candidates, gt_boxes, mask_padding=False)  # (B, R, G)
    # Padding gt: IoU 0, so an image without objects still yields backgrounds.
    iou = ops.where(gt_valid[:, None, :], iou, 0.0)
    iou = ops.where(candidate_valid[..., None], iou, -1.0)
    best_iou = ops.max(iou, axis=2)
    matched_gt = ops.cast(ops.argmax(iou, axis=2), "int32")
    labels = ops.where(
        best_iou >= foreground_iou,
        POSITIVE,
        ops.where(ops.logical_and(best_iou >= background_iou_low, candidate_valid), NEGATIVE, IGNORE),
    )
    chosen_fg, chosen_bg = sample_balanced(labels, batch_size_per_image, positive_fraction, seed)

    num_candidates = candidates.shape[1]
    size = min(int(batch_size_per_image), int(num_candidates))
    # Sampled foreground first, then background, then filler; the small ramp keeps order stable.
    ramp = ops.arange(num_candidates, dtype="float32") / (2.0 * num_candidates)
    priority = 2.0 * ops.cast(chosen_fg, "float32") + ops.cast(chosen_bg, "float32") - ramp
    _, order = ops.top_k(priority, k=size)
    fg = gather_rows(chosen_fg, order)
    weights = ops.cast(ops.logical_or(fg, gather_rows(chosen_bg, order)), "float32")
    rois = gather_rows(candidates, order)
    roi_gt = gather_rows(matched_gt, order)
    classes = ops.where(fg, gather_rows(gt_classes, roi_gt) + 1, 0)
    targets = encode_boxes(gather_rows(gt_boxes, roi_gt), rois, box_weights)
    targets = ops.where(fg[..., None], targets, 0.0)
    # Filler rows may be padding (-1) boxes; give them a harmless box for ROI align.
    rois = ops.where(weights[..., None] > 0, rois, ops.maximum(rois, 0.0))
    return {
        "rois": ops.stop_gradient(rois),
        "classes": ops.cast(classes, "int32"),
        "box_targets": ops.stop_gradient(targets),
        "weights": weights,
        "foreground": fg,
    }
