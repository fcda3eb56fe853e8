"""Matching predictions to ground truth (points or boxes), one image at a time.

Every matcher returns a :class:`MatchResult` with the counts the papers report. Modelled on
stardist ``stardist/matching.py``: a registry of matching criteria, one-to-one assignment, a
small named result with tp/fp/fn/precision/recall/f1.

Conventions (fixed for the whole suite):

- points are ``[x, y]`` pixels, ``(N, 2)``; boxes are ``[x1, y1, x2, y2]`` pixels ("xyxy", x2/y2
  the exclusive edge, so width = x2 − x1), ``(N, 4)``;
- ``FP = n_pred − TP`` and ``FN = n_gt − TP`` always, as every paper here defines them
  (spines eq. 1). TP is the number of matched predictions;
- one-to-one matchers ("hungarian") find the MOST pairs that satisfy the criterion and, among
  those, the smallest total cost (distance, or 1 − IoU). Pairs beyond the criterion are never
  forced: they get a prohibitive cost in the assignment and are dropped afterwards;
- "greedy" matchers take the globally best remaining pair first (points) or go through the
  predictions by descending score (boxes, COCO/VOC style); also one-to-one;
- the two "released" rules reproduce the authors' public evaluation code exactly, including
  its quirks, so the gap to the paper's rule can be shown.

Precision / recall / F1 when something is empty (also used by ``metrics.prf``):

================  ==========  =======  ====
case              precision   recall   F1
================  ==========  =======  ====
no pred, no gt    1.0         1.0      1.0
no pred, gt > 0   0.0         0.0      0.0
pred > 0, no gt   0.0         0.0      0.0
================  ==========  =======  ====

i.e. precision = TP/(TP+FP), recall = TP/(TP+FN), F1 = 2TP/(2TP+FP+FN), and a 0/0 is 1.0 only
when there was nothing to find AND nothing was predicted (a perfect empty answer), else 0.0.
Aggregating images (``aggregate`` / ``+``) sums the counts first (micro-average), as the papers do.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

from microrepro.common.errors import ConfigError

_METHODS = ("hungarian", "greedy")


# --------------------------------------------------------------------------------------------
# result
# --------------------------------------------------------------------------------------------
def _ratio(num: float, den: float, empty: float) -> float:
    return float(num) / float(den) if den != 0 else float(empty)


@dataclass(frozen=True, eq=False)
class MatchResult:
    """Counts of one matching (one image, or several images summed).

    Attributes:
        tp: matched predictions.
        fp: ``n_pred − tp``.
        fn: ``n_gt − tp`` (negative only under ``match_spines_released``, whose released code
            lets one ground truth absorb several predictions).
        n_pred: number of predictions.
        n_gt: number of ground-truth objects.
        pairs: ``(K, 2)`` int64 ``(pred_index, gt_index)``; K == tp. Empty after aggregation
            (indices of different images mean nothing together).
        pair_values: ``(K,)`` float64, the criterion value of each pair (distance in px, or IoU).
        rule: short description of the matching rule, for provenance.
    """

    tp: int
    fp: int
    fn: int
    n_pred: int
    n_gt: int
    pairs: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int64))
    pair_values: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.float64))
    rule: str = ""

    def __post_init__(self) -> None:
        for name in ("tp", "fp", "fn", "n_pred", "n_gt"):
            object.__setattr__(self, name, int(getattr(self, name)))
        pairs = np.asarray(self.pairs, np.int64).reshape(-1, 2)
        values = np.asarray(self.pair_values, np.float64).reshape(-1)
        object.__setattr__(self, "pairs", pairs)
        object.__setattr__(self, "pair_values", values)
        if self.fp != self.n_pred - self.tp or self.fn != self.n_gt - self.tp:
            raise ValueError(
                f"inconsistent MatchResult: fp={self.fp}, fn={self.fn} but n_pred−tp="
                f"{self.n_pred - self.tp}, n_gt−tp={self.n_gt - self.tp}"
            )
        if len(pairs) != len(values):
            raise ValueError(f"MatchResult: {len(pairs)} pairs but {len(values)} pair values")

    @classmethod
    def from_pairs(
        cls, n_pred: int, n_gt: int, pairs: np.ndarray, values: np.ndarray, rule: str
    ) -> MatchResult:
        """Build the result from the matched pairs; TP = number of pairs."""
        pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
        tp = len(pairs)
        return cls(tp, n_pred - tp, n_gt - tp, n_pred, n_gt, pairs, values, rule)

    @property
    def precision(self) -> float:
        """TP / (TP + FP); 0/0 is 1.0 only when FN is 0 too (see module docstring)."""
        return _ratio(self.tp, self.tp + self.fp, 1.0 if self.fn == 0 else 0.0)

    @property
    def recall(self) -> float:
        """TP / (TP + FN); 0/0 is 1.0 only when FP is 0 too."""
        return _ratio(self.tp, self.tp + self.fn, 1.0 if self.fp == 0 else 0.0)

    @property
    def f1(self) -> float:
        """2TP / (2TP + FP + FN); 1.0 when there is nothing to find and nothing predicted."""
        return _ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn, 1.0)

    @property
    def matched_pred(self) -> np.ndarray:
        """``(n_pred,)`` bool, True for the predictions counted as TP."""
        return self._mask(self.n_pred, 0)

    @property
    def matched_gt(self) -> np.ndarray:
        """``(n_gt,)`` bool, True for ground truths that some TP prediction was paired with."""
        return self._mask(self.n_gt, 1)

    def _mask(self, size: int, column: int) -> np.ndarray:
        if self.tp and not len(self.pairs):
            raise ValueError("an aggregated MatchResult has no pairs: use one image's result")
        mask = np.zeros(size, bool)
        mask[self.pairs[:, column]] = True
        return mask

    def to_dict(self) -> dict:
        """Counts and scores as plain Python numbers (for a run's metrics JSON)."""
        return {
            "tp": self.tp, "fp": self.fp, "fn": self.fn, "n_pred": self.n_pred, "n_gt": self.n_gt,
            "precision": self.precision, "recall": self.recall, "f1": self.f1,
        }

    def __add__(self, other: MatchResult) -> MatchResult:
        if not isinstance(other, MatchResult):
            return NotImplemented
        rule = self.rule if self.rule == other.rule or not other.rule else (
            other.rule if not self.rule else "mixed")
        return MatchResult(
            self.tp + other.tp, self.fp + other.fp, self.fn + other.fn,
            self.n_pred + other.n_pred, self.n_gt + other.n_gt, rule=rule,
        )

    def __radd__(self, other):
        # lets the builtin sum() start from 0
        if isinstance(other, int) and other == 0:
            return self + MatchResult(0, 0, 0, 0, 0, rule=self.rule)
        return NotImplemented

    def __repr__(self) -> str:
        return (f"MatchResult(tp={self.tp}, fp={self.fp}, fn={self.fn}, n_pred={self.n_pred}, "
                f"n_gt={self.n_gt}, precision={self.precision:.4f}, recall={self.recall:.4f}, "
                f"f1={self.f1:.4f}, rule={self.rule!r})")


def aggregate(results: Iterable[MatchResult]) -> MatchResult:
    """Sum the counts of several images (micro-average). An empty iterable gives all zeros.

    Returns:
        A MatchResult whose precision/recall/F1 are computed from the summed counts; its
        ``pairs`` are empty.
    """
    total = MatchResult(0, 0, 0, 0, 0)
    for result in results:
        total = total + result
    return total


# --------------------------------------------------------------------------------------------
# input checks and geometry
# --------------------------------------------------------------------------------------------
def _as_array(values, width: int, name: str) -> np.ndarray:
    array = np.asarray(values if values is not None else [], dtype=np.float64)
    if array.size == 0:
        return np.zeros((0, width), np.float64)
    if array.ndim != 2 or array.shape[1] != width:
        raise ValueError(f"{name} must have shape (N, {width}), got {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or infinite coordinates")
    return array


def _as_points(values, name: str) -> np.ndarray:
    return _as_array(values, 2, f"{name} points [x, y]")


def _as_boxes(values, name: str) -> np.ndarray:
    boxes = _as_array(values, 4, f"{name} boxes [x1, y1, x2, y2]")
    bad = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    if bad.any():
        raise ValueError(
            f"{name} boxes must be [x1, y1, x2, y2] with x2 >= x1 and y2 >= y1; "
            f"row {int(np.flatnonzero(bad)[0])} is {boxes[bad][0].tolist()}"
        )
    return boxes


def _check_method(method: str) -> None:
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")


def box_iou(a, b) -> np.ndarray:
    """Pairwise intersection over union of two box sets.

    Args:
        a: ``(N, 4)`` boxes ``[x1, y1, x2, y2]`` in pixels (x2/y2 exclusive: area = w·h, no +1,
            like pycocotools).
        b: ``(M, 4)`` boxes, same format.

    Returns:
        ``(N, M)`` float64 IoU in [0, 1]; 0 where the union is empty (two zero-area boxes).
    """
    a = _as_boxes(a, "first")
    b = _as_boxes(b, "second")
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), np.float64)
    width = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    height = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(width, 0, None) * np.clip(height, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def box_centres(boxes) -> np.ndarray:
    """Centres (diagonal intersections) of ``(N, 4)`` xyxy boxes, as ``(N, 2)`` ``[x, y]`` px.

    Reference: dwt_mitosis Sec. 4.2 and mitos_rcnn: a detection box is scored by its centre.
    """
    boxes = _as_boxes(boxes, "")
    return np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], axis=1)


