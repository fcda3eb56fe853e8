"""Post-processing and evaluation shared by the three spine detectors (pure numpy).

Boxes are ``[x1, y1, x2, y2]`` pixels of the ORIGINAL image unless a function says otherwise.

Reference: paper Sec. 2 (eq. 1, 15x15 boxes, IoU 0.4 / 6 px golden distance) and Table 1.
"""

from __future__ import annotations

import numpy as np

from microrepro.common import matching, stats


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, max_detections: int | None = None) -> np.ndarray:
    """Greedy non-maximum suppression (``common.tiling.nms``) keeping at most ``max_detections``.

    Args:
        boxes: ``(N, 4)`` ``[x1, y1, x2, y2]``.
        scores: ``(N,)``.
        iou_threshold: a box is dropped when its IoU with a kept, higher-scoring box is above this.
        max_detections: keep at most this many (None: all).

    Returns:
        Indices of the kept boxes, by descending score (ties: lower index first).
    """
    from microrepro.common.tiling import nms as greedy_nms

    keep = greedy_nms(boxes, scores, iou_threshold)
    return keep if max_detections is None else keep[: max(0, int(max_detections))]


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
    per_image: dict | None = None,
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
        per_image: when given, filled with the per-image counts the bootstrap resamples
            (``per_image_counts``: ``tp``, ``fp``, ``fn`` and their ``*_released``, each ``(I,)``).

    Returns:
        ``{"precision", "recall", "f1", "map50", "precision_released", "recall_released",
        "f1_released", "tp", "fp", "fn", "n_pred", "n_gt"}``.
    """
    from microrepro.common.metrics import average_precision

    if len(detections) != len(gt_boxes):
        raise ValueError(f"{len(detections)} detection lists for {len(gt_boxes)} images")
    ours, released = [], []
    for (boxes, scores), gt in zip(detections, gt_boxes, strict=True):
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        scores = np.asarray(scores, np.float32).reshape(-1)
        kept = boxes[scores >= score_threshold]
        ours.append(matching.match_spines(kept, gt, iou_threshold=iou_threshold, max_dist=max_dist))
        # The released script keeps boxes with score strictly above 0.60.
        rel = boxes[scores > released_score_threshold]
        released.append(matching.match_spines_released(rel, gt, max_dist=released_max_dist))
    if per_image is not None:
        per_image.update(per_image_counts(ours, released))
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


RATE_KEYS = ("precision", "recall", "f1", "precision_released", "recall_released", "f1_released")


def per_image_counts(ours: list, released: list) -> dict[str, np.ndarray]:
    """``{tp, fp, fn, tp_released, fp_released, fn_released}``, each ``(I,)`` int64, of per-image matchings."""
    out = {}
    for suffix, results in (("", ours), ("_released", released)):
        for k in ("tp", "fp", "fn"):
            out[f"{k}{suffix}"] = np.array([getattr(r, k) for r in results], np.int64)
    return out


def rates_statistic(per_image) -> dict[str, float]:
    """Precision / recall / F1 of both rules from counts summed over images (``RATE_KEYS``).

    Equal, on all images, to ``evaluate_detections``' values (``matching.aggregate`` and
    ``common.stats.detection_statistic`` share ``metrics.prf``'s formulas and empty cases).
    """
    out = stats.detection_statistic({k: per_image[k] for k in ("tp", "fp", "fn")})
    released = stats.detection_statistic({k: per_image[f"{k}_released"] for k in ("tp", "fp", "fn")})
    return out | {f"{k}_released": v for k, v in released.items()}


def table1_intervals(detections: list, gt_boxes: list, per_image: dict, map_iou_threshold: float = 0.5,
                     n_boot: int = stats.N_BOOT, seed: int = stats.SEED) -> dict:
    """95 % bootstrap intervals over images of Table 1's rates (both rules) and of mAP@0.5.

    One resampling of the image indices (``common.stats.bootstrap``) serves all metrics: the
    rates are recomputed from the resampled images' summed counts, mAP as ``average_precision`` of
    the resampled images (repeats included) — from each image's matching, done once
    (``metrics.image_matches`` / ``ap_from_matches``: the same value, without re-matching 1000 times).

    Args:
        detections, gt_boxes: as ``evaluate_detections``.
        per_image: the counts ``evaluate_detections(..., per_image=...)`` filled.
        map_iou_threshold: IoU of average precision.
        n_boot, seed: as ``common.stats.bootstrap``.

    Returns:
        ``{f"{m}_ci_low", f"{m}_ci_high"}`` for ``m`` in ``RATE_KEYS`` and ``map50`` (None where undefined).

    Reference: Table 1; Efron & Tibshirani 1993, Ch. 13.
    """
    from microrepro.common.metrics import ap_from_matches, image_matches

    boxes = [np.asarray(d[0], np.float32).reshape(-1, 4) for d in detections]
    scores = [np.asarray(d[1], np.float32).reshape(-1) for d in detections]
    truth = [np.asarray(g, np.float32).reshape(-1, 4) for g in gt_boxes]
    matches = image_matches(boxes, scores, truth, map_iou_threshold)

    def statistic(subset) -> dict[str, float]:
        ap = ap_from_matches([matches[i] for i in subset["image"]])
        return rates_statistic(subset) | {"map50": float(ap)}

    data = {"image": np.arange(len(detections))} | dict(per_image)
    intervals = stats.bootstrap(data, statistic, n_boot=n_boot, seed=seed)
    return stats.interval_keys({k: intervals[k] for k in (*RATE_KEYS, "map50")})


def anchor_max_iou(box_size: float, anchor_sizes, ratios=(1.0,)) -> float:
    """Best IoU any anchor of a sliding-window grid can reach with a ``box_size`` square box.

    Anchors are ``size*sqrt(r)`` x ``size/sqrt(r)`` boxes. The best case is a box concentric
    with an anchor (a box off the anchor grid only does worse), so this is an upper bound on
    the IoU the RPN's anchor matcher can see, whatever the feature stride.

    Reference: Sec. 3.1 (one 1:1 anchor ratio; the released anchors are 64-512 px, a spine 15 px).
    """
    best = 0.0
    for size in np.asarray(anchor_sizes, np.float64).reshape(-1):
        for ratio in np.asarray(ratios, np.float64).reshape(-1):
            aw, ah = size * np.sqrt(ratio), size / np.sqrt(ratio)
            inter = min(aw, box_size) * min(ah, box_size)
            best = max(best, inter / (aw * ah + box_size * box_size - inter))
    return float(best)
