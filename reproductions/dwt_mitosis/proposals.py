"""Phase 2, R-CNN's regions: selective-search proposals, their warps, and box-regression targets.

1. region proposals by selective search (OpenCV ``ximgproc``, "fast" mode), capped and filtered
   to sizes plausible for mitoses at ×40 (:func:`selective_search`, :func:`filter_proposals`,
   :func:`image_proposals`);
2. every proposal warped anisotropically, with context, to the CNN's input size
   (:func:`warp_regions`), computed once per image set (:func:`build_regions`, :class:`RegionSet`);
3. the box-regression parametrisation of R-CNN App. C (:func:`regression_targets`,
   :func:`apply_regression`).

Boxes are ``[x1, y1, x2, y2]`` pixels (x2/y2 exclusive edge), ``(N, 4)`` float32. Images are RGB
uint8 ``(H, W, 3)``.

Reference: dwt_mitosis Sec. 3.2; Girshick, Donahue, Darrell, Malik, "Rich feature hierarchies
for accurate object detection and semantic segmentation", CVPR 2014 (Sec. 2.1, App. A, App. C).
"""

from __future__ import annotations

import functools
import math
import time
import warnings
from dataclasses import dataclass

import numpy as np

from microrepro.common.matching import box_iou

# ----------------------------------------------------------------------------------------------
# proposals


def selective_search(image: np.ndarray, mode: str = "fast", max_proposals: int | None = 2000) -> np.ndarray:
    """Selective-search proposals (Uijlings et al. 2013) of an RGB image.

    Args:
        image: ``(H, W, 3)`` uint8 RGB (grey ``(H, W)`` is repeated to 3 channels).
        mode: ``"fast"`` (R-CNN's choice), ``"quality"`` or ``"single"`` (one strategy).
        max_proposals: keep the first ones in OpenCV's ranking (None: all).

    Returns:
        ``(N, 4)`` float32 boxes ``[x1, y1, x2, y2]`` px.

    Reference: R-CNN Sec. 2.1 ("selective search's fast mode").
    """
    import cv2

    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] < 3:
        raise ValueError(f"image must be (H, W, 3) RGB, got shape {image.shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {image.dtype}")
    search = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    _seed_c_rand(0)  # OpenCV ranks the regions with C's rand(): same image -> same proposals, in any process
    search.setBaseImage(np.ascontiguousarray(image[..., 2::-1]))  # OpenCV expects BGR
    if mode == "fast":
        search.switchToSelectiveSearchFast()
    elif mode == "quality":
        search.switchToSelectiveSearchQuality()
    elif mode == "single":
        search.switchToSingleStrategy()
    else:
        raise ValueError(f"mode must be fast, quality or single, got {mode!r}")
    rects = np.asarray(search.process(), np.float32).reshape(-1, 4)  # (x, y, w, h)
    if max_proposals is not None:
        rects = rects[: int(max_proposals)]
    return np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:]], axis=1).astype(np.float32)


@functools.cache
def _c_library():
    """The C library whose ``rand`` / ``srand`` the process's OpenCV uses, or None where it cannot be reached."""
    import ctypes
    import sys

    try:
        libc = ctypes.CDLL("ucrtbase") if sys.platform == "win32" else ctypes.CDLL(None)
        libc.srand, libc.rand  # noqa: B018 - both must exist
        return libc
    except (OSError, AttributeError):
        warnings.warn("C's srand is not reachable: selective-search proposals (ranked with rand()) will vary "
                      "from one call to the next", RuntimeWarning, stacklevel=3)
        return None


def _seed_c_rand(seed: int) -> None:
    """Seed C's ``rand()``, which OpenCV's selective search uses to rank its regions (rank = rand × level).

    Unseeded, that ranking follows the process's global rand() state: ``reproduce`` (train, val,
    then test images) and ``evaluate`` (test images only) kept different proposals of the same
    test image under ``max_proposals``, so a re-evaluation did not reproduce the metrics.
    """
    libc = _c_library()
    if libc is not None:
        libc.srand(int(seed))


