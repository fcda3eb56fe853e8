"""Data for the spine detectors: splits, fixed-size arrays, tf.data pipelines.

The images are small (128-244 px), so every split is resized once into an in-memory uint8
array; the tf.data pipelines then only augment, batch and (for YOLO) pick a training scale.
Boxes inside this module are ``[x1, y1, x2, y2]`` in NETWORK-INPUT pixels (after the resize),
padded to a fixed length with rows of -1; ``scales`` map them back to the original image.

Reference: paper Sec. 2 (90/10 split stratified by spines per image, augmentation), Sec. 3.1
(448x448 input, horizontal flip), Sec. 3.2 (multi-scale training).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from microrepro.common.errors import DataError
from microrepro.common.predict import to_uint8
from microrepro.datasets.base import Sample


@dataclass
class Prepared:
    """A split resized to ``size`` x ``size``.

    Attributes:
        images: ``(N, size, size)`` uint8 grey.
        boxes: ``(N, G, 4)`` float32 ``[x1, y1, x2, y2]`` in resized pixels, padded with -1.
        scales: ``(N, 2)`` float32 ``(sx, sy)``: resized = original * scale.
        gt_boxes: per image ``(M, 4)`` ground-truth boxes in ORIGINAL pixels (for evaluation).
        ids: sample ids.
        shapes: ``(N, 2)`` original ``(height, width)``.
    """

    images: np.ndarray
    boxes: np.ndarray
    scales: np.ndarray
    gt_boxes: list
    ids: list
    shapes: np.ndarray
    size: int

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, start: int, stop: int) -> Prepared:
        """Images ``start:stop`` of this split, as a split of their own."""
        part = slice(start, stop)
        return Prepared(self.images[part], self.boxes[part], self.scales[part], self.gt_boxes[part],
                        self.ids[part], self.shapes[part], self.size)


def grey_uint8(image: np.ndarray) -> np.ndarray:
    """Any image as users have it -> ``(H, W)`` uint8 grey, what the detectors were trained on.

    The data set's images are 8-bit grey JPEGs and pass unchanged. Colour (RGB / RGBA) becomes
    its luminance (0.299 R + 0.587 G + 0.114 B, ``common.imageio.convert_channels``'s weights);
    uint8 stays as it is; float images with every value in [0, 1] are scaled by 255; any other
    integer (uint16...) or float image is stretched from its minimum to its maximum (a 12-bit
    camera image rarely fills 16 bits). NaN / inf pixels take the image's lowest finite value.

    Args:
        image: ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)``, any integer, bool or
            float dtype.

    Returns:
        ``(H, W)`` uint8.

    Reference: Sec. 2 (grey fluorescence images).
    """
    from microrepro.common.imageio import convert_channels

    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim == 3 and image.shape[-1] in (3, 4):
        if np.issubdtype(image.dtype, np.floating):
            # convert_channels rounds the luminance to the input dtype: right for integers, not
            # for floats in [0, 1], so the weighted sum is taken here.
            image = image[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
        else:
            image = convert_channels(image, 1)
    if image.ndim != 2:
        raise DataError(f"expected a grey or colour image, got shape {image.shape}")
    return to_uint8(image)  # values: common.predict.to_uint8 (the docstring's rules)


def resize_image(image: np.ndarray, size: int,
                 keep_aspect_ratio: bool = False) -> tuple[np.ndarray, tuple[float, float]]:
    """Resize a grey image to ``size`` x ``size``.

    Args:
        image: ``(H, W)`` uint8.
        size: output side in px.
        keep_aspect_ratio: False stretches to a square (the paper: "448px by 448px"); True scales
            the longer side to ``size`` and zero-pads bottom/right (the released TF OD API
            keep_aspect_ratio_resizer with padding).

    Returns:
        ``(resized (size, size) uint8, (sx, sy))`` with resized coordinates = original * scale.
    """
    import cv2

    if size < 8:
        raise ValueError(f"input size must be at least 8 px, got {size}")
    h, w = image.shape[:2]
    if keep_aspect_ratio:
        scale = size / max(h, w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
        out = np.zeros((size, size), np.uint8)
        out[:nh, :nw] = resized
        return out, (nw / w, nh / h)
    resized = cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)
    return resized, (size / w, size / h)


def prepare(samples: list[Sample], size: int, max_boxes: int = 16, keep_aspect_ratio: bool = False) -> Prepared:
    """Resize every sample once and pad its boxes (see :class:`Prepared`)."""
    if not samples:
        raise DataError("no images to prepare (empty split)")
    n = len(samples)
    images = np.zeros((n, size, size), np.uint8)
    boxes = -np.ones((n, max_boxes, 4), np.float32)
    scales = np.zeros((n, 2), np.float32)
    shapes = np.zeros((n, 2), np.int32)
    gt = []
    for i, sample in enumerate(samples):
        image = grey_uint8(sample.image)
        shapes[i] = image.shape[:2]
        images[i], (sx, sy) = resize_image(image, size, keep_aspect_ratio)
        scales[i] = (sx, sy)
        b = np.asarray(sample.boxes, np.float32).reshape(-1, 4)
        gt.append(b.copy())
        if len(b) > max_boxes:
            raise DataError(f"sample {sample.id}: {len(b)} boxes, more than data.max_boxes={max_boxes}")
        if len(b):
            # Clip to the image (some released boxes spill over the border) before scaling.
            h, w = image.shape[:2]
            clipped = np.stack(
                [np.clip(b[:, 0], 0, w), np.clip(b[:, 1], 0, h), np.clip(b[:, 2], 0, w), np.clip(b[:, 3], 0, h)], axis=1
            )
            boxes[i, : len(b)] = clipped * np.array([sx, sy, sx, sy], np.float32)
    return Prepared(images, boxes, scales, gt, [s.id for s in samples], shapes, size)


def load_splits(data, cfg, seed: int) -> dict:
    """The train / evaluation samples of a run.

    Three parts, so that no choice is made on what the tables report:

    - the **reported** split: the real ``test`` split when the data folder has one, else
      ``holdout``, ``cfg.data.holdout_fraction`` of train carved (stratified by spines per image)
      with the fixed ``cfg.data.holdout_seed``: the same images for every run seed;
    - ``val``: ``cfg.data.val_fraction`` of what is left, carved with the run's seed: where
      model-selection trials (``data.evaluate_on: val``) are scored, never reported;
    - ``train``: the rest, the same for a reported run and a trial of the same seed.

    The synthetic generator's images (tests, and runs with no real data) are cut in order: the
    reported split first, then the trial's selection split; a trial trains on what follows both.

    Args:
        data: ``common.data_sources.DataSource`` (``path`` None -> synthetic generator).
        cfg: the resolved ``SpinesConfig``.
        seed: seed of the validation carve and the synthetic generator.

    Returns:
        ``{"train": [Sample], "eval": [Sample], "eval_split": "test"|"holdout"|"val"|"synthetic_val"|
        "synthetic_selection", "kind": "real"|"synthetic", "files": [Path], "note": str}``.
    """
    trial = cfg.data.evaluate_on == "val"
    if data.path is None:
        from microrepro.datasets.synthetic import spines as synthetic_spines

        print(f"[spines] no real data found: training on the synthetic spine generator "
              f"({cfg.data.synthetic_images} images)")
        samples = synthetic_spines.generate(cfg.data.synthetic_images, seed)
        n_val = max(1, int(round(len(samples) * cfg.data.val_fraction)))
        if trial:
            evaluation, split, train = samples[n_val:2 * n_val], "synthetic_selection", samples[2 * n_val:]
        else:
            evaluation, split, train = samples[:n_val], "synthetic_val", samples[n_val:]
        return {"train": _limit(train, cfg.data.max_train_images),
                "eval": _limit(evaluation, cfg.data.max_eval_images), "eval_split": split,
                "kind": "synthetic", "files": [], "note": "synthetic spines generator"}
    from microrepro.datasets import spines as spines_data
    from microrepro.datasets.splits import stratified_split

    root = Path(data.path)
    if not spines_data.has_split(root, "train"):  # not the paper's layout: the generic one, or an error naming both
        from microrepro.reproductions.spines import own_data

        return own_data.load_splits(root, cfg, seed, _limit)
    train = spines_data.load(root, split="train")
    if spines_data.has_split(root, "test"):
        reported, split, note = spines_data.load(root, split="test"), "test", "held-out test split"
    else:
        fraction = cfg.data.holdout_fraction
        train, reported = stratified_split(train, val_fraction=fraction, seed=cfg.data.holdout_seed)
        split = "holdout"
        note = (f"{fraction:.0%} of train, stratified by spines/image, seed {cfg.data.holdout_seed} for every run "
                f"(no test split in the data folder; choices are made on `val`, never on it)")
    train, val = stratified_split(train, val_fraction=cfg.data.val_fraction, seed=seed)
    if trial:
        reported, split = val, "val"
        note = (f"{cfg.data.val_fraction:.0%} of train after the reported split is set aside, stratified by "
                f"spines/image, seed {seed}: the model-selection split, never reported in the tables")
    train = _limit(train, cfg.data.max_train_images)
    evaluation = _limit(reported, cfg.data.max_eval_images)
    files = [s.image_path for s in train + evaluation if s.image_path is not None]
    return {"train": train, "eval": evaluation, "eval_split": split, "kind": "real", "files": files, "note": note}


def _limit(samples: list, n: int) -> list:
    return list(samples[:n]) if n and n > 0 else list(samples)


# ----------------------------------------------------------------------------------------------
# tf.data pipelines (input pipelines may use tf; models and losses do not)
# ----------------------------------------------------------------------------------------------
def _augment_boxes_fn(flip_horizontal: bool, rot90: bool, brightness: float, contrast: float):
    """A tf function ``(image (S,S,1) float, boxes (G,4) normalised, seed (2,) int) -> (image, boxes)``.

    Sec. 2's augmentations, drawn with stateless random ops from ``seed`` (one per stream element):
    the draws belong to the element, not to whichever of the parallel map's threads reaches a
    stateful generator first, so a run repeats in a fresh process.
    """
    import tensorflow as tf

    def fn(image, boxes, seed):
        s_flip, s_turn, s_bright, s_contrast = tf.unstack(tf.random.experimental.stateless_split(seed, num=4))
        valid = boxes[:, 2] > boxes[:, 0]
        if flip_horizontal:
            flip = tf.random.stateless_uniform([], s_flip) < 0.5
            image = tf.cond(flip, lambda: tf.image.flip_left_right(image), lambda: image)
            flipped = tf.stack([1.0 - boxes[:, 2], boxes[:, 1], 1.0 - boxes[:, 0], boxes[:, 3]], axis=1)
            boxes = tf.where(flip, flipped, boxes)
        if rot90:
            # tf.image.rot90 turns counter-clockwise: a point (x, y) goes to (y, 1 - x).
            turn = tf.random.stateless_uniform([], s_turn) < 0.5
            image = tf.cond(turn, lambda: tf.image.rot90(image), lambda: image)
            turned = tf.stack([boxes[:, 1], 1.0 - boxes[:, 2], boxes[:, 3], 1.0 - boxes[:, 0]], axis=1)
            boxes = tf.where(turn, turned, boxes)
        if brightness > 0:
            image = tf.image.stateless_random_brightness(image, brightness, s_bright)
        if contrast > 0:
            image = tf.image.stateless_random_contrast(image, 1.0 - contrast, 1.0 + contrast, s_contrast)
        image = tf.clip_by_value(image, 0.0, 1.0)
        boxes = tf.where(valid[:, None], boxes, -tf.ones_like(boxes))
        return image, boxes

    return fn


def detection_dataset(
    prepared: Prepared,
    batch_size: int,
    seed: int,
    *,
    flip_horizontal: bool = True,
    rot90: bool = False,
    brightness: float = 0.0,
    contrast: float = 0.0,
    multiscale_sizes: list[int] | None = None,
    normalised: bool = True,
):
    """Endless shuffled, augmented batches ``(images (B,S,S,1) float32 [0,1], boxes (B,G,4))``.

    Args:
        prepared: the resized split.
        batch_size: images per batch.
        seed: shuffle and augmentation seed.
        flip_horizontal, rot90, brightness, contrast: augmentations (Sec. 2 / Sec. 3.1).
        multiscale_sizes: when given, every BATCH is resized to one size drawn from this list
            (darknet's multi-scale training draws a new size every 10 batches; per batch is the
            tf.data-friendly equivalent). Boxes must then be ``normalised``.
        normalised: boxes as fractions of the input size (YOLO) rather than pixels (Faster R-CNN).
    """
    import tensorflow as tf

    size = float(prepared.size)
    images = prepared.images[..., None]
    boxes = prepared.boxes / size  # augmentation works on normalised boxes
    boxes = np.where(prepared.boxes[..., 2:3] > prepared.boxes[..., 0:1], boxes, -1.0).astype(np.float32)
    ds = tf.data.Dataset.from_tensor_slices((images, boxes))
    ds = ds.shuffle(len(prepared), seed=seed, reshuffle_each_iteration=True).repeat()
    augment = _augment_boxes_fn(flip_horizontal, rot90, brightness, contrast)

    def element_seed(index, stream: int):  # stateless seed of the index-th element (or batch) of a stream
        return tf.stack([tf.cast(seed, tf.int64) * 4 + stream, tf.cast(index, tf.int64)])

    ds = ds.enumerate().map(lambda i, ex: augment(tf.cast(ex[0], tf.float32) / 255.0, ex[1], element_seed(i, 0)),
                            num_parallel_calls=2, deterministic=True)
    ds = ds.batch(batch_size, drop_remainder=True)
    if multiscale_sizes:
        choices = tf.constant(sorted(set(int(s) for s in multiscale_sizes)), tf.int32)

        def rescale(index, batch):
            im, b = batch
            pick = tf.random.stateless_uniform([], element_seed(index, 1), 0, tf.shape(choices)[0], dtype=tf.int32)
            new = choices[pick]
            return tf.image.resize(im, tf.stack([new, new]), method="bilinear"), b

        ds = ds.enumerate().map(rescale)
    if not normalised:
        ds = ds.map(lambda im, b: (im, tf.where(b >= 0, b * size, b)))
    from microrepro.common.pipeline import shard_by_data

    return ds.prefetch(2).apply(shard_by_data)


def eval_batches(prepared: Prepared, batch_size: int):
    """Yield ``(start, images (b, S, S, 1) float32 [0, 1])`` in order, for prediction."""
    for start in range(0, len(prepared), batch_size):
        yield start, prepared.images[start : start + batch_size, ..., None].astype(np.float32) / 255.0
