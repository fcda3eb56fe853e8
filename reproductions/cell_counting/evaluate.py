"""cell_counting evaluation: F1-vs-threshold sweeps, operating thresholds, Table 1 metrics, timing, figures.

Each model key's threshold is the one of maximum F1 on training fields (Sec. 5.1, Fig. 8),
chosen with ``common.thresholds`` and stored in the run's ``thresholds.json``; the metrics of a
split are computed at that stored threshold. Every Table 1 metric carries a 95 % bootstrap
interval over the split's fields (``common.stats``: ``<metric>_ci_low`` / ``_ci_high``), and the
README's orderings (watershed vs connected components, weight maps vs none) are paired
bootstrap differences on the same fields, stored under model ``paired``.

Reference: Sec. 5.1 (threshold optimisation, centroid matching < 50 px, F1, MAE, MedAE) and Table 1.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from microrepro.common import stats, thresholds, training
from microrepro.common.errors import ConfigError
from microrepro.common.matching import MatchResult
from microrepro.common.runs import Run
from microrepro.reproductions.cell_counting import postprocess as post
from microrepro.reproductions.cell_counting.config import CellCountingConfig
from microrepro.reproductions.cell_counting.data import Field
from microrepro.reproductions.cell_counting.inference import (
    FULL,
    NETWORK,
    NO_WEIGHTMAP,
    SKIPPED,
    postprocessor,
    predict_heatmap,
)

# The README's orderings, each (a, b) stored as a − b under model "paired": the full pipeline
# against each post-processing step left out alone and all left out (Sec. 4.3), the weight maps
# against plain BCE (Sec. 4.2).
COMPARED = (*((FULL, key) for key in SKIPPED), (FULL, NO_WEIGHTMAP))
COMPARED_METRICS = ("f1", "mae")


class FieldResult(NamedTuple):
    """One field's evaluation: what the detections figure draws and what the bootstrap resamples.

    Attributes:
        id: the field's id.
        labels: ``(H, W)`` predicted instance labels.
        hungarian: centroid matching (``f1``); released: the released greedy rule (``f1_released``).
        pixels: ``{"tp", "fp", "fn", "tn"}`` pixel counts of ``labels > 0`` against the true mask.
    """

    id: str
    labels: np.ndarray
    hungarian: MatchResult
    released: MatchResult
    pixels: dict


def threshold_grid(cfg: CellCountingConfig) -> np.ndarray:
    """The heat-map cut-offs swept: ``postprocess.threshold_grid`` (start, stop, step), stop included.

    Reference: Sec. 5.1, Fig. 8 (released notebook: 0.5 to 0.975 in steps of 0.025).
    """
    start, stop, step = cfg.postprocess.threshold_grid
    if step <= 0 or stop < start:
        raise ConfigError(f"postprocess.threshold_grid {cfg.postprocess.threshold_grid}: "
                          f"need start <= stop and step > 0")
    return thresholds.grid(start, stop, step)


def match_field(labels: np.ndarray, gt: np.ndarray, max_dist: float):
    """(Hungarian centroid matching, released greedy bbox-centre matching) of one field's ``(H, W)`` labels.

    Reference: Sec. 5.1 (a prediction matches a target whose centroid is closer than 50 px).
    """
    from microrepro.common.matching import match_points, match_points_released_cell_counting

    p, g = post.measure_objects(labels), post.measure_objects(gt)
    hungarian = match_points(p["centroids"], g["centroids"], max_dist, method="hungarian", inclusive=False)
    released = match_points_released_cell_counting(p["bbox_centres"], g["bbox_centres"], max_dist)
    return hungarian, released


def f1_sweep(heatmaps, fields: list[Field], post_fn, grid, max_dist: float) -> dict[str, np.ndarray]:
    """F1 / precision / recall (Hungarian, counts pooled over fields) at each threshold of ``grid``.

    Args:
        heatmaps: per field, ``(H, W)`` probabilities.
        fields: the fields (their labels are the ground truth).
        post_fn: ``inference.postprocessor`` of the model key.
        grid: ``(T,)`` thresholds.
        max_dist: matching distance in px.

    Returns:
        ``common.thresholds.sweep``'s dict: ``thresholds``, ``tp``, ``fp``, ``fn``, ``precision``,
        ``recall``, ``f1``, each ``(T,)``.

    Reference: Sec. 5.1, Fig. 8.
    """
    from microrepro.common.matching import aggregate, match_points
    from microrepro.common.metrics import prf

    gts = [post.measure_objects(f.labels)["centroids"] for f in fields]

    def evaluate(threshold: float) -> dict[str, float]:
        total = aggregate(
            match_points(post.measure_objects(post_fn(h, threshold))["centroids"], g, max_dist, inclusive=False)
            for h, g in zip(heatmaps, gts, strict=True)
        )
        precision, recall, f1 = prf(total.tp, total.fp, total.fn)
        return {"tp": total.tp, "fp": total.fp, "fn": total.fn,
                "precision": float(precision), "recall": float(recall), "f1": float(f1)}

    return thresholds.sweep(grid, evaluate)


def choose_thresholds(run: Run, cfg: CellCountingConfig, models: dict, train_fields: list[Field],
                      sizes: post.PostprocessSizes, keys) -> dict[str, float]:
    """Choose and store (``thresholds.json``) the operating threshold of each model key in ``keys``.

    ``postprocess.threshold`` set: that value for every key (rule ``fixed``). Otherwise the
    threshold of maximum F1 over ``threshold_grid`` on the first ``threshold_fields`` training
    fields (ties: the lowest), with the F1 curves drawn in ``f1_vs_threshold.png``.

    Args:
        models: trained networks by name (``NETWORK[key]`` must be among them).
        keys: model keys to choose a threshold for.

    Returns:
        ``{key: threshold}``.

    Reference: Sec. 5.1, Fig. 8 (maximum F1 on the training images: 0.55).
    """
    if cfg.postprocess.threshold is not None:
        chosen = {key: thresholds.fixed(cfg.postprocess.threshold) for key in keys}
    else:
        fields = train_fields[: max(1, cfg.postprocess.threshold_fields)]
        grid = threshold_grid(cfg)
        heat = {name: [predict_heatmap(models[name], f.image, cfg) for f in fields]
                for name in dict.fromkeys(NETWORK[key] for key in keys)}
        chosen = {}
        for key in keys:
            curve = f1_sweep(heat[NETWORK[key]], fields, postprocessor(key, sizes), grid,
                             cfg.postprocess.match_distance)
            chosen[key] = thresholds.choose(curve, "f1", split="train", n_images=len(fields))
            print(f"[cell_counting] {key}: best threshold {chosen[key].value:.3f} "
                  f"(F1 {chosen[key].metric_value:.3f}) on {len(fields)} training fields")
        plot_sweeps(run, chosen)
    for key, threshold in chosen.items():
        thresholds.save(run.run_dir, key, threshold)
    return {key: threshold.value for key, threshold in chosen.items()}


def evaluate_fields(heatmaps, fields: list[Field], post_fn, threshold: float, max_dist: float
                    ) -> tuple[dict, list[FieldResult]]:
    """Table 1 metrics of one model on one split, each with its bootstrap interval over fields.

    Returns:
        ``(metrics, per_field)``: metrics = f1/precision/recall (Hungarian centroid matching,
        distance < ``max_dist``), f1_released/precision_released/recall_released (the released
        greedy bounding-box-centre rule), mae/medae/mean_error (per-field counts), mean_iou
        (two-class mean IoU pooled over pixels, as released), foreground_iou, threshold, and
        ``<metric>_ci_low`` / ``<metric>_ci_high`` of each but the threshold (``common.stats``,
        fields resampled); per_field = one ``FieldResult`` per field.

    Reference: Sec. 5.1 and Table 1.
    """
    from microrepro.common.matching import aggregate
    from microrepro.common.metrics import class_mean_iou, count_errors, foreground_iou, pixel_counts

    hung, rel, pred_counts, gt_counts, per_field, pred_masks, gt_masks = [], [], [], [], [], [], []
    for heat, field in zip(heatmaps, fields, strict=True):
        labels = post_fn(heat, threshold)
        h, r = match_field(labels, field.labels, max_dist)
        hung.append(h), rel.append(r)
        pred_counts.append(h.n_pred)
        gt_counts.append(h.n_gt)
        pred_masks.append(labels > 0), gt_masks.append(field.labels > 0)
        pixels = {k: int(v[0]) for k, v in pixel_counts([pred_masks[-1]], [gt_masks[-1]]).items()}
        per_field.append(FieldResult(field.id, labels, h, r, pixels))
    H, R = aggregate(hung), aggregate(rel)
    counts = count_errors(pred_counts, gt_counts)
    metrics = {
        "f1": H.f1, "precision": H.precision, "recall": H.recall,
        "f1_released": R.f1, "precision_released": R.precision, "recall_released": R.recall,
        "mae": counts["mae"], "medae": counts["medae"], "mean_error": counts["mean_error"],
        "mean_iou": class_mean_iou(pred_masks, gt_masks), "foreground_iou": foreground_iou(pred_masks, gt_masks),
        "threshold": threshold,
    }
    metrics.update(stats.interval_keys(stats.bootstrap(per_image(per_field), table1_statistic)))
    return metrics, per_field


def per_image(per_field: list[FieldResult]) -> dict[str, np.ndarray]:
    """The per-field data Table 1 is computed from, ``(I,)`` each (what ``table1_statistic`` takes).

    Returns:
        ``tp``/``fp``/``fn`` (Hungarian), ``released_tp``/``released_fp``/``released_fn``,
        ``n_pred``/``n_gt`` (object counts), ``px_tp``/``px_fp``/``px_fn``/``px_tn`` (pixels) and
        ``foreground_iou`` (each field's cell IoU).
    """
    from microrepro.common.metrics import _pixel_metrics_from_counts

    out = {}
    for prefix, attr in (("", "hungarian"), ("released_", "released")):
        for k in ("tp", "fp", "fn"):
            out[prefix + k] = np.array([getattr(getattr(f, attr), k) for f in per_field], np.int64)
    out["n_pred"] = np.array([f.hungarian.n_pred for f in per_field], np.int64)
    out["n_gt"] = np.array([f.hungarian.n_gt for f in per_field], np.int64)
    for k in ("tp", "fp", "fn", "tn"):
        out[f"px_{k}"] = np.array([f.pixels[k] for f in per_field], np.int64)
    out["foreground_iou"] = np.array([float(_pixel_metrics_from_counts(**f.pixels)["iou"]) for f in per_field])
    return out


def table1_statistic(per_image: dict[str, np.ndarray]) -> dict[str, float]:
    """Table 1's metrics from the per-field data of ``per_image`` (all fields: the point estimates).

    Reference: Sec. 5.1 and Table 1 (counts summed over fields, count errors per field).
    """
    px = {k: per_image[f"px_{k}"] for k in ("tp", "fp", "fn", "tn")}
    released = stats.detection_statistic({k: per_image[f"released_{k}"] for k in ("tp", "fp", "fn")})
    return {
        **stats.detection_statistic(per_image),
        **{f"{k}_released": v for k, v in released.items()},
        **stats.counting_statistic({"pred": per_image["n_pred"], "gt": per_image["n_gt"]}),
        **stats.class_mean_iou_statistic(px),
        **stats.mean_statistic("foreground_iou")(per_image),
    }


def evaluate_splits(run: Run, cfg: CellCountingConfig, models: dict, eval_sets: dict, cuts: dict[str, float],
                    sizes: post.PostprocessSizes) -> None:
    """Record the metrics of every model key in ``cuts`` on every split, and a detections figure per split.

    Args:
        models: trained networks by name.
        eval_sets: ``{split: data.FieldSet}``.
        cuts: ``{key: stored operating threshold}``.

    Reference: Sec. 5.1, Table 1.
    """
    for split, field_set in eval_sets.items():
        heat = {name: [predict_heatmap(models[name], f.image, cfg) for f in field_set.fields]
                for name in dict.fromkeys(NETWORK[key] for key in cuts)}
        fields_of = {}
        for key, cut in cuts.items():
            metrics, per_field = evaluate_fields(heat[NETWORK[key]], field_set.fields, postprocessor(key, sizes),
                                                 cut, cfg.postprocess.match_distance)
            run.add_metrics(key, split, metrics, field_set.info)
            fields_of[key] = per_field
            print(f"[cell_counting] {key} on {split}: F1 {metrics['f1']:.3f} "
                  f"(95% {_ci(metrics, 'f1')}; released rule {metrics['f1_released']:.3f}), "
                  f"MAE {metrics['mae']:.2f} ({_ci(metrics, 'mae')}), "
                  f"MedAE {metrics['medae']:.1f}, mean IoU {metrics['mean_iou']:.3f}")
            if key == FULL and per_field:
                # The field with the most cells shows splitting (or merging) of touching cells best.
                k = int(np.argmax([f.labels.max() for f in field_set.fields]))
                plot_detections(run, f"detections_{split}", field_set.fields[k], per_field[k].labels,
                                per_field[k].hungarian)
        record_paired(run, split, field_set.info, fields_of)


def record_paired(run: Run, split: str, info, fields_of: dict[str, list[FieldResult]]) -> dict:
    """Paired bootstrap differences (``COMPARED`` × ``COMPARED_METRICS``) on the same fields, under ``paired``.

    Args:
        info: the split's ``DataInfo``.
        fields_of: ``{model key: per_field}`` of ``evaluate_fields`` on ``split``.

    Returns:
        The recorded ``{<metric>_diff__<a>__vs__<b>: a − b, ..._ci_low, ..._ci_high}`` (empty when
        no compared pair was evaluated).

    Reference: Sec. 4.2-4.3 (weight maps, watershed), Sec. 5.1.
    """
    run.extra["bootstrap"] = stats.settings()
    paired = stats.compare({key: per_image(f) for key, f in fields_of.items()}, COMPARED, COMPARED_METRICS,
                           table1_statistic)
    if paired:
        run.add_metrics(stats.PAIRED, split, paired, info)
        for a, b in COMPARED:
            key = stats.paired_key("f1", a, b)
            if key in paired:
                print(f"[cell_counting] {split}: F1 {a} − {b} = {paired[key]:+.3f} (95% {_ci(paired, key)})")
    return paired


def _ci(metrics: dict, key: str) -> str:
    low, high = metrics.get(f"{key}_ci_low"), metrics.get(f"{key}_ci_high")
    return "n/a" if low is None or high is None else f"{low:.3f}..{high:.3f}"


def time_inference(model, cfg: CellCountingConfig) -> dict:
    """Median seconds per full-size field (tiled, at scale 1 as the paper) and ms per crop, after a warm-up.

    Reference: Sec. 5 (full-size 1200 x 1600 prediction; the paper gives no timing).
    """
    rng = np.random.default_rng(0)
    height, width = cfg.eval.timing_field
    crop = cfg.eval.timing_crop
    field = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    x = rng.random((1, crop, crop, 3), dtype=np.float32)
    repeats = cfg.eval.timing_repeats
    s_field = training.median_seconds(
        lambda: predict_heatmap(model, field, cfg, scale=1.0, tile=crop, overlap=crop // 8), repeats)
    s_crop = training.median_seconds(lambda: np.asarray(model(x, training=False)), repeats)
    return {"s_per_field": s_field, "ms_per_crop": 1000.0 * s_crop}


def plot_sweeps(run: Run, chosen: dict[str, thresholds.Threshold]) -> None:
    """``f1_vs_threshold.png``: the F1 curve of every key, c_resunet's best threshold marked (Fig. 8)."""
    from microrepro.common.figures import plot_curves

    curves = {key: (t.curve["thresholds"], t.curve["f1"]) for key, t in chosen.items()}
    best = chosen[FULL] if FULL in chosen else next(iter(chosen.values()))
    name = FULL if FULL in chosen else next(iter(chosen))
    plot_curves(curves, "threshold", "F1 (training fields)", "Threshold optimisation (Fig. 8)",
                run.figure_path("f1_vs_threshold"),
                mark=(best.value, best.metric_value, f"{name} best {best.value:.3f} (F1 {best.metric_value:.3f})"))


def plot_detections(run: Run, name: str, field: Field, labels: np.ndarray, match) -> None:
    """Detections (TP green, FP red) and ground-truth centroids of one field, at half size."""
    from microrepro.common.figures import draw_detections

    pred = post.measure_objects(labels)["centroids"]
    gt = post.measure_objects(field.labels)["centroids"]
    draw_detections(field.image, pred, gt, run.figure_path(name), matched=match, title=f"{field.id}", scale=0.5)
