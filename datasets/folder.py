"""The generic "your own data" layout: a folder of images with masks, a points CSV or a boxes CSV.

Layout::

    <root>/*.png|jpg|tif|bmp        the images
    <root>/masks/<stem>.<any>       one mask per image, same file stem: binary (0/255, each
                                    connected component is one object) or instance labels
    <root>/points.csv               or: header ``image,x,y[,class]``, one row per object
    <root>/boxes.csv                or: header ``image,x1,y1,x2,y2[,class]``, one row per object
    <root>/meta.yaml                optional: ``pixel_size_um: 0.25``
    <root>/train/, val/, test/      optional: each a folder of that kind (:func:`load_splits`);
                                    without them :func:`load_splits` carves a seeded test split

Rules: ``image`` is the file name (``a.png``) or its stem (``a``); x, y are pixels (column, row);
``class`` is an integer, or a name (names are numbered in sorted order, ``meta["class_names"]``);
an image with no row is a valid image with no object; a row naming an unknown image, a missing
column, a non-numeric value or a point outside its image (``0 <= x <= width``, ``0 <= y <= height``)
is an error naming the file and line. A box's ``x2 >= x1``, ``y2 >= y1`` and its centre lies in
the image (it may cross the border). With more than one of ``masks/``, ``points.csv`` and
``boxes.csv`` present, say which to use with ``annotations=`` ("all" takes every one).

Derived annotations (``annotations="all"``): points are the CSV points, else the centres of the
CSV boxes, else the mask centroids; boxes are the CSV boxes, else the masks' bounding boxes when
no points were given; masks are never made up (a paper that trains on masks refuses a folder
without ``masks/``).
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
from microrepro.datasets.base import Sample, boxes_to_points, mask_to_objects

POINTS_CSV, BOXES_CSV, MASKS_DIR, META_YAML = "points.csv", "boxes.csv", "masks", "meta.yaml"
ANNOTATIONS = ("auto", "masks", "points", "boxes", "all")
SPLIT_DIRS = ("train", "val", "test")
TEST_FRACTION, CARVE_SEED = 0.2, 0  # a folder without split folders: 20 % of its images become "test"
_EXPECTED = ("a folder of images with masks/<same stem>, points.csv (image,x,y[,class]) or boxes.csv "
             "(image,x1,y1,x2,y2[,class]) [+ meta.yaml]")
EXPECTED = f"{_EXPECTED}, or train/ [val/] test/ folders of that kind"


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


def _class_numbers(path: Path, raw: list[tuple[str, int, str]]) -> tuple[list[tuple[str, int]], list[str] | None]:
    """``[(stem, class number)]`` of ``raw`` ``(stem, line, class text)``: integers, or names numbered sorted."""
    values = [c for _, _, c in raw]
    class_names = None
    try:
        numbers = [int(v) for v in values]
    except ValueError:
        class_names = sorted(set(values))
        numbers = [class_names.index(v) for v in values]
    out = []
    for (stem, line, _), number in zip(raw, numbers, strict=True):
        if number < 0:
            raise DataError(f"{path}, line {line}: class must be >= 0, not {number}")
        out.append((stem, number))
    return out, class_names


def _read_objects(path: Path, images: list[Path], coords: tuple[str, ...]
                  ) -> tuple[dict[str, tuple[list, list]], list[str] | None]:
    """Rows of a points or boxes CSV per image stem: ``({stem: ([coords...], [class...])}, class_names)``."""
    rows = csv_rows(path)
    if not rows:
        raise DataError(f"{path}: empty file; expected the header image,{','.join(coords)}[,class]")
    header = rows[0][1]
    index = header_index(path, header, ("image", *coords))
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
        values = [to_float(fields[index[c]], path, line, c) for c in coords]
        if stem not in sizes:
            sizes[stem] = image_size(path_by_stem[stem])
        width, height = sizes[stem]
        if len(values) == 4:
            x1, y1, x2, y2 = values
            if x2 < x1 or y2 < y1:
                raise DataError(f"{path}, line {line}: x2 < x1 or y2 < y1 ({x1:g}, {y1:g}, {x2:g}, {y2:g})")
            x, y = (x1 + x2) / 2, (y1 + y2) / 2
            what = f"box ({x1:g}, {y1:g}, {x2:g}, {y2:g}): its centre"
        else:
            x, y = values
            what = f"point ({x:g}, {y:g})"
        if not (0 <= x <= width and 0 <= y <= height):
            raise DataError(f"{path}, line {line}: {what} lies outside {name} ({width}x{height} px)")
        per_image[stem][0].append(tuple(values))
        raw_classes.append((stem, line, fields[index["class"]] if "class" in index else "0"))
    numbers, class_names = _class_numbers(path, raw_classes)
    for stem, number in numbers:
        per_image[stem][1].append(number)
    return per_image, class_names


def read_points_csv(path: Path, images: list[Path]) -> tuple[dict[str, tuple[list, list]], list[str] | None]:
    """Points and class labels per image stem from ``points.csv``.

    Returns:
        ``({stem: ([[x, y], ...], [class, ...])}, class_names or None)``.

    Raises:
        DataError: missing column, wrong number of values, non-numeric x/y, unknown image.
    """
    return _read_objects(path, images, ("x", "y"))


def read_boxes_csv(path: Path, images: list[Path]) -> tuple[dict[str, tuple[list, list]], list[str] | None]:
    """Boxes ``[x1, y1, x2, y2]`` px and class labels per image stem from ``boxes.csv``.

    Returns:
        ``({stem: ([[x1, y1, x2, y2], ...], [class, ...])}, class_names or None)``.

    Raises:
        DataError: missing column, wrong number of values, non-numeric value, ``x2 < x1`` or
            ``y2 < y1``, a box centre outside its image, unknown image.
    """
    return _read_objects(path, images, ("x1", "y1", "x2", "y2"))


def present_annotations(root: Path) -> list[str]:
    """Which of "masks", "points", "boxes" ``root`` holds (``masks/``, ``points.csv``, ``boxes.csv``)."""
    there = {"masks": (root / MASKS_DIR).is_dir(), "points": (root / POINTS_CSV).is_file(),
             "boxes": (root / BOXES_CSV).is_file()}
    return [name for name, found in there.items() if found]


def load(root: str | Path, pixel_size_um: float | None = None, annotations: str = "auto") -> list[Sample]:
    """Load a folder of your own images with their masks, points or boxes.

    Args:
        root: the folder (see the module docstring for the layout).
        pixel_size_um: µm per pixel; overrides ``meta.yaml``; None keeps the file's value or None.
        annotations: "auto" (whichever one of ``masks/``, ``points.csv``, ``boxes.csv`` exists),
            "masks", "points", "boxes", or "all" (every one there, see the module docstring).

    Returns:
        Samples in natural file order. With masks: ``mask_path``, ``points`` ``(N, 2)`` centroids
        ``[x, y]`` px and ``boxes`` ``(N, 4)`` ``[x1, y1, x2, y2]`` px; with points: ``points`` and
        ``labels`` from the CSV, no boxes; with boxes: ``boxes``, their centres as ``points`` and
        ``labels``; ``meta`` ``{"annotations": [what was given], "class_names"}`` (names only when
        classes are names).

    Raises:
        ValueError: bad ``pixel_size_um`` or ``annotations``.
        DataError: no images, no annotations, several kinds without a choice, missing or mis-sized
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
    present = present_annotations(root)
    if annotations in ("auto", "all") and not present:
        raise DataError(f"{root}: no {MASKS_DIR}/, {POINTS_CSV} or {BOXES_CSV}; expected {_EXPECTED}")
    if annotations == "auto" and len(present) > 1:
        names = " and ".join(f"{MASKS_DIR}/" if k == "masks" else f"{k}.csv" for k in present)
        raise DataError(f"{root}: has {names}; pass annotations={' or '.join(repr(k) for k in present)} (or 'all')")
    use = present if annotations in ("auto", "all") else [annotations]
    if pixel_size_um is None:
        pixel_size_um = read_pixel_size(root)

    points_by, names = read_points_csv(root / POINTS_CSV, images) if "points" in use else ({}, None)
    boxes_by, box_names = read_boxes_csv(root / BOXES_CSV, images) if "boxes" in use else ({}, None)
    masks = {}
    if "masks" in use:
        mask_dir = root / MASKS_DIR
        if not mask_dir.is_dir():
            raise DataError(f"{mask_dir}: folder not found; expected {_EXPECTED}")
        masks = {p.stem: p for p in list_images(mask_dir)}
    class_names = box_names if boxes_by else names
    samples = []
    for path in images:
        mask_path, mask_points, mask_boxes = None, None, None
        if "masks" in use:
            if path.stem not in masks:
                raise DataError(f"{path}: no mask with the stem '{path.stem}' in {root / MASKS_DIR}")
            mask_path = masks[path.stem]
            mask = read_label_mask(mask_path)
            check_same_size(path, mask_path, mask.shape)
            mask_points, mask_boxes = mask_to_objects(mask)
        boxes, labels = boxes_by.get(path.stem, (None, None))
        points = points_by.get(path.stem, (None, None))[0]
        if points is None and boxes is not None:
            points = boxes_to_points(np.asarray(boxes, np.float32))
        if labels is None:
            labels = points_by.get(path.stem, (None, []))[1]
        if boxes is None and points is None:
            boxes = mask_boxes
        if points is None:
            points = mask_points
        meta = {"annotations": list(use)} | ({"class_names": class_names} if class_names else {})
        samples.append(Sample(id=path.stem, image_path=path, mask_path=mask_path,
                              points=np.asarray(points if points is not None else [], np.float32),
                              boxes=np.asarray(boxes if boxes is not None else [], np.float32),
                              labels=np.asarray(labels, np.int32), pixel_size_um=pixel_size_um, meta=meta))
    return samples