def object_centres(labels: np.ndarray, method: str = "centroid") -> np.ndarray:
    """Centre of each object of an instance-label image, as ``[x, y]`` pixels.

    Args:
        labels: ``(H, W)`` integer instance labels, 0 = background. Objects are returned in
            ascending label order; labels that do not occur are skipped.
        method: ``"centroid"`` = centre of mass of the object's pixels (pixel (r, c) at [c, r]);
            ``"bbox_released"`` = the cell_counting authors' released rule: the centre of the
            object's bounding box, ``int((stop − start) / 2) + start`` per axis (integers).

    Returns:
        ``(K, 2)`` float64 ``[x, y]``.

    Reference: cell_counting Sec. 5.1 ("distance between their centroids"); released code
        robomorelli/cell_counting_yellow ``evaluation_utils.compute_metrics``.
    """
    from scipy import ndimage

    labels = np.asarray(labels)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be an (H, W) integer image, got {labels.dtype} {labels.shape}")
    if method == "centroid":
        ids = np.unique(labels)
        ids = ids[ids > 0]
        if len(ids) == 0:
            return np.zeros((0, 2), np.float64)
        rows_cols = np.asarray(ndimage.center_of_mass(np.ones_like(labels, bool), labels, ids))
        return rows_cols[:, ::-1].astype(np.float64)
    if method == "bbox_released":
        slices = [s for s in ndimage.find_objects(labels) if s is not None]
        centres = [
            (int((sc.stop - sc.start) / 2) + sc.start, int((sr.stop - sr.start) / 2) + sr.start)
            for sr, sc in slices
        ]
        return np.asarray(centres, np.float64).reshape(-1, 2)
    raise ValueError(f"method must be 'centroid' or 'bbox_released', got {method!r}")


