"""MITOS-RCNN data handling: fields, MITOS-BOXES-style boxes, 299 px subsections, augmentation.

A *field* is a Sample holding a whole image (an HPF in the paper; a 512x512 field of the AMi-Br
detection benchmark or a synthetic H&E field here) with its mitosis centroids (``points``,
``labels`` 0) and, where the data has them, look-alikes ("not mitotic figure", class 1: the
synthetic generator's confusers).

Subsections (Sec. IV-A): the paper cuts each 1539x1376 HPF into 4x4 subsections (~385x344 px)
and resizes each to 299x299 (x0.78). We keep that SCALE rather than the 4x4 count, so objects
have the paper's size in the network input whatever the field size: a subsection is
``round(input_size / scale)`` source px. Training subsections are cut at random positions; boxes
are squares of ``box_um`` around each centroid ("MITOS-BOXES": the paper drew them by hand; we
only have centroids).

Augmentation (Sec. IV-A): rotations by 90/180/270 degrees (on the fly, ``common.augment.rot90``)
and Macenko-normalised copies of every training field next to the originals
(``datasets/stain.py``).

Fields (:func:`load_fields`): the AMi-Br crops are split by slide; each part is built into
``datasets/amibr_benchmark`` fields (windows of one shape distribution with and without a
figure, at random offsets, in random strip layouts): training fields (and the training-slide
fields the threshold is chosen on) and ``real_bench`` test fields. The old 4x4 mosaics of whole
crops (``amibr.mosaics``, a figure at every 128 px tile centre) are built only for the baselines'
``real_mosaic`` contrast. Synthetic H&E fields of both scanner profiles
(``datasets/synthetic/he_fields``) give the ``synthetic_test`` split (and training fields when no
real data is found).

Reference: MITOS-RCNN Sec. III-IV-A, Table I.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as _field
from pathlib import Path

import cv2
import numpy as np

from microrepro.common.errors import UserError
from microrepro.common.runs import DataInfo, checksum_files
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
            inside = ((points[:, 0] >= x0) & (points[:, 0] < x0 + tile)
                      & (points[:, 1] >= y0) & (points[:, 1] < y0 + tile))
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
        copies.append(Sample(id=f"{field.id}_macenko", image_array=image, points=field.points, labels=field.labels,
                             pixel_size_um=field.pixel_size_um, meta={**field.meta, "macenko": True}))
    return copies, skipped


def training_dataset(subsections: Subsections, batch_size: int, seed: int, rotations: bool = True):
    """An endless, shuffled tf.data pipeline of ``(images float32 [0, 1], {"boxes", "classes"})``.

    Rotations by k x 90 degrees (k uniform in 0..3, stateless per element) move boxes exactly
    (``common.augment.rot90``).
    """
    import tensorflow as tf

    from microrepro.common import augment, pipeline

    ds = tf.data.Dataset.from_tensor_slices(
        {"image": subsections.images, "boxes": subsections.boxes, "labels": subsections.classes}
    )
    ds = ds.shuffle(len(subsections), seed=seed, reshuffle_each_iteration=True).repeat()
    counter = tf.data.Dataset.counter()

    def prepare(index, example):
        example = dict(example)
        example["image"] = tf.cast(example["image"], tf.float32) / 255.0
        if rotations:
            element_seed = tf.stack([tf.cast(seed, tf.int64), index])
            k = tf.random.stateless_uniform((), seed=element_seed, minval=0, maxval=4, dtype=tf.int32)
            example = augment.rot90(example, k)
        return example["image"], {"boxes": example["boxes"], "classes": example["labels"]}

    ds = tf.data.Dataset.zip((counter, ds)).map(prepare, num_parallel_calls=1)
    return ds.batch(batch_size, drop_remainder=True).prefetch(2).apply(pipeline.shard_by_data)


# ------------------------------------------------------------------------------------ fields
@dataclass
class Fields:
    """The fields of one run.

    Attributes:
        train: training fields (Samples).
        tune: training-slide fields on which the score threshold is chosen.
        tests: ``{split: (fields, DataInfo)}``: ``synthetic_test`` always, ``real_bench`` with real data.
        kind: "real" or "synthetic" (what the detectors were trained on).
        note: a short description of the training fields.
        timing_crops: the held-out AMi-Br crops a timing field is built from (real data only).
        baseline_sets: ``{split: (training fields, test fields, DataInfo)}`` for the baselines
            (``baselines.evaluate_baselines``): ``real_bench`` and the old ``real_mosaic`` with real
            data; none without (the synthetic smoke run, and its regression golden, stay as they were).
    """

    train: list
    tune: list
    tests: dict
    kind: str
    note: str
    timing_crops: list
    baseline_sets: dict = _field(default_factory=dict)


def _synthetic_fields(n: int, d, size: tuple[int, int]) -> list[Sample]:
    """``n`` synthetic training fields, half of each scanner profile."""
    from microrepro.datasets.synthetic import he_fields

    half = n // 2
    aperio = he_fields.generate(half, d.synthetic_seed, he_fields.HEConfig(image_size=size, scanner="aperio"))
    hamamatsu = he_fields.generate(n - half, d.synthetic_seed + 100,
                                   he_fields.HEConfig(image_size=size, scanner="hamamatsu"))
    return aperio + hamamatsu


def benchmark_config(cfg):
    """The ``amibr_benchmark.BenchmarkConfig`` of a run: its defaults, overridden by ``data.bench_*``
    keys when the config has them (``bench_field_size``, ``bench_figure_fraction``, ``bench_inset_um``,
    ``bench_negative_margin_um``)."""
    from microrepro.datasets.amibr_benchmark import BenchmarkConfig

    base, d = BenchmarkConfig(), cfg.data
    return BenchmarkConfig(
        field_size=tuple(int(v) for v in getattr(d, "bench_field_size", base.field_size)),
        figure_fraction=float(getattr(d, "bench_figure_fraction", base.figure_fraction)),
        inset_um=float(getattr(d, "bench_inset_um", base.inset_um)),
        negative_margin_um=float(getattr(d, "bench_negative_margin_um", base.negative_margin_um)),
    )


def _real_fields(cfg, root, seed: int):
    """Benchmark fields of both slide parts and the old mosaics (contrast), capped by ``data.max_*_fields``."""
    from microrepro.datasets import amibr
    from microrepro.datasets import amibr_benchmark as bench

    d = cfg.data
    crops = amibr.load(root)
    context = bench.figure_context(crops, amibr.read_table(root))
    train_crops, test_crops = amibr.slide_split(crops, d.test_fraction, seed)
    bcfg = benchmark_config(cfg)
    train = bench.build_fields(train_crops, context, d.max_train_fields, seed, bcfg, "amibr_bench_train")
    test = bench.build_fields(test_crops, context, d.max_test_fields, seed + 1, bcfg, "amibr_bench_test")
    grid = tuple(int(v) for v in d.mosaic_grid)
    old_train = [bench.mosaic_windows(m) for m in amibr.mosaics(train_crops, grid, seed)]
    old_test = [bench.mosaic_windows(m) for m in amibr.mosaics(test_crops, grid, seed + 1)]
    if d.max_train_fields:
        old_train = old_train[: d.max_train_fields]
    if d.max_test_fields:
        old_test = old_test[: d.max_test_fields]
    if not train or not test:
        raise UserError(f"{root}: too few AMi-Br crops for benchmark fields on both sides of the slide split")
    return train, test, old_train, old_test, test_crops, bcfg


def load_fields(cfg, data, seed: int) -> Fields:
    """Training, tuning and test fields with their DataInfo.

    Args:
        cfg: ``MitosRCNNConfig``.
        data: ``DataSource`` (``path`` None = no real data: train on synthetic fields).
        seed: slide split and field seed (training fields ``seed``, test fields ``seed + 1``).

    Returns:
        :class:`Fields`.

    Raises:
        UserError: too few AMi-Br crops for benchmark fields on both sides of the slide split.

    Reference: MITOS-RCNN Sec. III (MITOS/AMIDA/ATYPIA HPFs of two scanners, Table I); our data
        differs (README "Our data").
    """
    from microrepro.datasets.synthetic import he_fields

    d = cfg.data
    size = (d.synthetic_field_size, d.synthetic_field_size)
    synth_test = []
    for k, scanner in enumerate(("aperio", "hamamatsu")):
        test_config = he_fields.HEConfig(image_size=size, scanner=scanner,
                                         mitoses_per_mm2=d.synthetic_test_mitoses_per_mm2)
        synth_test += he_fields.generate(d.synthetic_test_fields, d.synthetic_seed + 1 + k, test_config)
    note = (f"{size[0]}x{size[1]} fields, {d.synthetic_test_mitoses_per_mm2:g} mitoses/mm2, "
            f"seed {d.synthetic_seed}")
    tests = {"synthetic_test": (synth_test, DataInfo("synthetic", "he_fields (aperio + hamamatsu)", len(synth_test),
                                                     "", note))}
    if data.path is None:
        print("[mitos_rcnn] no real data found: training on SYNTHETIC H&E fields (datasets/synthetic/he_fields)")
        train = _synthetic_fields(d.synthetic_train_fields, d, size)
        return Fields(train, train[: d.tune_fields], tests, "synthetic", "synthetic he_fields", [])
    train, test, old_train, old_test, test_crops, bcfg = _real_fields(cfg, data.path, seed)
    checksum = checksum_files([Path(c.image_path) for c in test_crops])
    h, w = bcfg.field_size
    note = (f"amibr_benchmark: {h}x{w} fields of {bcfg.short_side[0]}-{bcfg.long_side[1]} px windows cut at random "
            f"offsets, {bcfg.figure_fraction:g} of them with a figure, random strip layout; held-out slides; "
            "mitoses only")
    info = DataInfo("real", "mitosis_amibr", len(test), checksum, note)
    tests["real_bench"] = (test, info)
    grid = tuple(int(v) for v in d.mosaic_grid)
    old_info = DataInfo("real", "mitosis_amibr", len(old_test), checksum,
                        f"OLD {grid[0]}x{grid[1]} mosaics of whole 128 px crops (a figure at every tile centre), "
                        "held-out slides; baselines only")
    sets = {"real_bench": (train, test, info), "real_mosaic": (old_train, old_test, old_info)}
    train_fields = list(train)
    if d.train_on_synthetic_too:
        train_fields += _synthetic_fields(d.synthetic_train_fields, d, size)
    tune = train[-d.tune_fields :] if d.tune_fields else train
    return Fields(train_fields, tune, tests, "real", "AMi-Br benchmark fields", list(test_crops), sets)


def training_subsections(cfg, fields: list[Sample], seed: int) -> tuple[Subsections, dict]:
    """Training subsections of ``fields`` and of their Macenko copies (with ``data.macenko``).

    Returns:
        ``(Subsections, info)``; ``info`` counts fields, Macenko copies (and skipped fields),
        subsections and boxed objects, for the run's provenance.

    Reference: MITOS-RCNN Sec. IV-A.
    """
    d = cfg.data
    used, info = list(fields), {"fields": len(fields)}
    if d.macenko:
        copies, skipped = macenko_copies(fields, fields[0].image)
        used += copies
        info.update(macenko_copies=len(copies), macenko_skipped=skipped)
    subs = make_subsections(used, cfg.model.input_size, d.scale, d.box_um, d.tiles_per_field, seed)
    info["subsections"] = len(subs)
    info["objects"] = int((subs.classes >= 0).sum())
    return subs, info


def timing_field(height: int, width: int, crops: list) -> tuple[Sample, str]:
    """A ``height`` x ``width`` field to time: an ``amibr_benchmark`` field of ``crops`` when they
    are enough, else a synthetic H&E field; returns ``(field, what)``.

    Reference: MITOS-RCNN Sec. V-B.3 and Table I (an Aperio x40 frame is 1539 x 1376 px).
    """
    if crops:
        from microrepro.datasets import amibr_benchmark as bench

        config = bench.BenchmarkConfig(field_size=(int(height), int(width)))
        built = bench.build_fields(crops, bench.figure_context(crops), 1, 0, config, "timing")
        if built:
            return built[0], "mitosis_amibr benchmark field"
    from microrepro.datasets.synthetic import he_fields

    return he_fields.generate(1, 7, he_fields.HEConfig(image_size=(height, width)))[0], "he_fields"
