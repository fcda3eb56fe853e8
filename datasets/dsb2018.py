"""2018 Data Science Bowl nuclei (BBBC038), stage-1 layout: one folder per image with per-nucleus masks.

Layout (``/work/shared/data/dsb2018_stage1_test``; stage1_train has the same per-image folders)::

    <root>/stage1_test/<id>/images/<id>.png      RGB or RGBA, 256×256 up to 696×520
    <root>/stage1_test/<id>/masks/*.png          one 0/255 mask per nucleus
    <root>/stage1_solution.csv                   optional: ImageId,EncodedPixels,Height,Width[,Usage]

``root`` may also be the folder of ``<id>/`` folders itself. The nuclei come either from the mask
files (``source="masks"``) or from the run-length codes of the solution CSV (``source="rle"``,
much faster: one CSV instead of thousands of PNGs, and the only form in which the official
stage-1 test masks were published). ``source="auto"`` takes the CSV when it is there. Both give the
same objects (checked on the real data), in file order (masks) or CSV row order (rle).

The instance label image is built on demand (``.mask``): nucleus k of the list is label k; the
data set promises no overlap, where two masks overlap the later one wins.

Modality: the collection mixes fluorescence (dark background, grey-looking) with brightfield and
H&E histology (bright background, coloured). ``is_fluorescence`` decides from two numbers:
the median luminance (background level, fluorescence < 100 of 255) and the mean chroma
(largest deviation of a channel from the pixel's grey mean, fluorescence < 8 of 255). On the 65
stage-1 test images the two groups are far apart (fluorescence: median <= 52, chroma 0;
others: median >= 155, chroma >= 12), 53 of 65 are fluorescence.

Reference: FCN segmentation paper, Sec. 7.1 (fine-tuning on real fluorescence images with manual
masks); Caicedo et al., Nature Methods 2019 (BBBC038).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from microrepro.common.errors import DataError
from microrepro.common.imageio import read_image, to_float01
from microrepro.datasets._util import LazyMaskSample, csv_rows, header_index, image_size, natural_key

MODALITIES = ("all", "fluorescence", "other")
SOURCES = ("auto", "masks", "rle")
BACKGROUND_MAX = 100.0  # of 255: median luminance of a fluorescence image (dark background)
CHROMA_MAX = 8.0  # of 255: mean channel deviation from grey of a fluorescence image
SOLUTION_CSV = "stage1_solution.csv"
_EXPECTED = "<id>/images/<id>.png (+ <id>/masks/*.png or stage1_solution.csv), optionally under stage1_test/"


def fluorescence_features(image: np.ndarray) -> tuple[float, float]:
    """``(median luminance, mean chroma)`` of an image, both on a 0-255 scale.

    Args:
        image: ``(H, W)`` grey or ``(H, W, C)`` RGB(A) image, any integer or float dtype.
    """
    image = np.asarray(image)
    # Every other row and column: both statistics are stable under this subsampling and it
    # makes the modality filter four times cheaper on a whole data set.
    rgb = to_float01(image[::2, ::2, :3] if image.ndim == 3 else image[::2, ::2]) * np.float32(255.0)
    if rgb.ndim == 2:
        return float(np.median(rgb)), 0.0
    grey = rgb.mean(axis=-1, keepdims=True)
    chroma = np.abs(rgb - grey).max(axis=-1)
    return float(np.median(grey)), float(chroma.mean())


def is_fluorescence(image: np.ndarray) -> bool:
    """True for a dark-background, near-grey image (fluorescence), False for brightfield/H&E."""
    background, chroma = fluorescence_features(image)
    return background < BACKGROUND_MAX and chroma < CHROMA_MAX


def rle_indices(encoded: str, height: int, width: int) -> np.ndarray:
    """Flat column-major pixel indices of one DSB run-length code.

    The code is ``start length start length ...`` with 1-based starts over the pixels in
    column-major order (top to bottom, then left to right), as in the Kaggle DSB 2018 rules; pixel
    ``i`` is at row ``i % height``, column ``i // height``.

    Raises:
        ValueError: an odd number of values or a run outside the image.
    """
    values = np.array(encoded.split(), dtype=np.int64)
    if len(values) % 2:
        raise ValueError("odd number of values in the run-length code")
    starts, lengths = values[0::2] - 1, values[1::2]
    if len(values) and (starts.min() < 0 or lengths.min() < 0 or (starts + lengths).max() > height * width):
        raise ValueError(f"a run falls outside the {width}x{height} image")
    # Expand all runs at once: position within the run plus the run's start.
    offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.repeat(starts, lengths) + offsets


def rle_decode(encoded: str, height: int, width: int) -> np.ndarray:
    """Decode one DSB run-length code into an ``(H, W)`` bool mask (see ``rle_indices``)."""
    flat = np.zeros(height * width, bool)
    flat[rle_indices(encoded, height, width)] = True
    return flat.reshape(width, height).T


def _image_root(root: Path) -> Path:
    if (root / "stage1_test").is_dir():
        return root / "stage1_test"
    return root


def _solution_csv(root: Path, image_root: Path) -> Path | None:
    for candidate in (root / SOLUTION_CSV, image_root.parent / SOLUTION_CSV):
        if candidate.is_file():
            return candidate
    return None


def _read_solution(path: Path) -> dict[str, list[tuple[int, str, int, int]]]:
    """Run-length codes per image id: ``{id: [(line, code, height, width), ...]}``."""
    rows = csv_rows(path)
    if not rows:
        raise DataError(f"{path}: empty file; expected ImageId,EncodedPixels,Height,Width")
    index = header_index(path, rows[0][1], ("imageid", "encodedpixels", "height", "width"))
    codes: dict[str, list] = {}
    for line, fields in rows[1:]:
        try:
            height, width = int(fields[index["height"]]), int(fields[index["width"]])
        except (ValueError, IndexError):
            raise DataError(f"{path}, line {line}: Height/Width missing or not integers") from None
        codes.setdefault(fields[index["imageid"]], []).append((line, fields[index["encodedpixels"]], height, width))
    return codes


def _objects_from_masks(mask_files: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    points, boxes = [], []
    for path in mask_files:
        rows, cols = np.nonzero(read_image(path, channels=1))
        if len(rows) == 0:
            raise DataError(f"{path}: empty nucleus mask")
        points.append((cols.mean(), rows.mean()))
        boxes.append((cols.min(), rows.min(), cols.max() + 1, rows.max() + 1))
    return np.asarray(points, np.float32).reshape(-1, 2), np.asarray(boxes, np.float32).reshape(-1, 4)


def _compose_masks(mask_files: list[Path], shape: tuple[int, int]) -> np.ndarray:
    labels = np.zeros(shape, np.int32)
    for k, path in enumerate(mask_files, start=1):
        labels[read_image(path, channels=1) > 0] = k
    return labels


def _compose_rle(codes: list[tuple[int, str, int, int]], shape: tuple[int, int]) -> np.ndarray:
    height, width = shape
    flat = np.zeros(height * width, np.int32)  # column-major, as the codes index it
    for k, (_, code, _, _) in enumerate(codes, start=1):
        flat[rle_indices(code, height, width)] = k
    return flat.reshape(width, height).T.copy()


def _objects_from_rle(codes: list[tuple[int, str, int, int]], shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    height, width = shape
    points, boxes = [], []
    for _, code, _, _ in codes:
        index = rle_indices(code, height, width)
        if len(index) == 0:
            raise ValueError("empty run-length code")
        rows, cols = index % height, index // height
        points.append((cols.mean(), rows.mean()))
        boxes.append((cols.min(), rows.min(), cols.max() + 1, rows.max() + 1))
    return np.asarray(points, np.float32).reshape(-1, 2), np.asarray(boxes, np.float32).reshape(-1, 4)


def list_ids(root: str | Path) -> list[str]:
    """Image ids (folder names holding ``images/<id>.png``) under ``root``, sorted.

    Raises:
        DataError: no such folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: folder not found; expected {_EXPECTED}")
    image_root = _image_root(root)
    ids = sorted(p.name for p in image_root.iterdir() if (p / "images" / f"{p.name}.png").is_file())
    if not ids:
        raise DataError(f"{image_root}: no <id>/images/<id>.png folders; expected {_EXPECTED}")
    return ids


