"""Evaluation of the spine detectors: operating thresholds, Table 1's metrics, timing and figures.

A model's operating threshold is chosen or configured once and stored with the run
(``common.thresholds``: ``<run_dir>/thresholds.json``); the metrics, the figures and predict all
read it from there. Every rate and mAP@0.5 carries a 95 % bootstrap interval over the split's
images (``common.stats``: ``<metric>_ci_low`` / ``_ci_high``), and the README's orderings (YOLO vs
Faster R-CNN, SP-CNN with plain MSE vs with the prior) are paired bootstrap F1 differences on the
same images, stored under model ``paired`` (``record_paired``).

Reference: Table 1 (P / R / F1 at IoU >= 0.4 or 6 px, mAP@0.5, ms per image); Sec. 2, eq. (1).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from microrepro.common import stats, thresholds
from microrepro.common.runs import DataInfo, Run
from microrepro.reproductions.spines import data as data_lib
from microrepro.reproductions.spines import postprocess
from microrepro.reproductions.spines.models import ModelSpec

FIGURE_GRID = np.linspace(0.05, 0.95, 19)  # thresholds of the F1-vs-threshold figure
# The README's orderings, each (a, b) stored as a − b under model "paired" (``record_paired``).
COMPARED = (("yolov2", "faster_rcnn"), ("sp_cnn_mse", "sp_cnn"), ("sp_cnn_mse", "sp_cnn_hard"))
COMPARED_METRICS = ("f1", "f1_released")


def spread(samples: list, n: int) -> list:
    """``n`` of ``samples`` spread evenly over the list (all of them when ``n`` is 0 or larger)."""
    if n <= 0 or n >= len(samples):
        return list(samples)
    return [samples[i] for i in np.unique(np.linspace(0, len(samples) - 1, n).round().astype(int))]


def f1_sweep(detections: list, gt_boxes: list, grid, matching_cfg) -> dict[str, np.ndarray]:
    """Precision / recall / F1 of the paper's one-to-one rule at every score threshold of ``grid``.

    Args:
        detections: per image ``(boxes (N, 4) xyxy px, scores (N,))``.
        gt_boxes: per image ``(M, 4)`` ground-truth boxes px.
        grid: ``(T,)`` score thresholds.
        matching_cfg: ``cfg.matching`` (iou_threshold, max_dist).

    Returns:
        ``common.metrics.detection_sweep``'s dict: ``thresholds``, ``tp``, ``fp``, ``fn``,
        ``precision``, ``recall``, ``f1``, each ``(T,)``.

    Reference: Sec. 2, eq. (1) (IoU >= 0.4 or centre within 6 px, FP = #pred - TP).
    """
    from microrepro.common import matching
    from microrepro.common.metrics import detection_sweep

    def match(pred, gt):
        return matching.match_spines(pred, gt, iou_threshold=matching_cfg.iou_threshold, max_dist=matching_cfg.max_dist)

    return detection_sweep(match, [d[0] for d in detections], [d[1] for d in detections], gt_boxes, grid)


def operating_threshold(run_dir: Path, spec: ModelSpec, model, cfg, train_samples: list,
                        reuse: bool = False) -> thresholds.Threshold:
    """Choose (or configure) ``spec``'s score threshold and store it in ``run_dir/thresholds.json``.

    Rule ``fixed``: the section's configured threshold (``thresholds.fixed``). Rule ``train_f1``:
    the threshold of maximum F1 (ties: the lowest) on ``matching.threshold_images`` training
    images spread evenly over the split, never the evaluation split, on the grid
    ``0.05, 0.05 + matching.threshold_step, ..., 0.95``.

    Args:
        run_dir: the run folder.
        spec: the model's entry of ``models.SPECS``.
        model: the trained model.
        cfg: the run's config.
        train_samples: the run's training samples.
        reuse: keep a threshold already chosen by this rule for this run's weights (``evaluate``).

    Returns:
        The stored ``common.thresholds.Threshold``.

    Reference: the paper gives no threshold (Table 1); the rule is cell_counting Sec. 5.1's.
    """
    if spec.threshold_rule(cfg) == "fixed":
        chosen = thresholds.fixed(spec.configured_threshold(cfg))
        thresholds.save(run_dir, spec.name, chosen)
        return chosen
    stored = thresholds.read_all(run_dir).get(spec.name)
    if reuse and stored is not None and stored.rule == "max_f1_train":
        return stored
    m = cfg.matching
    samples = spread(train_samples, m.threshold_images)
    size, keep = spec.input_size(cfg)
    prepared = data_lib.prepare(samples, size, cfg.data.max_boxes, keep)
    grid = thresholds.grid(0.05, 0.95, m.threshold_step)
    sweep = f1_sweep(spec.detect(model, cfg, prepared), prepared.gt_boxes, grid, m)
    chosen = thresholds.choose(sweep, "f1", split="train", n_images=len(samples))
    thresholds.save(run_dir, spec.name, chosen)
    print(f"[spines] {spec.name}: score threshold {chosen.value:.3f} "
          f"(max F1 {chosen.metric_value:.3f} on {len(samples)} training images)")
    return chosen


def ms_per_image(spec: ModelSpec, model, cfg, prepared: data_lib.Prepared) -> float:
    """Median ms per image of the whole inference (network, decoding, NMS), one image at a time.

    ``timing_images`` images are run at batch 1, as the paper's per-image timing implies; the
    median of ``timing_repeats`` passes after one warm-up pass (``common.training.median_seconds``).

    Reference: Table 1 (ms/img).
    """
    from microrepro.common.training import median_seconds

    n = max(1, min(cfg.timing_images, len(prepared)))
    singles = [prepared.subset(i, i + 1) for i in range(n)]

    def one_pass():
        for single in singles:
            spec.detect(model, cfg, single)

    return 1000.0 * median_seconds(one_pass, cfg.timing_repeats, warmup=1) / n


def evaluate_model(run: Run, spec: ModelSpec, model, cfg, prepared: data_lib.Prepared, split: str, info: DataInfo,
                   threshold: thresholds.Threshold) -> dict:
    """Table 1's numbers of one model on ``split``, recorded into ``run``, and its predictions figure.

    Returns:
        ``{"detections": [(boxes, scores)] per image, "metrics": {...}, "per_image": {...}}``; the
        metrics are ``postprocess.evaluate_detections``' plus ``ms_per_image``, ``score_threshold``,
        for a threshold chosen on training images ``train_f1_at_threshold``, and the 95 % bootstrap
        interval over images (``<m>_ci_low`` / ``<m>_ci_high``) of the six rates and ``map50``
        (``postprocess.table1_intervals``); ``per_image`` holds the per-image counts
        (``postprocess.per_image_counts``) for ``record_paired``.
    """
    detections = spec.detect(model, cfg, prepared)
    m = cfg.matching
    per_image: dict = {}
    metrics = postprocess.evaluate_detections(
        detections, prepared.gt_boxes, threshold.value, m.iou_threshold, m.max_dist,
        m.map_iou_threshold, m.released_max_dist, m.released_score_threshold, per_image=per_image,
    )
    metrics.update(postprocess.table1_intervals(detections, prepared.gt_boxes, per_image, m.map_iou_threshold))
    run.extra["bootstrap"] = stats.settings()
    metrics["ms_per_image"] = ms_per_image(spec, model, cfg, prepared)
    metrics["score_threshold"] = threshold.value
    if threshold.rule != "fixed":
        metrics["train_f1_at_threshold"] = threshold.metric_value
    run.add_metrics(spec.name, split, metrics, info)
    predictions_figure(run, spec.name, detections, prepared, cfg, threshold.value)
    return {"detections": detections, "metrics": metrics, "per_image": per_image}


def record_paired(run: Run, split: str, info: DataInfo, per_image: dict[str, dict]) -> dict:
    """Paired bootstrap F1 differences of the detectors on the same images, under model ``paired``.

    Args:
        split: the evaluation split.
        info: its ``DataInfo``.
        per_image: ``{model: per-image counts}`` (``evaluate_model``'s ``per_image``), every model
            on the same images in the same order.

    Returns:
        The recorded ``{f1_diff__<a>__vs__<b>: a − b, ..._ci_low, ..._ci_high}`` (and the same for
        ``f1_released``) of each pair of ``COMPARED`` whose two models were evaluated (empty:
        nothing recorded). An ordering is claimed only where the interval excludes 0.

    Reference: Table 1 (YOLO against Faster R-CNN); Sec. 5 (SP-CNN with and without the prior).
    """
    run.extra["bootstrap"] = stats.settings()
    paired = stats.compare(per_image, COMPARED, COMPARED_METRICS, postprocess.rates_statistic)
    if paired:
        run.add_metrics(stats.PAIRED, split, paired, info)
    return paired


def predictions_figure(run: Run, name: str, detections: list, prepared: data_lib.Prepared, cfg,
                       threshold: float) -> None:
    """``figures/<name>_predictions.png``: the first images with TP green, FP red, missed spines blue."""
    from microrepro.common import matching
    from microrepro.common.figures import montage

    tiles, titles = [], []
    for i in range(min(cfg.n_figure_images, len(prepared))):
        boxes, scores = detections[i]
        kept = boxes[scores >= threshold]
        result = matching.match_spines(kept, prepared.gt_boxes[i], cfg.matching.iou_threshold, cfg.matching.max_dist)
        tiles.append(_overlay(prepared, i, kept, result))
        titles.append(f"{prepared.ids[i]}: TP {result.tp} FP {result.fp} FN {result.fn}")
    if tiles:
        montage(tiles, titles, run.figure_path(f"{name}_predictions"), ncols=3)


def threshold_figure(run: Run, curves: dict[str, dict], split: str) -> None:
    """``figures/f1_vs_threshold.png`` of every model ("(train)": the curve its threshold was chosen on)."""
    from microrepro.common.figures import plot_curves

    plot_curves(
        {k: (v["thresholds"], v["f1"]) for k, v in curves.items()}, "score threshold", "F1 (IoU>=0.4 or 6 px)",
        f"F1 vs score threshold ({split}; '(train)': training images)", run.figure_path("f1_vs_threshold"),
    )


def _overlay(prepared: data_lib.Prepared, i: int, boxes: np.ndarray, result) -> np.ndarray:
    """An RGB picture of image ``i`` (original size, x2) with TP green, FP red, missed spines blue."""
    import cv2

    h, w = prepared.shapes[i]
    grey = cv2.resize(prepared.images[i], (int(w), int(h)), interpolation=cv2.INTER_LINEAR)
    scale = 2
    canvas = cv2.resize(grey, (int(w) * scale, int(h) * scale), interpolation=cv2.INTER_NEAREST)
    canvas = cv2.cvtColor(canvas, cv2.COLOR_GRAY2RGB)
    tp_pred = set(result.pairs[:, 0].tolist()) if len(result.pairs) else set()
    tp_gt = set(result.pairs[:, 1].tolist()) if len(result.pairs) else set()

    def corners(b):
        return tuple(int(v * scale) for v in b[:2]), tuple(int(v * scale) for v in b[2:])

    for j, b in enumerate(prepared.gt_boxes[i]):
        cv2.rectangle(canvas, *corners(b), (0, 160, 0) if j in tp_gt else (40, 90, 255), 1)
    for j, b in enumerate(boxes):
        cv2.rectangle(canvas, *corners(b), (0, 255, 0) if j in tp_pred else (255, 0, 0), 2)
    return canvas