# --------------------------------------------------------------------------------------------
# assignment
# --------------------------------------------------------------------------------------------
def _assign(valid: np.ndarray, cost: np.ndarray, method: str) -> np.ndarray:
    """One-to-one pairs among ``valid`` (N, M) minimising ``cost`` (lower is better).

    Returns:
        ``(K, 2)`` int64 (pred, gt) pairs, sorted by prediction index.
    """
    if not valid.any():
        return np.zeros((0, 2), np.int64)
    if method == "greedy":
        rows, cols = np.nonzero(valid)  # row-major: ties go to the lower pred, then gt index
        order = np.argsort(cost[rows, cols], kind="stable")
        used_pred = np.zeros(valid.shape[0], bool)
        used_gt = np.zeros(valid.shape[1], bool)
        pairs = []
        for i, j in zip(rows[order], cols[order], strict=True):
            if not used_pred[i] and not used_gt[j]:
                used_pred[i] = used_gt[j] = True
                pairs.append((i, j))
        pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
        return pairs[np.argsort(pairs[:, 0], kind="stable")]
    # Hungarian on the rows/columns that have at least one valid pair (smaller problem).
    rows = np.flatnonzero(valid.any(axis=1))
    cols = np.flatnonzero(valid.any(axis=0))
    sub_valid = valid[np.ix_(rows, cols)]
    sub_cost = cost[np.ix_(rows, cols)]
    shifted = sub_cost - sub_cost[sub_valid].min()  # >= 0 on valid pairs
    # An invalid pair must cost more than any set of valid pairs, so that the assignment first
    # maximises the number of valid pairs and only then minimises their total cost.
    big = float(shifted[sub_valid].max()) * min(sub_valid.shape) + 1.0
    matrix = np.where(sub_valid, shifted, big)
    r, c = linear_sum_assignment(matrix)
    keep = sub_valid[r, c]
    pairs = np.stack([rows[r[keep]], cols[c[keep]]], axis=1).astype(np.int64)
    return pairs[np.argsort(pairs[:, 0], kind="stable")]


