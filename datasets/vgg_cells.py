"""VGG synthetic fluorescence cells (Lempitsky & Zisserman, NIPS 2010), used by Xie et al.'s FCRN.

Layout: ``<root>/NNNcell.png`` (256×256 RGB) and ``<root>/NNNdots.png`` (same size, black with one
red pixel at each cell centre); ``root`` may also be the folder that holds ``cells/``.

Cells are counted as red PIXELS, not blobs, because neighbouring dots can touch. A dot pixel is
"red" when R >= 128 and G, B < 128: all 200 dot images of the public copy hold only pure black
(0, 0, 0) and pure red (255, 0, 0), so any threshold between gives the same 176 ± 61 cells; the
half-range threshold also survives a lossy re-encoding. Points are the pixel indices ``[col, row]``.

Reference: FCN segmentation paper, Sec. 7 (Xie, Noble & Zisserman's FCRN was proposed on this
data); Lempitsky & Zisserman 2010 (first 100 images train, the last 100 test).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from microrepro.common.errors import DataError
from microrepro.common.imageio import read_image
from microrepro.datasets._util import check_same_size
from microrepro.datasets.base import Sample

_EXPECTED = "NNNcell.png + NNNdots.png pairs (the VGG cells folder, or its parent holding cells/)"
_NAME = re.compile(r"^(\d+)cell\.png$", re.IGNORECASE)
RED_MIN, OTHER_MAX = 128, 128


def dots_to_points(dots: np.ndarray) -> np.ndarray:
    """Red pixels of a dot annotation image as points.

    Args:
        dots: ``(H, W, 3)`` or ``(H, W, 4)`` RGB(A) uint8 dot image.

    Returns:
        ``(N, 2)`` float32 ``[x, y]`` pixel indices, row-major order.
    """
    if dots.ndim != 3 or dots.shape[-1] < 3:
        raise ValueError(f"dots must be an RGB image (H, W, 3), got shape {dots.shape}")
    red = (dots[..., 0] >= RED_MIN) & (dots[..., 1] < OTHER_MAX) & (dots[..., 2] < OTHER_MAX)
    rows, cols = np.nonzero(red)
    return np.stack([cols, rows], axis=1).astype(np.float32)


def load(root: str | Path) -> list[Sample]:
    """Load all cell/dots pairs, sorted by their number (001, 002, ...).

    Reads every dots image once (256×256, fast) to place the points; the cell images stay lazy.

    Args:
        root: folder of ``NNNcell.png`` / ``NNNdots.png``, or its parent holding ``cells/``.

    Returns:
        Samples with ``points`` ``(N, 2)`` cell centres ``[x, y]`` px, ``labels`` zeros, no boxes,
        ``pixel_size_um`` None (synthetic), ``meta`` ``{"number", "dots_path"}``.

    Raises:
        DataError: no pairs found, a cell image without its dots image, or a size mismatch.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: folder not found; expected {_EXPECTED}")
    if not any(_NAME.match(p.name) for p in root.iterdir()) and (root / "cells").is_dir():
        root = root / "cells"
    pairs = sorted((int(m.group(1)), p) for p in root.iterdir() if (m := _NAME.match(p.name)))
    if not pairs:
        raise DataError(f"{root}: no NNNcell.png files; expected {_EXPECTED}")
    samples = []
    for number, cell_path in pairs:
        stem = cell_path.name[: -len("cell.png")]
        dots_path = cell_path.with_name(f"{stem}dots.png")
        if not dots_path.is_file():
            raise DataError(f"{dots_path}: dots image of {cell_path.name} not found")
        dots = read_image(dots_path)
        check_same_size(cell_path, dots_path, dots.shape, what="dots image")
        samples.append(
            Sample(id=stem, image_path=cell_path, points=dots_to_points(dots),
                   meta={"number": number, "dots_path": dots_path, "size": dots.shape[:2]})
        )
    return samples


def conventional_split(samples: list[Sample], n_train: int = 100) -> tuple[list[Sample], list[Sample]]:
    """First ``n_train`` images (by number) for training, the rest for testing.

    Lempitsky & Zisserman and Xie et al. train on the first 100 (or up to 150) of the 200 images.

    Raises:
        ValueError: ``n_train`` not in [0, len(samples)].
    """
    if not 0 <= n_train <= len(samples):
        raise ValueError(f"n_train must be in [0, {len(samples)}], not {n_train}")
    ordered = sorted(samples, key=lambda s: s.meta.get("number", 0))
    return ordered[:n_train], ordered[n_train:]
