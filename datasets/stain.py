"""Macenko stain normalisation for H&E images (mitos_rcnn augmentation, dwt_mitosis inputs).

The stain vectors of an image are found in optical-density (OD) space: drop near-transparent
pixels, project the rest on the plane of the two largest principal directions, and take the
directions at the ``alpha`` and ``100 - alpha`` percentiles of the angle in that plane as the
haematoxylin and eosin vectors. Normalisation solves each pixel's concentrations in the
source basis, rescales them so the 99th percentiles match the target's, and renders them with
the target's stain vectors.

Reference: Macenko et al., "A method for normalizing histology slides for quantitative
analysis", ISBI 2009, Sec. 2 (steps 1-7).
"""

from __future__ import annotations

import numpy as np

# Macenko's reference stain matrix [H; E] (unit OD vectors) and maximal concentrations, as
# used by the widely copied reference implementation; a sensible default target.
REFERENCE_STAIN_MATRIX = np.array([[0.5626, 0.7201, 0.4062], [0.2159, 0.8012, 0.5581]], np.float64)
REFERENCE_MAX_CONC = np.array([1.9705, 1.0308], np.float64)


def _check_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"expected an RGB image of shape (H, W, 3), got shape {image.shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 RGB image, got dtype {image.dtype}")
    return image


def optical_density(image_rgb_uint8: np.ndarray, Io: float = 240) -> np.ndarray:
    """``OD = -ln((I + 1) / Io)`` per channel, ``(H, W, 3)`` uint8 -> ``(H*W, 3)`` float64.

    ``Io`` is the transmitted light intensity of an empty slide (values above it give
    slightly negative OD, i.e. background).
    """
    image = _check_rgb(image_rgb_uint8)
    return -np.log((image.reshape(-1, 3).astype(np.float64) + 1.0) / float(Io))


def macenko_stain_matrix(
    image_rgb_uint8: np.ndarray,
    Io: float = 240,
    alpha: float = 1,
    beta: float = 0.15,
    min_tissue_pixels: int = 100,
) -> np.ndarray:
    """Estimate the H&E stain vectors of an image.

    Args:
        image_rgb_uint8: ``(H, W, 3)`` uint8 RGB H&E image.
        Io: transmitted light intensity (white level).
        alpha: percentile (in %) of the angle distribution taken as the extreme stains
            (robust extremes instead of min/max).
        beta: OD threshold: pixels with OD below it in ANY channel are considered transparent
            (background) and ignored.
        min_tissue_pixels: fewer stained pixels than this is an error.

    Returns:
        ``(2, 3)`` float64, rows = unit OD vectors [haematoxylin; eosin] over [R, G, B], all
        components >= 0. Haematoxylin is the one with the larger red OD (it absorbs red; eosin
        hardly does).

    Raises:
        ValueError: wrong shape/dtype, or too few stained pixels to estimate two stains.

    Reference: Macenko et al. 2009, Sec. 2, steps 1-5.
    """
    od = optical_density(image_rgb_uint8, Io)
    tissue = od[(od > beta).all(axis=1)]
    if len(tissue) < max(int(min_tissue_pixels), 3):
        raise ValueError(
            f"only {len(tissue)} of {len(od)} pixels are stained (OD > {beta} in every channel): "
            f"too little tissue to estimate H&E stain vectors (need {min_tissue_pixels}); "
            "is this a background/blank image?"
        )
    # The plane of the two largest eigenvectors of the OD covariance (Macenko step 3).
    _, eigvecs = np.linalg.eigh(np.cov(tissue, rowvar=False))
    plane = eigvecs[:, 1:3]  # eigh sorts ascending: the last two are the largest
    # Orient both axes into the positive octant so angles are comparable between images.
    plane = plane * np.where(plane.sum(axis=0) < 0, -1.0, 1.0)
    proj = tissue @ plane
    phi = np.arctan2(proj[:, 1], proj[:, 0])
    lo, hi = np.percentile(phi, [alpha, 100 - alpha])
    v_lo = plane @ np.array([np.cos(lo), np.sin(lo)])
    v_hi = plane @ np.array([np.cos(hi), np.sin(hi)])
    stains = np.array([v_lo, v_hi] if v_lo[0] > v_hi[0] else [v_hi, v_lo])
    # A true absorption spectrum is non-negative; flip a vector that came out inverted and
    # clip tiny negative components left by noise.
    stains = stains * np.where(stains.sum(axis=1, keepdims=True) < 0, -1.0, 1.0)
    stains = np.clip(stains, 0.0, None)
    norms = np.linalg.norm(stains, axis=1, keepdims=True)
    if (norms < 1e-8).any():
        raise ValueError("degenerate stain estimate (a stain vector vanished): does the image hold H&E tissue?")
    return stains / norms