def filter_proposals(
    boxes: np.ndarray,
    min_size_px: float,
    max_size_px: float,
    max_aspect: float = 4.0,
    max_proposals: int | None = None,
) -> np.ndarray:
    """Keep proposals whose longer side lies in ``[min_size_px, max_size_px]``, aspect <= max_aspect.

    Duplicates are removed (selective search returns the same rectangle from several
    strategies); order is kept, then capped at ``max_proposals``.

    Args:
        boxes: ``(N, 4)`` xyxy px.
        min_size_px, max_size_px: bounds of the longer side.
        max_aspect: longest / shortest side.
        max_proposals: cap after filtering (None: no cap).

    Returns:
        ``(M, 4)`` float32.
    """
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    if min_size_px > max_size_px:
        raise ValueError(f"min_size_px {min_size_px} exceeds max_size_px {max_size_px}")
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    longer, shorter = np.maximum(w, h), np.minimum(w, h)
    ok = (longer >= min_size_px) & (longer <= max_size_px) & (shorter > 0)
    ok &= longer <= max_aspect * np.maximum(shorter, 1e-6)
    boxes = boxes[ok]
    _, first = np.unique(boxes, axis=0, return_index=True)
    boxes = boxes[np.sort(first)]
    if max_proposals is not None:
        boxes = boxes[: int(max_proposals)]
    return boxes


