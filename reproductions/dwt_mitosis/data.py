"""Data of the dwt_mitosis reproduction: image sets, their splits, and the phase-1 tf.data pipeline.

The paper's sets (MITOS 2012 masks for phase 1; TUPAC16 / AMIDA13 / ICPR14 fields for phase 2)
are not reachable here. Two stand-ins:

* synthetic H&E fields (``datasets/synthetic/he_fields.py``) with exact masks and points, in five
  disjoint seeded sets (:func:`synthetic_sets`);
* fields of the AMi-Br detection benchmark (``datasets/amibr_benchmark.py``: windows of real
  AMi-Br crops with and without a figure, at random offsets, in random strip layouts), the
  crops split by slide, points only (:func:`amibr_sets`). The old mosaics of whole crops
  (a figure at every 128 px tile centre, solvable by position) are built only for the
  position baseline's contrast.

Every image is RGB uint8 ``(H, W, 3)``; points are ``(N, 2)`` float32 ``[x, y]`` px; masks
``(H, W)`` int32 (0 = background).

Reference: dwt_mitosis Sec. 3.1 (phase-1 masks, weak labels) and Sec. 4.1 (data sets).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from microrepro.common.errors import DataError, UserError
from microrepro.common.runs import DataInfo, checksum_files
from microrepro.reproductions.dwt_mitosis.config import DwtMitosisConfig

SYNTHETIC_SETS = ("seg_train", "seg_val", "det_train", "det_val", "test")


@dataclass
class ImageSet:
    """Images of one split with their weak labels, and exact masks where known.

    Attributes:
        name: the split's name (``det_train``, ``test``...).
        images: RGB uint8 ``(H, W, 3)`` per image.
        points: ``(N_i, 2)`` float32 ``[x, y]`` px, the centre of every mitosis (weak labels).
        pixel_sizes: µm/px per image.
        ids: one id per image.
        info: the split's provenance (real/synthetic, count, checksum).
        masks: ``(H, W)`` int32 exact masks (synthetic only) or None.
        meta: per-image metadata of the loader.
    """

    name: str
    images: list[np.ndarray]
    points: list[np.ndarray]
    pixel_sizes: list[float]
    ids: list[str]
    info: DataInfo
    masks: list[np.ndarray] | None = None
    meta: list[dict] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)


def to_rgb8(image: np.ndarray) -> np.ndarray:
    """Any image as users have it, as the RGB uint8 ``(H, W, 3)`` both phases take.

    Grey ``(H, W)`` / ``(H, W, 1)`` is repeated to three channels, RGBA loses its alpha; uint8
    passes through, other integer types (uint16...) are scaled by their dtype's range, floats are
    taken as [0, 1] unless their maximum exceeds 1 (then as 0..255 when it is at most 255, else
    scaled by their own min..max).

    Args:
        image: ``(H, W)`` or ``(H, W, C)`` with C in 1, 3, 4; any dtype.

    Returns:
        ``(H, W, 3)`` uint8.

    Raises:
        DataError: the shape is not a 2-D grey or colour image.
    """
    from microrepro.common.imageio import convert_channels, to_float01

    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] not in (3, 4)):
        raise DataError(f"expected a grey, RGB or RGBA image, got shape {image.shape}")
    image = convert_channels(image, 3)
    if image.dtype == np.uint8:
        return np.ascontiguousarray(image)
    if image.dtype == np.bool_:
        image = image.astype(np.uint8) * 255
        return np.ascontiguousarray(image)
    x = to_float01(image)
    if np.issubdtype(image.dtype, np.floating):
        x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
        high = float(x.max(initial=0.0))
        if high > 255.0:
            low = float(x.min(initial=0.0))
            x = (x - low) / max(high - low, 1e-12)
        elif high > 1.0:
            x = x / 255.0
    return np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)


def synthetic_set(name: str, n: int, seed: int, cfg: DwtMitosisConfig) -> ImageSet:
    """``n`` synthetic H&E fields with exact masks and points (``he_fields.generate``)."""
    from microrepro.datasets.synthetic import he_fields

    s = cfg.synthetic
    config = he_fields.HEConfig(image_size=(s.field_size, s.field_size), scanner=s.scanner,
                                mitoses_per_mm2=s.mitoses_per_mm2)
    samples = he_fields.generate(int(n), int(seed), config)
    return ImageSet(
        name, [to_rgb8(x.image) for x in samples], [np.asarray(x.points, np.float32) for x in samples],
        [float(x.pixel_size_um) for x in samples], [x.id for x in samples],
        DataInfo("synthetic", "synthetic H&E (he_fields)", len(samples), note=f"seed {seed}, {s.field_size} px"),
        masks=[np.asarray(x.mask, np.int32) for x in samples], meta=[x.meta for x in samples],
    )


def synthetic_sets(cfg: DwtMitosisConfig, names: tuple[str, ...] | None = None) -> dict[str, ImageSet]:
    """Disjoint seeded synthetic sets: phase-1 train/val, phase-2 train/val, test.

    Args:
        cfg: the run config.
        names: which of :data:`SYNTHETIC_SETS` to generate (default all); a set's seed does not
            depend on this.

    Returns:
        ``{name: ImageSet}``.
    """
    s = cfg.synthetic
    counts = (s.seg_train_fields, s.seg_val_fields, s.det_train_fields, s.det_val_fields, s.test_fields)
    plan = list(zip(SYNTHETIC_SETS, counts, strict=True))
    for name, n in plan:
        if n < 1:
            raise UserError(f"config synthetic.{name}_fields must be >= 1, got {n}")
    return {name: synthetic_set(name, n, s.seed + 101 * k, cfg) for k, (name, n) in enumerate(plan)
            if names is None or name in names}


def _mosaic_set(name: str, samples, cfg: DwtMitosisConfig, limit: int | None, seed: int, dataset: str) -> ImageSet:
    """Old ``amibr.mosaics`` of whole crops (tiles in ``meta["windows"]``): the position baseline's contrast only."""
    from microrepro.datasets import amibr
    from microrepro.datasets.amibr_benchmark import mosaic_windows

    rows, cols = cfg.amibr.grid
    per = rows * cols
    order = np.random.default_rng(seed).permutation(len(samples))
    if limit is not None:
        order = order[: int(limit) * per]
    chosen = [samples[i] for i in sorted(order)]
    tiles = [mosaic_windows(m) for m in amibr.mosaics(chosen, (rows, cols), seed)]
    if not tiles:
        raise DataError(f"AMi-Br split '{name}' has {len(samples)} crops: too few for one {rows}x{cols} mosaic")
    by_id = {x.id: x for x in chosen}
    paths = [by_id[t].image_path for m in tiles for t in m.meta["tiles"]]
    info = DataInfo("real", dataset, len(tiles), checksum_files(paths),
                    note=f"OLD {rows}x{cols} mosaics of {len(paths)} whole AMi-Br crops (a figure at every tile "
                         "centre), slide split; position baseline only")
    return ImageSet(name, [to_rgb8(m.image) for m in tiles], [np.asarray(m.points, np.float32) for m in tiles],
                    [float(m.pixel_size_um or 0.25) for m in tiles], [m.id for m in tiles], info, None,
                    [m.meta for m in tiles])


