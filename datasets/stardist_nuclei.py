"""The 2-D nuclei example of the StarDist repository: one fluorescence image with instance labels.

Layout (``/work/shared/data/nuclei_stardist``)::

    <root>/img2d.tif     512×512 uint16 (values 0-235), fluorescent nuclei (from BBBC038)
    <root>/mask2d.tif    512×512 uint16 instance labels, 125 nuclei (labels not consecutive)

``tiles`` cuts it into non-overlapping square tiles, as the FCN segmentation paper's fine-tuning
set of 128×128 real images: keep tiles for evaluation apart from tiles for training.

Reference: FCN segmentation paper, Sec. 7.1 (fine-tuning on 55 real 128×128 images with masks).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from microrepro.common.errors import DataError
from microrepro.datasets._util import check_same_size, read_label_mask
from microrepro.datasets.base import Sample, mask_to_objects

IMAGE, MASK = "img2d.tif", "mask2d.tif"
_EXPECTED = f"{IMAGE} (fluorescence) + {MASK} (instance labels) (StarDist 2-D example)"


def load(root: str | Path) -> list[Sample]:
    """Load the one labelled image as a one-element list.

    Returns:
        ``[Sample]`` with ``image_path`` img2d.tif (uint16 ``(512, 512)``), ``mask_path`` mask2d.tif
        (``.mask`` int32 labels as stored), ``points`` ``(125, 2)`` centroids ``[x, y]`` px,
        ``boxes`` ``(125, 4)`` ``[x1, y1, x2, y2]`` px (x2/y2 exclusive), ``labels`` zeros,
        ``pixel_size_um`` None (not published with the example).

    Raises:
        DataError: missing files or a mask of another size than the image.
    """
    root = Path(root)
    image_path, mask_path = root / IMAGE, root / MASK
    if not image_path.is_file() or not mask_path.is_file():
        raise DataError(f"{root}: not the StarDist example layout; expected {_EXPECTED}")
    mask = read_label_mask(mask_path)
    check_same_size(image_path, mask_path, mask.shape)
    points, boxes = mask_to_objects(mask)
    return [Sample(id="stardist_img2d", image_path=image_path, mask_path=mask_path, points=points, boxes=boxes,
                   meta={"source": "stardist/data/images"})]


def tiles(sample: Sample, size: int = 128) -> list[Sample]:
    """Cut a labelled sample into non-overlapping ``size``×``size`` tiles (row-major order).

    Right and bottom strips narrower than ``size`` are dropped. Labels are renumbered 1..K within
    each tile; a nucleus cut by a tile border becomes a partial object of each tile it touches,
    and its point is the centroid of the part inside the tile.

    Args:
        sample: a Sample with an image and an instance mask (``load``).
        size: tile side in pixels.

    Returns:
        Samples with ``image_array`` ``(size, size[, C])``, ``mask_array`` ``(size, size)`` int32,
        ``points``/``boxes`` in tile pixels, ``meta`` ``{"origin": (x0, y0), "parent": id}``.

    Raises:
        ValueError: ``size`` < 1, no mask, or an image smaller than one tile.
    """
    from skimage.segmentation import relabel_sequential

    if size < 1:
        raise ValueError(f"size must be a positive integer, not {size}")
    image, mask = sample.image, sample.mask
    if mask is None:
        raise ValueError(f"sample {sample.id}: tiles() needs an instance mask")
    height, width = mask.shape
    if image.shape[:2] != (height, width):
        raise ValueError(f"sample {sample.id}: image {image.shape[:2]} and mask {mask.shape} differ in size")
    if height < size or width < size:
        raise ValueError(f"sample {sample.id}: {width}x{height} is smaller than one {size}x{size} tile")
    out = []
    for y0 in range(0, height - size + 1, size):
        for x0 in range(0, width - size + 1, size):
            tile_mask = relabel_sequential(mask[y0 : y0 + size, x0 : x0 + size])[0].astype(np.int32)
            points, boxes = mask_to_objects(tile_mask)
            out.append(
                Sample(
                    id=f"{sample.id}_y{y0}_x{x0}",
                    image_array=np.ascontiguousarray(image[y0 : y0 + size, x0 : x0 + size]),
                    mask_array=tile_mask,
                    points=points,
                    boxes=boxes,
                    pixel_size_um=sample.pixel_size_um,
                    meta={"origin": (x0, y0), "parent": sample.id},
                )
            )
    return out