def overlaps(proposals: np.ndarray, gt_boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Best IoU of each proposal with the ground-truth boxes, and which box it was.

    Returns:
        ``(max_iou (N,) float64, gt_index (N,) int64)``; with no ground truth, IoU 0 and index -1.
    """
    proposals = np.asarray(proposals, np.float64).reshape(-1, 4)
    gt_boxes = np.asarray(gt_boxes, np.float64).reshape(-1, 4)
    if not len(gt_boxes) or not len(proposals):
        return np.zeros(len(proposals)), -np.ones(len(proposals), np.int64)
    iou = box_iou(proposals, gt_boxes)
    return iou.max(axis=1), iou.argmax(axis=1).astype(np.int64)


# ----------------------------------------------------------------------------------------------
# warping and box regression


def context_boxes(boxes: np.ndarray, warp_size: int, padding: int) -> np.ndarray:
    """Grow boxes so that, warped to ``warp_size``, the original box spans ``warp_size - 2·padding``.

    Reference: R-CNN App. A ("dilate the tight bounding box so that at the warped size there are
    exactly p pixels of warped image context", p = 16 at 227).
    """
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    inner = warp_size - 2 * padding
    if inner <= 0:
        raise ValueError(f"warp_padding {padding} leaves nothing of a {warp_size} px region")
    scale = warp_size / inner
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = (boxes[:, 2:] - boxes[:, :2]) * scale / 2
    return np.concatenate([centre - half, centre + half], axis=1)


def warp_regions(image: np.ndarray, boxes: np.ndarray, size: int, padding: int = 0) -> np.ndarray:
    """Anisotropically warp each box (with context) of an image to ``size × size``.

    Pixels outside the image are filled with the image mean (R-CNN App. A).

    Args:
        image: ``(H, W, 3)`` uint8.
        boxes: ``(N, 4)`` xyxy px.
        size: output side.
        padding: context px in the warped frame (:func:`context_boxes`).

    Returns:
        ``(N, size, size, 3)`` uint8.
    """
    import cv2

    image = np.asarray(image)
    boxes = context_boxes(boxes, size, padding)
    out = np.empty((len(boxes), size, size, image.shape[-1]), np.uint8)
    fill = tuple(float(v) for v in image.reshape(-1, image.shape[-1]).mean(axis=0))
    for k, (x1, y1, x2, y2) in enumerate(boxes):
        # affine map of the box corners onto the output square; sub-pixel exact, no integer crop
        sx, sy = size / max(x2 - x1, 1e-3), size / max(y2 - y1, 1e-3)
        matrix = np.array([[sx, 0, -x1 * sx - 0.5 + 0.5 * sx], [0, sy, -y1 * sy - 0.5 + 0.5 * sy]], np.float64)
        out[k] = cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=fill).reshape(size, size, -1)
    return out


def regression_targets(proposals: np.ndarray, gt_boxes: np.ndarray) -> np.ndarray:
    """R-CNN targets ``(tx, ty, tw, th)`` from proposals P to boxes G (App. C).

    ``tx = (Gx − Px) / Pw``, ``ty = (Gy − Py) / Ph``, ``tw = log(Gw / Pw)``, ``th = log(Gh / Ph)``
    with centres (x, y) and sizes (w, h).

    Returns:
        ``(N, 4)`` float64.
    """
    p = np.asarray(proposals, np.float64).reshape(-1, 4)
    g = np.asarray(gt_boxes, np.float64).reshape(-1, 4)
    pw, ph = np.maximum(p[:, 2] - p[:, 0], 1e-6), np.maximum(p[:, 3] - p[:, 1], 1e-6)
    gw, gh = np.maximum(g[:, 2] - g[:, 0], 1e-6), np.maximum(g[:, 3] - g[:, 1], 1e-6)
    px, py = p[:, 0] + pw / 2, p[:, 1] + ph / 2
    gx, gy = g[:, 0] + gw / 2, g[:, 1] + gh / 2
    return np.stack([(gx - px) / pw, (gy - py) / ph, np.log(gw / pw), np.log(gh / ph)], axis=1)


def apply_regression(proposals: np.ndarray, deltas: np.ndarray, max_log_scale: float = math.log(4.0)) -> np.ndarray:
    """Inverse of :func:`regression_targets`; log-scales clipped to ±``max_log_scale``."""
    p = np.asarray(proposals, np.float64).reshape(-1, 4)
    d = np.asarray(deltas, np.float64).reshape(-1, 4)
    pw, ph = p[:, 2] - p[:, 0], p[:, 3] - p[:, 1]
    px, py = p[:, 0] + pw / 2, p[:, 1] + ph / 2
    x, y = px + d[:, 0] * pw, py + d[:, 1] * ph
    w = pw * np.exp(np.clip(d[:, 2], -max_log_scale, max_log_scale))
    h = ph * np.exp(np.clip(d[:, 3], -max_log_scale, max_log_scale))
    return np.stack([x - w / 2, y - h / 2, x + w / 2, y + h / 2], axis=1).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# regions of a set of images


@dataclass
class RegionSet:
    """Warped proposals of several images, computed once and shared by every label source.

    Attributes:
        warps: ``(N, S, S, 3)`` uint8.
        boxes: ``(N, 4)`` float32 proposal boxes (image px).
        image_index: ``(N,)`` int64, which image each region comes from.
        n_images: number of images.
        seconds_proposals: selective-search time summed over images.
    """

    warps: np.ndarray
    boxes: np.ndarray
    image_index: np.ndarray
    n_images: int
    seconds_proposals: float = 0.0

    def of_image(self, k: int) -> np.ndarray:
        return np.flatnonzero(self.image_index == k)


def image_proposals(image: np.ndarray, cfg, pixel_size_um: float) -> np.ndarray:
    """Selective search + size filter of ``cfg`` (an ``RCNNConfig``) for one image.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        cfg: ``RCNNConfig`` (``ss_mode``, ``min_size_um``, ``max_size_um``, ``max_aspect``,
            ``max_proposals``).
        pixel_size_um: µm per pixel of ``image`` (turns the µm size bounds into px).

    Returns:
        ``(N, 4)`` float32 boxes ``[x1, y1, x2, y2]`` px.
    """
    raw = selective_search(image, cfg.ss_mode, None)
    return filter_proposals(raw, cfg.min_size_um / pixel_size_um, cfg.max_size_um / pixel_size_um,
                            cfg.max_aspect, cfg.max_proposals)


def build_regions(images: list[np.ndarray], pixel_sizes: list[float], cfg) -> RegionSet:
    """Proposals (:func:`image_proposals`) and their warps for every image (``cfg``: ``RCNNConfig``).

    Returns:
        A :class:`RegionSet`; its ``seconds_proposals`` is the selective-search time.
    """
    warps, boxes, index, seconds = [], [], [], 0.0
    for k, (image, px) in enumerate(zip(images, pixel_sizes, strict=True)):
        start = time.perf_counter()
        props = image_proposals(image, cfg, px)
        seconds += time.perf_counter() - start
        warps.append(warp_regions(image, props, cfg.warp_size, cfg.warp_padding))
        boxes.append(props)
        index.append(np.full(len(props), k, np.int64))
    size = cfg.warp_size
    return RegionSet(
        _concat(warps, (0, size, size, 3), np.uint8), _concat(boxes, (0, 4), np.float32),
        _concat(index, (0,), np.int64), len(images), seconds,
    )


def _concat(arrays: list[np.ndarray], empty_shape: tuple, dtype) -> np.ndarray:
    return np.concatenate(arrays) if arrays else np.zeros(empty_shape, dtype)
