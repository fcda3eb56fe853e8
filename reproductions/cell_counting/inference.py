"""cell_counting inference: a field -> tiled heat-map -> separated cells, for evaluation and predict.

The model keys of the paper's table and its ablation:

* ``c_resunet``: weighted BCE with the weight maps, watershed post-processing;
* ``c_resunet_no_weightmap``: plain BCE, same data, schedule and post-processing;
* post-processing ablations on ``c_resunet``'s heat-maps, each step of Sec. 4.3 left out alone:
  ``c_resunet_no_watershed`` (holes filled, small objects removed, then 8-connected components),
  ``c_resunet_no_hole_filling``, ``c_resunet_no_small_removal``; and ``c_resunet_threshold_only``
  (threshold + connected components, all three left out).

Reference: Sec. 4.3 (post-processing), Sec. 5 (full 1200 x 1600 fields predicted tile by tile).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from microrepro.common.predict import Objects
from microrepro.reproductions.cell_counting import postprocess as post
from microrepro.reproductions.cell_counting.config import CellCountingConfig
from microrepro.reproductions.cell_counting.data import resize, rgb_uint8

FULL = "c_resunet"
NO_WEIGHTMAP = "c_resunet_no_weightmap"
NO_WATERSHED = "c_resunet_no_watershed"
NO_HOLE_FILLING = "c_resunet_no_hole_filling"
NO_SMALL_REMOVAL = "c_resunet_no_small_removal"
THRESHOLD_ONLY = "c_resunet_threshold_only"
# Post-processing ablation -> the steps (postprocess.STEPS) it leaves out.
SKIPPED = {NO_WATERSHED: ("watershed",), NO_HOLE_FILLING: ("fill_holes",), NO_SMALL_REMOVAL: ("remove_small",),
           THRESHOLD_ONLY: post.STEPS}
MODELS = (FULL, NO_WEIGHTMAP, *SKIPPED)
# The trained network behind each key: the post-processing ablations reuse c_resunet's heat-maps.
NETWORK = {FULL: FULL, NO_WEIGHTMAP: NO_WEIGHTMAP, **{key: FULL for key in SKIPPED}}


def predict_heatmap(model, image: np.ndarray, cfg: CellCountingConfig, scale: float | None = None,
                    tile: int | None = None, overlap: int | None = None) -> np.ndarray:
    """Full-field heat-map by tiled prediction, returned at the image's full size.

    Args:
        model: a c-ResUNet.
        image: ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)`` field as read, any dtype
            (``data.rgb_uint8`` turns it into the 8-bit RGB the network was trained on).
        cfg: the run's config.
        scale: resize factor before prediction (default ``cfg.data.scale``; the model was trained
            at that scale); the heat-map is resized back to ``(H, W)``.
        tile: tile size in px of the resized field (default ``cfg.postprocess.tile``); smaller
            fields are padded to one tile.
        overlap: tile overlap in px (default ``cfg.postprocess.tile_overlap``).

    Returns:
        ``(H, W)`` float32 probabilities.

    Reference: Sec. 5 (prediction of whole fields at full resolution).
    """
    from microrepro.common.imageio import to_float01
    from microrepro.common.tiling import predict_tiled

    scale = cfg.data.scale if scale is None else scale
    tile = tile or cfg.postprocess.tile
    overlap = cfg.postprocess.tile_overlap if overlap is None else overlap
    x = to_float01(resize(rgb_uint8(image), scale, nearest=False))

    def predict_fn(batch):
        return np.asarray(model(np.asarray(batch, np.float32), training=False))

    heat = np.asarray(predict_tiled(predict_fn, x, tile, overlap, batch_size=4), np.float32)
    if heat.ndim == 3:
        heat = heat[..., 0]
    if scale != 1.0:
        import cv2

        heat = cv2.resize(heat, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
    return heat.astype(np.float32)


def postprocessor(key: str, sizes: post.PostprocessSizes) -> Callable[[np.ndarray, float], np.ndarray]:
    """``fn(heat (H, W), threshold) -> (H, W) int32 instance labels`` for a model key.

    ``post.separate_cells`` for the paper's pipeline, with the steps of ``SKIPPED[key]`` left out
    for a post-processing ablation (all of them: ``post.connected_components``).

    Reference: Sec. 4.3.
    """
    skip = SKIPPED.get(key, ())
    return lambda heat, threshold: post.separate_cells(heat, threshold, sizes, skip=skip)


def make_detect(network, cfg: CellCountingConfig, key: str,
                sizes: post.PostprocessSizes) -> Callable[[np.ndarray, float], Objects]:
    """``detect(image, threshold) -> Objects`` for ``common.predict``: tiled heat-map, then cells.

    The objects carry centroids, boxes ``[x1, y1, x2, y2]`` and areas in px of the input image,
    and the instance labels (written as the label TIFF); they have no score (a heat-map cut).

    Reference: Sec. 4.3 and Sec. 5.
    """
    post_fn = postprocessor(key, sizes)

    def detect(image: np.ndarray, threshold: float) -> Objects:
        return Objects.from_labels(post_fn(predict_heatmap(network, image, cfg), threshold))

    return detect
