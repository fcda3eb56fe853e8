"""cell_counting data: fields, their splits, the overlapping crops, weight maps and tf.data pipelines.

One code path, the data chosen by what is found (:func:`load_data`):

* a full Fluorescent Neuronal Cells set (v1 or v2 layout, ``datasets/fnc.py``): train on its
  training images (v2 ``trainval``; v1: all but a seeded 60-image test split, as Sec. 4.1) and
  evaluate on its test images -> split "test";
* otherwise (the default ``fnc_sample`` with two real fields, or no data at all): train on the
  synthetic fluorescent-neuron generator (``datasets/synthetic/neurons.py``) and evaluate on
  held-out synthetic fields -> split "synthetic_test", and, when the real sample is there, on
  its real fields -> split "real_fields" (sim-to-real);
* your own data (``--data-dir`` a generic folder, ``datasets/folder.py``; ``own_data.py``): train
  on its masks, validate on ``val/`` (else the paper's 70/30 carve), evaluate -> split "test".
  A ``--data-dir`` of neither layout is an error naming both, never a synthetic fallback.

Reference: Sec. 4.1 (data, crops, augmentation, oversampling), Sec. 4.2 (weight maps).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from microrepro.common.data_sources import DataSource
from microrepro.common.errors import DataError, UserError
from microrepro.common.predict import to_uint8
from microrepro.common.runs import DataInfo, checksum_files
from microrepro.reproductions.cell_counting.config import CellCountingConfig
from microrepro.reproductions.cell_counting.weightmaps import weight_map

FNC_TEST_IMAGES = 60  # Sec. 4.1: "we randomly selected 60 images to insert in the test set"


@dataclass
class Field:
    """A full-size field: RGB uint8 ``(H, W, 3)`` image and ``(H, W)`` int32 instance labels."""

    id: str
    image: np.ndarray
    labels: np.ndarray


@dataclass
class FieldSet:
    """The fields of one split and the provenance record of that data."""

    fields: list[Field]
    info: DataInfo
    val: list[Field] | None = None  # the validation fields of your own val/ folder (else carved from ``fields``)


def rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Any image as users have it -> ``(H, W, 3)`` uint8 RGB, what the c-ResUNet was trained on.

    The data set's fields are 8-bit RGB and pass unchanged. Grey (``(H, W)`` or ``(H, W, 1)``) is
    repeated to three channels and RGBA loses its alpha. uint8 stays as it is; bool becomes
    0 / 255; float images with every value in [0, 1] are scaled by 255; any other integer
    (uint16...) or float image is stretched from its minimum to its maximum over all channels
    together, which keeps its colours (a 12-bit camera image rarely fills 16 bits). NaN / inf
    pixels take the image's lowest finite value.

    Args:
        image: ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)``, any integer, bool or
            float dtype.

    Returns:
        ``(H, W, 3)`` uint8.

    Reference: Sec. 2 (RGB fluorescence fields; the network's input is the colour image /255, Sec. 4.5).
    """
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    elif image.ndim == 3 and image.shape[-1] == 4:
        image = image[..., :3]
    elif image.ndim != 3 or image.shape[-1] != 3:
        raise DataError(f"expected a grey or colour image, got shape {image.shape}")
    return to_uint8(image)  # values: common.predict.to_uint8 (the docstring's rules)