def load(
    root: str | Path,
    modality: str = "all",
    source: str = "auto",
    ids: list[str] | None = None,
) -> list[LazyMaskSample]:
    """Load DSB 2018 images with their nuclei.

    Args:
        root: folder holding ``stage1_test/`` (and ``stage1_solution.csv``), or the id folders.
        modality: "all", "fluorescence" (``is_fluorescence`` true) or "other" (brightfield/H&E);
            any value but "all" reads every image once to decide.
        source: "auto", "masks" (per-nucleus PNGs) or "rle" (``stage1_solution.csv``).
        ids: load only these image ids (default all).

    Returns:
        Samples sorted by id, ``image_path`` RGB(A) PNG, ``points`` ``(N, 2)`` nucleus centroids
        ``[x, y]`` px, ``boxes`` ``(N, 4)`` ``[x1, y1, x2, y2]`` px (x2/y2 exclusive), ``labels``
        zeros, ``.mask`` int32 instance labels, ``pixel_size_um`` None (it varies and is not
        published), ``meta`` ``{"source", "modality", "background", "chroma"}`` (the last three
        only when ``modality`` is not "all").

    Raises:
        ValueError: unknown ``modality`` or ``source``.
        DataError: wrong layout, missing masks, malformed run-length code, size mismatch.
    """
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}, not {modality!r}")
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, not {source!r}")
    root = Path(root)
    all_ids = list_ids(root)
    image_root = _image_root(root)
    if ids is not None:
        unknown = sorted(set(ids) - set(all_ids))
        if unknown:
            raise DataError(f"{image_root}: no image folder for id {unknown[0]}")
        all_ids = sorted(ids)
    solution = _solution_csv(root, image_root)
    if source == "auto":
        source = "rle" if solution is not None else "masks"
    if source == "rle" and solution is None:
        raise DataError(f"{root}: source='rle' needs {SOLUTION_CSV} beside stage1_test/")
    codes = _read_solution(solution) if source == "rle" else {}

    samples = []
    for image_id in all_ids:
        folder = image_root / image_id
        image_path = folder / "images" / f"{image_id}.png"
        width, height = image_size(image_path)
        meta: dict = {"source": source}
        if modality != "all":
            background, chroma = fluorescence_features(read_image(image_path))
            found = "fluorescence" if background < BACKGROUND_MAX and chroma < CHROMA_MAX else "other"
            if found != modality:
                continue
            meta.update(modality=found, background=background, chroma=chroma)
        if source == "masks":
            mask_dir = folder / "masks"
            if not mask_dir.is_dir():
                raise DataError(f"{mask_dir}: folder not found (use source='rle' with {SOLUTION_CSV})")
            mask_files = sorted(mask_dir.glob("*.png"), key=lambda p: natural_key(p.name))
            for path in mask_files[:1]:
                mask_w, mask_h = image_size(path)
                if (mask_w, mask_h) != (width, height):
                    raise DataError(f"{path}: mask is {mask_w}x{mask_h} but image {image_path} is {width}x{height}")
            points, boxes = _objects_from_masks(mask_files)
            factory = lambda files=mask_files, shape=(height, width): _compose_masks(files, shape)  # noqa: E731
        else:
            image_codes = codes.get(image_id, [])
            for line, _, code_h, code_w in image_codes:
                if (code_h, code_w) != (height, width):
                    raise DataError(
                        f"{solution}, line {line}: {code_w}x{code_h} but image {image_path} is {width}x{height}"
                    )
            try:
                points, boxes = _objects_from_rle(image_codes, (height, width))
            except ValueError as err:
                raise DataError(f"{solution}: image {image_id}: {err}") from None
            factory = lambda c=image_codes, shape=(height, width): _compose_rle(c, shape)  # noqa: E731
        samples.append(
            LazyMaskSample(id=image_id, image_path=image_path, points=points, boxes=boxes, meta=meta,
                           mask_factory=factory)
        )
    return samples