def match_points(
    pred,
    gt,
    max_dist: float,
    *,
    pixel_size_um: float | None = None,
    method: str = "hungarian",
    inclusive: bool = True,
) -> MatchResult:
    """One-to-one matching of points by Euclidean distance.

    Args:
        pred: ``(N, 2)`` predicted points ``[x, y]`` px.
        gt: ``(M, 2)`` ground-truth points ``[x, y]`` px.
        max_dist: largest distance of a match: pixels, or micrometres when ``pixel_size_um``
            is given.
        pixel_size_um: micrometres per pixel; the threshold in pixels is
            ``max_dist / pixel_size_um``.
        method: ``"hungarian"`` (most pairs within ``max_dist``, then least total distance;
            scipy ``linear_sum_assignment``) or ``"greedy"`` (repeatedly the globally closest
            unmatched pair; ties go to the lower prediction, then gt index).
        inclusive: a pair at exactly ``max_dist`` matches (``<=``) when True, not (``<``) when False.

    Returns:
        MatchResult with ``pair_values`` = distances in pixels.

    Reference: mitos_rcnn and dwt_mitosis Sec. 4.2 (ICPR 2014 criterion: within 8 µm of a
        ground-truth centroid); spines Sec. 2 "golden distance" of 6 px.
    """
    _check_method(method)
    pred = _as_points(pred, "pred")
    gt = _as_points(gt, "gt")
    threshold = _pixel_threshold(max_dist, pixel_size_um)
    dist = cdist(pred, gt) if len(pred) and len(gt) else np.zeros((len(pred), len(gt)))
    valid = dist <= threshold if inclusive else dist < threshold
    pairs = _assign(valid, dist, method)
    unit = f"{max_dist}um@{pixel_size_um}um/px" if pixel_size_um else f"{max_dist}px"
    rule = f"points {method} dist{'<=' if inclusive else '<'}{unit}"
    return MatchResult.from_pairs(len(pred), len(gt), pairs, dist[pairs[:, 0], pairs[:, 1]], rule)


def _pixel_threshold(max_dist: float, pixel_size_um: float | None) -> float:
    if not np.isfinite(max_dist) or max_dist < 0:
        raise ValueError(f"max_dist must be a finite distance >= 0, got {max_dist}")
    if pixel_size_um is None:
        return float(max_dist)
    if not np.isfinite(pixel_size_um) or pixel_size_um <= 0:
        raise ValueError(f"pixel_size_um must be > 0 (micrometres per pixel), got {pixel_size_um}")
    return float(max_dist) / float(pixel_size_um)


def match_points_released_cell_counting(
    pred, gt, max_dist: float = 50.0, *, order: str = "pred"
) -> MatchResult:
    """The cell_counting authors' released matching rule (sequential nearest unmatched neighbour).

    With ``order="pred"`` (the released code): predictions are visited in their given order;
    each takes the nearest still-unmatched ground truth at distance strictly ``< max_dist``
    (ties: the lowest gt index), which is then removed. With ``order="gt"`` (the paper's text,
    "each target cell ... uniquely associated with the closest one"): the same with the roles
    swapped. Neither is an optimal assignment: an early object can take the partner a later one
    needed.

    Args:
        pred: ``(N, 2)`` predicted object centres ``[x, y]`` px (the released code uses
            bounding-box centres, see ``object_centres(..., "bbox_released")``).
        gt: ``(M, 2)`` target centres ``[x, y]`` px.
        max_dist: strict distance bound in px (released: 50, "average cell diameter").
        order: ``"pred"`` (released code) or ``"gt"`` (paper text).

    Returns:
        MatchResult with ``pair_values`` = distances in pixels.

    Reference: cell_counting Sec. 5.1; robomorelli/cell_counting_yellow
        ``evaluation_utils.compute_metrics``.
    """
    if order not in ("pred", "gt"):
        raise ValueError(f"order must be 'pred' or 'gt', got {order!r}")
    pred = _as_points(pred, "pred")
    gt = _as_points(gt, "gt")
    threshold = _pixel_threshold(max_dist, None)
    dist = cdist(pred, gt) if len(pred) and len(gt) else np.zeros((len(pred), len(gt)))
    outer = dist if order == "pred" else dist.T
    free = np.ones(outer.shape[1], bool)
    pairs = []
    for i in range(outer.shape[0]):
        row = np.where(free & (outer[i] < threshold), outer[i], np.inf)
        if row.size and np.isfinite(row.min()):
            j = int(np.argmin(row))  # first index among equal distances, as the released loop
            free[j] = False
            pairs.append((i, j) if order == "pred" else (j, i))
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    pairs = pairs[np.argsort(pairs[:, 0], kind="stable")]
    return MatchResult.from_pairs(
        len(pred), len(gt), pairs, dist[pairs[:, 0], pairs[:, 1]],
        f"points released_cell_counting order={order} dist<{max_dist}px",
    )


