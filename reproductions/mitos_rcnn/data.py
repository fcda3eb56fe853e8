"""MITOS-RCNN data handling: fields, MITOS-BOXES-style boxes, 299 px subsections, augmentation.

A *field* is a Sample holding a whole image (an HPF in the paper; a 512x512 AMi-Br mosaic or a
synthetic H&E field here) with its mitosis centroids (``points``, ``labels`` 0) and, where the
data has them, look-alikes ("not mitotic figure", class 1: the synthetic generator's confusers).

Subsections (Sec. IV-A): the paper cuts each 1539x1376 HPF into 4x4 subsections (~385x344 px)
and resizes each to 299x299 (x0.78). We keep that SCALE rather than the 4x4 count, so objects
have the paper's size in the network input whatever the field size: a subsection is
``round(input_size / scale)`` source px. Training subsections are cut at random positions (so
that the 128 px seams of the AMi-Br mosaics, and the figure at each crop's centre, do not sit at
fixed places in the input); boxes are squares of ``box_um`` around each centroid ("MITOS-BOXES":
the paper drew them by hand; we only have centroids).

Augmentation (Sec. IV-A): rotations by 90/180/270 degrees (on the fly, ``common.augment.rot90``)
and Macenko-normalised copies of every training field next to the originals
(``datasets/stain.py``).

Reference: MITOS-RCNN Sec. III-IV-A, Table I.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from microrepro.datasets.base import Sample

MITOTIC, NOT_MITOTIC = 0, 1


def subsection_px(input_size: int, scale: float) -> int:
    """Source pixels of one subsection: ``round(input_size / scale)``.

    Example: ``subsection_px(299, 0.777) == 385`` (a quarter of a 1539 px Aperio HPF).
    """
    if scale <= 0:
        raise ValueError(f"data.scale must be positive, got {scale}")
    return int(round(int(input_size) / float(scale)))


def boxes_around(points, side_px: float, height: int | None = None, width: int | None = None) -> np.ndarray:
    """Square boxes of ``side_px`` centred on ``points``, clipped to the image when its size is given.

    Args:
        points: ``(N, 2)`` ``[x, y]`` px.
        side_px: box side in px.
        height, width: image size for clipping (None = no clipping).

    Returns:
        ``(N, 4)`` float32 ``[x1, y1, x2, y2]`` px.

    Reference: Sec. IV-A, MITOS-BOXES ("annotating box regions ... using the preexisting centroid
        coordinates").
    """
    points = np.asarray(points, np.float32).reshape(-1, 2)
    if side_px <= 0:
        raise ValueError(f"box side must be positive, got {side_px}")
    half = np.float32(side_px / 2.0)
    boxes = np.concatenate([points - half, points + half], axis=1)
    if height is not None and width is not None:
        boxes = np.clip(boxes, 0, np.float32([width, height, width, height]))
    return boxes.astype(np.float32)


def field_objects(sample: Sample) -> tuple[np.ndarray, np.ndarray]:
    """All objects of a field as ``(points (N, 2), classes (N,))``: mitoses 0, look-alikes 1.

    Mitoses of every label (AMi-Br normal and atypical) are class 0; ``meta["confusers"]`` of the
    synthetic generator become class 1 ("not mitotic figure").
    """
    points = [np.asarray(sample.points, np.float32).reshape(-1, 2)]
    classes = [np.full(len(points[0]), MITOTIC, np.int32)]
    confusers = sample.meta.get("confusers") or []
    if confusers:
        points.append(np.asarray([[c["x"], c["y"]] for c in confusers], np.float32))
        classes.append(np.full(len(confusers), NOT_MITOTIC, np.int32))
    return np.concatenate(points), np.concatenate(classes)


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """Square resize to ``size`` px (area interpolation when shrinking, bilinear otherwise)."""
    h, w = image.shape[:2]
    if (h, w) == (size, size):
        return image
    interpolation = cv2.INTER_AREA if size < min(h, w) else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interpolation)


def cut_subsection(image: np.ndarray, x0: int, y0: int, tile: int) -> np.ndarray:
    """``image[y0:y0+tile, x0:x0+tile]``, zero-padded where it leaves the image."""
    h, w = image.shape[:2]
    out = np.zeros((tile, tile) + image.shape[2:], image.dtype)
    ys, xs = slice(max(y0, 0), min(y0 + tile, h)), slice(max(x0, 0), min(x0 + tile, w))
    out[ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0] = image[ys, xs]
    return out


@dataclass
class Subsections:
    """Training subsections: ``images`` ``(N, S, S, 3)`` uint8; ``boxes`` ``(N, G, 4)`` xyxy px
    of the S-px input, -1 padded; ``classes`` ``(N, G)`` int32, -1 padded."""

    images: np.ndarray
    boxes: np.ndarray
    classes: np.ndarray

    def __len__(self) -> int:
        return len(self.images)


def make_subsections(
    fields: list[Sample],
    input_size: int,
    scale: float,
    box_um: float,
    per_field: int,
    seed: int,
    max_boxes: int = 16,
) -> Subsections:
    """Cut ``per_field`` random subsections from every field, resize to the input, box the objects.

    An object belongs to a subsection when its centroid lies inside it; its box (``box_um``
    square, converted with the field's pixel size) is clipped to the subsection.

    Args:
        fields: Samples with ``image``, ``points``, ``pixel_size_um`` (and optional confusers).
        input_size: S, network input px.
        scale: input px per source px.
        box_um: box side in micrometres.
        per_field: subsections per field (the paper: 16 per HPF).
        seed: position seed.
        max_boxes: G, padding length.

    Returns:
        :class:`Subsections`.
    """
    rng = np.random.default_rng(seed)
    tile = subsection_px(input_size, scale)
    factor = input_size / tile
    images, all_boxes, all_classes = [], [], []
    for field in fields:
        image = np.asarray(field.image)[..., :3]
        h, w = image.shape[:2]
        points, classes = field_objects(field)
        side = box_um / float(field.pixel_size_um or 0.25)
        for _ in range(per_field):
            x0 = int(rng.integers(0, max(w - tile, 0) + 1))
            y0 = int(rng.integers(0, max(h - tile, 0) + 1))
            inside = (points[:, 0] >= x0) & (points[:, 0] < x0 + tile) & (points[:, 1] >= y0) & (points[:, 1] < y0 + tile)
            local = (points[inside] - np.float32([x0, y0])) * factor
            boxes = boxes_around(local, side * factor, input_size, input_size)
            padded = -np.ones((max_boxes, 4), np.float32)
            padded_classes = -np.ones((max_boxes,), np.int32)
            n = min(len(boxes), max_boxes)
            padded[:n], padded_classes[:n] = boxes[:n], classes[inside][:n]
            images.append(resize(cut_subsection(image, x0, y0, tile), input_size))
            all_boxes.append(padded)
            all_classes.append(padded_classes)
    return Subsections(np.stack(images), np.stack(all_boxes), np.stack(all_classes))


def macenko_copies(fields: list[Sample], reference: np.ndarray) -> tuple[list[Sample], int]:
    """Macenko-normalised copies of ``fields`` (targets: ``reference``'s stains); originals untouched.

    A field whose stain vectors cannot be estimated (too little tissue) is skipped.

    Returns:
        ``(copies, n_skipped)``; each copy keeps the field's annotations and has ``meta["macenko"]``.

    Reference: Sec. IV-A ("normalized via a procedure described by [15] (original samples were
        kept in dataset)"); Macenko et al., ISBI 2009.
    """
    from microrepro.datasets.stain import MacenkoNormalizer

    normaliser = MacenkoNormalizer().fit(np.asarray(reference)[..., :3].astype(np.uint8))
    copies, skipped = [], 0
    for field in fields:
        try:
            image = normaliser.transform(np.asarray(field.image)[..., :3].astype(np.uint8))
        except (ValueError, np.linalg.LinAlgError, FloatingPointError):
            skipped += 1
            continue
        copies.append(
            Sample(
                id=f"{field.id}_macenko", image_array=image, points=field.points, labels=field.labels,
                pixel_size_um=field.pixel_size_um, meta={**field.meta, "macenko": True},
            )  # fmt: skip
        )
    return copies, skipped


def training_dataset(subsections: Subsections, batch_size: int, seed: int, rotations: bool = True):
    """An endless, shuffled tf.data pipeline of ``(images float32 [0, 1], {"boxes", "classes"})``.

    Rotations by k x 90 degrees (k uniform in 0..3, stateless per element) move boxes exactly
    (``common.augment.rot90``).
    """
    import tensorflow as tf

    from microrepro.common import augment

    ds = tf.data.Dataset.from_tensor_slices(
        {"image": subsections.images, "boxes": subsections.boxes, "labels": subsections.classes}
    )
    ds = ds.shuffle(len(subsections), seed=seed, reshuffle_each_iteration=True).repeat()
    counter = tf.data.Dataset.counter()

    def prepare(index, example):
        example = dict(example)
        example["image"] = tf.cast(example["image"], tf.float32) / 255.0
        if rotations:
            k = tf.random.stateless_uniform((), seed=tf.stack([tf.cast(seed, tf.int64), index]), minval=0, maxval=4, dtype=tf.int32)
            example = augment.rot90(example, k)
        return example["image"], {"boxes": example["boxes"], "classes": example["labels"]}

    ds = tf.data.Dataset.zip((counter, ds)).map(prepare, num_parallel_calls=1)
    return ds.batch(batch_size, drop_remainder=True).prefetch(2)