# ------------------------------------------------------------------------------ split folders
def _is_flat(folder: Path) -> bool:
    """A folder holding images and at least one kind of annotation."""
    return folder.is_dir() and bool(present_annotations(folder)) and bool(list_images(folder))


def is_generic(root: str | Path) -> bool:
    """True when ``root`` is the generic layout: images with annotations, or split folders of them.

    Cheap: only folder listings are read (no image, no CSV), so a paper can test it before its
    own loader and say which layout it expected.
    """
    root = Path(root)
    if not root.is_dir():
        return False
    splits = [root / name for name in SPLIT_DIRS if (root / name).is_dir()]
    return any(_is_flat(folder) for folder in splits) or _is_flat(root)


def carve(samples: list[Sample], fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """``(rest, cut)``: a seeded ``round(fraction * n)`` of the samples (at least one, leaving one)."""
    order = np.random.default_rng(seed).permutation(len(samples))
    n_cut = min(max(int(round(fraction * len(samples))), 1), len(samples) - 1)
    cut = set(order[:n_cut].tolist())
    return ([s for i, s in enumerate(samples) if i not in cut], [s for i, s in enumerate(samples) if i in cut])


def load_splits(root: str | Path, pixel_size_um: float | None = None) -> dict[str, list[Sample]]:
    """The splits of a generic folder: ``{"train": [...], "test": [...][, "val": [...]]}``.

    With ``train/`` (and ``val/``, ``test/``) folders each is loaded with ``annotations="all"``; a
    split folder without its own ``meta.yaml`` takes the root's. Without ``test/`` (or without any
    split folder), a seeded :data:`TEST_FRACTION` of the training images (of all images; seed
    :data:`CARVE_SEED`, the same for every run and paper) becomes ``test``. Validation is left to
    each paper's own rule when there is no ``val/``. Every sample's ``meta["split"]`` names its
    split and ``meta["carved"]`` says whether that split was carved.

    Args:
        root: the folder.
        pixel_size_um: µm per pixel overriding every ``meta.yaml`` (None: the files' values).

    Raises:
        DataError: split folders without ``train/``, a split folder that is not the generic
            layout, fewer than two images to carve a test split from, or any :func:`load` error.
    """
    root = Path(root)
    folders = {name: root / name for name in SPLIT_DIRS if (root / name).is_dir()}
    root_size = pixel_size_um if pixel_size_um is not None else read_pixel_size(root)
    out: dict[str, list[Sample]] = {}
    if folders and "train" not in folders:
        raise DataError(f"{root}: has {', '.join(f + '/' for f in folders)} but no train/; expected {EXPECTED}")
    for name, path in folders.items() or {"train": root}.items():
        if not _is_flat(path):
            raise DataError(f"{path}: no images with {MASKS_DIR}/, {POINTS_CSV} or {BOXES_CSV}; expected {_EXPECTED}")
        size = pixel_size_um if pixel_size_um is not None else read_pixel_size(path) or root_size
        out[name] = load(path, size, "all")
        for sample in out[name]:
            sample.meta.update(split=name, carved=False)
    if "test" not in out:
        if len(out["train"]) < 2:
            raise DataError(f"{root}: {len(out['train'])} training image; a test split is carved from two or more "
                            "(or give a test/ folder)")
        out["train"], out["test"] = carve(out["train"], TEST_FRACTION, CARVE_SEED)
        for sample in out["test"]:
            sample.meta.update(split="test", carved=True)
    return out


def split_note(root: str | Path, split: str) -> str:
    """How ``split`` of the generic folder ``root`` was made, for provenance and the console."""
    root = Path(root)
    if (root / split).is_dir():
        return f"{split}/ of {root}"
    where = "train/" if (root / "train").is_dir() else "the images"
    if split == "test":
        return f"{TEST_FRACTION:.0%} of {where} of {root} (seeded split, seed {CARVE_SEED}; no test/ folder)"
    if split == "train":
        return f"{where} of {root} less the carved test split"
    return f"carved from {where} of {root} by the paper's own rule (no {split}/ folder)"


def dataset_name(root: str | Path) -> str:
    """The ``dataset`` recorded in provenance for a generic folder: ``own data (<folder>)``."""
    return f"own data ({Path(root)})"


def require_masks(splits: dict[str, list[Sample]], paper: str, why: str) -> None:
    """Raise a DataError naming the folder when a sample of ``splits`` has no mask.

    Args:
        splits: from :func:`load_splits`.
        paper: the paper's name.
        why: what the paper does with masks, e.g. "trains on masks".
    """
    for samples in splits.values():
        for sample in samples:
            if sample.mask_path is None:
                given = " and ".join(sample.meta.get("annotations", [])) or "no mask"
                raise DataError(f"{Path(sample.image_path).parent}: {paper} {why}: masks are needed "
                                f"({MASKS_DIR}/<same stem> beside the images); this folder gives {given}")


def require_pixel_size(splits: dict[str, list[Sample]], root: str | Path, paper: str, why: str,
                       option: str) -> None:
    """Raise a DataError naming ``meta.yaml`` and ``--set option`` when a sample has no pixel size.

    Args:
        splits: from :func:`load_splits`.
        root: the folder.
        paper: the paper's name.
        why: what the paper measures in µm, e.g. "matches detections within 8 µm".
        option: the config key that gives the pixel size, e.g. "data.pixel_size_um".
    """
    if any(not sample.pixel_size_um for samples in splits.values() for sample in samples):
        raise DataError(f"{root}: {paper} {why} but no pixel size is known; write 'pixel_size_um: <µm per pixel>' "
                        f"in {Path(root) / META_YAML} or pass --set {option}=<µm per pixel>")


def layout_error(root: str | Path, paper: str, own_layout: str) -> DataError:
    """The one-line DataError for a folder of neither layout, naming both."""
    return DataError(f"{Path(root)}: neither the {paper} data layout ({own_layout}) nor the generic layout "
                     f"({EXPECTED})")
