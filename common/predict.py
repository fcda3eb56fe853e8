"""One predict loop for every paper: a paper supplies "one image -> objects", this module does the rest.

A paper's task implements ``load_predictor(run_dir, model)`` and returns a
:class:`Predictor`; :func:`predict_images` reads each image, checks it, runs the predictor and
writes the same files for every paper:

``<out>/<relative folder>/<stem>.csv``
    One row per detected object, columns :data:`OBJECT_COLUMNS` (empty cell = not applicable)::

        id,x,y,x1,y1,x2,y2,score,class,area_px

    ``x, y``: the object's centre (box centre, or the centroid of a segmented object), px of the
    input image, origin at the top-left corner of the top-left pixel. ``x1, y1, x2, y2``: its box
    in the same frame, clipped to the image. ``score``: the model's confidence (empty for
    pipelines that threshold a heat map and label connected objects). ``class``: the object's
    class name. ``area_px``: pixels of the segmented object (pipelines that segment).
``<out>/<relative folder>/<stem>_overlay.png``
    The image with every object drawn (box or marker) and the count in the title.
``<out>/<relative folder>/<stem>_labels.tif``
    Pipelines that segment: the uint16 instance-label image (0 = background, object ``id`` = its
    label value), which opens in Fiji and napari.
``<out>/counts.csv``
    One row per input image, columns :data:`COUNT_COLUMNS`::

        image,count,model,threshold,objects_csv,overlay_png,labels_tif

    ``image`` is the input's path relative to the common folder of all inputs, so two inputs with
    the same file name in different folders never collide.

``<stem>`` is the input's file stem; when two inputs in one folder share a stem (``x.jpg`` and
``x.png``) their outputs are named after the whole file name (``x_jpg``, ``x_png``) instead.
Every file is written to a temporary name and renamed, so an interrupted run never leaves a
half-written file under a final name; ``resume=True`` skips images whose outputs are complete and
reads their counts back, so ``counts.csv`` always has one row per input.
"""

from __future__ import annotations

import csv
import functools
import io
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from microrepro.common.errors import DataError, UserError

OBJECT_COLUMNS = ("id", "x", "y", "x1", "y1", "x2", "y2", "score", "class", "area_px")
COUNT_COLUMNS = ("image", "count", "model", "threshold", "objects_csv", "overlay_png", "labels_tif")


@dataclass
class Objects:
    """The objects found in one image, in px of that image.

    Attributes:
        points: ``(N, 2)`` float ``[x, y]`` centres.
        boxes: ``(N, 4)`` float ``[x1, y1, x2, y2]`` or None (point detectors without a size).
        scores: ``(N,)`` confidences or None.
        classes: ``N`` class names or None (one class).
        areas: ``(N,)`` pixel areas or None.
        labels: ``(H, W)`` integer instance labels (object ``i`` has label ``i + 1``) or None.
    """

    points: np.ndarray
    boxes: np.ndarray | None = None
    scores: np.ndarray | None = None
    classes: Sequence[str] | None = None
    areas: np.ndarray | None = None
    labels: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.points = np.asarray(self.points, np.float64).reshape(-1, 2)
        n = len(self.points)
        if self.boxes is not None:
            self.boxes = np.asarray(self.boxes, np.float64).reshape(-1, 4)
        if self.scores is not None:
            self.scores = np.asarray(self.scores, np.float64).reshape(-1)
        if self.areas is not None:
            self.areas = np.asarray(self.areas, np.float64).reshape(-1)
        for name in ("boxes", "scores", "classes", "areas"):
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise ValueError(f"Objects: {n} points but {len(value)} {name}")

    def __len__(self) -> int:
        return len(self.points)

    @classmethod
    def from_boxes(cls, boxes, scores=None, classes=None) -> Objects:
        """Objects from ``(N, 4)`` boxes ``[x1, y1, x2, y2]``; centres are the box centres."""
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        points = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], axis=1)
        return cls(points=points, boxes=boxes, scores=scores, classes=classes)

    @classmethod
    def from_labels(cls, labels: np.ndarray, scores=None) -> Objects:
        """Objects from an instance-label image: centroids, boxes and areas of its regions.

        The labels are renumbered 1..N in the order of their original values, so that the CSV's
        ``id`` is the object's value in the label TIFF.
        """
        from skimage.measure import regionprops
        from skimage.segmentation import relabel_sequential

        labels = np.asarray(labels)
        if labels.ndim != 2:
            raise ValueError(f"labels must be (H, W), got shape {labels.shape}")
        relabelled = relabel_sequential(labels.astype(np.int64))[0] if labels.any() else labels.astype(np.int64)
        props = regionprops(relabelled)
        # regionprops: centroid (row, col) of pixel centres; +0.5 puts it in the corner-origin frame
        points = np.array([[p.centroid[1] + 0.5, p.centroid[0] + 0.5] for p in props], np.float64).reshape(-1, 2)
        boxes = np.array([[p.bbox[1], p.bbox[0], p.bbox[3], p.bbox[2]] for p in props], np.float64).reshape(-1, 4)
        areas = np.array([p.area for p in props], np.float64)
        return cls(points=points, boxes=boxes, scores=scores, areas=areas, labels=relabelled)

    def clipped(self, height: int, width: int) -> Objects:
        """The same objects with points and boxes clipped to a ``height`` × ``width`` image."""
        points = self.points.copy()
        points[:, 0] = np.clip(points[:, 0], 0, width)
        points[:, 1] = np.clip(points[:, 1], 0, height)
        boxes = None
        if self.boxes is not None:
            boxes = self.boxes.copy()
            boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, width)
            boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, height)
        return Objects(points, boxes, self.scores, self.classes, self.areas, self.labels)

    def rows(self) -> list[list[str]]:
        """CSV rows in :data:`OBJECT_COLUMNS` order."""

        def num(array, i, fmt):
            return "" if array is None else format(float(array[i]), fmt)

        out = []
        for i in range(len(self)):
            box = self.boxes[i] if self.boxes is not None else None
            out.append([
                str(i + 1),
                f"{self.points[i, 0]:.2f}",
                f"{self.points[i, 1]:.2f}",
                *(("",) * 4 if box is None else tuple(f"{v:.2f}" for v in box)),
                num(self.scores, i, ".4f"),
                "" if self.classes is None else str(self.classes[i]),
                num(self.areas, i, ".0f"),
            ])
        return out


