"""The generic "your own data" layout: a folder of images with masks or a points CSV.

Layout::

    <root>/*.png|jpg|tif|bmp        the images
    <root>/masks/<stem>.<any>       one mask per image, same file stem: binary (0/255, each
                                    connected component is one object) or instance labels
    <root>/points.csv               or: header ``image,x,y[,class]``, one row per object
    <root>/meta.yaml                optional: ``pixel_size_um: 0.25``

Rules: ``image`` is the file name (``a.png``) or its stem (``a``); x, y are pixels (column, row);
``class`` is an integer, or a name (names are numbered in sorted order, ``meta["class_names"]``);
an image with no row is a valid image with no object; a row naming an unknown image, a missing
column, a non-numeric value or a point outside its image (``0 <= x <= width``, ``0 <= y <= height``)
is an error naming the file and line. With both ``masks/`` and
``points.csv`` present, say which to use with ``annotations=``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from microrepro.common.errors import DataError
from microrepro.datasets._util import (
    check_same_size,
    csv_rows,
    header_index,
    image_size,
    list_images,
    read_label_mask,
    to_float,
)
from microrepro.datasets.base import Sample, mask_to_objects

POINTS_CSV, MASKS_DIR, META_YAML = "points.csv", "masks", "meta.yaml"
ANNOTATIONS = ("auto", "masks", "points")
_EXPECTED = "a folder of images with masks/<same stem> or points.csv (image,x,y[,class]) [+ meta.yaml]"


def read_pixel_size(root: Path) -> float | None:
    """``pixel_size_um`` from ``<root>/meta.yaml``, or None without the file or the key.

    Raises:
        DataError: unreadable YAML or a value that is not a positive number.
    """
    path = root / META_YAML
    if not path.is_file():
        return None
    import yaml

    try:
        meta = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise DataError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(meta, dict):
        raise DataError(f"{path}: expected a mapping such as 'pixel_size_um: 0.25'")
    value = meta.get("pixel_size_um")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise DataError(f"{path}: pixel_size_um must be a positive number, not {value!r}")
    return float(value)


def read_points_csv(path: Path, images: list[Path]) -> tuple[dict[str, tuple[list, list]], list[str] | None]:
    """Points and class labels per image stem from ``points.csv``.

    Returns:
        ``({stem: ([[x, y], ...], [class, ...])}, class_names or None)``.

    Raises:
        DataError: missing column, wrong number of values, non-numeric x/y, unknown image.
    """
    rows = csv_rows(path)
    if not rows:
        raise DataError(f"{path}: empty file; expected the header image,x,y[,class]")
    header = rows[0][1]
    index = header_index(path, header, ("image", "x", "y"))
    by_name = {p.name: p.stem for p in images} | {p.stem: p.stem for p in images}
    per_image: dict[str, tuple[list, list]] = {p.stem: ([], []) for p in images}
    sizes: dict[str, tuple[int, int]] = {}
    path_by_stem = {p.stem: p for p in images}
    raw_classes = []
    for line, fields in rows[1:]:
        if len(fields) != len(header):
            raise DataError(f"{path}, line {line}: {len(fields)} values, expected {len(header)} ({','.join(header)})")
        name = fields[index["image"]]
        if name not in by_name:
            raise DataError(f"{path}, line {line}: image {name!r} is not in {path.parent}")
        stem = by_name[name]
        x = to_float(fields[index["x"]], path, line, "x")
        y = to_float(fields[index["y"]], path, line, "y")
        if stem not in sizes:
            sizes[stem] = image_size(path_by_stem[stem])
        width, height = sizes[stem]
        if not (0 <= x <= width and 0 <= y <= height):
            raise DataError(f"{path}, line {line}: point ({x:g}, {y:g}) lies outside {name} ({width}x{height} px)")
        per_image[stem][0].append((x, y))
        raw_classes.append((stem, line, fields[index["class"]] if "class" in index else "0"))
    class_names = None
    values = [c for _, _, c in raw_classes]
    try:
        numbers = [int(v) for v in values]
    except ValueError:
        class_names = sorted(set(values))
        numbers = [class_names.index(v) for v in values]
    for (stem, line, _), number in zip(raw_classes, numbers):
        if number < 0:
            raise DataError(f"{path}, line {line}: class must be >= 0, not {number}")
        per_image[stem][1].append(number)
    return per_image, class_names


def load(root: str | Path, pixel_size_um: float | None = None, annotations: str = "auto") -> list[Sample]:
    """Load a folder of your own images with their masks or points.

    Args:
        root: the folder (see the module docstring for the layout).
        pixel_size_um: µm per pixel; overrides ``meta.yaml``; None keeps the file's value or None.
        annotations: "auto" (whichever of ``masks/`` and ``points.csv`` exists), "masks" or "points".

    Returns:
        Samples in natural file order. With masks: ``mask_path``, ``points`` ``(N, 2)`` centroids
        ``[x, y]`` px and ``boxes`` ``(N, 4)`` ``[x1, y1, x2, y2]`` px; with points: ``points`` and
        ``labels`` from the CSV, no boxes; ``meta`` ``{"class_names"}`` when classes are names.

    Raises:
        ValueError: bad ``pixel_size_um`` or ``annotations``.
        DataError: no images, no annotations, both kinds without a choice, missing or mis-sized
            mask, malformed CSV (file and line named).
    """
    if annotations not in ANNOTATIONS:
        raise ValueError(f"annotations must be one of {ANNOTATIONS}, not {annotations!r}")
    if pixel_size_um is not None and not pixel_size_um > 0:
        raise ValueError(f"pixel_size_um must be positive, not {pixel_size_um}")
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: folder not found; expected {_EXPECTED}")
    images = list_images(root)
    if not images:
        raise DataError(f"{root}: no image files; expected {_EXPECTED}")
    stems = [p.stem for p in images]
    if len(set(stems)) != len(stems):
        raise DataError(f"{root}: two images share a file stem; rename one so masks/points can name it")
    has_masks, has_points = (root / MASKS_DIR).is_dir(), (root / POINTS_CSV).is_file()
    if annotations == "auto":
        if has_masks and has_points:
            raise DataError(f"{root}: has both {MASKS_DIR}/ and {POINTS_CSV}; pass annotations='masks' or 'points'")
        if not has_masks and not has_points:
            raise DataError(f"{root}: no {MASKS_DIR}/ and no {POINTS_CSV}; expected {_EXPECTED}")
        annotations = "masks" if has_masks else "points"
    if pixel_size_um is None:
        pixel_size_um = read_pixel_size(root)

    samples = []
    if annotations == "points":
        per_image, class_names = read_points_csv(root / POINTS_CSV, images)
        meta = {"class_names": class_names} if class_names else {}
        for path in images:
            points, labels = per_image[path.stem]
            samples.append(Sample(id=path.stem, image_path=path, points=np.asarray(points, np.float32),
                                  labels=np.asarray(labels, np.int32), pixel_size_um=pixel_size_um,
                                  meta=dict(meta)))
        return samples
    mask_dir = root / MASKS_DIR
    if not mask_dir.is_dir():
        raise DataError(f"{mask_dir}: folder not found; expected {_EXPECTED}")
    masks = {p.stem: p for p in list_images(mask_dir)}
    for path in images:
        if path.stem not in masks:
            raise DataError(f"{path}: no mask with the stem '{path.stem}' in {mask_dir}")
        mask = read_label_mask(masks[path.stem])
        check_same_size(path, masks[path.stem], mask.shape)
        points, boxes = mask_to_objects(mask)
        samples.append(Sample(id=path.stem, image_path=path, mask_path=masks[path.stem], points=points,
                              boxes=boxes, pixel_size_um=pixel_size_um))
    return samples
