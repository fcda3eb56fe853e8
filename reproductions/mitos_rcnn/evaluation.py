"""Whole-field detection by subsections, the 8 um matching rule, F1 sweeps, Fig. 4's F1 values.

Reference: MITOS-RCNN Sec. IV-A (subsections), Sec. V-A (F1, eq. 3-5; TP = detection centre
within 8 um of a ground-truth centroid), Fig. 4 (confusion matrices), Sec. V-B.3 (s per HPF).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from microrepro.common import matching
from microrepro.common.tiling import core_bounds, nms, tile_origins
from microrepro.reproductions.mitos_rcnn.data import MITOTIC, cut_subsection, resize, subsection_px


def confusion_f1(tp: int, fp: int, fn: int) -> float:
    """F1 = 2 TP / (2 TP + FP + FN) of a confusion matrix (eq. 3-5 combined).

    Examples (Fig. 4 of the paper): ``confusion_f1(72, 31, 28) = 144 / 203 = 0.70936``,
    ``confusion_f1(53, 58, 47) = 106 / 211 = 0.50237``, ``confusion_f1(96, 5, 4) = 192 / 201 =
    0.95522``.

    Raises:
        ValueError: negative counts, or all zero.
    """
    if min(tp, fp, fn) < 0:
        raise ValueError(f"confusion counts must be >= 0, got tp={tp}, fp={fp}, fn={fn}")
    if 2 * tp + fp + fn == 0:
        raise ValueError("F1 of an empty confusion matrix is undefined")
    return 2.0 * tp / (2.0 * tp + fp + fn)


@dataclass
class FieldDetections:
    """Detections of one field in field px: ``boxes`` ``(N, 4)`` xyxy, ``scores`` ``(N,)``,
    ``classes`` ``(N,)`` (0 mitotic, 1 not mitotic), highest score first."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray

    def mitoses(self, threshold: float = 0.0) -> np.ndarray:
        """Centres ``(K, 2)`` [x, y] px of the mitotic-figure detections scoring >= threshold."""
        keep = (self.classes == MITOTIC) & (self.scores >= threshold)
        b = self.boxes[keep]
        return np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2], axis=1) if len(b) else np.zeros((0, 2), np.float32)


def detect_field(
    model,
    image: np.ndarray,
    input_size: int,
    scale: float,
    overlap_px: int,
    batch_size: int = 16,
    nms_iou: float = 0.3,
) -> FieldDetections:
    """Detect in a whole field: overlapping subsections, resized, batched, merged back.

    Subsections of ``round(input_size / scale)`` source px start every ``tile - overlap`` px
    (``common.tiling.tile_origins``); each is resized to the network input and all of a field's
    subsections run in batches. A detection is kept only by the subsection whose core
    (``common.tiling.core_bounds``: overlaps split in their middle) holds its centre, then a
    per-class NMS removes what is left of duplicates -- the rule of ``common.tiling.detect_tiled``,
    batched here because one forward pass per subsection is several times slower on CPU.

    Args:
        model: FasterRCNN or MitosRCNN (``predict_on_batch`` -> boxes/scores/classes/num_detections).
        image: ``(H, W, 3)`` uint8 field.
        input_size: S of the model.
        scale: input px per source px.
        overlap_px: overlap of neighbouring subsections in source px.
        batch_size: subsections per forward pass.
        nms_iou: per-class NMS of the merged detections.

    Returns:
        :class:`FieldDetections` in field px.
    """
    image = np.asarray(image)[..., :3]
    height, width = image.shape[:2]
    tile = subsection_px(input_size, scale)
    overlap = int(min(max(overlap_px, 0), tile - 1))
    full_h, full_w = max(height, tile), max(width, tile)
    ys, xs = tile_origins(full_h, tile, overlap), tile_origins(full_w, tile, overlap)
    cores_y, cores_x = core_bounds(ys, tile, full_h), core_bounds(xs, tile, full_w)
    cells = [(i, j) for i in range(len(ys)) for j in range(len(xs))]
    factor = tile / float(input_size)
    boxes_all, scores_all, classes_all = [], [], []
    for start in range(0, len(cells), batch_size):
        chunk = cells[start : start + batch_size]
        batch = np.zeros((batch_size, input_size, input_size, 3), np.float32)
        for k, (i, j) in enumerate(chunk):
            batch[k] = resize(cut_subsection(image, xs[j], ys[i], tile), input_size) / np.float32(255.0)
        # Always a full batch (zero padding): one traced shape, no retracing for the last chunk.
        out = model.predict_on_batch(batch)
        for k, (i, j) in enumerate(chunk):
            n = int(np.asarray(out["num_detections"])[k])
            boxes = np.asarray(out["boxes"])[k, :n] * factor + np.float32([xs[j], ys[i], xs[j], ys[i]])
            cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
            (y_lo, y_hi), (x_lo, x_hi) = cores_y[i], cores_x[j]
            own = (cx >= x_lo) & (cx < min(x_hi, width)) & (cy >= y_lo) & (cy < min(y_hi, height))
            boxes_all.append(boxes[own])
            scores_all.append(np.asarray(out["scores"])[k, :n][own])
            classes_all.append(np.asarray(out["classes"])[k, :n][own])
    boxes = np.concatenate(boxes_all).astype(np.float32) if boxes_all else np.zeros((0, 4), np.float32)
    scores = np.concatenate(scores_all).astype(np.float32) if scores_all else np.zeros((0,), np.float32)
    classes = np.concatenate(classes_all).astype(np.int32) if classes_all else np.zeros((0,), np.int32)
    boxes = np.clip(boxes, 0, np.float32([width, height, width, height]))
    keep = []
    for c in np.unique(classes):
        idx = np.flatnonzero(classes == c)
        keep.extend(idx[nms(boxes[idx], scores[idx], nms_iou)].tolist())
    keep = np.asarray(sorted(keep, key=lambda k: -scores[k]), np.int64)
    return FieldDetections(boxes[keep], scores[keep], classes[keep])


