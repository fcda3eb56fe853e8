"""Data preparation for the fcn_segmentation reproduction (numpy; tf.data only in ``make_dataset``).

Every image entering the network is grey ``(H, W)`` float32 in [0, 1] (``prepare_image``), every
target a binary ``(H, W)`` uint8 foreground mask (1 = cell).

Reference: Marzo & La Rosa 2016, Sec. 7.1 (200 synthetic 128×128 patches; 55 real 128×128 images
×8 by rotations and mirroring).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from microrepro.common.imageio import to_float01

DIHEDRAL_NAMES = ("id", "rot90", "rot180", "rot270", "flip", "flip_rot90", "flip_rot180", "flip_rot270")


def to_grey(image: np.ndarray) -> np.ndarray:
    """Colour fluorescence image → one channel, keeping its dtype.

    Args:
        image: ``(H, W)`` or ``(H, W, C)`` (RGB or RGBA; alpha is dropped).

    Returns:
        ``(H, W)``: the maximum over colour channels. A fluorescence stain lives in one channel
        (the VGG cells are blue only, where luminance would keep 11 % of the signal); for grey
        stored as RGB the maximum is the grey value itself.
    """
    image = np.asarray(image)
    if image.ndim == 2:
        return image
    if image.ndim != 3:
        raise ValueError(f"image must be (H, W) or (H, W, C), got shape {image.shape}")
    channels = image[..., :3] if image.shape[-1] == 4 else image
    return channels.max(axis=-1)


def normalize(image: np.ndarray, low: float = 1.0, high: float = 99.8) -> np.ndarray:
    """Percentile normalisation of a grey image to float32 in [0, 1] (clipped).

    Args:
        image: ``(H, W)`` array of any numeric dtype.
        low, high: percentiles mapped to 0 and 1; ``low=0, high=100`` is min–max scaling.

    Returns:
        ``(H, W)`` float32. A constant image becomes all zeros.
    """
    if not 0 <= low < high <= 100:
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {low}, {high}")
    values = to_float01(np.asarray(image)).astype(np.float32)
    lo, hi = np.percentile(values, (low, high))
    if hi <= lo:
        return np.zeros_like(values, dtype=np.float32)
    return np.clip((values - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def prepare_image(image: np.ndarray, low: float = 1.0, high: float = 99.8) -> np.ndarray:
    """``normalize(to_grey(image))``: what every image goes through before the network."""
    return normalize(to_grey(image), low, high)


def dihedral8(image: np.ndarray, mask: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """The 8 symmetries of the square applied to an image and its mask (deterministic ×8).

    Order: the 4 rotations by 0/90/180/270° (counter-clockwise), then the same 4 of the image
    mirrored left–right (``DIHEDRAL_NAMES``).

    Args:
        image, mask: ``(H, W[, C])`` arrays of the same height and width.

    Reference: Sec. 7.1 ("rotations (of 90°, 180° and 270°) and mirroring ... multiplying the
        number of images by 8").
    """
    if image.shape[:2] != mask.shape[:2]:
        raise ValueError(f"image {image.shape[:2]} and mask {mask.shape[:2]} differ in size")
    out = []
    for mirrored in (False, True):
        img = image[:, ::-1] if mirrored else image
        msk = mask[:, ::-1] if mirrored else mask
        for k in range(4):
            out.append((np.ascontiguousarray(np.rot90(img, k)), np.ascontiguousarray(np.rot90(msk, k))))
    return out


def random_crops(
    image: np.ndarray, mask: np.ndarray, n: int, size: int, rng: np.random.Generator
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` random ``size``×``size`` crops of an image and its mask (reflect-padded if smaller).

    Returns:
        list of ``(image_crop, mask_crop)``; origins are uniform over the valid positions.
    """
    image, mask = pad_to_at_least(image, size), pad_to_at_least(mask, size)
    height, width = mask.shape[:2]
    out = []
    for _ in range(n):
        y0 = int(rng.integers(0, height - size + 1))
        x0 = int(rng.integers(0, width - size + 1))
        out.append((image[y0 : y0 + size, x0 : x0 + size], mask[y0 : y0 + size, x0 : x0 + size]))
    return out


def pad_to_at_least(array: np.ndarray, size: int) -> np.ndarray:
    """Reflect-pad the first two axes at the bottom/right up to ``size`` (no-op when big enough)."""
    pad_h, pad_w = max(size - array.shape[0], 0), max(size - array.shape[1], 0)
    if not (pad_h or pad_w):
        return array
    pad = [(0, pad_h), (0, pad_w)] + [(0, 0)] * (array.ndim - 2)
    return np.pad(array, pad, mode="reflect" if min(array.shape[:2]) > 1 else "edge")


def pad_to_multiple(image: np.ndarray, multiple: int = 8) -> tuple[np.ndarray, tuple[int, int]]:
    """Reflect-pad ``(H, W[, C])`` at the bottom/right so H and W are multiples of ``multiple``.

    Returns:
        ``(padded, (H, W))``: the padded array and the original size to crop back to.
    """
    height, width = image.shape[:2]
    pad_h, pad_w = (-height) % multiple, (-width) % multiple
    pad = [(0, pad_h), (0, pad_w)] + [(0, 0)] * (image.ndim - 2)
    return np.pad(image, pad, mode="reflect"), (height, width)


def predict_probability(model, image: np.ndarray, multiple: int = 8, batch_size: int = 4) -> np.ndarray:
    """Cell probability of every pixel of one or more prepared grey images.

    Args:
        model: FCRN-A (``(B, H, W, 1)`` → ``(B, H, W, 2)`` softmax).
        image: a prepared ``(H, W)`` float32 image, or a list of them (sizes may differ).
        multiple: the model's total down-sampling (8); images are reflect-padded to it.
        batch_size: images of one size predicted together.

    Returns:
        ``(H, W)`` float32 probability of class 1 (cell), or a list of them.
    """
    from microrepro.common.training import predict_batch  # predict_on_batch, right under tf.distribute too

    single = not isinstance(image, (list, tuple))
    images = [image] if single else list(image)
    out: list[np.ndarray | None] = [None] * len(images)
    by_shape: dict[tuple, list[int]] = {}
    for i, img in enumerate(images):
        by_shape.setdefault(img.shape, []).append(i)
    for indices in by_shape.values():
        for start in range(0, len(indices), batch_size):
            chunk = indices[start : start + batch_size]
            padded = [pad_to_multiple(images[i], multiple) for i in chunk]
            batch = np.stack([p for p, _ in padded])[..., None].astype(np.float32)
            probs = np.asarray(predict_batch(model, batch))[..., 1]
            for i, prob, (_, (h, w)) in zip(chunk, probs, padded, strict=True):
                out[i] = prob[:h, :w].astype(np.float32)
    return out[0] if single else out


def otsu_target(image: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """Foreground mask of a fluorescence image by Otsu's threshold after Gaussian smoothing.

    Used for the VGG cells, whose annotation gives only the centres: the cells are bright blobs
    on a dark background, so a global threshold recovers their extent.

    Args:
        image: ``(H, W)`` grey image (any dtype).
        sigma: Gaussian smoothing in px before thresholding (0 = none).

    Returns:
        ``(H, W)`` uint8, 1 = cell.
    """
    from scipy.ndimage import gaussian_filter
    from skimage.filters import threshold_otsu

    values = np.asarray(image, np.float32)
    if sigma > 0:
        values = gaussian_filter(values, sigma)
    if values.max() <= values.min():
        return np.zeros(values.shape, np.uint8)
    return (values > threshold_otsu(values)).astype(np.uint8)


def disc_target(points: np.ndarray, shape: tuple[int, int], radius: float) -> np.ndarray:
    """Foreground mask made of discs of ``radius`` px centred on ``points`` ``[x, y]``.

    Returns:
        ``(H, W)`` uint8, 1 inside any disc (distance to a centre <= radius).
    """
    from scipy.ndimage import distance_transform_edt

    seeds = np.ones(shape, bool)
    pts = np.round(np.asarray(points, np.float64).reshape(-1, 2)).astype(int)
    inside = (pts[:, 0] >= 0) & (pts[:, 0] < shape[1]) & (pts[:, 1] >= 0) & (pts[:, 1] < shape[0])
    pts = pts[inside]
    if len(pts) == 0:
        return np.zeros(shape, np.uint8)
    seeds[pts[:, 1], pts[:, 0]] = False
    return (distance_transform_edt(seeds) <= radius).astype(np.uint8)


def split_by_image(ids: list[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Shuffle ``ids`` with ``seed`` and cut off ``round(fraction * n)`` of them (at least one
    on each side when there are two or more ids).

    Returns:
        ``(rest, cut)``, each sorted.
    """
    if not 0 <= fraction < 1:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    order = list(np.random.default_rng(seed).permutation(sorted(ids)))
    n_cut = int(round(fraction * len(order)))
    if fraction > 0 and len(order) >= 2:
        n_cut = min(max(n_cut, 1), len(order) - 1)
    return sorted(order[n_cut:]), sorted(order[:n_cut])


def crops_per_image(n_images: int, n_crops: int) -> list[int]:
    """Spread ``n_crops`` crops over ``n_images`` images as evenly as possible (>= 1 each)."""
    if n_images <= 0:
        return []
    base, extra = divmod(max(n_crops, n_images), n_images)
    return [base + (1 if i < extra else 0) for i in range(n_images)]


@dataclass
class Item:
    """One prepared image with its binary target and where it came from."""

    id: str
    image: np.ndarray  # (H, W) float32 in [0, 1]
    target: np.ndarray  # (H, W) uint8, 1 = cell
    source: str = ""  # data set name
    path: str = ""  # file, for checksums


@dataclass
class RealSplit:
    """The real images, split by image into fine-tune (train / val) and evaluation parts."""

    train: list[Item] = field(default_factory=list)
    val: list[Item] = field(default_factory=list)
    eval: list[Item] = field(default_factory=list)
    datasets: list[str] = field(default_factory=list)

    def ids(self) -> dict:
        return {part: [item.id for item in getattr(self, part)] for part in ("train", "val", "eval")}

    def write(self, path: Path, extra: dict | None = None) -> Path:
        """Write which image ids went where (and how the split was made) as JSON."""
        payload = {"datasets": self.datasets, **self.ids(), **(extra or {})}
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(payload, indent=2))
        return path

    def files(self) -> list[Path]:
        return sorted({Path(item.path) for part in (self.train, self.val, self.eval) for item in part if item.path})


def stack_pairs(pairs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """List of ``(image (S, S), target (S, S))`` → ``x (N, S, S, 1)`` float32, ``y (N, S, S)`` int32."""
    if not pairs:
        raise ValueError("no image/target pairs to stack")
    x = np.stack([p[0] for p in pairs]).astype(np.float32)[..., None]
    y = np.stack([p[1] for p in pairs]).astype(np.int32)
    return x, y


def make_dataset(x: np.ndarray, y: np.ndarray, batch_size: int, *, shuffle: bool, seed: int):
    """A batched tf.data pipeline of ``(image (S, S, 1), label (S, S))`` pairs, one pass per epoch."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    from microrepro.common.pipeline import shard_by_data

    return ds.batch(batch_size).prefetch(2).apply(shard_by_data)


def make_crop_dataset(
    images: np.ndarray, targets: np.ndarray, crop: int, batch_size: int, *, seed: int
):
    """Endless tf.data pipeline of random ``crop``² crops with random dihedral transforms.

    Args:
        images: ``(N, H, W)`` float32 prepared images (one size).
        targets: ``(N, H, W)`` uint8/int masks.
        crop: crop side; batch_size: crops per batch; seed: op seed (with the global seed of
            ``set_seed`` this makes the stream reproducible).

    Returns:
        ``tf.data.Dataset`` of ``(image (B, crop, crop, 1), label (B, crop, crop) int32)``.
    """
    import tensorflow as tf

    stacked = np.stack([images.astype(np.float32), targets.astype(np.float32)], axis=-1)
    ds = tf.data.Dataset.from_tensor_slices(stacked).shuffle(len(stacked), seed=seed).repeat()

    def transform(pair):
        pair = tf.image.random_crop(pair, [crop, crop, 2], seed=seed)
        pair = tf.image.random_flip_left_right(pair, seed=seed + 1)
        k = tf.random.uniform([], 0, 4, dtype=tf.int32, seed=seed + 2)
        pair = tf.image.rot90(pair, k)
        return pair[..., :1], tf.cast(pair[..., 1] > 0.5, tf.int32)

    from microrepro.common.pipeline import shard_by_data

    ds = ds.map(transform, num_parallel_calls=1, deterministic=True)
    return ds.batch(batch_size).prefetch(2).apply(shard_by_data)
