"""Dendritic spines (Smirnov & Garrett, figshare 6149207) in the CSV layout of the spines paper.

Layout (the one the paper's author released, ``/work/shared/data/spines``)::

    <root>/train/imgN.jpg           8-bit grey JPEGs, 128-212 px wide, 128-244 px tall
    <root>/train_labels.csv         filename,width,height,class,xmin,ymin,xmax,ymax
    <root>/test/ + test_labels.csv  the same, when the held-back test split is present

Each CSV row is the 15×15 px square around one spine centre: ``xmin = centre - 7`` and
``xmax = xmin + 14``, so the centre is the box midpoint. Some boxes cross the image border.

Choices made here:
- a file name is relative to ``<split>/`` and may not leave it (no ``..``, no absolute path);
- a box whose centre lies outside its image (the CSV ``width``/``height``, which must match the
  image file) is an error naming the CSV line; a box that only crosses the border is normal (a
  spine at the edge) and is clipped without a warning;
- points are the midpoints of the boxes as written (before clipping), i.e. the annotated centres;
- boxes are the CSV corners clipped to the image ``[0, width] × [0, height]``, in the same
  continuous coordinates the authors fed the TF Object Detection API (so 14 px wide, not 15);
- an image present in the folder but absent from the CSV is *unlabelled*, not empty: every image of
  the data set has 1-8 spines, so such a file is skipped by default (``include_unlabelled=True``
  returns it as a Sample with no objects and ``meta["unlabelled"] = True``);
- an image named in the CSV but missing from the folder is an error.

Reference: Spines paper, Sec. 2 (spine centres in pixels at 15.36 px/µm, 1-8 spines per image); the
15×15 px boxes are those of the authors' released labels (SP-CNN/train_labels.csv).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from microrepro.common.errors import DataError
from microrepro.datasets._util import csv_rows, header_index, image_size, inside, list_images, natural_key, to_float
from microrepro.datasets.base import Sample

PIXELS_PER_UM = 15.36
PIXEL_SIZE_UM = 1.0 / PIXELS_PER_UM
SPLITS = ("train", "test")
COLUMNS = ("filename", "width", "height", "class", "xmin", "ymin", "xmax", "ymax")
_EXPECTED = "train/ + train_labels.csv (filename,width,height,class,xmin,ymin,xmax,ymax) [+ test/ + test_labels.csv]"


def has_split(root: str | Path, split: str) -> bool:
    """True when ``<root>/<split>/`` and ``<root>/<split>_labels.csv`` both exist."""
    root = Path(root)
    return (root / split).is_dir() and (root / f"{split}_labels.csv").is_file()


def load(root: str | Path, split: str = "train", include_unlabelled: bool = False) -> list[Sample]:
    """Load one split of the spines data set.

    Args:
        root: folder holding ``<split>/`` and ``<split>_labels.csv``.
        split: "train" or "test".
        include_unlabelled: also return images of the folder that have no CSV row, as Samples with
            no objects (``meta["unlabelled"] = True``); by default they are skipped.

    Returns:
        Samples in natural file order (img1, img2, ..., img10), each with ``points`` ``(N, 2)``
        spine centres ``[x, y]`` px, ``boxes`` ``(N, 4)`` ``[x1, y1, x2, y2]`` px clipped to the
        image, ``labels`` zeros (class "dendrite"), ``pixel_size_um = 1 / 15.36`` and ``meta`` with
        the CSV ``width``/``height`` and the unclipped boxes (``raw_boxes``).

    Raises:
        ValueError: ``split`` is not "train" or "test".
        DataError: wrong layout, malformed CSV (file and line named), or a listed image missing.

    Reference: Spines paper, Sec. 2 (data set; 90/10 split made with ``splits.stratified_split``).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    root = Path(root)
    folder, labels_csv = root / split, root / f"{split}_labels.csv"
    if not folder.is_dir() or not labels_csv.is_file():
        raise DataError(f"{root}: not the spines layout; expected {_EXPECTED} (no {split}/ or {labels_csv.name})")
    rows = csv_rows(labels_csv)
    if not rows:
        raise DataError(f"{labels_csv}: empty file; expected the header {','.join(COLUMNS)}")
    index = header_index(labels_csv, rows[0][1], COLUMNS)

    boxes_by_file: dict[str, list[list[float]]] = defaultdict(list)
    size_by_file: dict[str, tuple[float, float]] = {}
    first_line: dict[str, int] = {}
    for line, fields in rows[1:]:
        if len(fields) < len(index):
            raise DataError(f"{labels_csv}, line {line}: {len(fields)} values, expected {len(COLUMNS)}")
        name = fields[index["filename"]]
        inside(folder, name, labels_csv, line)
        width = to_float(fields[index["width"]], labels_csv, line, "width")
        height = to_float(fields[index["height"]], labels_csv, line, "height")
        if width <= 0 or height <= 0:
            raise DataError(f"{labels_csv}, line {line}: width and height must be positive, not {width:g}x{height:g}")
        corners = [to_float(fields[index[c]], labels_csv, line, c) for c in ("xmin", "ymin", "xmax", "ymax")]
        if corners[2] < corners[0] or corners[3] < corners[1]:
            raise DataError(f"{labels_csv}, line {line}: xmax < xmin or ymax < ymin ({corners})")
        cx, cy = (corners[0] + corners[2]) / 2, (corners[1] + corners[3]) / 2
        if not (0 <= cx <= width and 0 <= cy <= height):
            raise DataError(
                f"{labels_csv}, line {line}: box {corners} of {name} has its centre outside the "
                f"{width:g}x{height:g} image; fix the row (boxes may cross the border, not lie outside it)"
            )
        if size_by_file.setdefault(name, (width, height)) != (width, height):
            raise DataError(f"{labels_csv}, line {line}: {name} has two different sizes in the CSV")
        first_line.setdefault(name, line)
        boxes_by_file[name].append(corners)

    samples = []
    for name in sorted(boxes_by_file, key=natural_key):
        path = inside(folder, name, labels_csv, first_line[name])
        if not path.is_file():
            raise DataError(f"{path}: image listed in {labels_csv.name} (line {first_line[name]}) not found")
        width, height = size_by_file[name]
        if image_size(path) != (int(width), int(height)):
            actual = "x".join(str(v) for v in image_size(path))
            raise DataError(
                f"{labels_csv}, line {first_line[name]}: {name} is {actual} px but the CSV says "
                f"{width:g}x{height:g}; fix the row (boxes are clipped to that size)"
            )
        raw = np.asarray(boxes_by_file[name], np.float32)
        # Points come from the unclipped box: clipping a border box would move its centre.
        points = np.stack([(raw[:, 0] + raw[:, 2]) / 2, (raw[:, 1] + raw[:, 3]) / 2], axis=1)
        boxes = np.clip(raw, 0, [width, height, width, height]).astype(np.float32)
        samples.append(
            Sample(
                id=Path(name).stem,
                image_path=path,
                points=points,
                boxes=boxes,
                pixel_size_um=PIXEL_SIZE_UM,
                meta={"width": int(width), "height": int(height), "raw_boxes": raw, "split": split},
            )
        )
    if include_unlabelled:
        listed = set(boxes_by_file)
        for path in list_images(folder):
            if path.name not in listed:
                samples.append(
                    Sample(id=path.stem, image_path=path, pixel_size_um=PIXEL_SIZE_UM,
                           meta={"unlabelled": True, "split": split})
                )
        samples.sort(key=lambda s: natural_key(s.id))
    if not samples:
        raise DataError(f"{labels_csv}: no boxes; expected one row per spine")
    return samples