def resize(array: np.ndarray, scale: float, nearest: bool) -> np.ndarray:
    """``array`` (``(H, W)`` or ``(H, W, C)``) resized by ``scale`` (at least 1 px per side).

    ``nearest`` for label images; otherwise area interpolation when shrinking, linear when growing.
    """
    import cv2

    if scale == 1.0:
        return array
    height, width = array.shape[:2]
    size = (max(1, int(round(width * scale))), max(1, int(round(height * scale))))
    interpolation = cv2.INTER_NEAREST if nearest else (cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    return cv2.resize(array, size, interpolation=interpolation)


def fields_from_samples(samples) -> list[Field]:
    """Samples (real loader or generator) -> Fields; a sample without a mask is a DataError."""
    out = []
    for sample in samples:
        image = rgb_uint8(sample.image)
        labels = sample.mask
        if labels is None:
            raise DataError(f"sample {sample.id}: has no mask; cell_counting trains on masks")
        labels = np.asarray(labels, np.int32)
        sample.check_mask_size(image, labels)
        out.append(Field(sample.id, image, labels))
    return out


def synthetic_fields(n: int, seed: int) -> list[Field]:
    """``n`` synthetic fluorescent-neuron fields from ``datasets/synthetic/neurons.py``."""
    from microrepro.datasets.synthetic import neurons

    return fields_from_samples(neurons.generate(int(n), int(seed)))


def _fnc_sets(data: DataSource, layout: str, seed: int) -> tuple[FieldSet, dict[str, FieldSet]]:
    """Training and test fields of a full FNC set (v2: its own split; v1: a seeded test split)."""
    from microrepro.datasets import fnc

    samples = fnc.load(data.path)
    if layout == "v2":
        train_s = [s for s in samples if s.meta.get("split") == "trainval"]
        test_s = [s for s in samples if s.meta.get("split") == "test"]
    else:
        order = np.random.default_rng(seed).permutation(len(samples))
        n_test = min(FNC_TEST_IMAGES, max(1, len(samples) // 5))
        test_s = [samples[i] for i in sorted(order[:n_test])]
        train_s = [samples[i] for i in sorted(order[n_test:])]
    if not train_s or not test_s:
        raise DataError(f"{data.path}: the FNC {layout} layout needs training and test images")
    print(f"[data] Fluorescent Neuronal Cells ({layout}) at {data.path}: {len(train_s)} train, {len(test_s)} test")

    def checksum(ss):
        return checksum_files([s.image_path for s in ss] + [s.mask_path for s in ss])

    train = FieldSet(fields_from_samples(train_s), DataInfo("real", data.dataset, len(train_s), checksum(train_s)))
    test = FieldSet(fields_from_samples(test_s),
                    DataInfo("real", data.dataset, len(test_s), checksum(test_s), note="held-out test"))
    return train, {"test": test}


def load_data(data: DataSource, cfg: CellCountingConfig, seed: int) -> tuple[FieldSet, dict[str, FieldSet]]:
    """Training fields and the evaluation splits for ``data`` (see the module docstring).

    Returns:
        ``(train, {split_name: FieldSet})``.

    Reference: Sec. 4.1 (60 test images held out).
    """
    from microrepro.datasets import fnc

    layout = None
    if data.path is not None:
        try:
            layout = fnc.detect_layout(data.path)
        except DataError:
            layout = None
    if layout in ("v1", "v2"):
        return _fnc_sets(data, layout, seed)
    if data.path is not None and layout is None:  # not an FNC layout: the generic one, or an error naming both
        from microrepro.reproductions.cell_counting import own_data

        return own_data.load_data(data.path, seed)

    n_train, n_test = cfg.data.synthetic_train_fields, cfg.data.synthetic_test_fields
    base = cfg.data.synthetic_seed
    print(
        f"[data] training on the SYNTHETIC fluorescent-neuron generator ({n_train} fields, seed {base}); "
        f"{n_test} held-out synthetic fields (seed {base + 1}) for 'synthetic_test'"
    )
    train = FieldSet(synthetic_fields(n_train, base),
                     DataInfo("synthetic", "synthetic neurons", n_train, note=f"seed {base}"))
    splits = {
        "synthetic_test": FieldSet(
            synthetic_fields(n_test, base + 1),
            DataInfo("synthetic", "synthetic neurons", n_test, note=f"seed {base + 1}"),
        )
    }
    if layout == "sample":
        samples = fnc.load(data.path, "sample")
        print(f"[data] evaluating sim-to-real on the {len(samples)} real fields of {data.path}")
        checksum = checksum_files([s.image_path for s in samples] + [s.mask_path for s in samples])
        splits["real_fields"] = FieldSet(
            fields_from_samples(samples), DataInfo("real", data.dataset, len(samples), checksum, note="sim-to-real")
        )
    return train, splits


def split_fields(fields: list[Field], val_fraction: float, seed: int) -> tuple[list[Field], list[Field]]:
    """Seeded split of whole fields into (train, val); val gets round(fraction * n), at least 1.

    Reference: Sec. 4.1 (70 % training, 30 % validation).
    """
    if len(fields) < 2:
        raise UserError(f"need at least 2 training fields to carve a validation split, got {len(fields)}")
    order = np.random.default_rng(seed).permutation(len(fields))
    n_val = min(len(fields) - 1, max(1, int(round(val_fraction * len(fields)))))
    val = [fields[i] for i in sorted(order[:n_val])]
    train = [fields[i] for i in sorted(order[n_val:])]
    return train, val


def field_weight_map(labels: np.ndarray, cfg: CellCountingConfig, scale: float = 1.0) -> np.ndarray:
    """The configured ``(H, W)`` float weight map of an instance image at ``scale`` (lengths scaled with it).

    Reference: Sec. 4.2, Eq. (1).
    """
    wm = cfg.weight_map
    if wm.kind == "paper":
        return weight_map(labels, "paper", sigma=wm.sigma * scale, cell_weight=wm.cell_weight,
                          background_weight=wm.background_weight, window_sigmas=wm.window_sigmas)
    if wm.kind == "released":
        return weight_map(labels, "released", sigma=wm.sigma * scale, cell_factor=wm.released_cell_factor,
                          band=max(1, int(round(wm.released_band * scale))), maximum=wm.released_maximum)
    return weight_map(labels, "none")


def is_hard_crop(labels: np.ndarray, min_cells: int, touch_px: int) -> bool:
    """Oversampling rule for "tricky" crops (the paper gives no rule, this is ours).

    A crop is hard when it holds at least ``min_cells`` cells, or when two cells come within
    ``touch_px`` pixels of each other (dilating the foreground by ``touch_px // 2 + 1`` merges
    two of them into one component).

    Reference: Sec. 4.1 (crops with "tricky structures" are oversampled).
    """
    from scipy import ndimage
    from skimage.measure import label

    ids = np.unique(labels)
    n = int((ids > 0).sum())
    if n >= min_cells:
        return True
    if n < 2:
        return False
    grown = ndimage.binary_dilation(labels > 0, iterations=touch_px // 2 + 1)
    return int(label(grown, connectivity=2).max()) < n


def make_crops(fields: list[Field], cfg: CellCountingConfig) -> dict[str, np.ndarray]:
    """Cut fields into the overlapping crops, with masks, weight maps and hard flags.

    Fields are first resized by ``cfg.data.scale``; weight maps are computed on the whole
    (resized) field so objects cut by a crop border keep their neighbours' contributions.

    Returns:
        ``{"image": (N, s, s, 3) uint8, "mask": (N, s, s, 1) uint8 0/1, "weights": (N, s, s, 1)
        float16, "hard": (N,) bool}``.

    Reference: Sec. 4.1 (twelve partially overlapping 512 x 512 crops per 1600 x 1200 field).
    """
    from microrepro.common.pipeline import extract_crops

    size, stride, scale = cfg.data.crop_size, cfg.data.crop_stride, cfg.data.scale
    touch_px = max(1, int(round(cfg.data.hard_touch_px * scale)))
    images, masks, weights, hard = [], [], [], []
    for field in fields:
        image = resize(field.image, scale, nearest=False)
        labels = resize(field.labels, scale, nearest=True).astype(np.int32)
        wmap = field_weight_map(labels, cfg, scale)
        label_crops = extract_crops(labels, size, stride)
        images.append(extract_crops(image, size, stride))
        masks.append((label_crops > 0).astype(np.uint8)[..., None])
        weights.append(extract_crops(wmap, size, stride).astype(np.float16)[..., None])
        hard.extend(is_hard_crop(c, cfg.data.hard_min_cells, touch_px) for c in label_crops)
    return {
        "image": np.concatenate(images),
        "mask": np.concatenate(masks),
        "weights": np.concatenate(weights),
        "hard": np.asarray(hard, bool),
    }


def oversample(crops: dict[str, np.ndarray], repeat: int) -> dict[str, np.ndarray]:
    """Each hard crop appears ``1 + repeat`` times; the ``hard`` flags are dropped.

    Reference: Sec. 4.1 ("increasing the augmentation factor" of the tricky crops).
    """
    index = np.concatenate([np.arange(len(crops["hard"]))] + [np.flatnonzero(crops["hard"])] * int(repeat))
    return {k: v[index] for k, v in crops.items() if k != "hard"}


def augment_config(cfg: CellCountingConfig):
    """``common.augment.AugmentConfig`` of the config, elastic lengths scaled with ``data.scale``.

    Reference: Sec. 4.1 (rotations, Gaussian noise, brightness, elastic deformation).
    """
    from microrepro.common.augment import AugmentConfig

    a = cfg.data.augment
    return AugmentConfig(
        flip_horizontal=a.flips, flip_vertical=a.flips, rot90=a.rot90, rotation_degrees=a.rotation_degrees,
        brightness=a.brightness, gaussian_noise_std=a.gaussian_noise_std,
        elastic_alpha=a.elastic_alpha * cfg.data.scale, elastic_sigma=a.elastic_sigma * cfg.data.scale,
    )


def datasets(train_crops, val_crops, cfg: CellCountingConfig, seed: int):
    """tf.data pipelines yielding ``(image (B,s,s,3), y_true (B,s,s,2) = [mask, weight map])``.

    Both models of the ablation train on these same pipelines (same crops, order and
    augmentations); the plain-BCE model's loss ignores the map channel.

    Reference: Sec. 4.1 (augmented crops), Sec. 4.5 (weighted loss).
    """
    import tensorflow as tf

    from microrepro.common.pipeline import make_dataset

    def to_model(example):
        return example["image"], tf.concat([example["mask"], example["weights"]], axis=-1)

    batch = cfg.train.batch_size
    train = make_dataset(oversample(train_crops, cfg.data.hard_repeat), batch_size=batch, shuffle=True, seed=seed,
                         augment=augment_config(cfg), repeat=True, to_model=to_model)
    # Keras restarts validation from the first batch every epoch; a fixed permutation makes a
    # capped ``validation_steps`` see crops of every validation field, the same ones each epoch.
    order = np.random.default_rng(seed).permutation(len(val_crops["image"]))
    val_arrays = {k: v[order] for k, v in val_crops.items() if k != "hard"}
    val = make_dataset(val_arrays, batch_size=min(batch, len(val_arrays["image"])), shuffle=False, seed=seed,
                       augment=None, repeat=False, to_model=to_model)
    return train, val
