"""Fluorescent Neuronal Cells (Clissa, Morelli et al., AMS Acta): RGB fields with binary cell masks.

Three layouts are recognised (``root`` may be the data set folder or its ``dataset/`` parent):

- v1:     ``all_images/images/*.png`` and ``all_masks/masks/*.png`` (same names), no split;
- v2:     ``<color>/{trainval,test}/images/*.png`` and ``<color>/{trainval,test}/ground_truths/masks/*.png``;
- sample: ``[dataset/]<color>/sample/images/*.png`` and ``.../sample/masks/*.png`` (the small
  public sample in ``/work/shared/data/fnc_sample``).

Masks are 0/255: each connected component (8-connectivity, ``Sample.mask``) is one cell; points
are the cell centroids and boxes their extents, both from ``base.mask_to_objects``. The pixel
size is not published with the data, so ``pixel_size_um`` is None.

Reference: Cell counting paper, Sec. 2 (data: 1600×1200 RGB fields, binary masks) and Sec. 4.1
(60 images held out for test).
"""

from __future__ import annotations

from pathlib import Path

from microrepro.common.errors import DataError
from microrepro.datasets._util import check_same_size, list_images, read_label_mask
from microrepro.datasets.base import Sample, mask_to_objects

SPLITS = (None, "trainval", "test", "sample")
_EXPECTED = (
    "all_images/images + all_masks/masks (v1), <color>/{trainval,test}/images + "
    "ground_truths/masks (v2) or [dataset/]<color>/sample/images + masks"
)


def detect_layout(root: str | Path, color: str = "yellow") -> str:
    """Name the layout found under ``root``: "v1", "v2" or "sample".

    Raises:
        DataError: none of the three layouts is there.
    """
    root = Path(root)
    if (root / "all_images" / "images").is_dir() and (root / "all_masks" / "masks").is_dir():
        return "v1"
    if any((root / color / s / "images").is_dir() for s in ("trainval", "test")):
        return "v2"
    if (root / color / "sample" / "images").is_dir() or (root / "dataset" / color / "sample" / "images").is_dir():
        return "sample"
    raise DataError(f"{root}: not a Fluorescent Neuronal Cells layout for color '{color}'; expected {_EXPECTED}")


def _folders(root: Path, layout: str, split: str | None, color: str) -> list[tuple[str, Path, Path]]:
    """(split name, image folder, mask folder) pairs to read for this layout and split."""
    if layout == "v1":
        if split not in (None, "all"):
            raise DataError(f"{root}: the v1 layout has no '{split}' split (load with split=None)")
        return [("all", root / "all_images" / "images", root / "all_masks" / "masks")]
    if layout == "v2":
        names = ("trainval", "test") if split is None else (split,)
        if split == "sample":
            raise DataError(f"{root}: the v2 layout has no 'sample' split (use 'trainval' or 'test')")
        out = []
        for name in names:
            base = root / color / name
            if not (base / "images").is_dir():
                if split is None:
                    continue
                raise DataError(f"{base / 'images'}: folder not found; expected {_EXPECTED}")
            out.append((name, base / "images", base / "ground_truths" / "masks"))
        return out
    if split not in (None, "sample"):
        raise DataError(f"{root}: the sample layout has only the 'sample' split, not '{split}'")
    base = root / color / "sample"
    if not base.is_dir():
        base = root / "dataset" / color / "sample"
    return [("sample", base / "images", base / "masks")]


def load(root: str | Path, split: str | None = None, color: str = "yellow") -> list[Sample]:
    """Load Fluorescent Neuronal Cells images with their masks, autodetecting the layout.

    Args:
        root: data set folder (or its parent ``dataset/`` folder for the sample layout).
        split: None (everything the layout has), "trainval", "test" (v2) or "sample".
        color: marker sub-folder of v2 and sample layouts ("yellow" or "red").

    Returns:
        Samples in natural file order, ``image_path`` RGB uint8 ``(H, W, 3)``, ``mask_path`` the
        0/255 mask (``.mask`` gives int32 instance labels), ``points`` ``(N, 2)`` centroids
        ``[x, y]`` px, ``boxes`` ``(N, 4)`` ``[x1, y1, x2, y2]`` px (x2/y2 exclusive), ``labels``
        zeros, ``pixel_size_um`` None, ``meta`` ``{"split", "layout", "color"}``.

    Raises:
        ValueError: unknown ``split``.
        DataError: wrong layout, an image without mask, or a mask whose size differs from its
            image (both files named).
    """
    if split not in SPLITS and split != "all":
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    root = Path(root)
    layout = detect_layout(root, color)
    samples = []
    for split_name, image_dir, mask_dir in _folders(root, layout, split, color):
        if not mask_dir.is_dir():
            raise DataError(f"{mask_dir}: mask folder not found; expected {_EXPECTED}")
        images = list_images(image_dir)
        if not images:
            raise DataError(f"{image_dir}: no images; expected {_EXPECTED}")
        for image_path in images:
            mask_path = mask_dir / image_path.name
            if not mask_path.is_file():
                candidates = sorted(mask_dir.glob(image_path.stem + ".*"))
                if not candidates:
                    raise DataError(f"{image_path}: no mask of the same name in {mask_dir}")
                mask_path = candidates[0]
            mask = read_label_mask(mask_path)
            check_same_size(image_path, mask_path, mask.shape)
            points, boxes = mask_to_objects(mask)
            samples.append(
                Sample(id=image_path.stem, image_path=image_path, mask_path=mask_path, points=points,
                       boxes=boxes, meta={"split": split_name, "layout": layout, "color": color})
            )
    return samples