def benchmark_config(cfg: DwtMitosisConfig):
    """The ``amibr_benchmark.BenchmarkConfig`` of a run: fields of ``amibr.grid`` x 128 px (the old
    mosaics' size: 256x256 for 2x2), else the benchmark's defaults; ``amibr.bench_*`` keys override
    them when the config has them (``bench_field_size``, ``bench_figure_fraction``, ``bench_inset_um``,
    ``bench_negative_margin_um``)."""
    from microrepro.datasets import amibr
    from microrepro.datasets.amibr_benchmark import BenchmarkConfig

    base, a = BenchmarkConfig(), cfg.amibr
    size = getattr(a, "bench_field_size", None) or (a.grid[0] * amibr.CROP, a.grid[1] * amibr.CROP)
    return BenchmarkConfig(
        field_size=tuple(int(v) for v in size),
        figure_fraction=float(getattr(a, "bench_figure_fraction", base.figure_fraction)),
        inset_um=float(getattr(a, "bench_inset_um", base.inset_um)),
        negative_margin_um=float(getattr(a, "bench_negative_margin_um", base.negative_margin_um)),
    )


def _bench_set(name: str, crops, context: dict, bcfg, limit: int | None, seed: int, dataset: str) -> ImageSet:
    """Benchmark fields (``amibr_benchmark.build_fields``) of one slide part, at most ``limit``."""
    from microrepro.datasets import amibr_benchmark as bench

    fields = bench.build_fields(crops, context, int(limit or 0), seed, bcfg, f"amibr_bench_{name}")
    if not fields:
        raise DataError(f"AMi-Br split '{name}' has {len(crops)} crops: too few for one benchmark field")
    by_id = {c.id: c for c in crops}
    paths = sorted({str(by_id[src[0]].image_path) for f in fields for src in f.meta["sources"]})
    h, w = bcfg.field_size
    info = DataInfo("real", dataset, len(fields), checksum_files([Path(p) for p in paths]),
                    note=f"amibr_benchmark: {h}x{w} fields of {bcfg.short_side[0]}-{bcfg.long_side[1]} px windows "
                         f"of {len(paths)} AMi-Br crops at random offsets, {bcfg.figure_fraction:g} of them with a "
                         "figure, random strip layout; slide split")
    return ImageSet(name, [to_rgb8(f.image) for f in fields], [np.asarray(f.points, np.float32) for f in fields],
                    [float(f.pixel_size_um or 0.25) for f in fields], [f.id for f in fields], info, None,
                    [f.meta for f in fields])


