"""Pixel weight maps for the weighted binary cross-entropy (Morelli et al., Sec. 4.2).

Two variants:

* ``paper_weight_map``: Sec. 4.2 as written. For each object ``i`` a map
  ``w_i(x) = exp(-d_i(x)^2 / (2 sigma^2))`` with ``d_i`` the Euclidean distance from pixel ``x``
  to the closest BORDER pixel of object ``i``; the maps are SUMMED over objects, so pixels between
  clumped cells weigh more the more cells surround them (Fig. 3). The class weights (1 for cell,
  1.5 for background) are added on top: ``w(x) = w_class(x) + sum_i w_i(x)``.
* ``released_weight_map``: what the authors' ``030_weights_maker.py`` computes: the Gaussian term
  uses the distance to the object (0 inside it), is accumulated only on BACKGROUND pixels within a
  100x100 square dilation of the cells, the map is clipped to >= 1, multiplied by 1.5 inside cells
  and divided by a global maximum (3.8177538 for sigma = 25 in the released script).

Both take an ``(H, W)`` int32 instance mask (0 = background) and return an ``(H, W)`` float32 map.
Each object's distance transform is computed only inside a window of ``window_sigmas * sigma``
around its bounding box (exp(-9/2) = 0.011 at 3 sigma), so a 1600x1200 field with 40 cells takes
tens of milliseconds instead of 40 full-image transforms.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

RELEASED_MAX_WEIGHT = 3.8177538  # global maximum hard-coded in the released 030_weights_maker.py (sigma 25)


def _check_mask(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"weight maps need an (H, W) instance mask, got shape {mask.shape}")
    if not np.issubdtype(mask.dtype, np.integer) and mask.dtype != bool:
        raise ValueError(f"the instance mask must hold integer labels, got dtype {mask.dtype}")
    return mask.astype(np.int32)


def _windows(mask: np.ndarray, margin: int):
    """Yield (label, window slices, object-in-window bool array) per object, windows padded by ``margin``."""
    height, width = mask.shape
    for index, box in enumerate(ndimage.find_objects(mask), start=1):
        if box is None:
            continue
        rows = slice(max(box[0].start - margin, 0), min(box[0].stop + margin, height))
        cols = slice(max(box[1].start - margin, 0), min(box[1].stop + margin, width))
        yield index, (rows, cols), mask[rows, cols] == index


def paper_weight_map(
    mask: np.ndarray,
    sigma: float = 25.0,
    cell_weight: float = 1.0,
    background_weight: float = 1.5,
    window_sigmas: float = 3.0,
) -> np.ndarray:
    """Overcrowding weight map of Sec. 4.2: class weight plus the sum of per-object Gaussians.

    Args:
        mask: ``(H, W)`` int instance labels, 0 = background.
        sigma: Gaussian width in pixels (paper: 25, "average cell radius").
        cell_weight: class weight added on cell pixels (paper: 1).
        background_weight: class weight added on background pixels (paper: 1.5).
        window_sigmas: each object's term is evaluated within this many sigmas of its bounding box
            and taken as 0 beyond (a truncation of < exp(-window_sigmas^2 / 2)).

    Returns:
        ``(H, W)`` float32 weights, ``w_class(x) + sum_i exp(-d_i(x)^2 / (2 sigma^2))`` where ``d_i``
        is the distance to the nearest border pixel of object ``i`` (0 on the border itself).

    Reference:
        Morelli et al., Sec. 4.2, steps 1-7 and Eq. (1); class weights 1 / 1.5 in the paragraph after.
    """
    from skimage.segmentation import find_boundaries

    mask = _check_mask(mask)
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    weights = np.where(mask > 0, np.float32(cell_weight), np.float32(background_weight)).astype(np.float32)
    margin = int(np.ceil(window_sigmas * sigma))
    for _, (rows, cols), inside in _windows(mask, margin):
        # The border is the object's own outermost ring of pixels ("closest pixel belonging to the
        # border of the cell", step 4); distances are measured to it from inside and outside alike.
        border = find_boundaries(inside, mode="inner")
        distance = ndimage.distance_transform_edt(~border)
        weights[rows, cols] += np.exp(-(distance**2) / (2.0 * sigma**2)).astype(np.float32)
    return weights


def released_weight_map(
    mask: np.ndarray,
    sigma: float = 25.0,
    cell_factor: float = 1.5,
    band: int = 100,
    maximum: float | None = RELEASED_MAX_WEIGHT,
) -> np.ndarray:
    """Weight map as the authors' released code builds it (``make_weights`` in utils.py).

    Args:
        mask: ``(H, W)`` int instance labels, 0 = background.
        sigma: Gaussian width in pixels (released: 25).
        cell_factor: multiplier on cell pixels after clipping (released: 1.5).
        band: side of the square structuring element that dilates the cells; the Gaussian terms
            are added only on background pixels inside this dilation (released: 100).
        maximum: divide the map by this global maximum (released: 3.8177538, the largest weight
            over their training crops); None leaves the map unnormalised.

    Returns:
        ``(H, W)`` float32 weights: 1/maximum far from cells, 1.5/maximum inside cells, larger
        (up to about (1 + number of nearby cells)/maximum) on background between crowded cells.

    Reference:
        robomorelli/cell_counting_yellow, utils.py ``make_weights`` and 030_weights_maker.py.
    """
    mask = _check_mask(mask)
    cells = mask > 0
    total = np.zeros(mask.shape, np.float32)
    if cells.any():
        # Background within the band: the only pixels that receive Gaussian terms (cv2.add with mask).
        near = ndimage.maximum_filter(cells, size=band, mode="constant") & ~cells
        margin = int(np.ceil(3.0 * sigma)) + band // 2
        for _, (rows, cols), inside in _windows(mask, margin):
            distance = ndimage.distance_transform_edt(~inside)
            term = np.exp(-(distance**2) / (2.0 * sigma**2)).astype(np.float32)
            total[rows, cols] += np.where(near[rows, cols], term, np.float32(0))
    weights = np.maximum(total, np.float32(1.0))
    weights = np.where(cells, weights * np.float32(cell_factor), weights).astype(np.float32)
    if maximum is not None:
        if maximum <= 0:
            raise ValueError(f"maximum must be > 0, got {maximum}")
        weights = weights / np.float32(maximum)
    return weights.astype(np.float32)


def weight_map(mask: np.ndarray, kind: str, **params) -> np.ndarray:
    """Dispatch on ``kind``: "paper", "released", or "none" (all ones: plain BCE, the ablation)."""
    if kind == "paper":
        return paper_weight_map(mask, **params)
    if kind == "released":
        return released_weight_map(mask, **params)
    if kind == "none":
        return np.ones(_check_mask(mask).shape, np.float32)
    raise ValueError(f"unknown weight map kind {kind!r} (use paper, released or none)")
