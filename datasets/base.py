"""The one sample structure every loader and generator returns.

Conventions used across the suite:
- points are ``[x, y]`` in pixels (column, row), float32, shape ``(N, 2)``;
- boxes are ``[x1, y1, x2, y2]`` in pixels ("xyxy", x2/y2 exclusive edge), float32, ``(N, 4)``;
- labels are int32 class indices ``(N,)`` (0 = the first foreground class of the data set);
- a mask is an ``(H, W)`` int32 instance-label image (0 = background, 1..K objects) or None;
- ``pixel_size_um`` is micrometres per pixel (None where unknown).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from microrepro.common.errors import DataError
from microrepro.common.imageio import read_image


def _empty(width: int) -> np.ndarray:
    return np.zeros((0, width), dtype=np.float32)


@dataclass
class Sample:
    """One image with its annotations. ``image``/``mask`` may be given directly or read lazily."""

    id: str
    image_path: Path | None = None
    image_array: np.ndarray | None = None
    points: np.ndarray = field(default_factory=lambda: _empty(2))
    boxes: np.ndarray = field(default_factory=lambda: _empty(4))
    labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int32))
    mask_path: Path | None = None
    mask_array: np.ndarray | None = None
    pixel_size_um: float | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.points = np.asarray(self.points, np.float32).reshape(-1, 2)
        self.boxes = np.asarray(self.boxes, np.float32).reshape(-1, 4)
        if len(self.labels) == 0 and max(len(self.points), len(self.boxes)):
            self.labels = np.zeros((max(len(self.points), len(self.boxes)),), np.int32)
        self.labels = np.asarray(self.labels, np.int32).reshape(-1)

    @property
    def image(self) -> np.ndarray:
        if self.image_array is None:
            if self.image_path is None:
                raise DataError(f"sample {self.id}: has neither an image array nor a path")
            return read_image(self.image_path)
        return self.image_array

    @property
    def mask(self) -> np.ndarray | None:
        """Instance labels (H, W) int32, read lazily; a 0/255 binary file becomes connected labels."""
        if self.mask_array is not None:
            return self.mask_array
        if self.mask_path is None:
            return None
        from skimage.measure import label

        raw = read_image(self.mask_path, channels=1)
        values = np.unique(raw)
        if len(values) <= 2:  # binary mask: split into connected components
            return label(raw > 0, connectivity=2).astype(np.int32)
        return raw.astype(np.int32)

    def check_mask_size(self, image: np.ndarray, mask: np.ndarray) -> None:
        if image.shape[:2] != mask.shape[:2]:
            raise DataError(
                f"sample {self.id}: mask {self.mask_path or ''} is {mask.shape[1]}x{mask.shape[0]} "
                f"but the image is {image.shape[1]}x{image.shape[0]}"
            )

    @property
    def count(self) -> int:
        return int(max(len(self.points), len(self.boxes)))


def points_to_boxes(points: np.ndarray, size: float) -> np.ndarray:
    """Square ``size``×``size`` boxes centred on ``points`` ([x, y] -> [x1, y1, x2, y2])."""
    points = np.asarray(points, np.float32).reshape(-1, 2)
    half = size / 2.0
    return np.concatenate([points - half, points + half], axis=1).astype(np.float32)


def boxes_to_points(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    return np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], axis=1)


def mask_to_objects(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centroids ``[x, y]`` and boxes ``[x1, y1, x2, y2]`` (x2/y2 = last pixel + 1) per instance.

    Centroids are in pixel-index coordinates (pixel i covers [i, i+1) and has centre i), while the
    box edges are exclusive, so a box midpoint sits half a pixel right/below the centroid of a
    symmetric object; matching thresholds (6-50 px, 8 µm) are far coarser than that.
    """
    from skimage.measure import regionprops

    points, boxes = [], []
    for region in regionprops(np.asarray(mask, np.int32)):
        cy, cx = region.centroid
        y1, x1, y2, x2 = region.bbox
        points.append((cx, cy))
        boxes.append((x1, y1, x2, y2))
    return np.asarray(points, np.float32).reshape(-1, 2), np.asarray(boxes, np.float32).reshape(-1, 4)
