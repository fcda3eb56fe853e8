"""Post-processing and evaluation shared by the three spine detectors (pure numpy).

Boxes are ``[x1, y1, x2, y2]`` pixels of the ORIGINAL image unless a function says otherwise.

Reference: paper Sec. 2 (eq. 1, 15x15 boxes, IoU 0.4 / 6 px golden distance) and Table 1.
"""

from __future__ import annotations

import numpy as np

from microrepro.common import matching
from microrepro.common.metrics import best_threshold


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, max_detections: int | None = None) -> np.ndarray:
    """Greedy non-maximum suppression.

    Args:
        boxes: ``(N, 4)`` ``[x1, y1, x2, y2]``.
        scores: ``(N,)``.
        iou_threshold: a box is dropped when its IoU with a kept, higher-scoring box is above this.
        max_detections: keep at most this many (None: all).

    Returns:
        Indices of the kept boxes, by descending score.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    scores = np.asarray(scores, np.float64).reshape(-1)
    if len(boxes) != len(scores):
        raise ValueError(f"nms: {len(boxes)} boxes but {len(scores)} scores")
    order = np.argsort(-scores, kind="mergesort")
    areas = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    keep: list[int] = []
    while len(order) and (max_detections is None or len(keep) < max_detections):
        i = order[0]
        keep.append(int(i))
        rest = order[1:]
        w = np.clip(np.minimum(boxes[i, 2], boxes[rest, 2]) - np.maximum(boxes[i, 0], boxes[rest, 0]), 0, None)
        h = np.clip(np.minimum(boxes[i, 3], boxes[rest, 3]) - np.maximum(boxes[i, 1], boxes[rest, 1]), 0, None)
        inter = w * h
        iou = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-12)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, np.int64)


def points_to_square_boxes(points: np.ndarray, size: float = 15.0) -> np.ndarray:
    """``(N, 2)`` centres ``[x, y]`` -> ``(N, 4)`` ``size``x``size`` boxes (Sec. 2)."""
    from microrepro.datasets.base import points_to_boxes

    return points_to_boxes(points, size)


def rescale_boxes(boxes: np.ndarray, scale_xy: tuple[float, float]) -> np.ndarray:
    """Map boxes from network-input pixels back to the original image: divide x by sx, y by sy."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4).copy()
    sx, sy = scale_xy
    boxes[:, [0, 2]] /= sx
    boxes[:, [1, 3]] /= sy
    return boxes


def evaluate_detections(
    detections: list[tuple[np.ndarray, np.ndarray]],
    gt_boxes: list[np.ndarray],
    score_threshold: float,
    iou_threshold: float = 0.4,
    max_dist: float = 6.0,
    map_iou_threshold: float = 0.5,
    released_max_dist: float = 6.0,
    released_score_threshold: float = 0.6,
) -> dict:
    """All of Table 1's accuracy numbers for one model on one split.

    Args:
        detections: per image ``(boxes (N, 4) px, scores (N,))``, all scores (for mAP).
        gt_boxes: per image ``(M, 4)`` 15x15 ground-truth boxes px.
        score_threshold: detections at or above this count for P/R/F1.
        iou_threshold, max_dist: the paper's TP rule (IoU >= 0.4 or centre distance <= 6 px,
            one-to-one; ``common.matching.match_spines``).
        map_iou_threshold: IoU for average precision (Table 1 "mAP@0.5").
        released_max_dist, released_score_threshold: the released evaluation (top-left corners
            within 6 px, score > 0.6, not one-to-one; ``match_spines_released``).

    Returns:
        ``{"precision", "recall", "f1", "map50", "precision_released", "recall_released",
        "f1_released", "tp", "fp", "fn", "n_pred", "n_gt"}``.
    """
    from microrepro.common.metrics import average_precision

    if len(detections) != len(gt_boxes):
        raise ValueError(f"{len(detections)} detection lists for {len(gt_boxes)} images")
    ours, released = [], []
    for (boxes, scores), gt in zip(detections, gt_boxes):
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        scores = np.asarray(scores, np.float32).reshape(-1)
        kept = boxes[scores >= score_threshold]
        ours.append(matching.match_spines(kept, gt, iou_threshold=iou_threshold, max_dist=max_dist))
        # The released script keeps boxes with score strictly above 0.60.
        rel = boxes[scores > released_score_threshold]
        released.append(matching.match_spines_released(rel, gt, max_dist=released_max_dist))
    total = matching.aggregate(ours)
    total_rel = matching.aggregate(released)
    ap = average_precision(
        [np.asarray(d[0], np.float32).reshape(-1, 4) for d in detections],
        [np.asarray(d[1], np.float32).reshape(-1) for d in detections],
        [np.asarray(g, np.float32).reshape(-1, 4) for g in gt_boxes],
        iou_threshold=map_iou_threshold,
    )
    return {
        "precision": total.precision,
        "recall": total.recall,
        "f1": total.f1,
        "map50": float(ap),
        "precision_released": total_rel.precision,
        "recall_released": total_rel.recall,
        "f1_released": total_rel.f1,
        "tp": total.tp,
        "fp": total.fp,
        "fn": total.fn,
        "n_pred": total.tp + total.fp,
        "n_gt": total.tp + total.fn,
    }


