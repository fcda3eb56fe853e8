"""Which images the fcn_segmentation reproduction trains, validates and evaluates on.

Three sources, each split once and deterministically (numpy; ``data.py`` prepares the arrays):

- synthetic SIMCEP-like patches for pre-training (train / val / test from different generator
  seeds, :func:`synthetic_sets`), Sec. 7.1;
- the real fluorescence images (DSB 2018 stage-1 test + StarDist tiles), split BY IMAGE into
  fine-tune train / fine-tune val / evaluation (:func:`load_real`), or a SIMCEP-like stand-in when
  no real data is found (:func:`synthetic_real_substitute`), Sec. 7.1;
- the VGG synthetic cells, Lempitsky & Zisserman's split (:func:`vgg_split`).

Every image is a prepared grey ``(H, W)`` float32 in [0, 1], every target a ``(H, W)`` uint8 mask.

Reference: Marzo & La Rosa 2016, Sec. 7.1 (200 synthetic 128×128 patches; 55 real 128×128
images ×8 by rotations and mirroring).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from microrepro.common.errors import DataError
from microrepro.reproductions.fcn_segmentation import data as fdata
from microrepro.reproductions.fcn_segmentation.config import FcnSegmentationConfig, PretrainConfig

SPLIT_FILE = "split.json"


def simcep_config(cfg: PretrainConfig):
    """The generator config: SimcepConfig defaults < ``pretrain.generator`` < noise fraction."""
    from microrepro.common import config as config_lib
    from microrepro.datasets.synthetic.simcep import SimcepConfig

    gen = config_lib.merge(SimcepConfig(), dict(cfg.generator), "pretrain.generator")
    return config_lib.merge(gen, {"background_noise_fraction": cfg.noise_fraction}, "pretrain")


def synthetic_patches(cfg: FcnSegmentationConfig, n_images: int, n_patches: int, seed: int) -> list[tuple]:
    """``n_patches`` random ``patch_size``² patches of ``n_images`` SIMCEP-like images.

    Returns:
        list of ``(image (S, S) float32 [0, 1], target (S, S) uint8)``; patches are spread
        evenly over the images.

    Reference: Sec. 7.1 ("patches randomly sampled from computer generated images").
    """
    from microrepro.datasets.synthetic import simcep

    pre = cfg.pretrain
    samples = simcep.generate(n_images, seed, simcep_config(pre))
    rng = np.random.default_rng(seed)
    pairs = []
    for sample, k in zip(samples, fdata.crops_per_image(len(samples), n_patches), strict=True):
        image = fdata.prepare_image(sample.image, cfg.normalize_low, cfg.normalize_high)
        target = (sample.mask > 0).astype(np.uint8)
        pairs += fdata.random_crops(image, target, k, pre.patch_size, rng)
    order = rng.permutation(len(pairs))[:n_patches]
    return [pairs[i] for i in order]


def synthetic_part(cfg: FcnSegmentationConfig, part: str, seed: int) -> list[tuple]:
    """One synthetic patch set: ``"train"``, ``"val"`` or ``"test"`` (each its own generator seed).

    The parts never share a generator seed, so validation and test patches come from unseen
    images; each part can be rebuilt alone (``evaluate`` needs only ``val``).
    """
    pre = cfg.pretrain
    n_small = max(2, pre.n_images // 5)
    if part == "train":
        return synthetic_patches(cfg, pre.n_images, pre.n_patches, 1000 * seed + 1)
    if part == "val":
        return synthetic_patches(cfg, n_small, pre.n_val_patches, 1000 * seed + 2)
    if part == "test":
        return synthetic_patches(cfg, n_small, pre.n_test_patches, 1000 * seed + 3)
    raise ValueError(f"unknown synthetic part {part!r}")


def synthetic_sets(cfg: FcnSegmentationConfig, seed: int) -> dict[str, list[tuple]]:
    """Disjoint synthetic train / val / test patch sets (different generator seeds)."""
    return {part: synthetic_part(cfg, part, seed) for part in ("train", "val", "test")}


def _split_items(items: list[fdata.Item], cfg: FcnSegmentationConfig, salt: int) -> tuple[list, list, list]:
    ft = cfg.finetune
    by_id = {item.id: item for item in items}
    rest, eval_ids = fdata.split_by_image(list(by_id), ft.eval_fraction, ft.split_seed + salt)
    train_ids, val_ids = fdata.split_by_image(rest, ft.val_fraction, ft.split_seed + salt + 1)
    return [by_id[i] for i in train_ids], [by_id[i] for i in val_ids], [by_id[i] for i in eval_ids]


def load_real(data_path: Path, cfg: FcnSegmentationConfig) -> fdata.RealSplit:
    """Real fluorescence images with manual masks, split by image (fixed ``finetune.split_seed``).

    DSB 2018 stage-1 test (fluorescence only) from ``data_path``; the StarDist pair from
    ``data_path.parent / finetune.stardist_dataset`` when present, cut into non-overlapping
    ``crop_size`` tiles that are split as separate images (the tiles do not overlap, so no pixel
    is both trained on and evaluated).

    Reference: Sec. 7.1 (fine-tuning on real images with manual masks).
    """
    from microrepro.datasets import dsb2018, stardist_nuclei

    ft = cfg.finetune

    def item(sample_id, image, mask, source, path) -> fdata.Item:
        prepared = fdata.prepare_image(image, cfg.normalize_low, cfg.normalize_high)
        return fdata.Item(sample_id, prepared, (mask > 0).astype(np.uint8), source, str(path))

    split = fdata.RealSplit()
    dsb_items = [item(s.id, s.image, s.mask, "dsb2018_stage1_test", s.image_path)
                 for s in dsb2018.load(data_path, modality="fluorescence")]
    if not dsb_items:
        raise DataError(f"{data_path}: no fluorescence image found in the DSB 2018 layout")
    parts = _split_items(dsb_items, cfg, salt=0)
    split.datasets.append("dsb2018_stage1_test")
    stardist_root = Path(data_path).parent / ft.stardist_dataset
    if ft.use_stardist and stardist_root.is_dir():
        sample = stardist_nuclei.load(stardist_root)[0]
        st_items = [item(t.id, t.image, t.mask, ft.stardist_dataset, sample.image_path)
                    for t in stardist_nuclei.tiles(sample, ft.crop_size)]
        st_parts = _split_items(st_items, cfg, salt=100)
        parts = tuple(a + b for a, b in zip(parts, st_parts, strict=True))
        split.datasets.append(ft.stardist_dataset)
    split.train, split.val, split.eval = parts
    if ft.max_eval_images > 0:
        split.eval = split.eval[: ft.max_eval_images]
    if not split.train:
        raise DataError(f"{data_path}: too few real images to fine-tune ({len(dsb_items)} found)")
    return split


def synthetic_real_substitute(cfg: FcnSegmentationConfig, seed: int) -> fdata.RealSplit:
    """Stand-in for the real images when none is found: SIMCEP-like images of another seed,
    all with background noise, at twice the patch size (split by image like the real ones)."""
    from microrepro.common import config as config_lib
    from microrepro.datasets.synthetic import simcep

    size = 2 * cfg.pretrain.patch_size
    gen = config_lib.merge(
        simcep_config(cfg.pretrain),
        {"background_noise_fraction": 1.0, "image_size": [size, size], "n_cells_mean": 36.0},
        "substitute",
    )
    samples = simcep.generate(max(10, cfg.finetune.n_crops // 2), 1000 * seed + 7, gen)
    items = [
        fdata.Item(s.id, fdata.prepare_image(s.image, cfg.normalize_low, cfg.normalize_high),
                   (s.mask > 0).astype(np.uint8), "simcep_substitute")
        for s in samples
    ]
    split = fdata.RealSplit(datasets=["simcep_substitute"])
    split.train, split.val, split.eval = _split_items(items, cfg, salt=0)
    return split


def real_or_substitute(data_path: Path | None, cfg: FcnSegmentationConfig, seed: int) -> tuple:
    """``(split, kind, eval split name)``: the real images, your own (generic folder, split "test"), or the
    synthetic stand-in without data."""
    from microrepro.reproductions.fcn_segmentation import own_data

    kind = own_data.layout(data_path)  # a folder of neither layout: a DataError naming both
    if kind is None:
        return synthetic_real_substitute(cfg, seed), "synthetic", "synthetic_eval"
    if kind == "generic":  # your own images with masks: own_data.py
        return own_data.load_real(Path(data_path), cfg), "real", "test"
    return load_real(Path(data_path), cfg), "real", "real_eval"


def finetune_pairs(items: list[fdata.Item], cfg: FcnSegmentationConfig, seed: int) -> list[tuple]:
    """``finetune.n_crops`` random crops of the fine-tune images, ×8 by dihedral transforms.

    With fewer crops than images, a seeded random subset of images gives one crop each;
    otherwise images exactly one crop large give one crop and the others share the rest
    evenly (>= 1 each).

    Returns:
        list of ``(image (S, S) float32, target (S, S) uint8)`` with ``S = finetune.crop_size``.

    Reference: Sec. 7.1 (55 real 128×128 images, ×8 by rotations and mirroring).
    """
    ft = cfg.finetune
    rng = np.random.default_rng(seed)
    if ft.n_crops < 1:
        raise ValueError(f"finetune.n_crops must be >= 1, got {ft.n_crops}")
    if ft.n_crops < len(items):
        chosen = sorted(rng.choice(len(items), size=ft.n_crops, replace=False))
        items, counts = [items[i] for i in chosen], [1] * ft.n_crops
    else:
        exact = [it for it in items if it.image.shape == (ft.crop_size, ft.crop_size)]
        larger = [it for it in items if it.image.shape != (ft.crop_size, ft.crop_size)]
        items = exact + larger
        counts = [1] * len(exact) + fdata.crops_per_image(len(larger), ft.n_crops - len(exact))
    crops = []
    for item, k in zip(items, counts, strict=True):
        crops += fdata.random_crops(item.image, item.target, k, ft.crop_size, rng)
    if not ft.dihedral:
        return crops
    return [pair for image, target in crops for pair in fdata.dihedral8(image, target)]


def val_pairs(items: list[fdata.Item], crop: int, seed: int, per_image: int = 4) -> list[tuple]:
    """Validation crops for the best checkpoint: one per ``crop``-sized tile, ``per_image`` per
    larger image (seeded), as ``(image (crop, crop), target (crop, crop))`` pairs."""
    rng = np.random.default_rng(seed)
    pairs = []
    for item in items:
        n = 1 if item.image.shape == (crop, crop) else per_image
        pairs += fdata.random_crops(item.image, item.target, n, crop, rng)
    return pairs


def vgg_split(cfg: FcnSegmentationConfig, root: Path) -> dict:
    """VGG cells split (first ``n_train`` train, of which the last ``n_val`` validate; last
    ``n_test`` test), each image prepared with its segmentation target (Otsu or discs).

    Returns:
        ``{"train" | "val" | "test": [(image (H, W) float32, target (H, W) uint8)],
        "samples": {part: [Sample]}}``.
    """
    from microrepro.datasets import vgg_cells

    vc = cfg.vgg
    samples = vgg_cells.load(root)
    if len(samples) < vc.n_train + 1:
        raise DataError(f"{root}: {len(samples)} VGG images, need more than vgg.n_train = {vc.n_train}")
    train_all, test = vgg_cells.conventional_split(samples, vc.n_train)
    test = test[-vc.n_test:] if vc.n_test > 0 else test
    n_val = min(vc.n_val, len(train_all) - 1)
    parts = {"train": train_all[: len(train_all) - n_val], "val": train_all[len(train_all) - n_val:], "test": test}

    def prepare(sample):
        grey = fdata.to_grey(sample.image)
        if vc.target == "otsu":
            target = fdata.otsu_target(grey, vc.smooth_sigma)
        else:
            target = fdata.disc_target(sample.points, grey.shape, vc.disc_radius)
        return fdata.prepare_image(grey, cfg.normalize_low, cfg.normalize_high), target

    out = {name: [prepare(s) for s in part] for name, part in parts.items()}
    out["samples"] = parts
    return out


def vgg_root(data_path: Path | None, cfg: FcnSegmentationConfig) -> Path | None:
    """The VGG cells folder beside the real data, or None when it is not there (or the data is your own)."""
    from microrepro.datasets import folder

    if data_path is None or folder.is_generic(data_path):
        return None
    root = Path(data_path).parent / cfg.vgg.dataset
    return root if root.is_dir() else None
