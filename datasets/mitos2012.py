"""ICPR 2012 mitosis contest (MITOS): H&E high-power fields with pixel-level mitosis annotations.

Layout::

    <root>/A0{0..4}_v2/A00_00.bmp + A00_00.csv     Aperio ScanScope XT, 0.2455 µm/px
    <root>/H0{0..4}_v2/H00_00.bmp + H00_00.csv     Hamamatsu NanoZoomer, 0.2273 µm/px

Each CSV line is one mitosis and lists ALL its pixels as a flat sequence of integer pairs
``c1,c2,c1,c2,...``. Assumption (the contest page is offline here): the pairs are ``x,y``
(column, row), as read by two independent public readers of this data (both take the even
positions as x). ``coord_order="yx"`` swaps them if your copy says otherwise; a coordinate outside
the image raises a DataError that suggests the swap.

Each mitosis becomes one instance of the label image (built on demand, ``.mask``), its centroid
(mean of its pixels) and its box ``[min x, min y, max x + 1, max y + 1]`` (x2/y2 exclusive, as
``base.mask_to_objects``).

Reference: MITOS-RCNN paper, Sec. III-A (data sets and scanners); DWT mitosis paper, Sec. 3.1
(phase 1 is trained on the MITOS 2012 pixel-level masks).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from microrepro.common.errors import DataError
from microrepro.datasets._util import LazyMaskSample, csv_rows, image_size, natural_key, scanner_pixel_size

_FOLDER = re.compile(r"^[AH]\d+_v2$", re.IGNORECASE)
_EXPECTED = "folders A0{0..4}_v2 / H0{0..4}_v2 with A00_00.bmp + A00_00.csv pairs (ICPR 2012 MITOS)"


def read_mitoses(csv_path: Path, coord_order: str = "xy") -> list[np.ndarray]:
    """Pixel lists of the mitoses of one MITOS 2012 CSV.

    Args:
        csv_path: the annotation file (one mitosis per line, ``c1,c2,c1,c2,...``).
        coord_order: "xy" when each pair is (column, row), "yx" when it is (row, column).

    Returns:
        One ``(P, 2)`` int64 array of unique ``[x, y]`` pixels per mitosis, in file order.

    Raises:
        DataError: an odd number of values or a non-integer value (file and line named).
    """
    if coord_order not in ("xy", "yx"):
        raise ValueError(f"coord_order must be 'xy' or 'yx', not {coord_order!r}")
    objects = []
    for line, fields in csv_rows(csv_path):
        fields = [f for f in fields if f != ""]
        if len(fields) % 2:
            raise DataError(f"{csv_path}, line {line}: {len(fields)} values, expected coordinate pairs")
        try:
            values = np.array([int(float(v)) for v in fields], np.int64)
        except ValueError:
            raise DataError(f"{csv_path}, line {line}: non-numeric coordinate") from None
        pairs = values.reshape(-1, 2)
        if coord_order == "yx":
            pairs = pairs[:, ::-1]
        objects.append(np.unique(pairs, axis=0))
    return objects


def _render(shape: tuple[int, int], objects: list[np.ndarray]) -> np.ndarray:
    mask = np.zeros(shape, np.int32)
    for k, pixels in enumerate(objects, start=1):
        mask[pixels[:, 1], pixels[:, 0]] = k  # a later mitosis wins where two overlap
    return mask


def load(root: str | Path, coord_order: str = "xy") -> list[LazyMaskSample]:
    """Load all MITOS 2012 high-power fields under ``root``.

    Args:
        root: folder holding the ``A0N_v2`` / ``H0N_v2`` folders (or one such folder itself).
        coord_order: order of each coordinate pair in the CSVs, "xy" (default) or "yx".

    Returns:
        Samples (folder then natural file order) with ``image_path`` the BMP (RGB uint8),
        ``points`` ``(N, 2)`` centroids ``[x, y]`` px, ``boxes`` ``(N, 4)`` ``[x1, y1, x2, y2]`` px,
        ``labels`` zeros (mitosis), ``.mask`` int32 instance labels, ``pixel_size_um`` by scanner,
        ``meta`` ``{"scanner", "folder", "areas"}``.

    Raises:
        DataError: wrong layout, an image without its CSV, malformed CSV, or a pixel outside
            the image.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: folder not found; expected {_EXPECTED}")
    if _FOLDER.match(root.name):
        folders = [root]
    else:
        folders = [p for p in root.iterdir() if p.is_dir() and _FOLDER.match(p.name)]
    folders = sorted(folders, key=lambda p: natural_key(p.name))
    if not folders:
        raise DataError(f"{root}: no A0N_v2/H0N_v2 folders; expected {_EXPECTED}")
    samples = []
    for folder in folders:
        scanner, pixel_size = scanner_pixel_size(folder.name, folder)
        images = sorted((p for p in folder.iterdir() if p.suffix.lower() == ".bmp"), key=lambda p: natural_key(p.name))
        if not images:
            raise DataError(f"{folder}: no .bmp images; expected {_EXPECTED}")
        for image_path in images:
            csv_path = image_path.with_suffix(".csv")
            if not csv_path.is_file():
                raise DataError(f"{csv_path}: annotation file of {image_path.name} not found")
            objects = read_mitoses(csv_path, coord_order)
            width, height = image_size(image_path)
            for pixels in objects:
                if pixels.size and (pixels.min() < 0 or pixels[:, 0].max() >= width or pixels[:, 1].max() >= height):
                    raise DataError(
                        f"{csv_path}: a pixel lies outside the {width}x{height} image "
                        f"(coord_order='{coord_order}'; try the other order?)"
                    )
            objects = [p for p in objects if len(p)]
            points = [p.mean(axis=0) for p in objects]
            boxes = [[p[:, 0].min(), p[:, 1].min(), p[:, 0].max() + 1, p[:, 1].max() + 1] for p in objects]
            samples.append(
                LazyMaskSample(
                    id=image_path.stem,
                    image_path=image_path,
                    points=np.asarray(points, np.float32),
                    boxes=np.asarray(boxes, np.float32),
                    pixel_size_um=pixel_size,
                    meta={"scanner": scanner, "folder": folder.name, "areas": [len(p) for p in objects]},
                    mask_factory=lambda shape=(height, width), objs=objects: _render(shape, objs),
                )
            )
    return samples