def f1_sweep(
    detections: list[tuple[np.ndarray, np.ndarray]],
    gt_boxes: list[np.ndarray],
    thresholds: np.ndarray,
    iou_threshold: float = 0.4,
    max_dist: float = 6.0,
) -> dict:
    """Precision, recall and F1 of the paper's rule at each score threshold.

    Returns:
        ``{"threshold": (T,), "precision": (T,), "recall": (T,), "f1": (T,)}`` numpy arrays.
    """
    out = {"threshold": np.asarray(thresholds, np.float64), "precision": [], "recall": [], "f1": []}
    for threshold in out["threshold"]:
        results = [
            matching.match_spines(
                np.asarray(b, np.float32).reshape(-1, 4)[np.asarray(s).reshape(-1) >= threshold], g,
                iou_threshold=iou_threshold, max_dist=max_dist,
            )
            for (b, s), g in zip(detections, gt_boxes)
        ]
        total = matching.aggregate(results)
        out["precision"].append(total.precision)
        out["recall"].append(total.recall)
        out["f1"].append(total.f1)
    return {k: np.asarray(v, np.float64) for k, v in out.items()}


def threshold_grid(step: float) -> np.ndarray:
    """Score thresholds 0.05, 0.05 + step, ..., 0.95 (the grid ``choose_threshold`` searches)."""
    if not 0 < step <= 0.9:
        raise ValueError(f"threshold step must be in (0, 0.9], got {step}")
    return np.round(np.arange(0.05, 0.95 + step / 2, step), 6)


def choose_threshold(
    detections: list[tuple[np.ndarray, np.ndarray]],
    gt_boxes: list[np.ndarray],
    step: float = 0.025,
    iou_threshold: float = 0.4,
    max_dist: float = 6.0,
) -> tuple[float, float, dict]:
    """The score threshold of maximum F1 (paper's rule) on images the model was trained on.

    The operating point is chosen without looking at the evaluation split: the rule of the
    cell-counting paper (maximum F1 on the training images). Ties go to the lowest threshold.

    Returns:
        ``(threshold, f1 at it, the f1_sweep over threshold_grid(step))``.
    """
    sweep = f1_sweep(detections, gt_boxes, threshold_grid(step), iou_threshold, max_dist)
    threshold, f1 = best_threshold({"thresholds": sweep["threshold"], "f1": sweep["f1"]}, "f1")
    return threshold, f1, sweep


def anchor_max_iou(box_size: float, anchor_sizes, ratios=(1.0,)) -> float:
    """Best IoU any anchor of a sliding-window grid can reach with a ``box_size`` square box.

    Anchors are ``size*sqrt(r)`` x ``size/sqrt(r)`` boxes. The best case is a box concentric
    with an anchor (a box off the anchor grid only does worse), so this is an upper bound on
    the IoU the RPN's anchor matcher can see, whatever the feature stride.

    Reference: REPRODUCTIONS.md Sec. 1 (released anchors 64-512 px vs a 15 px spine).
    """
    best = 0.0
    for size in np.asarray(anchor_sizes, np.float64).reshape(-1):
        for ratio in np.asarray(ratios, np.float64).reshape(-1):
            aw, ah = size * np.sqrt(ratio), size / np.sqrt(ratio)
            inter = min(aw, box_size) * min(ah, box_size)
            best = max(best, inter / (aw * ah + box_size * box_size - inter))
    return float(best)
