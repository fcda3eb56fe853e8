"""Tiled prediction of large images: overlapping tiles, seam-free blending, tiled detection.

Pure numpy around a python callable, so it works with any Keras backend (or none).

Tiles along an axis start every ``tile - overlap`` pixels and the last one ends flush with the
image; an image smaller than a tile is padded (reflect) and the result cropped back.

Blending (``predict_tiled``): a tile's prediction is trusted less near its edges, where the
model saw zero padding instead of the neighbouring pixels. Each tile gets a separable weight
window that is 0 for the ``margin`` pixels along an edge shared with another tile, then ramps
linearly to 1 over ``overlap // 2`` pixels; edges on the image border keep weight 1 (nothing
else covers them). The output is ``Σ w·prediction / Σ w`` accumulated in float64, so:

- a pointwise model gives exactly ``fn(image)`` (every tile predicts the same value);
- a model whose receptive-field radius is at most ``margin`` (default ``overlap // 4``) gives
  exactly the full-image result: the only pixels a tile gets wrong have weight 0.

Tiled detection (``detect_tiled``): the overlaps are split at their middle, which cuts the image
into disjoint *core* rectangles, one per tile. A detection is kept only by the tile whose core
holds its box centre, so an object on a seam is reported once; NMS then merges what is left.
A kept box centre is at least half the overlap away from its tile's shared edges, so objects
narrower than ``overlap`` are always whole inside the tile that keeps them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from itertools import pairwise

import numpy as np

BLENDS = ("linear", "none")


def tile_origins(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of ``tile`` px covering ``[0, length)`` with ≥ ``overlap`` px overlap.

    Tiles start every ``tile - overlap`` pixels; the last starts at ``length - tile`` so it
    ends flush with the end (its overlap with the previous tile may be larger).

    Args:
        length: image extent in pixels (> 0).
        tile: tile extent (> 0).
        overlap: ``0 <= overlap < tile``.

    Returns:
        Increasing offsets; ``[0]`` when ``length <= tile`` (the caller pads).

    Example:
        ``tile_origins(1600, 512, 112) == [0, 400, 800, 1088]``.
    """
    for name, value in (("length", length), ("tile", tile), ("overlap", overlap)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"{name} must be an int, got {value!r}")
    if length <= 0 or tile <= 0:
        raise ValueError(f"length and tile must be positive, got length={length}, tile={tile}")
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must satisfy 0 <= overlap < tile, got overlap={overlap}, tile={tile}")
    if length <= tile:
        return [0]
    origins = list(range(0, length - tile + 1, tile - overlap))
    if origins[-1] + tile < length:
        origins.append(length - tile)
    return [int(o) for o in origins]


