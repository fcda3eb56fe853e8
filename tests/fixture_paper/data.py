"""Synthetic data of fixture_paper: bright discs on noise with known centres."""

from __future__ import annotations

import numpy as np

from .config import DataConfig


def make_images(cfg: DataConfig, n: int, seed: int) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """``n`` images with ``cfg.discs_per_image`` non-overlapping discs each.

    Returns:
        ``(images (n, S, S) float32 in [0, 1], centres: n arrays (K, 2) [x, y] px, masks (n, S, S)
        float32)``; centres are in the corner-origin frame of ``common.predict``.
    """
    rng = np.random.default_rng(seed)
    size, radius = cfg.image_size, cfg.radius
    yy, xx = np.mgrid[:size, :size] + 0.5  # pixel centres
    images, centres, masks = [], [], []
    for _ in range(n):
        points: list[tuple[float, float]] = []
        for _ in range(100 * cfg.discs_per_image):  # rejection sampling: discs keep a gap
            if len(points) == cfg.discs_per_image:
                break
            x, y = np.round(rng.uniform(radius + 1, size - radius - 1, 2)) + 0.5
            if all((x - px) ** 2 + (y - py) ** 2 > (2 * radius + 4) ** 2 for px, py in points):
                points.append((x, y))
        mask = np.zeros((size, size), bool)
        for x, y in points:
            mask |= (xx - x) ** 2 + (yy - y) ** 2 <= radius**2
        image = 0.2 + cfg.contrast * mask + cfg.noise * rng.standard_normal((size, size))
        images.append(np.clip(image, 0, 1).astype(np.float32))
        centres.append(np.array(points, np.float64).reshape(-1, 2))
        masks.append(mask.astype(np.float32))
    return np.stack(images), centres, np.stack(masks)
