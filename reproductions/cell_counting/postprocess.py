"""Heat-map -> separated cells (Morelli et al., Sec. 4.3), and per-object measurements.

Pipeline (same steps in both presets, only the sizes differ):

1. binarise the heat-map at ``threshold`` (chosen by maximum F1 on training images, Sec. 5.1);
2. fill holes smaller than ``hole_area`` px (skimage ``remove_small_holes``);
3. remove objects smaller than ``min_object`` px (``remove_small_objects``);
4. Euclidean distance transform of the cleaned mask;
5. a ``max_filter`` x ``max_filter`` maximum filter of the distance flattens the tops of nearby
   maxima into one plateau, so one cell gives one marker even if its distance map has two bumps;
6. markers = pixels equal to the maximum of their ``footprint`` x ``footprint`` neighbourhood
   inside the mask (plateaus kept whole), marker regions smaller than ``min_marker`` px dropped;
7. watershed on ``-distance`` from the markers inside the mask, with watershed lines, so
   touching cells come out as separate objects.

Sizes: the "released" preset uses the authors' constants (600, 200, 30, 40, 25 px for cells of
about 50 px diameter); the "paper" preset states that the parameters are "set based on the
average cell size" and derives the same five sizes from the mean cell diameter ``D`` measured on
the training masks, with the ratios the released constants have at ``D = 50`` px (area
``A = pi D^2 / 4``): hole 0.3 A, object 0.1 A, max filter 0.6 D, footprint 0.8 D, marker 0.0125 A.

Step 6 is written with ``scipy.ndimage.maximum_filter`` rather than ``skimage.feature.peak_local_max``:
the released code called ``peak_local_max(..., indices=False)``, which (skimage < 0.20) returned
the whole plateau as a mask; the current ``peak_local_max`` returns coordinates and thins a
plateau to several scattered points, which would split one cell into several watershed basins.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

# Released constants (evaluation_utils.mask_post_processing) and the cell size they were tuned for.
RELEASED_SIZES = {"hole_area": 600, "min_object": 200, "max_filter": 30, "footprint": 40, "min_marker": 25}
RELEASED_CELL_DIAMETER = 50.0  # px, "average cell diameter" (Sec. 5.1)


@dataclass(frozen=True)
class PostprocessSizes:
    """Sizes in pixels for ``separate_cells`` (areas in px, lengths in px)."""

    hole_area: int = 600
    min_object: int = 200
    max_filter: int = 30
    footprint: int = 40
    min_marker: int = 25

    @classmethod
    def released(cls) -> PostprocessSizes:
        return cls(**RELEASED_SIZES)

    @classmethod
    def from_cell_diameter(cls, diameter: float, ratios: dict | None = None) -> PostprocessSizes:
        """Sizes derived from the mean cell diameter (paper preset, Sec. 4.3).

        Args:
            diameter: mean cell diameter in px (e.g. equivalent diameter of training objects).
            ratios: ``{"hole_area", "min_object", "min_marker"}`` as fractions of the mean cell
                area and ``{"max_filter", "footprint"}`` as fractions of the diameter; defaults
                reproduce the released constants at 50 px.
        """
        if not np.isfinite(diameter) or diameter <= 0:
            raise ValueError(f"the mean cell diameter must be > 0 px, got {diameter}")
        r = {"hole_area": 0.3, "min_object": 0.1, "max_filter": 0.6, "footprint": 0.8, "min_marker": 0.0125}
        r.update(ratios or {})
        area = math.pi * diameter**2 / 4.0
        return cls(
            hole_area=max(1, int(round(r["hole_area"] * area))),
            min_object=max(1, int(round(r["min_object"] * area))),
            max_filter=max(1, int(round(r["max_filter"] * diameter))),
            footprint=max(1, int(round(r["footprint"] * diameter))),
            min_marker=max(1, int(round(r["min_marker"] * area))),
        )


def mean_cell_diameter(masks: list[np.ndarray]) -> float:
    """Mean equivalent diameter ``sqrt(4 area / pi)`` over all objects of instance masks (px).

    Raises:
        ValueError: no object in any mask.
    """
    areas = []
    for mask in masks:
        mask = np.asarray(mask)
        counts = np.bincount(mask.ravel().astype(np.int64))[1:]
        areas.extend(counts[counts > 0].tolist())
    if not areas:
        raise ValueError("cannot measure the mean cell size: the training masks hold no object")
    return float(np.mean(np.sqrt(4.0 * np.asarray(areas, np.float64) / math.pi)))


def _check_heatmap(heatmap: np.ndarray) -> np.ndarray:
    heatmap = np.asarray(heatmap)
    if heatmap.ndim == 3 and heatmap.shape[-1] == 1:
        heatmap = heatmap[..., 0]
    if heatmap.ndim != 2:
        raise ValueError(f"expected an (H, W) heat-map, got shape {heatmap.shape}")
    return heatmap


# The steps of the pipeline that can be left out, one at a time, for the ablations.
STEPS = ("fill_holes", "remove_small", "watershed")


def separate_cells(heatmap: np.ndarray, threshold: float, sizes: PostprocessSizes | None = None,
                   skip: frozenset[str] | tuple[str, ...] = ()) -> np.ndarray:
    """Threshold, clean and split a heat-map into cell instances (module docstring, steps 1-7).

    Args:
        heatmap: ``(H, W)`` or ``(H, W, 1)`` probabilities in [0, 1].
        threshold: a pixel is foreground when ``heatmap > threshold``.
        sizes: post-processing sizes; None = released constants.
        skip: steps of ``STEPS`` left out (ablations): ``fill_holes`` (step 2), ``remove_small``
            (step 3), ``watershed`` (steps 4-7: the cleaned mask's 8-connected components are the
            cells). Every other step runs as in the full pipeline.

    Returns:
        ``(H, W)`` int32 instance labels 1..K (0 = background and watershed lines).

    Reference:
        Morelli et al., Sec. 4.3; released ``evaluation_utils.mask_post_processing``.
    """
    from skimage.measure import label
    from skimage.morphology import remove_small_holes, remove_small_objects
    from skimage.segmentation import watershed

    unknown = set(skip) - set(STEPS)
    if unknown:
        raise ValueError(f"unknown post-processing step(s) {sorted(unknown)}; steps: {', '.join(STEPS)}")
    heatmap = _check_heatmap(heatmap)
    sizes = sizes or PostprocessSizes.released()
    binary = heatmap > threshold
    if not binary.any():
        return np.zeros(binary.shape, np.int32)
    # skimage 0.26 renamed area_threshold/min_size to max_size (removes < ... vs <=); use the
    # keyword that this version has, keeping the released "smaller than N px" meaning.
    if "fill_holes" not in skip:
        binary = _remove_small_holes(binary, sizes.hole_area, remove_small_holes)
    if "remove_small" not in skip:
        binary = _remove_small_objects(binary, sizes.min_object, remove_small_objects)
    if not binary.any():
        return np.zeros(binary.shape, np.int32)
    if "watershed" in skip:
        return label(binary, connectivity=2).astype(np.int32)
    distance = ndimage.distance_transform_edt(binary)
    flattened = ndimage.maximum_filter(distance, size=sizes.max_filter, mode="constant")
    footprint = np.ones((sizes.footprint,) * 2, bool)
    neighbourhood_max = ndimage.maximum_filter(flattened, footprint=footprint, mode="constant")
    peaks = (flattened == neighbourhood_max) & binary
    peaks = _remove_small_objects(peaks, sizes.min_marker, remove_small_objects)
    markers = label(peaks, connectivity=2)
    labels = watershed(-distance, markers, mask=binary, compactness=1, watershed_line=True)
    return _relabel(labels)


def connected_components(heatmap: np.ndarray, threshold: float) -> np.ndarray:
    """The "threshold only" ablation: threshold and label 8-connected components, nothing else
    (no hole filling, no small-object removal, no watershed).

    Args:
        heatmap: ``(H, W)`` or ``(H, W, 1)`` probabilities.
        threshold: foreground when ``heatmap > threshold``.

    Returns:
        ``(H, W)`` int32 instance labels.
    """
    return separate_cells(heatmap, threshold, skip=STEPS)


def _remove_small_holes(binary, size, fn):
    try:
        return fn(binary, max_size=max(int(size) - 1, 0))
    except TypeError:
        return fn(binary, area_threshold=int(size))


def _remove_small_objects(binary, size, fn):
    try:
        return fn(binary, max_size=max(int(size) - 1, 0))
    except TypeError:
        return fn(binary, min_size=int(size))


def _relabel(labels: np.ndarray) -> np.ndarray:
    from skimage.segmentation import relabel_sequential

    return relabel_sequential(np.asarray(labels, np.int32))[0].astype(np.int32)


def measure_objects(labels: np.ndarray) -> dict[str, np.ndarray]:
    """Per-object measurements of an instance image.

    Returns:
        ``{"centroids": (K, 2) [x, y] px, "bbox_centres": (K, 2) [x, y] px (released integer rule),
        "boxes": (K, 4) [x1, y1, x2, y2] px (x2/y2 exclusive), "areas": (K,) px}``, objects in
        ascending label order.
    """
    from microrepro.common.matching import object_centres

    labels = np.asarray(labels, np.int32)
    ids = np.unique(labels)
    ids = ids[ids > 0]
    boxes = []
    for box in ndimage.find_objects(labels):
        if box is not None:
            boxes.append((box[1].start, box[0].start, box[1].stop, box[0].stop))
    areas = np.bincount(labels.ravel())[ids] if len(ids) else np.zeros((0,), np.int64)
    return {
        "centroids": object_centres(labels, "centroid").astype(np.float32),
        "bbox_centres": object_centres(labels, "bbox_released").astype(np.float32),
        "boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
        "areas": np.asarray(areas, np.int64),
    }
