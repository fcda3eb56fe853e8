"""Small helpers shared by the real-data loaders (no TensorFlow here).

Everything that can be wrong with a user's folder or file ends up as one
``microrepro.common.errors.DataError`` line naming the file (and the CSV line where there is one).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from microrepro.common.errors import DataError
from microrepro.common.imageio import IMAGE_SUFFIXES
from microrepro.datasets.base import Sample

# Scanner pixel sizes of the ICPR 2012 / 2014 mitosis contests (µm per pixel at ×40).
APERIO_UM_PER_PX = 0.2455
HAMAMATSU_UM_PER_PX = 0.2273


@dataclass
class LazyMaskSample(Sample):
    """A ``Sample`` whose instance mask is built on demand by ``mask_factory``.

    Some formats store masks as something other than one label image (a list of pixel
    coordinates per object, one file per object, run-length codes). Building every label image at
    load time would hold hundreds of MB; the factory builds one when ``.mask`` is read.
    """

    mask_factory: Callable[[], np.ndarray] | None = field(default=None, repr=False, compare=False)

    @property
    def mask(self) -> np.ndarray | None:
        """Instance labels ``(H, W)`` int32 (0 = background), built by the factory when there is one."""
        if self.mask_array is None and self.mask_factory is not None:
            return np.asarray(self.mask_factory(), np.int32)
        return Sample.mask.fget(self)


def read_label_mask(path: Path) -> np.ndarray:
    """Instance labels ``(H, W)`` int32 from a mask file, exactly as ``Sample.mask`` reads it.

    A binary (0/255) file becomes connected components (8-connectivity); a label image is kept.
    """
    return Sample(id=path.stem, mask_path=path).mask


def natural_key(text: str) -> tuple:
    """Sort key that orders ``img2`` before ``img10`` (digit runs compared as numbers)."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text))


def list_images(folder: Path) -> list[Path]:
    """Image files (by suffix, case-insensitive) directly inside ``folder``, in natural order."""
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    return sorted(files, key=lambda p: natural_key(p.name))


def image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` of an image read from its header only (the pixels are not decoded).

    Raises:
        DataError: missing or unreadable file, named in the message.
    """
    if not path.is_file():
        raise DataError(f"{path}: image file not found")
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                shape = tif.pages[0].shape
                axes = tif.pages[0].axes
            # Page axes are e.g. "YX", "YXS" (samples last) or "SYX" (planar): find Y and X.
            return int(shape[axes.index("X")]), int(shape[axes.index("Y")])
        from PIL import Image

        with Image.open(path) as img:
            return int(img.size[0]), int(img.size[1])
    except Exception as err:  # noqa: BLE001 - any decoder error becomes one clear line
        raise DataError(f"{path}: unreadable image header ({err})") from None


def check_same_size(image_path: Path, mask_path: Path, mask_shape: tuple[int, ...], what: str = "mask") -> None:
    """Raise a DataError naming both files when a mask's ``(H, W)`` differs from its image's."""
    width, height = image_size(image_path)
    if tuple(mask_shape[:2]) != (height, width):
        raise DataError(
            f"{mask_path}: {what} is {mask_shape[1]}x{mask_shape[0]} but image {image_path} is {width}x{height}"
        )


def csv_rows(path: Path, delimiter: str = ",") -> list[tuple[int, list[str]]]:
    """All non-blank rows of a CSV as ``(line_number, fields)``, line numbers as an editor shows them.

    Raises:
        DataError: the file is missing or is not text.
    """
    if not path.is_file():
        raise DataError(f"{path}: CSV file not found")
    rows = []
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle, delimiter=delimiter)
            for row in reader:
                fields = [f.strip() for f in row]
                if any(fields):
                    rows.append((reader.line_num, fields))
    except (UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"{path}: unreadable CSV ({err})") from None
    return rows


def inside(folder: Path, name: str, csv_path: Path, line: int, column: str = "filename") -> Path:
    """``folder / name`` for a file name read from a CSV, refusing one that would leave ``folder``.

    A name may hold sub-folders (``a/b.png``) but no ``..`` part, no absolute path and no drive, so a
    labels file can never make a loader read outside its data folder.

    Raises:
        DataError: naming the CSV file, its line and the offending name.
    """
    from pathlib import PurePosixPath, PureWindowsPath

    text = name.strip()
    posix, windows = PurePosixPath(text.replace("\\", "/")), PureWindowsPath(text)
    if (not text or posix.is_absolute() or windows.is_absolute() or windows.drive
            or ".." in posix.parts or text.startswith("~")):
        raise DataError(
            f"{csv_path}, line {line}: column '{column}' = {name!r} points outside {folder}; "
            "give a file name relative to that folder"
        )
    return folder / posix


def to_float(value: str, path: Path, line: int, column: str) -> float:
    """Parse one CSV value as a finite float, or raise a DataError naming file, line and column."""
    try:
        number = float(value)
    except ValueError:
        raise DataError(f"{path}, line {line}: column '{column}' is not a number ({value!r})") from None
    if not np.isfinite(number):
        raise DataError(f"{path}, line {line}: column '{column}' is not finite ({value!r})")
    return number


def header_index(path: Path, header: list[str], required: tuple[str, ...]) -> dict[str, int]:
    """Map column names to indices, raising a DataError naming the first missing column."""
    names = [h.strip().lower() for h in header]
    for name in required:
        if name not in names:
            raise DataError(f"{path}, line 1: missing column '{name}' (header is {','.join(header)})")
    return {name: i for i, name in enumerate(names)}


def scanner_pixel_size(name: str, path: Path) -> tuple[str, float]:
    """Scanner and µm/px from an ICPR mitosis file or folder name starting with 'A' or 'H'."""
    prefix = name[:1].upper()
    if prefix == "A":
        return "aperio", APERIO_UM_PER_PX
    if prefix == "H":
        return "hamamatsu", HAMAMATSU_UM_PER_PX
    raise DataError(f"{path}: name must start with A (Aperio) or H (Hamamatsu) to know the scanner")