def _coco_greedy(iou: np.ndarray, threshold: float) -> np.ndarray:
    """pycocotools' per-detection matching: rows in the order given (already by score).

    Each detection takes the unmatched gt of highest IoU >= threshold; among equal IoUs the LAST
    gt wins, as in ``COCOeval.evaluateImg`` (it accepts ``iou >= best`` while scanning).

    Returns:
        ``(N,)`` int64 matched gt index per row, −1 when unmatched.
    """
    n, m = iou.shape
    match = np.full(n, -1, np.int64)
    free = np.ones(m, bool)
    for d in range(n):
        values = np.where(free & (iou[d] >= threshold), iou[d], -np.inf)
        if m == 0 or not np.isfinite(values.max()):
            continue
        g = m - 1 - int(np.argmax(values[::-1]))
        match[d] = g
        free[g] = False
    return match


def match_boxes(
    pred, gt, iou_threshold: float = 0.5, *, scores=None, method: str = "hungarian"
) -> MatchResult:
    """One-to-one matching of boxes at IoU >= ``iou_threshold``.

    Args:
        pred: ``(N, 4)`` predicted boxes ``[x1, y1, x2, y2]`` px.
        gt: ``(M, 4)`` ground-truth boxes, same format.
        iou_threshold: smallest IoU of a match (inclusive).
        scores: ``(N,)`` confidences; only used by ``"greedy"`` (None = the given order).
        method: ``"hungarian"`` (most pairs, then largest total IoU) or ``"greedy"``
            (COCO/VOC: predictions by descending score, stable, each takes the highest-IoU
            unmatched gt; equal IoUs go to the later gt as in pycocotools).

    Returns:
        MatchResult with ``pair_values`` = IoU.

    Reference: spines Sec. 2 (IoU 0.4 against 15×15 px boxes); Everingham et al. (VOC),
        pycocotools ``COCOeval.evaluateImg``.
    """
    _check_method(method)
    pred = _as_boxes(pred, "pred")
    gt = _as_boxes(gt, "gt")
    if not 0.0 <= iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must lie in [0, 1], got {iou_threshold}")
    iou = box_iou(pred, gt)
    rule = f"boxes {method} iou>={iou_threshold}"
    if method == "greedy":
        order = _score_order(scores, len(pred))
        match = np.full(len(pred), -1, np.int64)
        match[order] = _coco_greedy(iou[order], iou_threshold)
        idx = np.flatnonzero(match >= 0)
        pairs = np.stack([idx, match[idx]], axis=1)
    else:
        pairs = _assign(iou >= iou_threshold, 1.0 - iou, "hungarian")
    return MatchResult.from_pairs(len(pred), len(gt), pairs, iou[pairs[:, 0], pairs[:, 1]], rule)


def _score_order(scores, n: int) -> np.ndarray:
    if scores is None:
        return np.arange(n)
    scores = np.asarray(scores, np.float64).reshape(-1)
    if len(scores) != n:
        raise ValueError(f"scores has {len(scores)} values for {n} predictions")
    return np.argsort(-scores, kind="mergesort")