@dataclass
class Predictor:
    """A trained model ready to predict one image at a time.

    Attributes:
        paper: the paper's registry name.
        model: which of the run's models this is.
        threshold: the operating threshold in use (stored with the run, or the user's).
        detect: ``fn(image, threshold) -> Objects``: ``image`` as read (``(H, W)`` or
            ``(H, W, C)``, its own dtype); the objects kept at ``threshold``, in px of ``image``.
        noun: what is counted, for titles and messages ("spines", "cells", "mitoses").
        min_size: the smallest height/width the network accepts.
        score_range: the interval a threshold must lie in (``(0, 1)`` for probabilities).
    """

    paper: str
    model: str
    threshold: float
    detect: Callable[[np.ndarray, float], Objects]
    noun: str = "objects"
    min_size: int = 1
    score_range: tuple[float, float] = (0.0, 1.0)


def check_threshold(threshold: float | None, score_range: tuple[float, float] = (0.0, 1.0),
                    what: str = "--threshold") -> float | None:
    """``threshold`` as a float, or a UserError when it is not a number inside ``score_range``."""
    if threshold is None:
        return None
    value = float(threshold)
    low, high = score_range
    if not np.isfinite(value) or value < low or value > high:
        raise UserError(f"{what} {threshold} is outside [{low:g}, {high:g}], the range of this model's scores")
    return value


