"""cell_counting: c-ResUNet + weight maps + watershed for fluorescent neuron counting.

Morelli et al., "Automatic Cell Counting in Fluorescent Microscopy Using Deep Learning".

One code path, the data chosen by what is found:

* a full Fluorescent Neuronal Cells set (v1 or v2 layout, ``datasets/fnc.py``): train on its
  training images (v2 ``trainval``; v1: all but a seeded 60-image test split, as Sec. 4.1) and
  evaluate on its test images -> split "test";
* otherwise (the default ``fnc_sample`` with two real fields, or no data at all): train on the
  synthetic fluorescent-neuron generator (``datasets/synthetic/neurons.py``) and evaluate on
  held-out synthetic fields -> split "synthetic_test", and, when the real sample is there, on
  its real fields -> split "real_fields" (sim-to-real).

Models (the paper's Table 1 model and the ablation of Sec. 4.2 / 4.3):

* ``c_resunet``: weighted BCE with the weight maps, watershed post-processing;
* ``c_resunet_no_weightmap``: plain BCE, same data, schedule and post-processing;
* ``c_resunet_no_watershed``: ``c_resunet``'s heat-maps, threshold + connected components only.

Each threshold is chosen by maximum F1 on training fields (Sec. 5.1, Fig. 8).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from microrepro.common.data_sources import DataSource
from microrepro.common.errors import DataError, UserError
from microrepro.common.runs import DataInfo, Run, checksum_files
from microrepro.common.task import Task
from microrepro.reproductions.cell_counting import postprocess as post
from microrepro.reproductions.cell_counting.config import CellCountingConfig
from microrepro.reproductions.cell_counting.weightmaps import weight_map

FULL = "c_resunet"
NO_WEIGHTMAP = "c_resunet_no_weightmap"
NO_WATERSHED = "c_resunet_no_watershed"
STATE_FILE = "cell_counting_state.json"
FNC_TEST_IMAGES = 60  # Sec. 4.1: "we randomly selected 60 images to insert in the test set"


# ----------------------------------------------------------------------------------------------
# data


@dataclass
class Field:
    """A full-size field: RGB uint8 ``(H, W, 3)`` image and ``(H, W)`` int32 instance labels."""

    id: str
    image: np.ndarray
    labels: np.ndarray


@dataclass
class FieldSet:
    fields: list[Field]
    info: DataInfo


def _rgb_uint8(image: np.ndarray) -> np.ndarray:
    from microrepro.common.imageio import convert_channels, to_float01

    image = convert_channels(np.asarray(image), 3)
    if image.dtype != np.uint8:
        image = np.round(np.clip(to_float01(image), 0, 1) * 255).astype(np.uint8)
    return image


def fields_from_samples(samples) -> list[Field]:
    """Samples (real loader or generator) -> Fields; a sample without a mask is a DataError."""
    out = []
    for sample in samples:
        image = _rgb_uint8(sample.image)
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


def load_data(data: DataSource, cfg: CellCountingConfig, seed: int) -> tuple[FieldSet, dict[str, FieldSet]]:
    """Training fields and the evaluation splits for ``data`` (see the module docstring).

    Returns:
        ``(train, {split_name: FieldSet})``.
    """
    from microrepro.datasets import fnc

    layout = None
    if data.path is not None:
        try:
            layout = fnc.detect_layout(data.path)
        except DataError:
            layout = None
    if layout in ("v1", "v2"):
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
        paths = lambda ss: [s.image_path for s in ss] + [s.mask_path for s in ss]
        train = FieldSet(fields_from_samples(train_s), DataInfo("real", data.dataset, len(train_s), checksum_files(paths(train_s))))
        test = FieldSet(fields_from_samples(test_s), DataInfo("real", data.dataset, len(test_s), checksum_files(paths(test_s)), note="held-out test"))
        return train, {"test": test}

    n_train, n_test = cfg.data.synthetic_train_fields, cfg.data.synthetic_test_fields
    base = cfg.data.synthetic_seed
    print(
        f"[data] training on the SYNTHETIC fluorescent-neuron generator ({n_train} fields, seed {base}); "
        f"{n_test} held-out synthetic fields (seed {base + 1}) for 'synthetic_test'"
    )
    train = FieldSet(synthetic_fields(n_train, base), DataInfo("synthetic", "synthetic neurons", n_train, note=f"seed {base}"))
    splits = {
        "synthetic_test": FieldSet(
            synthetic_fields(n_test, base + 1), DataInfo("synthetic", "synthetic neurons", n_test, note=f"seed {base + 1}")
        )
    }
    if layout == "sample":
        samples = fnc.load(data.path, "sample")
        print(f"[data] evaluating sim-to-real on the {len(samples)} real fields of {data.path}")
        checksum = checksum_files([s.image_path for s in samples] + [s.mask_path for s in samples])
        splits["real_fields"] = FieldSet(
            fields_from_samples(samples), DataInfo("real", data.dataset, len(samples), checksum, note="sim-to-real")
        )
    elif data.path is not None:
        print(f"[data] {data.path} is not a Fluorescent Neuronal Cells layout: synthetic evaluation only")
    return train, splits


def split_fields(fields: list[Field], val_fraction: float, seed: int) -> tuple[list[Field], list[Field]]:
    """Seeded split of whole fields into (train, val); val gets round(fraction * n), at least 1."""
    if len(fields) < 2:
        raise UserError(f"need at least 2 training fields to carve a validation split, got {len(fields)}")
    order = np.random.default_rng(seed).permutation(len(fields))
    n_val = min(len(fields) - 1, max(1, int(round(val_fraction * len(fields)))))
    val = [fields[i] for i in sorted(order[:n_val])]
    train = [fields[i] for i in sorted(order[n_val:])]
    return train, val


def _resize(array: np.ndarray, scale: float, nearest: bool) -> np.ndarray:
    import cv2

    if scale == 1.0:
        return array
    height, width = array.shape[:2]
    size = (max(1, int(round(width * scale))), max(1, int(round(height * scale))))
    interpolation = cv2.INTER_NEAREST if nearest else (cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    return cv2.resize(array, size, interpolation=interpolation)


def field_weight_map(labels: np.ndarray, cfg: CellCountingConfig, scale: float = 1.0) -> np.ndarray:
    """The configured weight map of an instance image at ``scale`` (lengths scaled with it)."""
    wm = cfg.weight_map
    if wm.kind == "paper":
        return weight_map(labels, "paper", sigma=wm.sigma * scale, cell_weight=wm.cell_weight,
                          background_weight=wm.background_weight, window_sigmas=wm.window_sigmas)
    if wm.kind == "released":
        return weight_map(labels, "released", sigma=wm.sigma * scale, cell_factor=wm.released_cell_factor,
                          band=max(1, int(round(wm.released_band * scale))), maximum=wm.released_maximum)
    return weight_map(labels, "none")


def is_hard_crop(labels: np.ndarray, min_cells: int, touch_px: int) -> bool:
    """Oversampling rule for "tricky" crops (Sec. 4.1; the paper gives no rule, this is ours).

    A crop is hard when it holds at least ``min_cells`` cells, or when two cells come within
    ``touch_px`` pixels of each other (dilating the foreground by ``touch_px // 2 + 1`` merges
    two of them into one component).
    """
    from skimage.measure import label

    ids = np.unique(labels)
    n = int((ids > 0).sum())
    if n >= min_cells:
        return True
    if n < 2:
        return False
    from scipy import ndimage

    grown = ndimage.binary_dilation(labels > 0, iterations=touch_px // 2 + 1)
    return int(label(grown, connectivity=2).max()) < n


def make_crops(fields: list[Field], cfg: CellCountingConfig) -> dict[str, np.ndarray]:
    """Cut fields into the overlapping crops of Sec. 4.1, with masks, weight maps, hard flags.

    Fields are first resized by ``cfg.data.scale``; weight maps are computed on the whole
    (resized) field so objects cut by a crop border keep their neighbours' contributions.

    Returns:
        ``{"image": (N, s, s, 3) uint8, "mask": (N, s, s, 1) uint8 0/1, "weights": (N, s, s, 1)
        float16, "hard": (N,) bool}``.
    """
    from microrepro.common.pipeline import extract_crops

    size, stride, scale = cfg.data.crop_size, cfg.data.crop_stride, cfg.data.scale
    images, masks, weights, hard = [], [], [], []
    for field in fields:
        image = _resize(field.image, scale, nearest=False)
        labels = _resize(field.labels, scale, nearest=True).astype(np.int32)
        wmap = field_weight_map(labels, cfg, scale)
        label_crops = extract_crops(labels, size, stride)
        images.append(extract_crops(image, size, stride))
        masks.append((label_crops > 0).astype(np.uint8)[..., None])
        weights.append(extract_crops(wmap, size, stride).astype(np.float16)[..., None])
        hard.extend(is_hard_crop(c, cfg.data.hard_min_cells, max(1, int(round(cfg.data.hard_touch_px * scale)))) for c in label_crops)
    return {
        "image": np.concatenate(images),
        "mask": np.concatenate(masks),
        "weights": np.concatenate(weights),
        "hard": np.asarray(hard, bool),
    }


def oversample(crops: dict[str, np.ndarray], repeat: int) -> dict[str, np.ndarray]:
    """Each hard crop appears ``1 + repeat`` times (Sec. 4.1, "increasing the augmentation factor")."""
    index = np.concatenate([np.arange(len(crops["hard"]))] + [np.flatnonzero(crops["hard"])] * int(repeat))
    return {k: v[index] for k, v in crops.items() if k != "hard"}


def augment_config(cfg: CellCountingConfig):
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


# ----------------------------------------------------------------------------------------------
# model, training, prediction


def build_model(cfg: CellCountingConfig):
    from microrepro.reproductions.cell_counting.model import build_c_resunet

    m = cfg.model
    return build_c_resunet(m.filters, m.bridge_filters, m.bridge_blocks, m.bridge_kernel, m.activation, m.colour_to_grey,
                           bn_momentum=m.bn_momentum)


def compile_model(model, cfg: CellCountingConfig, weighted: bool):
    import keras

    from microrepro.reproductions.cell_counting.model import WeightedBCE, binary_iou

    t = cfg.train
    loss = WeightedBCE(t.loss_cell_weight, t.loss_background_weight) if weighted else WeightedBCE(1.0, 1.0, use_map=False)
    model.compile(optimizer=keras.optimizers.Adam(t.lr), loss=loss, metrics=[binary_iou(0.5)], run_eagerly=t.run_eagerly)
    return model


def train_model(name: str, run: Run, cfg: CellCountingConfig, train_crops, val_crops, pipelines, weighted: bool):
    """Build, compile and fit one model.

    Returns:
        ``(model with its best weights loaded, schedule_run entry)``.
    """
    from microrepro.common import training

    training.set_seed(run.seed)
    model = compile_model(build_model(cfg), cfg, weighted)
    train_ds, val_ds = pipelines
    t = cfg.train
    n_train = len(train_crops["image"]) + int(train_crops["hard"].sum()) * cfg.data.hard_repeat
    steps = t.steps_per_epoch or max(1, math.ceil(n_train / t.batch_size))
    # The validation pipeline drops a last partial batch (static shapes), hence floor.
    n_val_batches = len(val_crops["image"]) // min(t.batch_size, len(val_crops["image"]))
    val_steps = min(t.validation_steps or n_val_batches, n_val_batches)
    result = training.fit(
        model, train_ds, val_ds, run_dir=run.run_dir, name=name, epochs=t.epochs, steps_per_epoch=steps,
        validation_steps=val_steps,
        lr_schedule={"kind": "plateau", "factor": t.plateau_factor, "patience": t.plateau_patience, "min_lr": t.min_lr},
        monitor="val_loss", early_stopping_patience=t.early_stopping_patience, verbose=2,
    )
    training.plot_history(run.run_dir, name, run.figure_path(f"training_{name}"), f"{name}: weighted BCE per epoch")
    loss = result["history"].get("loss", [])
    training.load_weights(model, run.run_dir, name, "best")
    return model, {
        "epochs": result["epochs_run"], "steps": steps * result["epochs_run"], "batch": t.batch_size,
        "seconds": round(result["seconds"], 1), "crop": cfg.data.crop_size, "scale": cfg.data.scale,
        "train_crops": n_train, "first_loss": loss[0] if loss else None, "last_loss": loss[-1] if loss else None,
    }


def load_trained(run_dir: Path, cfg: CellCountingConfig, name: str):
    from microrepro.common import training

    model = build_model(cfg)
    return training.load_weights(model, run_dir, name, "best")


def predict_heatmap(model, image: np.ndarray, cfg: CellCountingConfig, scale: float | None = None,
                    tile: int | None = None, overlap: int | None = None) -> np.ndarray:
    """Full-field heat-map by tiled prediction (Sec. 5), returned at the image's full size.

    Args:
        model: a c-ResUNet.
        image: ``(H, W, 3)`` uint8 RGB field.
        scale: resize factor before prediction (default ``cfg.data.scale``; the model was trained
            at that scale); the heat-map is resized back to ``(H, W)``.

    Returns:
        ``(H, W)`` float32 probabilities.
    """
    from microrepro.common.imageio import to_float01
    from microrepro.common.tiling import predict_tiled

    scale = cfg.data.scale if scale is None else scale
    tile = tile or cfg.postprocess.tile
    overlap = cfg.postprocess.tile_overlap if overlap is None else overlap
    x = to_float01(_resize(_rgb_uint8(image), scale, nearest=False))

    def predict_fn(batch):
        return np.asarray(model(np.asarray(batch, np.float32), training=False))

    heat = np.asarray(predict_tiled(predict_fn, x, tile, overlap, batch_size=4), np.float32)
    if heat.ndim == 3:
        heat = heat[..., 0]
    if scale != 1.0:
        import cv2

        heat = cv2.resize(heat, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
    return heat.astype(np.float32)


# ----------------------------------------------------------------------------------------------
# thresholds and evaluation


def postprocessor(key: str, sizes: post.PostprocessSizes) -> Callable[[np.ndarray, float], np.ndarray]:
    """Heat-map -> instance labels for a model key (watershed, or components for the ablation)."""
    if key == NO_WATERSHED:
        return post.connected_components
    return lambda heat, threshold: post.separate_cells(heat, threshold, sizes)


def threshold_grid(cfg: CellCountingConfig) -> np.ndarray:
    start, stop, step = cfg.postprocess.threshold_grid
    if step <= 0 or stop < start:
        raise UserError(f"postprocess.threshold_grid {cfg.postprocess.threshold_grid}: need start <= stop and step > 0")
    return np.round(np.arange(start, stop + step / 2, step), 6)


def match_field(labels: np.ndarray, gt: np.ndarray, max_dist: float):
    """(Hungarian centroid matching, released greedy bbox-centre matching) of one field."""
    from microrepro.common.matching import match_points, match_points_released_cell_counting

    p, g = post.measure_objects(labels), post.measure_objects(gt)
    hungarian = match_points(p["centroids"], g["centroids"], max_dist, method="hungarian", inclusive=False)
    released = match_points_released_cell_counting(p["bbox_centres"], g["bbox_centres"], max_dist)
    return hungarian, released


def sweep(heatmaps, fields, post_fn, thresholds, max_dist: float) -> dict[str, np.ndarray]:
    """F1 / precision / recall (Hungarian, pooled over fields) for each threshold (Fig. 8)."""
    from microrepro.common.matching import aggregate, match_points
    from microrepro.common.metrics import prf

    gts = [post.measure_objects(f.labels)["centroids"] for f in fields]
    tp, fp, fn = [], [], []
    for t in thresholds:
        total = aggregate(
            match_points(post.measure_objects(post_fn(h, t))["centroids"], g, max_dist, inclusive=False)
            for h, g in zip(heatmaps, gts)
        )
        tp.append(total.tp), fp.append(total.fp), fn.append(total.fn)
    precision, recall, f1 = prf(np.array(tp), np.array(fp), np.array(fn))
    return {"thresholds": np.asarray(thresholds), "precision": np.atleast_1d(precision),
            "recall": np.atleast_1d(recall), "f1": np.atleast_1d(f1)}


def evaluate_fields(heatmaps, fields, post_fn, threshold: float, max_dist: float) -> tuple[dict, list]:
    """Table 1 metrics of one model on one split.

    Returns:
        ``(metrics, per_field)``: metrics = f1/precision/recall (Hungarian centroid matching,
        distance < ``max_dist``), f1_released/precision_released/recall_released (the released
        greedy bounding-box-centre rule), mae/medae (per-field counts), mean_iou (two-class
        mean IoU pooled over pixels, as released), foreground_iou, threshold; per_field =
        (id, labels, hungarian MatchResult) for figures.
    """
    from microrepro.common.matching import aggregate
    from microrepro.common.metrics import class_mean_iou, count_errors, foreground_iou

    hung, rel, pred_counts, gt_counts, per_field, pred_masks, gt_masks = [], [], [], [], [], [], []
    for heat, field in zip(heatmaps, fields):
        labels = post_fn(heat, threshold)
        h, r = match_field(labels, field.labels, max_dist)
        hung.append(h), rel.append(r)
        pred_counts.append(h.n_pred)
        gt_counts.append(h.n_gt)
        pred_masks.append(labels > 0), gt_masks.append(field.labels > 0)
        per_field.append((field.id, labels, h))
    H, R = aggregate(hung), aggregate(rel)
    counts = count_errors(pred_counts, gt_counts)
    metrics = {
        "f1": H.f1, "precision": H.precision, "recall": H.recall,
        "f1_released": R.f1, "precision_released": R.precision, "recall_released": R.recall,
        "mae": counts["mae"], "medae": counts["medae"], "mean_error": counts["mean_error"],
        "mean_iou": class_mean_iou(pred_masks, gt_masks), "foreground_iou": foreground_iou(pred_masks, gt_masks),
        "threshold": threshold,
    }
    return metrics, per_field


def _median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up: graph tracing and memory allocation are not part of the timing
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def time_inference(model, cfg: CellCountingConfig) -> dict:
    """Median seconds per full-size field (tiled, at scale 1 as the paper) and ms per crop."""
    rng = np.random.default_rng(0)
    height, width = cfg.eval.timing_field
    crop = cfg.eval.timing_crop
    field = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    x = rng.random((1, crop, crop, 3), dtype=np.float32)
    s_field = _median_seconds(lambda: predict_heatmap(model, field, cfg, scale=1.0, tile=crop, overlap=crop // 8),
                              cfg.eval.timing_repeats)
    s_crop = _median_seconds(lambda: np.asarray(model(x, training=False)), cfg.eval.timing_repeats)
    return {"s_per_field": s_field, "ms_per_crop": 1000.0 * s_crop}


# ----------------------------------------------------------------------------------------------
# the task


def _plot_sweeps(run: Run, sweeps: dict, best: dict) -> None:
    from microrepro.common.figures import plot_curves

    curves = {key: (s["thresholds"], s["f1"]) for key, s in sweeps.items()}
    t = best[FULL]
    f1 = float(sweeps[FULL]["f1"][list(sweeps[FULL]["thresholds"]).index(t)])
    plot_curves(curves, "threshold", "F1 (training fields)", "Threshold optimisation (Fig. 8)",
                run.figure_path("f1_vs_threshold"), mark=(t, f1, f"c_resunet best {t:.3f} (F1 {f1:.3f})"))


def _overlay(run: Run, name: str, field: Field, labels: np.ndarray, match) -> None:
    from microrepro.common.figures import draw_detections

    pred = post.measure_objects(labels)["centroids"]
    gt = post.measure_objects(field.labels)["centroids"]
    draw_detections(field.image, pred, gt, run.figure_path(name), matched=match, title=f"{field.id}", scale=0.5)


def _state_path(run_dir: Path) -> Path:
    return Path(run_dir) / STATE_FILE


class CellCountingTask(Task):
    name = "cell_counting"
    title = "Automatic Cell Counting in Fluorescent Microscopy Using Deep Learning (Morelli et al.)"
    dataset = "fnc_sample"
    config_cls = CellCountingConfig
    folder = Path(__file__).parent

    # ------------------------------------------------------------------------------------------
    def reproduce(self, run: Run, data: DataSource) -> None:
        cfg: CellCountingConfig = run.config
        start = time.perf_counter()
        train_set, eval_sets = load_data(data, cfg, run.seed)
        train_fields, val_fields = split_fields(train_set.fields, cfg.data.val_fraction, run.seed)
        print(f"[cell_counting] {len(train_fields)} training / {len(val_fields)} validation fields; cutting crops")
        train_crops = make_crops(train_fields, cfg)
        val_crops = make_crops(val_fields, cfg)
        print(f"[cell_counting] {len(train_crops['image'])} training crops ({int(train_crops['hard'].sum())} hard, "
              f"x{1 + cfg.data.hard_repeat}), {len(val_crops['image'])} validation crops of {cfg.data.crop_size} px")

        names = [FULL] + ([NO_WEIGHTMAP] if cfg.train.ablation else [])
        weighted = {FULL: cfg.weight_map.kind != "none", NO_WEIGHTMAP: False}
        pipelines = datasets(train_crops, val_crops, cfg, run.seed)
        models = {}
        for name in names:
            print(f"[cell_counting] training {name}")
            models[name], run.schedule_run[name] = train_model(name, run, cfg, train_crops, val_crops, pipelines, weighted[name])
            run.save()

        # Post-processing sizes from the mean training cell size (paper) or the released constants.
        diameter = cfg.postprocess.mean_cell_diameter
        if diameter is None:
            try:
                diameter = post.mean_cell_diameter([f.labels for f in train_fields])
            except ValueError:  # no cell in any training field (tiny smoke sets): the paper's 50 px
                diameter = post.RELEASED_CELL_DIAMETER
                print(f"[cell_counting] no cell in the training masks: using a {diameter:.0f} px mean cell diameter")
        sizes = post.PostprocessSizes.released() if cfg.postprocess.sizes == "released" else post.PostprocessSizes.from_cell_diameter(diameter)
        print(f"[cell_counting] mean cell diameter {diameter:.1f} px -> post-processing sizes {sizes}")

        thresholds = self._choose_thresholds(run, cfg, models, train_fields, sizes)
        _state_path(run.run_dir).write_text(json.dumps({
            "thresholds": thresholds, "sizes": dataclasses.asdict(sizes), "mean_cell_diameter": diameter,
            "models": names, "train_fields": [f.id for f in train_fields],
        }, indent=2))
        self._evaluate_splits(run, cfg, models, eval_sets, thresholds, sizes)
        timing = time_inference(models[FULL], cfg)
        main_split = next(iter(eval_sets))
        run.add_metrics(FULL, main_split, timing, eval_sets[main_split].info)
        run.extra["timing"] = {"field": list(cfg.eval.timing_field), "crop": cfg.eval.timing_crop, "note": "median after warm-up, scale 1"}
        run.extra["total_seconds"] = round(time.perf_counter() - start, 1)
        run.save()
        print(f"[cell_counting] done in {run.extra['total_seconds']:.0f} s; metrics in {run.run_dir / 'metrics.json'}")

    def _choose_thresholds(self, run, cfg, models, train_fields, sizes) -> dict:
        keys = list(models) + [NO_WATERSHED]
        fixed = cfg.postprocess.threshold
        if fixed is not None:
            return {key: float(fixed) for key in keys}
        from microrepro.common.metrics import best_threshold

        fields = train_fields[: max(1, cfg.postprocess.threshold_fields)]
        grid = threshold_grid(cfg)
        heat = {name: [predict_heatmap(m, f.image, cfg) for f in fields] for name, m in models.items()}
        heat[NO_WATERSHED] = heat[FULL]
        sweeps, best = {}, {}
        for key in keys:
            sweeps[key] = sweep(heat[key], fields, postprocessor(key, sizes), grid, cfg.postprocess.match_distance)
            best[key] = best_threshold(sweeps[key], "f1")[0]
            print(f"[cell_counting] {key}: best threshold {best[key]:.3f} on {len(fields)} training fields")
        _plot_sweeps(run, sweeps, best)
        run.extra["threshold_sweeps"] = {k: {m: [float(v) for v in s[m]] for m in ("thresholds", "f1")} for k, s in sweeps.items()}
        return best

    def _evaluate_splits(self, run, cfg, models, eval_sets, thresholds, sizes) -> None:
        for split, field_set in eval_sets.items():
            heat = {name: [predict_heatmap(m, f.image, cfg) for f in field_set.fields] for name, m in models.items()}
            heat[NO_WATERSHED] = heat[FULL]
            for key in heat:
                if key not in thresholds:
                    continue
                metrics, per_field = evaluate_fields(heat[key], field_set.fields, postprocessor(key, sizes),
                                                     thresholds[key], cfg.postprocess.match_distance)
                run.add_metrics(key, split, metrics, field_set.info)
                print(f"[cell_counting] {key} on {split}: F1 {metrics['f1']:.3f} (released rule {metrics['f1_released']:.3f}), "
                      f"MAE {metrics['mae']:.2f}, MedAE {metrics['medae']:.1f}, mean IoU {metrics['mean_iou']:.3f}")
                if key == FULL and per_field:
                    # The field with the most cells shows splitting (or merging) of touching cells best.
                    k = int(np.argmax([f.labels.max() for f in field_set.fields]))
                    _overlay(run, f"detections_{split}", field_set.fields[k], per_field[k][1], per_field[k][2])

    # ------------------------------------------------------------------------------------------
    def evaluate(self, run: Run, data: DataSource) -> None:
        cfg: CellCountingConfig = run.config
        state_path = _state_path(run.run_dir)
        if not state_path.is_file():
            raise UserError(f"{state_path}: missing; this run has not finished training (run reproduce first)")
        state = json.loads(state_path.read_text())
        _, eval_sets = load_data(data, cfg, run.seed)
        models = {name: load_trained(run.run_dir, cfg, name) for name in state["models"]}
        sizes = post.PostprocessSizes(**state["sizes"])
        self._evaluate_splits(run, cfg, models, eval_sets, state["thresholds"], sizes)
        run.save()

    # ------------------------------------------------------------------------------------------
    def predict(self, run_dir: Path, images: list[Path], out_dir: Path, model: str = FULL,
                threshold: float | None = None, **options) -> list[Path]:
        """Count cells in ``images`` with a trained run.

        Writes, per image, ``<stem>_cells.csv`` (x, y, area: centroid px and area px of each
        detected cell) and ``<stem>_overlay.png``, plus ``counts.csv`` (image, count).

        Args:
            run_dir: a finished run folder.
            images: image files (RGB; grey is repeated to 3 channels).
            out_dir: output folder (created).
            model: ``c_resunet`` (default), ``c_resunet_no_weightmap`` or ``c_resunet_no_watershed``.
            threshold: heat-map cut-off; default = the one chosen on the training fields.
        """
        from microrepro.common.figures import draw_detections
        from microrepro.common.imageio import read_image

        run_dir, out_dir = Path(run_dir), Path(out_dir)
        if options:
            raise UserError(f"unknown predict options for cell_counting: {sorted(options)} (known: model, threshold)")
        state_path = _state_path(run_dir)
        if not state_path.is_file():
            raise UserError(f"{state_path}: missing; {run_dir} is not a finished cell_counting run")
        state = json.loads(state_path.read_text())
        if model not in state["thresholds"]:
            raise UserError(f"model '{model}' is not in this run; choose one of {sorted(state['thresholds'])}")
        cfg = self.config_from_run(run_dir)
        network = load_trained(run_dir, cfg, NO_WEIGHTMAP if model == NO_WEIGHTMAP else FULL)
        cut = float(state["thresholds"][model] if threshold is None else threshold)
        post_fn = postprocessor(model, post.PostprocessSizes(**state["sizes"]))
        out_dir.mkdir(parents=True, exist_ok=True)
        written, counts = [], []
        for path in images:
            image = _rgb_uint8(read_image(path))
            labels = post_fn(predict_heatmap(network, image, cfg), cut)
            objects = post.measure_objects(labels)
            stem = Path(path).stem
            table = out_dir / f"{stem}_cells.csv"
            with open(table, "w", newline="") as fh:
                writer = csv.writer(fh)
                writer.writerow(["x", "y", "area"])
                for (x, y), area in zip(objects["centroids"], objects["areas"]):
                    writer.writerow([f"{x:.1f}", f"{y:.1f}", int(area)])
            overlay = draw_detections(image, objects["centroids"], np.zeros((0, 2), np.float32), out_dir / f"{stem}_overlay.png",
                                      title=f"{stem}: {len(objects['areas'])} cells", scale=0.5 if max(image.shape[:2]) > 1024 else None)
            written += [table, Path(overlay)]
            counts.append((Path(path).name, len(objects["areas"])))
        summary = out_dir / "counts.csv"
        with open(summary, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["image", "count"])
            writer.writerows(counts)
        return written + [summary]


TASK = CellCountingTask()