def match_field(detections: FieldDetections, field, threshold: float, match_um: float = 8.0) -> matching.MatchResult:
    """One-to-one match of mitosis detections (centres) to the field's centroids within ``match_um``."""
    return matching.match_points(
        detections.mitoses(threshold), np.asarray(field.points).reshape(-1, 2), match_um,
        pixel_size_um=float(field.pixel_size_um or 0.25),
    )  # fmt: skip


def aggregate_matches(detections: list[FieldDetections], fields: list, threshold: float, match_um: float = 8.0) -> matching.MatchResult:
    """Counts summed over fields (micro-average, as the challenges score) at one threshold."""
    return matching.aggregate(match_field(d, f, threshold, match_um) for d, f in zip(detections, fields))


def f1_sweep(detections: list[FieldDetections], fields: list, thresholds, match_um: float = 8.0) -> dict:
    """Micro-averaged precision / recall / F1 over fields at each score threshold.

    Returns:
        ``{"threshold", "precision", "recall", "f1"}`` numpy arrays.
    """
    rows = []
    for t in thresholds:
        total = aggregate_matches(detections, fields, t, match_um)
        rows.append((t, total.precision, total.recall, total.f1))
    rows = np.asarray(rows, np.float64).reshape(-1, 4)
    return {"threshold": rows[:, 0], "precision": rows[:, 1], "recall": rows[:, 2], "f1": rows[:, 3]}


def best_threshold(sweep: dict) -> float:
    """The threshold of the highest F1 (the lowest such threshold on ties)."""
    return float(sweep["threshold"][int(np.argmax(sweep["f1"]))])


def size_tercile_recall(detections: list[FieldDetections], fields: list, threshold: float, match_um: float = 8.0) -> dict:
    """Recall on the smallest, middle and largest third of the figures (by sqrt of box area).

    Needs ``field.boxes`` aligned with ``field.points`` (the synthetic generator's mask boxes);
    fields without boxes are skipped. Used for the ablation "does the cascade help small objects".

    Returns:
        ``{"recall_small", "recall_medium", "recall_large", "size_small_um", "size_large_um"}``
        (the size cut points in um), or {} when no field has sizes.
    """
    sizes, hits = [], []
    for d, f in zip(detections, fields):
        boxes = np.asarray(f.boxes).reshape(-1, 4)
        if len(boxes) != len(np.asarray(f.points).reshape(-1, 2)) or not len(boxes):
            continue
        result = match_field(d, f, threshold, match_um)
        side = np.sqrt(np.clip((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), 0, None)) * float(f.pixel_size_um or 0.25)
        sizes.append(side)
        hits.append(result.matched_gt)
    if not sizes:
        return {}
    sizes, hits = np.concatenate(sizes), np.concatenate(hits)
    low, high = np.quantile(sizes, [1 / 3, 2 / 3])
    groups = {"recall_small": sizes <= low, "recall_medium": (sizes > low) & (sizes <= high), "recall_large": sizes > high}
    out = {name: float(hits[mask].mean()) if mask.any() else float("nan") for name, mask in groups.items()}
    out.update(size_small_um=float(low), size_large_um=float(high))
    return out


def seconds_per_field(model, image: np.ndarray, input_size: int, scale: float, overlap_px: int, repeats: int = 1, batch_size: int = 16) -> float:
    """Median wall seconds of :func:`detect_field` on ``image`` after a one-batch warm-up (tracing)."""
    detect_field(model, image[: subsection_px(input_size, scale), : subsection_px(input_size, scale)], input_size, scale, overlap_px, batch_size)
    times = []
    for _ in range(max(1, int(repeats))):
        start = time.perf_counter()
        detect_field(model, image, input_size, scale, overlap_px, batch_size)
        times.append(time.perf_counter() - start)
    return float(np.median(times))