def stain_concentrations(image_rgb_uint8: np.ndarray, stain_matrix: np.ndarray, Io: float = 240) -> np.ndarray:
    """Per-pixel [H, E] concentrations ``(H*W, 2)`` by least squares in OD space (step 6)."""
    matrix = _check_matrix(stain_matrix)
    od = optical_density(image_rgb_uint8, Io)
    conc, *_ = np.linalg.lstsq(matrix.T, od.T, rcond=None)
    return conc.T


def _check_matrix(stain_matrix: np.ndarray) -> np.ndarray:
    matrix = np.asarray(stain_matrix, np.float64)
    if matrix.shape != (2, 3):
        raise ValueError(f"a stain matrix is (2, 3) [H; E] over [R, G, B], got shape {matrix.shape}")
    return matrix


def fit_target(
    image_rgb_uint8: np.ndarray, Io: float = 240, alpha: float = 1, beta: float = 0.15
) -> tuple[np.ndarray, np.ndarray]:
    """Stain matrix ``(2, 3)`` and 99th-percentile concentrations ``(2,)`` of a target image."""
    matrix = macenko_stain_matrix(image_rgb_uint8, Io, alpha, beta)
    conc = stain_concentrations(image_rgb_uint8, matrix, Io)
    return matrix, np.percentile(conc, 99, axis=0)


def macenko_normalize(
    image: np.ndarray,
    target_stain_matrix: np.ndarray = REFERENCE_STAIN_MATRIX,
    target_max_conc: np.ndarray = REFERENCE_MAX_CONC,
    Io: float = 240,
    alpha: float = 1,
    beta: float = 0.15,
) -> np.ndarray:
    """Re-render an H&E image with a target's stain vectors and stain strengths.

    Args:
        image: ``(H, W, 3)`` uint8 RGB source image.
        target_stain_matrix: ``(2, 3)`` [H; E] unit OD vectors of the target.
        target_max_conc: ``(2,)`` 99th-percentile [H, E] concentrations of the target.
        Io, alpha, beta: see :func:`macenko_stain_matrix`.

    Returns:
        ``(H, W, 3)`` uint8 normalised image.

    Reference: Macenko et al. 2009, Sec. 2, steps 6-7.
    """
    image = _check_rgb(image)
    target = _check_matrix(target_stain_matrix)
    target_max = np.asarray(target_max_conc, np.float64).reshape(-1)
    if target_max.shape != (2,) or (target_max <= 0).any():
        raise ValueError(f"target_max_conc must be two positive numbers [H, E], got {target_max_conc}")
    source = macenko_stain_matrix(image, Io, alpha, beta)
    conc = stain_concentrations(image, source, Io)
    source_max = np.percentile(conc, 99, axis=0)
    conc = conc * (target_max / np.maximum(source_max, 1e-6))
    out = float(Io) * np.exp(-(conc @ target))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8).reshape(image.shape)


class MacenkoNormalizer:
    """Fit on a target image once, then normalise any number of images to it.

    Example:
        >>> norm = MacenkoNormalizer().fit(target_rgb)   # doctest: +SKIP
        >>> out = norm.transform(source_rgb)              # doctest: +SKIP
    """

    def __init__(self, Io: float = 240, alpha: float = 1, beta: float = 0.15):
        self.Io, self.alpha, self.beta = Io, alpha, beta
        self.stain_matrix = REFERENCE_STAIN_MATRIX.copy()
        self.max_conc = REFERENCE_MAX_CONC.copy()
        self.fitted = False

    def fit(self, target_rgb_uint8: np.ndarray) -> MacenkoNormalizer:
        """Take the target's stain matrix and maximal concentrations."""
        self.stain_matrix, self.max_conc = fit_target(target_rgb_uint8, self.Io, self.alpha, self.beta)
        self.fitted = True
        return self

    def transform(self, image_rgb_uint8: np.ndarray) -> np.ndarray:
        """Normalise one image to the target (Macenko's reference target before ``fit``)."""
        return macenko_normalize(image_rgb_uint8, self.stain_matrix, self.max_conc, self.Io, self.alpha, self.beta)
