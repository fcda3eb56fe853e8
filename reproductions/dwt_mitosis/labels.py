"""Label generation (phase 1 → strong labels): weak point labels + a segmentation → boxes.

* :func:`boxes_from_segmentation`: the minimum enclosing axis-aligned rectangle of each
  segmented region (``skimage.measure.regionprops``), kept as a positive when a weak label
  (point) lies inside it (Sec. 3.1);
* :func:`manual_boxes`: the "Manual" labels of Table 2 — "the minimum rectangle that can
  surround the mitosis and include the ground truth point" — from exact instance masks;
* :func:`square_boxes`: the fixed square around each point that earlier weakly supervised work
  used (Sec. 2: Li et al., Zerhouni et al., Cai et al., Yancey), for comparison;
* :func:`label_quality`: how well generated boxes agree with manual ones (box IoU statistics).

Boxes are ``[x1, y1, x2, y2]`` pixels with ``x2``/``y2`` the exclusive edge (one past the last
pixel, as ``datasets.base.mask_to_objects``); points are ``[x, y]`` pixels, a point at ``x``
belongs to the pixel column ``floor(x)``.

Reference: dwt_mitosis Sec. 3.1 (label generation), Sec. 4.5 and Table 2 (manual labels).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from microrepro.common.matching import box_iou


def _rows(values, what: str, columns: str) -> np.ndarray:
    """``values`` (None or empty allowed) as float64 ``(N, len(columns))``; ValueError for another shape."""
    names = columns.split()
    array = np.asarray(values if values is not None else [], np.float64)
    if array.size == 0:
        return np.zeros((0, len(names)), np.float64)
    if array.ndim != 2 or array.shape[1] != len(names):
        raise ValueError(f"{what} must have shape (N, {len(names)}) [{', '.join(names)}], got {array.shape}")
    return array


def _points(points) -> np.ndarray:
    return _rows(points, "points", "x y")


def _boxes(boxes) -> np.ndarray:
    return _rows(boxes, "boxes", "x1 y1 x2 y2")


def points_in_boxes(points, boxes) -> np.ndarray:
    """``(N_boxes, N_points)`` bool: point ``[x, y]`` inside box ``[x1, x2) × [y1, y2)``."""
    p, b = _points(points), _boxes(boxes)
    x, y = p[None, :, 0], p[None, :, 1]
    return (b[:, None, 0] <= x) & (x < b[:, None, 2]) & (b[:, None, 1] <= y) & (y < b[:, None, 3])


@dataclass
class GeneratedLabels:
    """Boxes generated for one image.

    Attributes:
        boxes: ``(K, 4)`` float32 kept boxes (each holds at least one weak label).
        region_boxes: ``(R, 4)`` float32 boxes of every segmented region (kept or not).
        kept: ``(R,)`` bool, which regions were kept.
        covered: ``(N,)`` bool, which weak labels lie in at least one kept box.
    """

    boxes: np.ndarray
    region_boxes: np.ndarray
    kept: np.ndarray
    covered: np.ndarray = field(default_factory=lambda: np.zeros((0,), bool))


def segment_regions(prob: np.ndarray, threshold: float = 0.5, min_area_px: int = 0) -> np.ndarray:
    """Connected regions (8-connectivity) of ``prob >= threshold``, small ones dropped.

    Args:
        prob: ``(H, W)`` mitosis probability (or a 0/1 mask).
        threshold: foreground cut-off.
        min_area_px: regions with fewer pixels are removed (0 keeps all).

    Returns:
        ``(H, W)`` int32 region labels, 0 = background.
    """
    from skimage.measure import label
    from skimage.morphology import remove_small_objects

    prob = np.asarray(prob)
    if prob.ndim != 2:
        raise ValueError(f"prob must be a 2-D (H, W) map, got shape {prob.shape}")
    regions = label(prob >= threshold, connectivity=2).astype(np.int32)
    if min_area_px > 1:
        regions = remove_small_objects(regions, max_size=int(min_area_px) - 1).astype(np.int32)
    return regions


def region_boxes(regions: np.ndarray) -> np.ndarray:
    """Minimum enclosing axis-aligned box of each labelled region, ``(R, 4)`` float32 xyxy."""
    from skimage.measure import regionprops

    out = []
    for region in regionprops(np.asarray(regions, np.int32)):
        y1, x1, y2, x2 = region.bbox  # skimage: (min_row, min_col, max_row, max_col), max exclusive
        out.append((x1, y1, x2, y2))
    return np.asarray(out, np.float32).reshape(-1, 4)


def boxes_from_segmentation(prob: np.ndarray, points, threshold: float = 0.5, min_area_px: int = 0) -> GeneratedLabels:
    """Strong labels from a segmentation and the weak labels of one image.

    Args:
        prob: ``(H, W)`` mitosis probability from the phase-1 network (or a binary mask).
        points: ``(N, 2)`` weak labels ``[x, y]`` px (centres of mitoses).
        threshold: probability cut-off for a mitosis pixel.
        min_area_px: regions smaller than this are ignored.

    Returns:
        :class:`GeneratedLabels`; a region is kept when at least one point lies in its box.

    Reference: dwt_mitosis Sec. 3.1 ("if the weak label ... is within the marked bounding box,
    the sample will be taken as positive").
    """
    boxes = region_boxes(segment_regions(prob, threshold, min_area_px))
    inside = points_in_boxes(points, boxes)
    kept = inside.any(axis=1)
    covered = inside[kept].any(axis=0) if kept.any() else np.zeros(len(_points(points)), bool)
    return GeneratedLabels(boxes[kept], boxes, kept, covered)


def manual_boxes(mask: np.ndarray, points) -> np.ndarray:
    """The "Manual" boxes of Table 2 from an exact instance mask.

    For each weak label, the instance under it (or, when it falls on background, the nearest
    instance pixel) gives the box of that instance grown to include the point.

    Args:
        mask: ``(H, W)`` int instance labels (0 = background).
        points: ``(N, 2)`` weak labels ``[x, y]`` px.

    Returns:
        ``(M, 4)`` float32 boxes, one per point that has an instance (M <= N), in point order.

    Reference: dwt_mitosis Sec. 4.5 ("the minimum rectangle that can surround the mitosis and
    include the ground truth point").
    """
    from scipy import ndimage

    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be (H, W) instance labels, got shape {mask.shape}")
    pts = _points(points)
    if not mask.any() or not len(pts):
        return np.zeros((0, 4), np.float32)
    boxes = {}
    for region_id, slices in enumerate(ndimage.find_objects(mask.astype(np.int64)), start=1):
        if slices is not None:
            boxes[region_id] = (slices[1].start, slices[0].start, slices[1].stop, slices[0].stop)
    # nearest instance pixel for points on background (the generator's centre may sit on a gap)
    _, (near_r, near_c) = ndimage.distance_transform_edt(mask == 0, return_indices=True)
    out = []
    h, w = mask.shape
    for x, y in pts:
        r, c = int(np.clip(np.floor(y), 0, h - 1)), int(np.clip(np.floor(x), 0, w - 1))
        region_id = int(mask[near_r[r, c], near_c[r, c]])
        x1, y1, x2, y2 = boxes[region_id]
        out.append((min(x1, c), min(y1, r), max(x2, c + 1), max(y2, r + 1)))
    return np.asarray(out, np.float32).reshape(-1, 4)


def square_boxes(points, size_px: float, height: int | None = None, width: int | None = None) -> np.ndarray:
    """``size_px`` squares centred on the points, clipped to the image when its size is given."""
    pts = _points(points)
    half = size_px / 2.0
    boxes = np.concatenate([pts - half, pts + half], axis=1)
    if width is not None:
        boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, width)
    if height is not None:
        boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, height)
    return boxes.astype(np.float32)


def label_quality(generated: list, manual: list, points: list | None = None) -> dict[str, float]:
    """Agreement of generated boxes with manual boxes over several images.

    Each manual box is paired with the generated box of highest IoU in its image.

    Args:
        generated: per image ``(K, 4)`` generated boxes.
        manual: per image ``(M, 4)`` manual boxes.
        points: optional per image ``(N, 2)`` weak labels, for the coverage.

    Returns:
        ``{"box_iou_mean", "box_iou_median", "frac_iou_ge_0.5", "n_generated", "n_manual",
        "boxes_per_manual"}`` and, with points, ``"point_coverage"`` (share of weak labels
        inside a generated box). A manual box with no generated box counts IoU 0.
    """
    if len(generated) != len(manual):
        raise ValueError(f"{len(generated)} generated box lists but {len(manual)} manual ones")
    best, n_gen = [], 0
    for gen, man in zip(generated, manual, strict=True):
        gen, man = _boxes(gen), _boxes(man)
        n_gen += len(gen)
        if not len(man):
            continue
        best.extend(box_iou(man, gen).max(axis=1) if len(gen) else np.zeros(len(man)))
    best = np.asarray(best, np.float64)
    n_man = len(best)
    out = {
        "box_iou_mean": float(best.mean()) if n_man else float("nan"),
        "box_iou_median": float(np.median(best)) if n_man else float("nan"),
        "frac_iou_ge_0.5": float((best >= 0.5).mean()) if n_man else float("nan"),
        "n_generated": float(n_gen),
        "n_manual": float(n_man),
        "boxes_per_manual": float(n_gen / n_man) if n_man else float("nan"),
    }
    if points is not None:
        if len(points) != len(generated):
            raise ValueError(f"{len(points)} point lists for {len(generated)} images")
        hit = total = 0
        for gen, pts in zip(generated, points, strict=True):
            inside = points_in_boxes(pts, gen)
            hit += int(inside.any(axis=0).sum()) if len(_boxes(gen)) else 0
            total += len(_points(pts))
        out["point_coverage"] = float(hit / total) if total else float("nan")
    return out
