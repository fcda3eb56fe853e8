"""MITOS-ATYPIA-14 (ICPR 2014 contest): H&E frames with mitosis and non-mitosis centre points.

Layout::

    <root>/A03/frames/x40/A03_00Aa.tiff
    <root>/A03/mitosis/A03_00Aa_mitosis.csv        rows x,y,confidence
    <root>/A03/mitosis/A03_00Aa_not_mitosis.csv    rows x,y,confidence

Slides starting with "A" come from the Aperio scanner (0.2455 µm/px), "H" from the Hamamatsu
(0.2273 µm/px). A frame without a CSV has no annotated figure of that kind (valid).
Assumption: each row is ``x, y`` (column, row) as the issue describes; ``coord_order="yx"``
swaps them.

Labels: 0 = mitosis, 1 = not mitosis (a look-alike the pathologists rejected); the row's
confidence (agreement of the pathologists) is kept in ``meta["confidence"]``, aligned with points.

Reference: MITOS-RCNN paper, Sec. III-A and IV-A (data; classes "mitotic figure" / "not mitotic
figure"); DWT mitosis paper, Sec. 4.1 (ICPR2014: 1539×1376 views, 0.2455 µm/px).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from microrepro.common.errors import DataError
from microrepro.datasets._util import csv_rows, natural_key, scanner_pixel_size, to_float
from microrepro.datasets.base import Sample

MITOSIS, NOT_MITOSIS = 0, 1
_SLIDE = re.compile(r"^[AH]\d+$", re.IGNORECASE)
_EXPECTED = "slide folders like A03/ with frames/x40/*.tiff and mitosis/<frame>_mitosis.csv (MITOS-ATYPIA-14)"


def read_points(csv_path: Path, coord_order: str = "xy") -> tuple[np.ndarray, np.ndarray]:
    """Points ``(N, 2)`` ``[x, y]`` and confidences ``(N,)`` of one ``*_mitosis.csv`` file.

    A missing file means no figure (returns empty arrays). A third column is optional (confidence
    1.0 when absent).

    Raises:
        DataError: fewer than two values on a line or a non-numeric value (file and line named).
    """
    if not csv_path.is_file():
        return np.zeros((0, 2), np.float32), np.zeros((0,), np.float32)
    points, confidences = [], []
    for line, fields in csv_rows(csv_path):
        if len(fields) < 2:
            raise DataError(f"{csv_path}, line {line}: expected x,y,confidence")
        first = to_float(fields[0], csv_path, line, "x" if coord_order == "xy" else "y")
        second = to_float(fields[1], csv_path, line, "y" if coord_order == "xy" else "x")
        points.append((first, second) if coord_order == "xy" else (second, first))
        confidences.append(to_float(fields[2], csv_path, line, "confidence") if len(fields) > 2 else 1.0)
    return np.asarray(points, np.float32).reshape(-1, 2), np.asarray(confidences, np.float32)


def load(
    root: str | Path,
    include_not_mitosis: bool = True,
    min_confidence: float = 0.0,
    coord_order: str = "xy",
    magnification: str = "x40",
) -> list[Sample]:
    """Load MITOS-ATYPIA-14 frames with their mitosis / not-mitosis points.

    Args:
        root: folder holding the slide folders (A03, H12...), or one slide folder.
        include_not_mitosis: also return the rejected look-alikes (label 1).
        min_confidence: drop points whose confidence is below this value.
        coord_order: "xy" (default) or "yx" for the first two CSV columns.
        magnification: frame folder under ``frames/`` ("x40"; "x20" frames have no points).

    Returns:
        Samples (slide then natural frame order) with ``points`` ``(N, 2)`` ``[x, y]`` px,
        ``labels`` ``(N,)`` 0 = mitosis / 1 = not mitosis, no boxes, ``pixel_size_um`` by scanner,
        ``meta`` ``{"slide", "scanner", "confidence": (N,) float32}``.

    Raises:
        ValueError: bad ``coord_order`` or ``min_confidence``.
        DataError: wrong layout or malformed CSV.
    """
    if coord_order not in ("xy", "yx"):
        raise ValueError(f"coord_order must be 'xy' or 'yx', not {coord_order!r}")
    if not 0.0 <= min_confidence <= 1.0:
        raise ValueError(f"min_confidence must be in [0, 1], not {min_confidence}")
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: folder not found; expected {_EXPECTED}")
    if (root / "frames").is_dir():
        slides = [root]
    else:
        slides = [p for p in root.iterdir() if p.is_dir() and _SLIDE.match(p.name) and (p / "frames").is_dir()]
    if not slides:
        raise DataError(f"{root}: no slide folder with frames/; expected {_EXPECTED}")
    samples = []
    for slide in sorted(slides, key=lambda p: natural_key(p.name)):
        scanner, pixel_size = scanner_pixel_size(slide.name, slide)
        frame_dir = slide / "frames" / magnification
        if not frame_dir.is_dir():
            raise DataError(f"{frame_dir}: folder not found; expected {_EXPECTED}")
        frames = sorted((p for p in frame_dir.iterdir() if p.suffix.lower() in (".tif", ".tiff")),
                        key=lambda p: natural_key(p.name))
        for frame in frames:
            parts = [read_points(slide / "mitosis" / f"{frame.stem}_mitosis.csv", coord_order)]
            if include_not_mitosis:
                parts.append(read_points(slide / "mitosis" / f"{frame.stem}_not_mitosis.csv", coord_order))
            points = np.concatenate([p for p, _ in parts])
            confidence = np.concatenate([c for _, c in parts])
            labels = np.concatenate([np.full(len(p), label, np.int32) for label, (p, _) in enumerate(parts)])
            keep = confidence >= min_confidence
            samples.append(
                Sample(id=frame.stem, image_path=frame, points=points[keep], labels=labels[keep],
                       pixel_size_um=pixel_size,
                       meta={"slide": slide.name, "scanner": scanner, "confidence": confidence[keep]})
            )
    if not samples:
        raise DataError(f"{root}: no .tiff frames under */frames/{magnification}; expected {_EXPECTED}")
    return samples