def match_spines(
    pred_boxes, gt_boxes, iou_threshold: float = 0.4, max_dist: float = 6.0, *,
    method: str = "hungarian",
) -> MatchResult:
    """The spines paper's rule: a pair qualifies at IoU >= 0.4 OR centre distance <= 6 px.

    The paper tested both criteria ("IOU and golden distance give the same F1") and counts
    FP = #pred − TP, FN = #gt − TP (eq. 1), which only makes sense one-to-one; so pairs that
    satisfy either criterion are assigned one-to-one (most pairs, then least total centre
    distance).

    Args:
        pred_boxes: ``(N, 4)`` predicted boxes ``[x1, y1, x2, y2]`` px.
        gt_boxes: ``(M, 4)`` ground-truth boxes (15×15 px squares around the annotated centres).
        iou_threshold: IoU criterion (inclusive).
        max_dist: centre-distance criterion in px (inclusive).
        method: ``"hungarian"`` or ``"greedy"`` (closest centres first).

    Returns:
        MatchResult with ``pair_values`` = centre distances in px.

    Reference: spines Sec. 2, eq. (1).
    """
    _check_method(method)
    pred = _as_boxes(pred_boxes, "pred")
    gt = _as_boxes(gt_boxes, "gt")
    iou = box_iou(pred, gt)
    dist = cdist(box_centres(pred), box_centres(gt)) if len(pred) and len(gt) else np.zeros(iou.shape)
    valid = (iou >= iou_threshold) | (dist <= max_dist)
    pairs = _assign(valid, dist, method)
    return MatchResult.from_pairs(
        len(pred), len(gt), pairs, dist[pairs[:, 0], pairs[:, 1]],
        f"spines {method} iou>={iou_threshold} or centre dist<={max_dist}px",
    )


def match_spines_released(pred_boxes, gt_boxes, max_dist: float = 6.0) -> MatchResult:
    """The spines authors' released evaluation, reproduced exactly (NOT one-to-one).

    For each prediction (in order), the ground truths are scanned in order and the first one
    whose box TOP-LEFT corner ``(x1, y1)`` lies within ``max_dist`` px (``<=``) of the
    prediction's top-left corner makes the prediction a TP. Nothing is marked as used, so one
    spine can absorb several predictions. The released code then counts
    ``FP = #pred − TP`` and ``FN = #gt − TP`` with TP = number of such predictions; FN can thus
    be NEGATIVE (recall above 1) when duplicates cluster on few spines, and is kept so to
    reproduce the released numbers. Filtering by score (released: score > 0.60, at most the
    20 boxes its visualisation draws) is the caller's job.

    Args:
        pred_boxes: ``(N, 4)`` predicted boxes ``[x1, y1, x2, y2]`` px.
        gt_boxes: ``(M, 4)`` ground-truth boxes, same format.
        max_dist: corner distance in px (inclusive).

    Returns:
        MatchResult; ``pairs`` = (prediction, first gt it hit), one per TP prediction, so a gt
        index may repeat; ``pair_values`` = corner distances.

    Reference: spines, public code ily-R/Deep-Learning-for-Dendritic-Spines-Detection
        ``Faster-RCNN/F1_score_and_predictions.py``.
    """
    pred = _as_boxes(pred_boxes, "pred")
    gt = _as_boxes(gt_boxes, "gt")
    threshold = _pixel_threshold(max_dist, None)
    dist = cdist(pred[:, :2], gt[:, :2]) if len(pred) and len(gt) else np.zeros((len(pred), len(gt)))
    hits = dist <= threshold
    rows = np.flatnonzero(hits.any(axis=1))
    cols = np.argmax(hits[rows], axis=1) if len(rows) else np.zeros(0, np.int64)
    pairs = np.stack([rows, cols], axis=1)
    return MatchResult.from_pairs(
        len(pred), len(gt), pairs, dist[rows, cols],
        f"spines released top-left corner dist<={max_dist}px, not one-to-one",
    )


# --------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------
MATCHERS: dict[str, Callable[..., MatchResult]] = {
    "points": match_points,
    "points_greedy": functools.partial(match_points, method="greedy"),
    "points_released_cell_counting": match_points_released_cell_counting,
    "boxes": match_boxes,
    "boxes_greedy": functools.partial(match_boxes, method="greedy"),
    "spines": match_spines,
    "spines_released": match_spines_released,
}
"""Matcher names usable in configs -> ``fn(pred, gt, **params) -> MatchResult``."""


def get_matcher(name: str, **params) -> Callable[..., MatchResult]:
    """A matcher from ``MATCHERS`` with its parameters bound (e.g. from a config).

    Example: ``get_matcher("points", max_dist=8, pixel_size_um=0.2455)(pred, gt)``.

    Raises:
        ConfigError: unknown matcher name, or a parameter the matcher does not take.
    """
    if name not in MATCHERS:
        raise ConfigError(f"unknown matcher {name!r}; choose one of {sorted(MATCHERS)}")
    fn = MATCHERS[name]
    accepted = set(inspect.signature(fn).parameters) - {"pred", "gt", "pred_boxes", "gt_boxes"}
    unknown = sorted(set(params) - accepted)
    if unknown:
        raise ConfigError(f"matcher {name!r} takes no parameter {unknown}; it takes {sorted(accepted)}")
    return functools.partial(fn, **params)
