"""AMIDA13 / TUPAC16 auxiliary mitosis data: H&E high-power fields with mitosis centre points.

Layout::

    <root>/mitoses_image_data/NN/MM.tif       NN = case, MM = field (2000×2000 RGB at ×40)
    <root>/mitoses_ground_truth/NN/MM.csv     one row per mitosis: row,col  (y, x!)

A field with no CSV has no mitosis (valid: most fields have none). Pixel size 0.25 µm/px.
The CSV order is row-column, as the TUPAC16 submission format states ("the first two columns
must contain the image coordinates of the detection (row-column order)"); points are returned
``[x, y] = [col, row]``.

Reference: DWT mitosis paper, Sec. 4.1 (AMIDA2013: 2000×2000 views at 0.25 µm/px, which the paper
misprints as "pixels/µm"; TUPAC2016 part one is the same data) and Sec. 4.2 (8 µm matching).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from microrepro.common.errors import DataError
from microrepro.datasets._util import csv_rows, natural_key, to_float
from microrepro.datasets.base import Sample

PIXEL_SIZE_UM = 0.25
_EXPECTED = "mitoses_image_data/NN/MM.tif (+ mitoses_ground_truth/NN/MM.csv rows row,col) (AMIDA13 / TUPAC16)"


def read_points(csv_path: Path) -> np.ndarray:
    """``(N, 2)`` float32 ``[x, y]`` points of one ground-truth CSV (rows ``row,col[,...]``).

    A missing file means no mitosis. A header line (non-numeric first row) is skipped.

    Raises:
        DataError: a row with fewer than two values or a non-numeric value (file and line named).
    """
    if not csv_path.is_file():
        return np.zeros((0, 2), np.float32)
    points = []
    for n, (line, fields) in enumerate(csv_rows(csv_path)):
        if len(fields) < 2:
            raise DataError(f"{csv_path}, line {line}: expected row,col")
        if n == 0 and fields[0].lower() in ("row", "y"):
            continue
        row = to_float(fields[0], csv_path, line, "row")
        col = to_float(fields[1], csv_path, line, "col")
        points.append((col, row))
    return np.asarray(points, np.float32).reshape(-1, 2)


def load(root: str | Path, require_ground_truth: bool = True) -> list[Sample]:
    """Load every field of ``mitoses_image_data`` with its ground-truth mitoses.

    Args:
        root: folder holding ``mitoses_image_data/`` and ``mitoses_ground_truth/``.
        require_ground_truth: raise when ``mitoses_ground_truth/`` is absent (otherwise every
            field would silently read as "no mitosis"); False loads unannotated images.

    Returns:
        Samples ordered by case then field, ``id`` "NN_MM", ``points`` ``(N, 2)`` ``[x, y]`` px,
        ``labels`` zeros, ``pixel_size_um`` 0.25, ``meta`` ``{"case", "field"}``.

    Raises:
        DataError: wrong layout, missing ground truth folder, or malformed CSV.
    """
    root = Path(root)
    image_root, truth_root = root / "mitoses_image_data", root / "mitoses_ground_truth"
    if not image_root.is_dir():
        raise DataError(f"{root}: no mitoses_image_data/ folder; expected {_EXPECTED}")
    if require_ground_truth and not truth_root.is_dir():
        raise DataError(f"{root}: no mitoses_ground_truth/ folder; expected {_EXPECTED}")
    cases = sorted((p for p in image_root.iterdir() if p.is_dir()), key=lambda p: natural_key(p.name))
    samples = []
    for case in cases:
        fields = sorted((p for p in case.iterdir() if p.suffix.lower() in (".tif", ".tiff")),
                        key=lambda p: natural_key(p.name))
        for image_path in fields:
            points = read_points(truth_root / case.name / f"{image_path.stem}.csv")
            samples.append(
                Sample(id=f"{case.name}_{image_path.stem}", image_path=image_path, points=points,
                       pixel_size_um=PIXEL_SIZE_UM, meta={"case": case.name, "field": image_path.stem})
            )
    if not samples:
        raise DataError(f"{image_root}: no NN/MM.tif images; expected {_EXPECTED}")
    return samples
