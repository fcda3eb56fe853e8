"""Evaluation metrics: pure numpy functions, no TensorFlow.

- detection: ``prf`` (precision/recall/F1 from counts), ``detection_sweep`` /
  ``best_f1_threshold`` (F1 against the score threshold), ``average_precision`` (COCO-exact AP at
  one IoU threshold);
- counting: ``count_errors`` (MAE, MedAE, signed mean error, max error);
- pixels: ``pixel_metrics``, ``threshold_sweep`` / ``best_threshold``, ``roc_curve``; the per-image
  counts they sum (``pixel_counts``, ``threshold_counts``) for ``common.stats``' bootstrap;
- segmentation overlap: ``class_mean_iou``, ``foreground_iou``, ``matched_object_iou`` and the
  dispatcher ``mean_instance_iou``.

Values where a denominator is 0 (documented per function, chosen so that a perfect empty
answer scores 1 and no degenerate case raises):

- precision TP/(TP+FP) and recall TP/(TP+FN): 0/0 is 1.0 when the other error count is also 0,
  else 0.0; F1 = 2TP/(2TP+FP+FN) and IoU = TP/(TP+FP+FN): 0/0 is 1.0 (same as
  ``microrepro.common.matching``);
- specificity TN/(TN+FP): 0/0 (no negative pixel) is 1.0;
- MCC: 0.0 when any of the four marginals is 0 (as scikit-learn's ``matthews_corrcoef``).

Pixel counts are int64 and every product is formed in float64, so images of any size do not
overflow.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from microrepro.common.matching import (
    MatchResult,
    _as_boxes,
    _assign,
    _coco_greedy,
    aggregate,
    box_iou,
)

# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _safe_div(num, den, empty) -> np.ndarray:
    """num / den elementwise, ``empty`` where den == 0 (arrays broadcast)."""
    num = np.asarray(num, np.float64)
    den = np.asarray(den, np.float64)
    empty = np.broadcast_to(np.asarray(empty, np.float64), np.broadcast(num, den).shape)
    out = np.array(empty, dtype=np.float64)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _scalar_or_array(value: np.ndarray):
    return float(value) if np.ndim(value) == 0 else value


def _as_list(arrays) -> list[np.ndarray]:
    """One array or a sequence of arrays (images of different shapes) -> list of arrays."""
    if isinstance(arrays, np.ndarray):
        return [arrays]
    if isinstance(arrays, (list, tuple)):
        return [np.asarray(a) for a in arrays]
    return [np.asarray(arrays)]


def _as_binary(mask: np.ndarray, name: str) -> np.ndarray:
    """Bool mask from bool, integer (> 0 = foreground: 0/1, 0/255, instance labels) or 0/1 float."""
    mask = np.asarray(mask)
    if mask.dtype == bool:
        return mask
    if np.issubdtype(mask.dtype, np.integer):
        return mask > 0
    if np.issubdtype(mask.dtype, np.floating):
        if not np.all((mask == 0) | (mask == 1)):
            raise ValueError(
                f"{name} is a float array with values other than 0 and 1: threshold it first, "
                "or pass probabilities to threshold_sweep / roc_curve"
            )
        return mask == 1
    raise ValueError(f"{name} must be a bool, integer or 0/1 float array, got {mask.dtype}")


def _pairs_of_images(pred, gt, pred_name: str = "pred") -> list[tuple[np.ndarray, np.ndarray]]:
    preds, gts = _as_list(pred), _as_list(gt)
    if len(preds) != len(gts):
        raise ValueError(f"{len(preds)} {pred_name} arrays but {len(gts)} ground-truth arrays")
    if not preds:
        raise ValueError("no images given")
    for k, (p, g) in enumerate(zip(preds, gts, strict=True)):
        if p.shape != g.shape:
            raise ValueError(f"image {k}: {pred_name} shape {p.shape} differs from gt shape {g.shape}")
    return list(zip(preds, gts, strict=True))


# --------------------------------------------------------------------------------------------
# detection and counting
# --------------------------------------------------------------------------------------------


def prf(tp, fp, fn):
    """Precision, recall and F1 from counts (scalars or arrays of equal shape).

    Args:
        tp: true positives; fp: false positives; fn: false negatives.

    Returns:
        ``(precision, recall, f1)``: floats for scalar input, else float64 arrays.
        precision = TP/(TP+FP) (0/0 -> 1.0 if FN == 0 else 0.0), recall = TP/(TP+FN)
        (0/0 -> 1.0 if FP == 0 else 0.0), F1 = 2TP/(2TP+FP+FN) (0/0 -> 1.0).
    """
    tp, fp, fn = (np.asarray(v, np.float64) for v in (tp, fp, fn))
    precision = _safe_div(tp, tp + fp, np.where(fn == 0, 1.0, 0.0))
    recall = _safe_div(tp, tp + fn, np.where(fp == 0, 1.0, 0.0))
    f1 = _safe_div(2 * tp, 2 * tp + fp + fn, 1.0)
    return _scalar_or_array(precision), _scalar_or_array(recall), _scalar_or_array(f1)


def count_errors(pred_counts, gt_counts) -> dict[str, float]:
    """Counting errors over images.

    Args:
        pred_counts: ``(I,)`` predicted object counts per image.
        gt_counts: ``(I,)`` true counts per image.

    Returns:
        ``{"mae", "medae", "mean_error", "max_ae"}``: mean and median of |pred − gt|, the signed
        mean of pred − gt (> 0 = over-counting) and the largest |pred − gt|.

    Reference: cell_counting Sec. 5.1 (MAE and MedAE of per-image counts, Table 1).
    """
    pred = np.asarray(pred_counts, np.float64).reshape(-1)
    gt = np.asarray(gt_counts, np.float64).reshape(-1)
    if len(pred) != len(gt):
        raise ValueError(f"{len(pred)} predicted counts but {len(gt)} true counts")
    if len(pred) == 0:
        raise ValueError("count_errors needs at least one image")
    error = pred - gt
    return {
        "mae": float(np.mean(np.abs(error))),
        "medae": float(np.median(np.abs(error))),
        "mean_error": float(np.mean(error)),
        "max_ae": float(np.max(np.abs(error))),
    }


def detection_sweep(
    match_fn: Callable[[np.ndarray, np.ndarray], MatchResult],
    predictions_per_image: Sequence,
    scores_per_image: Sequence,
    gts_per_image: Sequence,
    thresholds,
) -> dict[str, np.ndarray]:
    """Precision / recall / F1 of a detector against its score threshold (the "F1 curve").

    At threshold t every image keeps the predictions with score >= t, is matched with
    ``match_fn(kept, gt)`` and the counts are summed over images (micro-average). The kept
    predictions stay in their given order: for a score-ordered matcher (``"boxes_greedy"``)
    pass each image's predictions sorted by descending score.

    Args:
        match_fn: ``fn(pred, gt) -> MatchResult``, e.g. ``get_matcher("points", max_dist=8)``.
        predictions_per_image: per image, ``(N_i, 2)`` points or ``(N_i, 4)`` boxes.
        scores_per_image: per image, ``(N_i,)`` confidences.
        gts_per_image: per image, the ground truth in the form ``match_fn`` expects.
        thresholds: ``(T,)`` score thresholds.

    Returns:
        Dict of ``(T,)`` arrays: ``thresholds`` (as given), ``tp``, ``fp``, ``fn``, ``precision``,
        ``recall``, ``f1``.

    Reference: cell_counting Fig. 8 (F1 against the cut-off, best 0.55).
    """
    n = len(predictions_per_image)
    if len(scores_per_image) != n or len(gts_per_image) != n:
        raise ValueError(
            f"{n} prediction sets, {len(scores_per_image)} score sets and "
            f"{len(gts_per_image)} ground-truth sets: they must be equal"
        )
    thresholds = np.asarray(thresholds, np.float64).reshape(-1)
    preds, scores = [], []
    for k, (p, s) in enumerate(zip(predictions_per_image, scores_per_image, strict=True)):
        p = np.asarray(p, np.float64)
        s = np.asarray(s, np.float64).reshape(-1)
        if len(p) != len(s):
            raise ValueError(f"image {k}: {len(p)} predictions but {len(s)} scores")
        preds.append(p)
        scores.append(s)
    counts = np.zeros((len(thresholds), 3), np.int64)
    for t_index, t in enumerate(thresholds):
        total = aggregate(
            match_fn(p[s >= t], g) for p, s, g in zip(preds, scores, gts_per_image, strict=True)
        )
        counts[t_index] = (total.tp, total.fp, total.fn)
    tp, fp, fn = counts.T
    precision, recall, f1 = prf(tp, fp, fn)
    return {"thresholds": thresholds, "tp": tp, "fp": fp, "fn": fn,
            "precision": np.atleast_1d(precision), "recall": np.atleast_1d(recall),
            "f1": np.atleast_1d(f1)}


def best_threshold(sweep: dict[str, np.ndarray], metric: str = "mcc") -> tuple[float, float]:
    """The threshold of a sweep (``threshold_sweep`` or ``detection_sweep``) maximising ``metric``.

    Ties go to the first threshold in the sweep's order; NaN values are ignored.

    Returns:
        ``(threshold, value)``.

    Reference: fcn_segmentation Sec. 7.2 (threshold maximising MCC); cell_counting Sec. 5.1
        (maximum F1 on the training images).
    """
    if metric not in sweep:
        raise ValueError(f"the sweep has no metric {metric!r}; it has {sorted(sweep)}")
    values = np.asarray(sweep[metric], np.float64)
    if values.size == 0 or np.all(np.isnan(values)):
        raise ValueError(f"no defined value of {metric!r} in the sweep")
    index = int(np.nanargmax(values))
    return float(sweep["thresholds"][index]), float(values[index])


def best_f1_threshold(sweep: dict[str, np.ndarray]) -> tuple[float, float]:
    """``best_threshold(sweep, "f1")`` for a ``detection_sweep``: ``(threshold, f1)``."""
    return best_threshold(sweep, "f1")


# COCOeval.Params.setDetParams: 101 recall points 0, 0.01, ..., 1.
_COCO_RECALL_POINTS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)


def average_precision(
    pred_boxes: Sequence,
    pred_scores: Sequence,
    gt_boxes: Sequence,
    iou_threshold: float = 0.5,
    *,
    max_detections: int | None = None,
) -> float:
    """Average precision over a list of images, computed exactly as pycocotools ``COCOeval``.

    Single class, one IoU threshold, area range "all", no crowd/ignored boxes: per image the
    predictions are sorted by score (stable), cut to ``max_detections``, and greedily matched
    (each takes the unmatched gt of highest IoU >= threshold); all images' predictions are then
    ranked by score, precision is made monotone from the right and read at the 101 recall
    points 0, 0.01, ..., 1 (0 past the last recall reached) and averaged.

    Args:
        pred_boxes: per image ``(N_i, 4)`` boxes ``[x1, y1, x2, y2]`` px (pycocotools' xywh is
            ``[x1, y1, x2 − x1, y2 − y1]``; IoU without +1).
        pred_scores: per image ``(N_i,)`` confidences.
        gt_boxes: per image ``(M_i, 4)`` boxes, same format.
        iou_threshold: IoU of a match (inclusive; capped at 1 − 1e-10 as pycocotools does).
        max_detections: per-image cap (pycocotools' maxDets; its default summary uses 100);
            None = keep all.

    Returns:
        AP in [0, 1]; NaN when there is no ground-truth box at all (pycocotools reports −1).

    Reference: spines Table 1 (mAP@0.5); Lin et al. 2014 (COCO); pycocotools
        ``COCOeval.evaluateImg`` / ``accumulate``.
    """
    return ap_from_matches(image_matches(pred_boxes, pred_scores, gt_boxes, iou_threshold,
                                         max_detections=max_detections))


def image_matches(pred_boxes: Sequence, pred_scores: Sequence, gt_boxes: Sequence, iou_threshold: float = 0.5,
                  *, max_detections: int | None = None) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """Per image, ``(scores sorted high to low, matched (bool) in that order, number of gt boxes)``:
    the greedy matching of :func:`average_precision`, which depends on that image only.

    :func:`ap_from_matches` of any list of these (images repeated or left out, as a bootstrap
    resample does) equals ``average_precision`` of the same images, without matching again.
    """
    n = len(pred_boxes)
    if len(pred_scores) != n or len(gt_boxes) != n:
        raise ValueError(
            f"{n} prediction sets, {len(pred_scores)} score sets, {len(gt_boxes)} gt sets: "
            "they must be equal (one per image)"
        )
    threshold = min(float(iou_threshold), 1 - 1e-10)
    out = []
    for k in range(n):
        boxes = _as_boxes(pred_boxes[k], f"image {k} pred")
        scores = np.asarray(pred_scores[k], np.float64).reshape(-1)
        if len(scores) != len(boxes):
            raise ValueError(f"image {k}: {len(boxes)} boxes but {len(scores)} scores")
        gt = _as_boxes(gt_boxes[k], f"image {k} gt")
        order = np.argsort(-scores, kind="mergesort")
        if max_detections is not None:
            order = order[:max_detections]
        match = _coco_greedy(box_iou(boxes[order], gt), threshold)
        out.append((scores[order], match >= 0, len(gt)))
    return out


def ap_from_matches(matches: Sequence[tuple[np.ndarray, np.ndarray, int]]) -> float:
    """COCO average precision of images already matched by :func:`image_matches` (see there)."""
    n_gt = sum(m[2] for m in matches)
    if n_gt == 0:
        return float("nan")
    scores = np.concatenate([m[0] for m in matches]) if matches else np.zeros(0)
    matched = np.concatenate([m[1] for m in matches]) if matches else np.zeros(0, bool)
    ranking = np.argsort(-scores, kind="mergesort")
    tp = np.cumsum(matched[ranking]).astype(np.float64)
    fp = np.cumsum(~matched[ranking]).astype(np.float64)
    if len(tp) == 0:
        return 0.0
    recall = tp / n_gt
    precision = tp / (fp + tp + np.spacing(1))
    precision = np.maximum.accumulate(precision[::-1])[::-1]  # monotone from the right
    index = np.searchsorted(recall, _COCO_RECALL_POINTS, side="left")
    sampled = np.where(index < len(precision), precision[np.minimum(index, len(precision) - 1)], 0.0)
    return float(np.mean(sampled))


# --------------------------------------------------------------------------------------------
# pixel metrics
# --------------------------------------------------------------------------------------------


def _pixel_metrics_from_counts(tp, fp, fn, tn) -> dict[str, np.ndarray]:
    tp, fp, fn, tn = (np.asarray(v, np.float64) for v in (tp, fp, fn, tn))
    precision, recall, f1 = prf(tp, fp, fn)
    # sqrt of each marginal separately keeps the product inside float64 range for any size
    denominator = np.sqrt(tp + fp) * np.sqrt(tp + fn) * np.sqrt(tn + fp) * np.sqrt(tn + fn)
    return {
        "specificity": _safe_div(tn, tn + fp, 1.0),
        "precision": np.asarray(precision),
        "recall": np.asarray(recall),
        "accuracy": _safe_div(tp + tn, tp + tn + fp + fn, 1.0),
        "f1": np.asarray(f1),
        "mcc": _safe_div(tp * tn - fp * fn, denominator, 0.0),
        "iou": _safe_div(tp, tp + fp + fn, 1.0),
    }


def pixel_counts(pred, gt) -> dict[str, np.ndarray]:
    """Pixel confusion counts of each image (what ``pixel_metrics`` sums; a bootstrap resamples them).

    Args:
        pred: ``(H, W)`` binary mask or a list of masks of any shapes; gt: the true masks, same shapes.

    Returns:
        ``{"tp", "fp", "fn", "tn"}``, each ``(I,)`` int64, one entry per image.
    """
    counts = []
    for k, (p, g) in enumerate(_pairs_of_images(pred, gt)):
        p = _as_binary(p, f"pred[{k}]")
        g = _as_binary(g, f"gt[{k}]")
        tp = np.count_nonzero(p & g)
        n_pred, n_gt = np.count_nonzero(p), np.count_nonzero(g)
        counts.append((tp, n_pred - tp, n_gt - tp, p.size - n_pred - n_gt + tp))
    columns = np.asarray(counts, np.int64).reshape(-1, 4).T
    return dict(zip(("tp", "fp", "fn", "tn"), columns, strict=True))


def pixel_metrics(pred, gt) -> dict[str, float]:
    """Pixel-level confusion metrics of a binary prediction.

    Args:
        pred: ``(H, W)`` binary mask (bool, integer > 0 = foreground, or 0/1 float), or a list
            of masks of any shapes (their counts are summed).
        gt: the true masks, same shapes.

    Returns:
        ``{"specificity", "precision", "recall", "accuracy", "f1", "mcc", "iou", "tp", "fp",
        "fn", "tn"}``; recall is the TPR, f1 the paper's "F-score". Degenerate denominators:
        see the module docstring (MCC is 0 when any marginal is 0).

    Reference: fcn_segmentation Sec. 7.2, Table 1.
    """
    per_image = pixel_counts(pred, gt)
    tp, fp, fn, tn = (int(per_image[k].sum()) for k in ("tp", "fp", "fn", "tn"))
    if tp + fp + fn + tn == 0:
        raise ValueError("pixel_metrics got empty arrays")
    metrics = {k: float(v) for k, v in _pixel_metrics_from_counts(tp, fp, fn, tn).items()}
    metrics.update(tp=tp, fp=fp, fn=fn, tn=tn)
    return metrics


def _threshold_counts(prob, gt, thresholds, strict: bool):
    """tp, fp, fn, tn ``(T,)`` int64 for ascending thresholds by histogramming each pixel once.

    A pixel of probability p is positive at threshold t when p >= t (p > t if ``strict``);
    ``searchsorted`` gives for each pixel how many thresholds it passes, so one bincount per
    class replaces T re-thresholdings.
    """
    side = "left" if strict else "right"
    n = len(thresholds)
    pos_hist = np.zeros(n + 1, np.int64)
    neg_hist = np.zeros(n + 1, np.int64)
    for k, (p, g) in enumerate(_pairs_of_images(prob, gt, "prob")):
        g = _as_binary(g, f"gt[{k}]").ravel()
        p = np.asarray(p, np.float64).ravel()
        if not np.all(np.isfinite(p)):
            raise ValueError(f"prob[{k}] contains NaN or infinite values")
        passed = np.searchsorted(thresholds, p, side=side)
        pos_hist += np.bincount(passed[g], minlength=n + 1)
        neg_hist += np.bincount(passed[~g], minlength=n + 1)
    # positive at threshold j  <=>  passed > j
    tp = np.cumsum(pos_hist[::-1])[::-1][1:]
    fp = np.cumsum(neg_hist[::-1])[::-1][1:]
    fn = pos_hist.sum() - tp
    tn = neg_hist.sum() - fp
    return tp, fp, fn, tn


def _sorted_thresholds(thresholds) -> np.ndarray:
    thresholds = np.unique(np.asarray(thresholds, np.float64).reshape(-1))  # sorted, no repeats
    if thresholds.size == 0 or not np.all(np.isfinite(thresholds)):
        raise ValueError("thresholds must be a non-empty list of finite numbers")
    return thresholds


def threshold_sweep(prob, gt, thresholds, *, strict: bool = False) -> dict[str, np.ndarray]:
    """Pixel metrics of ``prob >= t`` for many thresholds t at once.

    Each pixel is histogrammed once against the sorted thresholds (``searchsorted`` +
    ``bincount`` + cumulative sums), so the cost is O(pixels · log T), not O(pixels · T).

    Args:
        prob: ``(H, W)`` probability map, or a list of maps of any shapes (counts are summed).
        gt: binary masks of the same shapes (see ``pixel_metrics``).
        thresholds: the thresholds; returned sorted ascending, repeats removed.
        strict: positive when ``prob > t`` instead of ``prob >= t`` (the cell_counting code
            thresholds with ``>``).

    Returns:
        Dict of ``(T,)`` arrays: ``thresholds``, ``tp``, ``fp``, ``fn``, ``tn`` and every
        metric of ``pixel_metrics``.

    Reference: fcn_segmentation Sec. 7.2 (the threshold maximising MCC; ROC one point per
        threshold).
    """
    thresholds = _sorted_thresholds(thresholds)
    tp, fp, fn, tn = _threshold_counts(prob, gt, thresholds, strict)
    sweep = {"thresholds": thresholds, "tp": tp, "fp": fp, "fn": fn, "tn": tn}
    sweep.update(_pixel_metrics_from_counts(tp, fp, fn, tn))
    return sweep


def threshold_counts(prob, gt, thresholds, *, strict: bool = False) -> dict[str, np.ndarray]:
    """``threshold_sweep``'s counts kept per image: what a bootstrap of AUC or best MCC resamples.

    Returns:
        ``thresholds`` ``(T,)`` (sorted, repeats removed) and ``tp``, ``fp``, ``fn``, ``tn``, each
        ``(I, T)`` int64; their sums over axis 0 are ``threshold_sweep``'s counts.
    """
    thresholds = _sorted_thresholds(thresholds)
    rows = [_threshold_counts([p], [g], thresholds, strict) for p, g in _pairs_of_images(prob, gt, "prob")]
    out = {"thresholds": thresholds}
    for i, key in enumerate(("tp", "fp", "fn", "tn")):
        out[key] = np.asarray([r[i] for r in rows], np.int64).reshape(len(rows), len(thresholds))
    return out


def _roc_from_counts(tp, fp, fn, tn) -> tuple[np.ndarray, np.ndarray, float]:
    """``(fpr, tpr, auc)`` from ``(T,)`` counts at ascending thresholds (see ``roc_curve``)."""
    positives, negatives = tp[0] + fn[0], fp[0] + tn[0]
    if positives == 0 or negatives == 0:
        raise ValueError(
            f"an ROC curve needs positive and negative pixels; the ground truth has "
            f"{positives} positive and {negatives} negative"
        )
    tpr = tp / positives
    fpr = fp / negatives
    # thresholds ascend, so both rates descend: reverse, then close the curve at both ends
    x = np.concatenate([[0.0], fpr[::-1], [1.0]])
    y = np.concatenate([[0.0], tpr[::-1], [1.0]])
    return fpr, tpr, float(np.trapezoid(y, x))


def roc_curve(prob, gt, thresholds=None, *, strict: bool = False):
    """ROC curve, one point per threshold, and the area under it.

    Args:
        prob: probability map(s) as in ``threshold_sweep``.
        gt: binary mask(s) of the same shapes.
        thresholds: the thresholds; None = every distinct probability value (exact AUC, but
            sorts all pixels: pass a grid such as ``np.linspace(0, 1, 101)`` for big data).
        strict: ``prob > t`` instead of ``prob >= t``.

    Returns:
        ``(fpr, tpr, thresholds, auc)``: ``(T,)`` arrays for thresholds sorted ascending; auc is
        the trapezoid area of the points plus the end points (0, 0) and (1, 1) (equal to
        scikit-learn's ``roc_auc_score`` when thresholds is None).

    Raises:
        ValueError: the ground truth has no positive or no negative pixel.

    Reference: fcn_segmentation Sec. 7.2 (ROC curve, TPR against FPR).
    """
    if thresholds is None:
        thresholds = np.unique(np.concatenate([np.asarray(p, np.float64).ravel() for p in _as_list(prob)]))
    thresholds = _sorted_thresholds(thresholds)
    fpr, tpr, auc = _roc_from_counts(*_threshold_counts(prob, gt, thresholds, strict))
    return fpr, tpr, thresholds, auc


# --------------------------------------------------------------------------------------------
# segmentation overlap ("mean IoU")
# --------------------------------------------------------------------------------------------


def class_mean_iou(pred, gt) -> float:
    """Mean over the two classes (background, foreground) of the class IoU, pooled over images.

    This is ``tf.metrics.mean_iou(y_true, y_pred, num_classes=2)`` (also Keras ``MeanIoU``):
    one confusion matrix accumulated over every pixel of every image, IoU_c = TP_c / (TP_c +
    FP_c + FN_c) per class, averaged over the classes whose denominator is not 0.

    Args:
        pred: ``(H, W)`` binary/label mask or list of masks (label > 0 = foreground).
        gt: true masks, same shapes.

    Returns:
        Mean IoU in [0, 1].

    Reference: cell_counting Sec. 5.1 / Table 1 ("Mean IOU" 0.74); its released code
        (robomorelli/cell_counting_yellow ``evaluation_utils.mean_iou``) is TF's 2-class mean_iou.
    """
    counts = pixel_metrics(pred, gt)
    return _class_mean_iou_from_counts(counts["tp"], counts["fp"], counts["fn"], counts["tn"])


def _class_mean_iou_from_counts(tp: int, fp: int, fn: int, tn: int) -> float:
    """Mean of the cell IoU and the background IoU, each left out when its denominator is 0."""
    tp, fp, fn, tn = int(tp), int(fp), int(fn), int(tn)
    ious = [tp / (tp + fp + fn) if tp + fp + fn else None,
            tn / (tn + fn + fp) if tn + fn + fp else None]
    ious = [v for v in ious if v is not None]
    return float(np.mean(ious))


def foreground_iou(pred, gt, *, per_image: bool = True) -> float:
    """IoU of the foreground (label > 0) of predicted and true masks.

    Args:
        pred: ``(H, W)`` mask or list of masks; gt: same shapes.
        per_image: True = IoU of each image, then the mean over images (an image with empty
            prediction and empty truth counts 1.0); False = one IoU of the pooled pixels.

    Returns:
        IoU in [0, 1].
    """
    pairs = _pairs_of_images(pred, gt)
    if not per_image:
        return pixel_metrics(pred, gt)["iou"]
    return float(np.mean([pixel_metrics(p, g)["iou"] for p, g in pairs]))


def _label_iou_matrix(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """``(P, G)`` IoU between the objects of two label images (labels need not be contiguous)."""
    _, p = np.unique(pred.ravel(), return_inverse=True)
    _, g = np.unique(gt.ravel(), return_inverse=True)
    has_bg_p, has_bg_g = (pred == 0).any(), (gt == 0).any()
    n_p, n_g = p.max() + 1, g.max() + 1
    overlap = np.bincount(p.astype(np.int64) * n_g + g, minlength=n_p * n_g).reshape(n_p, n_g)
    area_p, area_g = overlap.sum(axis=1), overlap.sum(axis=0)
    union = area_p[:, None] + area_g[None, :] - overlap
    iou = overlap / np.maximum(union, 1)
    # drop the background row / column (label 0 sorts first in np.unique)
    return iou[int(has_bg_p):, int(has_bg_g):]


def matched_object_iou(pred_labels, gt_labels, iou_threshold: float = 0.5) -> float:
    """Mean IoU of one-to-one matched objects (stardist's "mean_matched_score").

    Per image, predicted and true objects are paired one-to-one (Hungarian, most pairs with
    IoU >= ``iou_threshold``, then largest total IoU); the IoUs of all pairs of all images are
    averaged.

    Args:
        pred_labels: ``(H, W)`` integer instance labels (0 = background) or a list of them.
        gt_labels: true instance labels, same shapes.
        iou_threshold: smallest IoU of a pair (> 0.5 makes the pairing unique anyway).

    Returns:
        Mean IoU of the matched pairs; NaN when nothing matched.
    """
    values = []
    for k, (p, g) in enumerate(_pairs_of_images(pred_labels, gt_labels)):
        for name, arr in (("pred_labels", p), ("gt_labels", g)):
            if not np.issubdtype(arr.dtype, np.integer):
                raise ValueError(f"{name}[{k}] must be an integer label image, got {arr.dtype}")
        iou = _label_iou_matrix(p, g)
        if iou.size == 0:
            continue
        pairs = _assign(iou >= max(iou_threshold, 1e-12), 1.0 - iou, "hungarian")
        values.extend(iou[pairs[:, 0], pairs[:, 1]].tolist())
    return float(np.mean(values)) if values else float("nan")


_IOU_MODES = {"class_mean": class_mean_iou, "foreground": foreground_iou,
              "matched_objects": matched_object_iou}


def mean_instance_iou(pred_labels, gt_labels, mode: str = "class_mean") -> float:
    """cell_counting's "Mean IOU", with the readings the paper leaves open.

    The paper reports a "mean intersection over union" for "the segmentation task" (Sec. 5.1)
    without a formula. Its released code uses TensorFlow's two-class ``mean_iou`` (background
    and cell IoU averaged), so that is the default.

    Args:
        pred_labels: predicted ``(H, W)`` masks or instance labels (or a list of them).
        gt_labels: true masks / labels, same shapes.
        mode: ``"class_mean"`` (released code, ``class_mean_iou``), ``"foreground"`` (per-image
            foreground IoU averaged, ``foreground_iou``) or ``"matched_objects"`` (mean IoU of
            matched cells, ``matched_object_iou``).

    Returns:
        The IoU value.

    Reference: cell_counting Sec. 5.1, Table 1 (Mean IOU 0.74).
    """
    if mode not in _IOU_MODES:
        raise ValueError(f"mode must be one of {sorted(_IOU_MODES)}, got {mode!r}")
    return _IOU_MODES[mode](pred_labels, gt_labels)