def read_plane(path: Path, plane: int | None = None) -> np.ndarray:
    """Read one 2-D image (grey or colour) from ``path``; a stack needs ``plane``.

    A TIFF with several planes (``(Z, H, W)`` or ``(Z, H, W, C)``) is an error unless ``plane``
    picks one; a single image with ``plane`` other than 0 or None is an error too.
    """
    from microrepro.common.imageio import read_image

    image = read_image(path)
    stacked = image.ndim == 4 or (image.ndim == 3 and image.shape[-1] not in (1, 3, 4))
    if stacked:
        if plane is None:
            raise DataError(f"{path}: {image.shape[0]} planes (shape {image.shape}); pick one with --plane N")
        if not 0 <= plane < image.shape[0]:
            raise DataError(f"{path}: --plane {plane} is outside 0..{image.shape[0] - 1}")
        image = image[plane]
    elif plane not in (None, 0):
        raise DataError(f"{path}: a single-plane image has no plane {plane}")
    if image.ndim not in (2, 3):
        raise DataError(f"{path}: expected a 2-D grey or colour image, got shape {image.shape}")
    return image


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Pixel values as users have them -> uint8 of the same shape, what the 8-bit-trained models take.

    uint8 stays as it is; bool becomes 0 / 255; float images with every value in [0, 1] are scaled
    by 255; any other integer (uint16...) or float image is stretched from its minimum to its
    maximum over all its values (a 12-bit camera image rarely fills 16 bits). NaN / inf pixels
    take the image's lowest finite value (all non-finite: zeros).
    """
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image
    if image.dtype == bool:
        return image.astype(np.uint8) * 255
    values = image.astype(np.float64)
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros(image.shape, np.uint8)
    low, high = float(values[finite].min()), float(values[finite].max())
    values = np.where(finite, values, low)
    if np.issubdtype(image.dtype, np.floating) and low >= 0.0 and high <= 1.0:
        return np.round(255 * values).astype(np.uint8)
    span = max(high - low, 1e-12)
    return np.round(255 * (values - low) / span).astype(np.uint8)


def output_names(images: Sequence[Path]) -> list[tuple[str, str]]:
    """Per input, ``(relative name shown in counts.csv, output stem relative to --out)``.

    Names are relative to the deepest folder holding every input; stems collide only when two
    inputs of one folder share a stem, and then the file's suffix is added to both.
    """
    paths = [Path(p).resolve() for p in images]
    seen: set[Path] = set()
    for path in paths:
        if path in seen:
            raise UserError(f"{path}: given more than once")
        seen.add(path)
    root = Path(os.path.commonpath([str(p.parent) for p in paths])) if paths else Path(".")
    relative = [p.relative_to(root) for p in paths]
    stems: dict[tuple[Path, str], int] = {}
    for rel in relative:
        key = (rel.parent, rel.stem)
        stems[key] = stems.get(key, 0) + 1
    out = []
    for rel in relative:
        stem = rel.stem if stems[(rel.parent, rel.stem)] == 1 else f"{rel.stem}_{rel.suffix.lstrip('.').lower()}"
        out.append((rel.as_posix(), (rel.parent / stem).as_posix()))
    return out


def _atomic_write(path: Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` then rename ``tmp`` to ``path``; nothing is left under ``path`` on failure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _write_csv(path: Path, header: Sequence[str], rows: list[list[str]]) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return _atomic_write(path, lambda tmp: tmp.write_text(buffer.getvalue()))


def _count_rows(csv_path: Path) -> int:
    with open(csv_path, newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if tuple(header or ()) != OBJECT_COLUMNS:
            raise UserError(f"{csv_path}: not an objects CSV of this tool; use another --out")
        return sum(1 for _ in reader)


@dataclass
class _Outputs:
    csv: Path
    overlay: Path
    labels: Path | None = None
    files: list[Path] = field(default_factory=list)


def predict_images(
    predictor: Predictor,
    images: Sequence[Path],
    out_dir: Path,
    *,
    plane: int | None = None,
    resume: bool = False,
    progress: bool = True,
) -> list[Path]:
    """Run ``predictor`` on every image and write the files described in the module docstring.

    Args:
        predictor: from the paper's ``load_predictor``.
        images: image files (already expanded from folders), each read once.
        out_dir: output folder (created).
        plane: which plane of multi-plane TIFFs to use.
        resume: keep the outputs of images already done (their CSV exists) instead of redoing them.
        progress: show a progress bar.

    Returns:
        Every path written (or kept, with ``resume``), ``counts.csv`` last.
    """
    from microrepro.common.figures import draw_detections
    from microrepro.common.imageio import write_image

    out_dir = Path(out_dir)
    names = output_names(images)
    rows, written = [], []
    iterator = zip(images, names, strict=True)
    if progress and len(images) > 1:
        from tqdm import tqdm

        iterator = tqdm(list(iterator), desc=f"[predict] {predictor.model}", unit="image")
    for path, (shown, stem) in iterator:
        base = out_dir / stem
        csv_path = base.with_name(base.name + ".csv")
        overlay = base.with_name(base.name + "_overlay.png")
        labels_path = base.with_name(base.name + "_labels.tif")
        if resume and csv_path.is_file() and overlay.is_file():
            has_labels = labels_path.is_file()
            rows.append([shown, str(_count_rows(csv_path)), predictor.model, f"{predictor.threshold:.4g}",
                         csv_path.relative_to(out_dir).as_posix(), overlay.relative_to(out_dir).as_posix(),
                         labels_path.relative_to(out_dir).as_posix() if has_labels else ""])
            written += [csv_path, overlay] + ([labels_path] if has_labels else [])
            continue
        image = read_plane(Path(path), plane)
        height, width = image.shape[:2]
        if min(height, width) < predictor.min_size:
            raise DataError(
                f"{path}: {width}x{height} px is smaller than the {predictor.min_size} px this model needs"
            )
        objects = predictor.detect(image, predictor.threshold).clipped(height, width)
        _write_csv(csv_path, OBJECT_COLUMNS, objects.rows())
        shapes = objects.boxes if objects.boxes is not None else objects.points
        title = f"{shown}: {len(objects)} {predictor.noun} ({predictor.model}, threshold {predictor.threshold:.3g})"
        scale = 0.5 if max(height, width) > 1024 else None
        no_truth = np.zeros((0, shapes.shape[1]))
        _atomic_write(overlay, functools.partial(draw_detections, image, shapes, no_truth, title=title, scale=scale))
        label_cell = ""
        written += [csv_path, overlay]
        if objects.labels is not None:
            label_image = np.asarray(objects.labels)
            if label_image.max(initial=0) > np.iinfo(np.uint16).max:
                raise DataError(f"{path}: more than 65535 objects do not fit a uint16 label image")
            _atomic_write(labels_path, functools.partial(write_image, image=label_image.astype(np.uint16)))
            written.append(labels_path)
            label_cell = labels_path.relative_to(out_dir).as_posix()
        rows.append([shown, str(len(objects)), predictor.model, f"{predictor.threshold:.4g}",
                     csv_path.relative_to(out_dir).as_posix(), overlay.relative_to(out_dir).as_posix(), label_cell])
    written.append(_write_csv(out_dir / "counts.csv", COUNT_COLUMNS, rows))
    return written