def core_bounds(origins: list[int], tile: int, length: int) -> list[tuple[int, int]]:
    """Disjoint ``[start, end)`` core of each tile: overlaps split at their middle.

    The cores partition ``[0, length)``; a pixel belongs to the tile in which it is farthest from
    an edge shared with another tile.
    """
    cuts = [0]
    for left, right in pairwise(origins):
        cuts.append((right + min(left + tile, length)) // 2)
    cuts.append(length)
    return list(pairwise(cuts))


def _ramp(tile: int, left_shared: bool, right_shared: bool, margin: int, ramp: int) -> np.ndarray:
    """1-D weights: 0 on ``margin`` px next to a shared edge, linear to 1 over ``ramp`` px."""
    distance = np.arange(tile, dtype=np.float64)
    weight = np.ones(tile, dtype=np.float64)
    for shared, d in ((left_shared, distance), (right_shared, distance[::-1])):
        if shared:
            # (d - margin + 1) / (ramp + 1): exactly 0 inside the margin, > 0 right after it.
            weight = np.minimum(weight, np.clip((d - margin + 1.0) / (ramp + 1.0), 0.0, 1.0))
    return weight


def _pad_to_tile(image: np.ndarray, tile: int, mode: str) -> np.ndarray:
    pad_h, pad_w = max(tile - image.shape[0], 0), max(tile - image.shape[1], 0)
    if not pad_h and not pad_w:
        return image
    return np.pad(image, [(0, pad_h), (0, pad_w), (0, 0)], mode=mode)


def _progress(total: int, desc: str):
    from tqdm.auto import tqdm

    # A bar only where it helps: enough tiles, and a terminal to draw on.
    disable = total < 8 or not sys.stderr.isatty()
    return tqdm(total=total, desc=desc, unit="tile", disable=disable, leave=False)


def _as_hwc(image: np.ndarray) -> tuple[np.ndarray, bool]:
    image = np.asarray(image)
    if image.ndim == 2:
        return image[..., None], True
    if image.ndim != 3:
        raise ValueError(f"expected an (H, W) or (H, W, C) image, got shape {image.shape}")
    return image, False


def predict_tiled(
    predict_fn: Callable[[np.ndarray], np.ndarray],
    image: np.ndarray,
    tile: int = 512,
    overlap: int = 64,
    batch_size: int = 4,
    out_channels: int | None = None,
    blend: str = "linear",
    margin: int | None = None,
) -> np.ndarray:
    """Run a dense model on overlapping tiles and stitch the outputs without seams.

    Memory: at most ``batch_size`` tiles are in flight; the only image-sized buffers are the
    ``(H, W, K)`` float64 accumulator and an ``(H, W)`` weight sum.

    Args:
        predict_fn: ``(B, tile, tile, C)`` float32 -> ``(B, tile, tile, K)`` (numpy, or any
            tensor ``np.asarray`` accepts: ``model.predict_on_batch``, a jitted function...).
        image: ``(H, W)`` or ``(H, W, C)``; converted to float32 as is (scale it first).
        tile: tile size in pixels.
        overlap: minimum overlap between neighbouring tiles, ``0 <= overlap < tile``.
        batch_size: tiles per ``predict_fn`` call.
        out_channels: expected ``K`` (checked); None takes it from the first batch.
        blend: ``"linear"`` (weights described in the module docstring) or ``"none"`` (each
            pixel from the one tile whose core holds it: hard seams in the middle of overlaps).
        margin: zero-weight band next to shared tile edges for ``"linear"``; None =
            ``overlap // 4``. Make it at least the model's receptive-field radius.

    Returns:
        ``(H, W, K)`` float32.

    Raises:
        ValueError: bad sizes, or ``predict_fn`` returned the wrong shape.
    """
    if blend not in BLENDS:
        raise ValueError(f"blend must be one of {BLENDS}, got {blend!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    image, _ = _as_hwc(image)
    height, width = image.shape[:2]
    tile_origins(max(height, 1), tile, overlap)  # validates tile/overlap
    margin = overlap // 4 if margin is None else int(margin)
    ramp = max(overlap // 2, 1)
    if blend == "linear" and (margin < 0 or 2 * margin > overlap):
        raise ValueError(f"margin must satisfy 0 <= 2*margin <= overlap, got margin={margin}, overlap={overlap}")
    padded = _pad_to_tile(image, tile, "reflect")
    full_h, full_w = padded.shape[:2]
    ys, xs = tile_origins(full_h, tile, overlap), tile_origins(full_w, tile, overlap)
    cores_y, cores_x = core_bounds(ys, tile, full_h), core_bounds(xs, tile, full_w)

    def window(index: int, count: int, cores, origin: int) -> np.ndarray:
        if blend == "none":
            start, end = cores[index]
            w = np.zeros(tile, dtype=np.float64)
            w[start - origin : end - origin] = 1.0
            return w
        return _ramp(tile, index > 0, index < count - 1, margin, ramp)

    windows_y = [window(i, len(ys), cores_y, y) for i, y in enumerate(ys)]
    windows_x = [window(j, len(xs), cores_x, x) for j, x in enumerate(xs)]
    positions = [(i, j) for i in range(len(ys)) for j in range(len(xs))]

    accumulator = weight_sum = None
    with _progress(len(positions), "tiled prediction") as bar:
        for start in range(0, len(positions), batch_size):
            chunk = positions[start : start + batch_size]
            batch = np.stack([padded[ys[i] : ys[i] + tile, xs[j] : xs[j] + tile] for i, j in chunk])
            prediction = np.asarray(predict_fn(batch.astype(np.float32, copy=False)))
            if prediction.ndim != 4 or prediction.shape[:3] != (len(chunk), tile, tile):
                raise ValueError(
                    f"predict_fn must return ({len(chunk)}, {tile}, {tile}, K) for a batch of "
                    f"{len(chunk)} tiles, got shape {prediction.shape}"
                )
            if accumulator is None:
                channels = prediction.shape[-1]
                if out_channels is not None and channels != out_channels:
                    raise ValueError(f"predict_fn returned {channels} channels, expected out_channels={out_channels}")
                accumulator = np.zeros((full_h, full_w, channels), dtype=np.float64)
                weight_sum = np.zeros((full_h, full_w), dtype=np.float64)
            elif prediction.shape[-1] != accumulator.shape[-1]:
                raise ValueError(f"predict_fn changed its channel count to {prediction.shape[-1]}")
            for (i, j), tile_prediction in zip(chunk, prediction, strict=True):
                w = np.outer(windows_y[i], windows_x[j])
                region = (slice(ys[i], ys[i] + tile), slice(xs[j], xs[j] + tile))
                accumulator[region] += w[..., None] * tile_prediction
                weight_sum[region] += w
            bar.update(len(chunk))
    accumulator /= weight_sum[..., None]
    return accumulator[:height, :width].astype(np.float32)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float = 0.5) -> np.ndarray:
    """Greedy non-maximum suppression.

    Args:
        boxes: ``(N, 4)`` ``[x1, y1, x2, y2]`` pixels (continuous, ``x2`` exclusive).
        scores: ``(N,)``.
        iou_threshold: a box is dropped when its IoU with a higher-scoring kept box exceeds this.

    Returns:
        Indices of kept boxes, highest score first (ties: lower index first).
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    scores = np.asarray(scores, np.float64).reshape(-1)
    if len(boxes) != len(scores):
        raise ValueError(f"nms: {len(boxes)} boxes but {len(scores)} scores")
    order = np.argsort(-scores, kind="stable")
    areas = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    keep = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(best)
        iw = np.clip(np.minimum(boxes[best, 2], boxes[rest, 2]) - np.maximum(boxes[best, 0], boxes[rest, 0]), 0, None)
        ih = np.clip(np.minimum(boxes[best, 3], boxes[rest, 3]) - np.maximum(boxes[best, 1], boxes[rest, 1]), 0, None)
        inter = iw * ih
        union = areas[best] + areas[rest] - inter
        iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def detect_tiled(
    detect_fn: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    image: np.ndarray,
    tile: int,
    overlap: int,
    iou_threshold: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """Run a detector on overlapping tiles and merge the detections in image coordinates.

    Rule: the overlaps are split in their middle into disjoint per-tile cores (see
    ``core_bounds``); a tile keeps only detections whose box centre falls inside its own core,
    i.e. detections centred in another tile's core are dropped. An object is therefore reported
    by one tile only, the one that sees it farthest from its edges (whole, if the object is
    narrower than ``overlap``). NMS at ``iou_threshold`` then removes remaining duplicates.
    Boxes are clipped to the image.

    Args:
        detect_fn: ``tile_array`` ``(tile, tile[, C])`` (same dtype as ``image``) ->
            ``(boxes (n, 4) [x1, y1, x2, y2] px in tile coordinates, scores (n,))``.
        image: ``(H, W)`` or ``(H, W, C)``. An image smaller than a tile is zero-padded (not
            reflected, which would mirror objects) and detections centred in the padding dropped.
        tile: tile size in pixels.
        overlap: minimum overlap; make it exceed the largest object size (plus the context the
            detector needs around an object).
        iou_threshold: NMS threshold for the merged detections.

    Returns:
        ``(boxes (N, 4) float32 xyxy px in image coordinates, scores (N,) float32)``, highest
        score first.
    """
    image = np.asarray(image)
    image3, squeezed = _as_hwc(image)
    height, width = image3.shape[:2]
    padded = _pad_to_tile(image3, tile, "constant")
    full_h, full_w = padded.shape[:2]
    ys, xs = tile_origins(full_h, tile, overlap), tile_origins(full_w, tile, overlap)
    cores_y, cores_x = core_bounds(ys, tile, full_h), core_bounds(xs, tile, full_w)
    all_boxes, all_scores = [], []
    with _progress(len(ys) * len(xs), "tiled detection") as bar:
        for i, y in enumerate(ys):
            for j, x in enumerate(xs):
                patch = padded[y : y + tile, x : x + tile]
                boxes, scores = detect_fn(patch[..., 0] if squeezed else patch)
                boxes = np.asarray(boxes, np.float32).reshape(-1, 4) + np.float32([x, y, x, y])
                scores = np.asarray(scores, np.float32).reshape(-1)
                if len(boxes) != len(scores):
                    raise ValueError(f"detect_fn returned {len(boxes)} boxes but {len(scores)} scores")
                centre_x = (boxes[:, 0] + boxes[:, 2]) / 2.0
                centre_y = (boxes[:, 1] + boxes[:, 3]) / 2.0
                (y_lo, y_hi), (x_lo, x_hi) = cores_y[i], cores_x[j]
                own = (centre_x >= x_lo) & (centre_x < min(x_hi, width))
                own &= (centre_y >= y_lo) & (centre_y < min(y_hi, height))
                all_boxes.append(boxes[own])
                all_scores.append(scores[own])
                bar.update(1)
    boxes = np.concatenate(all_boxes) if all_boxes else np.zeros((0, 4), np.float32)
    scores = np.concatenate(all_scores) if all_scores else np.zeros((0,), np.float32)
    boxes = np.clip(boxes, 0, np.float32([width, height, width, height]))
    keep = nms(boxes, scores, iou_threshold)
    return boxes[keep].astype(np.float32), scores[keep].astype(np.float32)
