"""One image as a user has it → FCRN-A probability map → cells (connected components).

``common.predict`` reads the images and writes the files; this module gives it the ``detect``
function: any grey / RGB / RGBA image of any dtype (uint8, uint16, float) is turned into what the
network was trained on (``data.prepare_image``: channel maximum, per-image percentile
normalisation to [0, 1]), segmented whole in one pass (reflect-padded to a multiple of 8, as in
evaluation), cut at the threshold, and its 4-connected foreground components become the objects.

Reference: Marzo & La Rosa 2016, Sec. 7.2 (the network's per-pixel cell probability, cut at the
MCC-maximising threshold).
"""

from __future__ import annotations

import numpy as np

from microrepro.common.predict import Objects
from microrepro.reproductions.fcn_segmentation import data as fdata
from microrepro.reproductions.fcn_segmentation.config import FcnSegmentationConfig


def probability(model, image: np.ndarray, cfg: FcnSegmentationConfig) -> np.ndarray:
    """Cell probability of every pixel of one image as read.

    Args:
        model: FCRN-A (``(B, H, W, 1)`` → ``(B, H, W, 2)`` softmax).
        image: ``(H, W)`` or ``(H, W, C)`` (RGB/RGBA), uint8, uint16 or float.
        cfg: the run's config (normalisation percentiles).

    Returns:
        ``(H, W)`` float32 in [0, 1].
    """
    prepared = fdata.prepare_image(np.asarray(image), cfg.normalize_low, cfg.normalize_high)
    return fdata.predict_probability(model, prepared)


def cells(prob: np.ndarray, threshold: float) -> Objects:
    """Objects = 4-connected components of ``prob >= threshold``.

    Args:
        prob: ``(H, W)`` cell probability.
        threshold: the operating threshold.

    Returns:
        ``Objects.from_labels``: centroids ``[x, y]``, boxes ``[x1, y1, x2, y2]`` (px, x2/y2
        exclusive), areas, the instance-label image, and as score each component's mean
        probability (always >= ``threshold``).
    """
    from scipy import ndimage
    from skimage.measure import label as cc_label

    labels = cc_label(prob >= threshold, connectivity=1)
    n = int(labels.max())
    scores = ndimage.mean(prob, labels, index=np.arange(1, n + 1)) if n else np.zeros(0)
    return Objects.from_labels(labels, scores=np.asarray(scores, np.float64))


def detector(model, cfg: FcnSegmentationConfig):
    """``detect(image, threshold) -> Objects`` for ``common.predict.Predictor``."""

    def detect(image: np.ndarray, threshold: float) -> Objects:
        return cells(probability(model, image, cfg), threshold)

    return detect
