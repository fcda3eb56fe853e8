"""AMi-Br (Bertram et al., BVM 2025): 128×128 H&E crops centred on normal and atypical mitoses.

Layout (``/work/shared/data/mitosis_amibr``)::

    <root>/AMI-BR.csv      [index,]slide,dataset,uid,x,y,expert1_label,expert2_label,
                           expert1_atypical,expert2_atypical,expert3_atypical,majority_atypical
    <root>/patches/normal/<dataset>_<uid>.png      majority_atypical False
    <root>/patches/atypical/<dataset>_<uid>.png    majority_atypical True

Crop geometry: the crop of a figure at slide position (x, y) covers slide pixels
``[x - 64, x + 64) × [y - 64, y + 64)``, so the figure itself is at crop pixel (64, 64) and another
figure of the same slide at (x', y') is at ``(x' - x + 64, y' - y + 64)`` when that falls in
``[0, 128)``. The relative offsets were checked on the real data: for pairs of overlapping crops
the shared pixels are identical (mean absolute difference 0) at exactly these offsets, on both
the MIDOG21 and the TUPAC16 slides. The absolute half-pixel convention (centre at 64 rather than
63.5) cannot be checked without the slides; it is below any matching radius used here.

Every CSV row is used to place neighbours, also rows whose crop is not on disk (a tenth of the
slides is held back in the shared copy). Labels: 0 = normal mitotic figure, 1 = atypical
(``majority_atypical``, the vote of three experts).

Reference: MITOS-RCNN and DWT mitosis papers (TUPAC16-family H&E mitoses at ×40, 0.25 µm/px);
Bertram et al. 2025, AMi-Br.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from microrepro.common.errors import DataError
from microrepro.datasets._util import csv_rows, header_index, inside, to_float
from microrepro.datasets.base import Sample
from microrepro.datasets.splits import group_split

PIXEL_SIZE_UM = 0.25
CROP = 128
HALF = CROP // 2
NORMAL, ATYPICAL = 0, 1
CSV_NAME = "AMI-BR.csv"
_COLUMNS = ("slide", "dataset", "uid", "x", "y", "majority_atypical")
_EXPECTED = f"{CSV_NAME} + patches/{{normal,atypical}}/<dataset>_<uid>.png (AMi-Br)"


def _bool(value: str, path: Path, line: int) -> bool:
    text = value.strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise DataError(f"{path}, line {line}: majority_atypical must be True or False, not {value!r}")


def read_table(root: str | Path) -> list[dict]:
    """Rows of ``AMI-BR.csv`` as dicts (``x``, ``y`` floats, ``atypical`` bool, ``line`` number).

    Raises:
        DataError: missing file or column, non-numeric position, bad boolean (file and line named).
    """
    path = Path(root) / CSV_NAME
    if not path.is_file():
        raise DataError(f"{Path(root)}: no {CSV_NAME}; expected {_EXPECTED}")
    rows = csv_rows(path)
    if not rows:
        raise DataError(f"{path}: empty file; expected the header {','.join(_COLUMNS)}")
    header = rows[0][1]
    index = header_index(path, header, _COLUMNS)
    table = []
    for line, fields in rows[1:]:
        if len(fields) < len(header):
            raise DataError(f"{path}, line {line}: {len(fields)} values, expected {len(header)}")
        record = {name: fields[i] for name, i in index.items() if name}
        record.update(
            line=line,
            x=to_float(fields[index["x"]], path, line, "x"),
            y=to_float(fields[index["y"]], path, line, "y"),
            atypical=_bool(fields[index["majority_atypical"]], path, line),
        )
        table.append(record)
    return table


def load(root: str | Path) -> list[Sample]:
    """One Sample per crop on disk, with every known figure that falls inside it.

    Args:
        root: folder holding ``AMI-BR.csv`` and ``patches/``.

    Returns:
        Samples in CSV order, ``id`` "<dataset>_<uid>", ``image_path`` the 128×128 RGB PNG,
        ``points`` ``(N, 2)`` ``[x, y]`` crop px (row 0 is the crop's own figure at (64, 64)),
        ``labels`` ``(N,)`` 0 = normal / 1 = atypical, no boxes, ``pixel_size_um`` 0.25,
        ``meta`` ``{"slide", "dataset", "uid", "slide_xy", "expert1_label", "expert2_label"}``.

    Raises:
        DataError: wrong layout, malformed CSV, or a crop filed under the other class folder.
    """
    root = Path(root)
    if not (root / "patches").is_dir() or not (root / CSV_NAME).is_file():
        raise DataError(f"{root}: not the AMi-Br layout; expected {_EXPECTED}")
    table = read_table(root)
    by_slide: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for record in table:
        by_slide[(record["dataset"], record["slide"])].append(record)

    samples = []
    for record in table:
        name = f"{record['dataset']}_{record['uid']}.png"
        folder, other = ("atypical", "normal") if record["atypical"] else ("normal", "atypical")
        if "/" in name or "\\" in name:
            raise DataError(f"{root / CSV_NAME}, line {record['line']}: dataset/uid {name!r} holds a path "
                            "separator; a crop name is <dataset>_<uid>.png inside patches/")
        path = inside(root / "patches" / folder, name, root / CSV_NAME, record["line"], "uid")
        if not path.is_file():
            if (root / "patches" / other / name).is_file():
                raise DataError(
                    f"{root / 'patches' / other / name}: filed under {other}/ but {CSV_NAME} line "
                    f"{record['line']} says majority_atypical={record['atypical']}"
                )
            continue  # crop held back (slide not shipped): its row still serves as a neighbour
        points, labels = [(float(HALF), float(HALF))], [int(record["atypical"])]
        for neighbour in by_slide[(record["dataset"], record["slide"])]:
            if neighbour is record:
                continue
            px, py = neighbour["x"] - record["x"] + HALF, neighbour["y"] - record["y"] + HALF
            if 0 <= px < CROP and 0 <= py < CROP:
                points.append((px, py))
                labels.append(int(neighbour["atypical"]))
        samples.append(
            Sample(
                id=f"{record['dataset']}_{record['uid']}",
                image_path=path,
                points=points,
                labels=np.asarray(labels, np.int32),
                pixel_size_um=PIXEL_SIZE_UM,
                meta={
                    "slide": record["slide"],
                    "dataset": record["dataset"],
                    "uid": record["uid"],
                    "slide_xy": (record["x"], record["y"]),
                    "expert1_label": record.get("expert1_label", ""),
                    "expert2_label": record.get("expert2_label", ""),
                },
            )
        )
    if not samples:
        raise DataError(f"{root / 'patches'}: no crop of {CSV_NAME} found; expected {_EXPECTED}")
    return samples


def slide_split(samples: list[Sample], val_fraction: float = 0.1, seed: int = 0) -> tuple[list[Sample], list[Sample]]:
    """Split crops by slide (``(dataset, slide)``), so no slide has crops in both parts.

    Neighbouring crops of one slide share pixels and figures: a crop-level split would leak them.
    See ``splits.group_split`` for how the validation part is filled.
    """
    return group_split(samples, val_fraction, seed, group=lambda s: (s.meta["dataset"], s.meta["slide"]))


def mosaic(samples: list[Sample], grid: tuple[int, int] = (4, 4), seed: int = 0) -> Sample:
    """Tile ``rows × cols`` crops drawn with ``seed`` into one field (512×512 for 4×4 crops).

    This is the "real-appearance detection set" of the mitosis papers: real figures in their real
    surroundings, with known positions. The seams between crops are visible (abrupt changes of
    tissue and stain at every 128 px); a detector can learn them, so use mosaics to evaluate and
    to tune, and keep their limits in mind when reading the numbers.

    Args:
        samples: equal-size crops (``load``); at least ``rows × cols`` of them.
        grid: ``(rows, cols)``.
        seed: which crops, and in which order.

    Returns:
        A Sample with ``image_array`` ``(rows·128, cols·128, 3)`` uint8, the crops' ``points`` offset
        by each tile's origin, their ``labels``, ``pixel_size_um`` of the crops and
        ``meta`` ``{"tiles": [crop ids, row-major], "origins": [(x0, y0), ...], "seams": True}``.

    Raises:
        ValueError: bad grid, too few samples, or crops of different sizes.
    """
    rows, cols = grid
    if rows < 1 or cols < 1:
        raise ValueError(f"grid must be two positive integers, not {grid}")
    if len(samples) < rows * cols:
        raise ValueError(f"a {rows}x{cols} mosaic needs {rows * cols} samples, got {len(samples)}")
    rng = np.random.default_rng(seed)
    chosen = [samples[i] for i in rng.choice(len(samples), rows * cols, replace=False)]
    return _tile(chosen, rows, cols, f"mosaic{rows}x{cols}_seed{seed}")


def mosaics(samples: list[Sample], grid: tuple[int, int] = (4, 4), seed: int = 0) -> list[Sample]:
    """As many mosaics as the samples allow, each crop used at most once (leftovers dropped)."""
    rows, cols = grid
    if rows < 1 or cols < 1:
        raise ValueError(f"grid must be two positive integers, not {grid}")
    order = np.random.default_rng(seed).permutation(len(samples))
    per = rows * cols
    return [
        _tile([samples[i] for i in order[k * per : (k + 1) * per]], rows, cols, f"mosaic{rows}x{cols}_seed{seed}_{k}")
        for k in range(len(samples) // per)
    ]


def _tile(chosen: list[Sample], rows: int, cols: int, sample_id: str) -> Sample:
    images = [np.asarray(s.image) for s in chosen]
    images = [img[..., :3] if img.ndim == 3 else np.repeat(img[..., None], 3, axis=-1) for img in images]
    height, width = images[0].shape[:2]
    if any(img.shape[:2] != (height, width) for img in images):
        raise ValueError("all crops of a mosaic must have the same size")
    field = np.zeros((rows * height, cols * width, 3), images[0].dtype)
    points, labels, origins = [], [], []
    for k, (sample, img) in enumerate(zip(chosen, images, strict=True)):
        y0, x0 = (k // cols) * height, (k % cols) * width
        field[y0 : y0 + height, x0 : x0 + width] = img
        points.append(sample.points + np.array([x0, y0], np.float32))
        labels.append(sample.labels)
        origins.append((x0, y0))
    return Sample(
        id=sample_id,
        image_array=field,
        points=np.concatenate(points),
        labels=np.concatenate(labels),
        pixel_size_um=chosen[0].pixel_size_um,
        meta={"tiles": [s.id for s in chosen], "origins": origins, "seams": True},
    )