def amibr_sets(root: Path, cfg: DwtMitosisConfig, dataset: str) -> dict[str, ImageSet]:
    """AMi-Br benchmark fields split by slide into ``det_train`` / ``det_val`` / ``test`` (named
    ``bench_test``), and the old mosaics ``mosaic_train`` / ``mosaic_test`` of the same crops.

    The crops are split by slide (``amibr.slide_split``): ``test_fraction`` of the slides are held
    out, ``val_fraction`` of the rest give the threshold fields; each part is built into fields of
    ``datasets/amibr_benchmark`` (:func:`benchmark_config`; seeds ``amibr.seed`` + 0 / 1 / 2) capped
    by ``max_train_mosaics`` / ``max_val_mosaics`` / ``max_test_mosaics``. The mosaics (same caps)
    serve only the position baseline's contrast (``baselines.evaluate_baselines``).
    """
    from microrepro.datasets import amibr
    from microrepro.datasets import amibr_benchmark as bench

    a = cfg.amibr
    samples = amibr.load(root)
    context = bench.figure_context(samples, amibr.read_table(root))
    trainval, test = amibr.slide_split(samples, a.test_fraction, a.seed)
    train, val = amibr.slide_split(trainval, a.val_fraction, a.seed + 1)
    bcfg = benchmark_config(cfg)
    print(f"[dwt_mitosis] AMi-Br at {root}: {len(samples)} crops -> {len(train)} train / {len(val)} val / "
          f"{len(test)} test crops (split by slide) -> {bcfg.field_size[0]}x{bcfg.field_size[1]} benchmark fields")
    return {
        "det_train": _bench_set("det_train", train, context, bcfg, a.max_train_mosaics, a.seed, dataset),
        "det_val": _bench_set("det_val", val, context, bcfg, a.max_val_mosaics, a.seed + 1, dataset),
        "test": _bench_set("bench_test", test, context, bcfg, a.max_test_mosaics, a.seed + 2, dataset),
        "mosaic_train": _mosaic_set("mosaic_train", train, cfg, a.max_train_mosaics, a.seed, dataset),
        "mosaic_test": _mosaic_set("mosaic_test", test, cfg, a.max_test_mosaics, a.seed + 2, dataset),
    }


def seg_datasets(train: ImageSet, val: ImageSet, cfg: DwtMitosisConfig, seed: int):
    """Phase-1 tf.data pipelines (Sec. 4.3: batch 8): training (repeated, shuffled) and validation.

    Training batches are random ``seg_train.crop_size`` crops (whole fields when None) with random
    flips and 90° turns when ``seg_train.augment`` (mitoses have no orientation).

    Returns:
        ``(train_ds, val_ds)`` of ``(image (B, s, s, 3) float32 in [0, 1], classes (B, s, s, 1)
        int32)``, class 1 = mitosis; s = the crop (training) or field size.
    """
    import tensorflow as tf

    t = cfg.seg_train

    def arrays(image_set: ImageSet):
        x = np.stack(image_set.images).astype(np.float32) / 255.0
        y = (np.stack(image_set.masks) > 0).astype(np.int32)[..., None]
        return x, y

    x, y = arrays(train)
    crop = t.crop_size

    def augment(image, target):
        both = tf.concat([image, tf.cast(target, tf.float32)], axis=-1)
        if crop:
            both = tf.image.random_crop(both, (crop, crop, 4))
        if t.augment:
            both = tf.image.random_flip_left_right(both)
            both = tf.image.random_flip_up_down(both)
            both = tf.image.rot90(both, tf.random.uniform((), 0, 4, tf.int32))
        return both[..., :3], tf.cast(both[..., 3:], tf.int32)

    train_ds = (tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=seed).repeat()
                .map(augment, num_parallel_calls=1).batch(t.batch_size, drop_remainder=True).prefetch(1))
    vx, vy = arrays(val)
    val_ds = tf.data.Dataset.from_tensor_slices((vx, vy)).batch(min(t.batch_size, len(vx)))
    from microrepro.common.pipeline import shard_by_data

    return shard_by_data(train_ds), shard_by_data(val_ds)
