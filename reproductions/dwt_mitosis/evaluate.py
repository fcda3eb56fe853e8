"""Evaluation of dwt_mitosis: pixel metrics, label quality, detection at 8 µm, thresholds, timing, figures.

* phase 1: pixel precision / recall / F1 / IoU / MCC of the segmentation on synthetic test fields;
* labels: generated boxes against the manual (exact-mask) boxes, and point coverage
  (``labels.label_quality``);
* phase 2: a detection is correct when its box centre lies within ``eval.match_um`` (8 µm) of a
  weak label (ICPR 2014 rule, one-to-one matching); recall, precision, F1, TP / FP / FN at the
  operating threshold. The threshold is the score of best F1 on the validation images (ties: the
  lowest), chosen and stored once per detector with ``common.thresholds`` (``thresholds.json`` of
  the run), or ``rcnn.score_threshold`` when configured (``thresholds.fixed``).

Every rate above carries a 95 % bootstrap interval over images (``common.stats``:
``<metric>_ci_low`` / ``<metric>_ci_high``; raw totals such as tp / fp / fn and box counts do not).
Table 2's orderings (DWT-net vs U-Net labels, each vs manual labels) are paired bootstrap
differences of F1 on the same test images, stored under model ``paired`` (``record_paired``); on
AMi-Br so is every detector against the two baselines (``BASELINE_COMPARED``, ``baselines.py``).

Images are RGB uint8 ``(H, W, 3)``; boxes ``[x1, y1, x2, y2]`` px ``(N, 4)``; points ``[x, y]`` px.

Reference: dwt_mitosis Sec. 4.2 (evaluation criterion), Sec. 4.4–4.5 (Tables 1 and 2).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from microrepro.common import stats, thresholds
from microrepro.common.runs import Run
from microrepro.reproductions.dwt_mitosis import rcnn
from microrepro.reproductions.dwt_mitosis.config import DwtMitosisConfig
from microrepro.reproductions.dwt_mitosis.data import ImageSet
from microrepro.reproductions.dwt_mitosis.proposals import RegionSet
from microrepro.reproductions.dwt_mitosis.segmentation import SEG_MODELS, predict_prob

PIXEL_KEYS = ("precision", "recall", "f1", "iou", "mcc")
# label-quality rates with an interval (n_generated / n_manual are totals of the sample, not rates)
QUALITY_KEYS = ("box_iou_mean", "box_iou_median", "frac_iou_ge_0.5", "boxes_per_manual", "point_coverage")
# Table 2's orderings, each (a, b) stored as a − b under model "paired" (task.rcnn_model names).
COMPARED = (("rcnn_dwt_labels", "rcnn_unet_labels"), ("rcnn_dwt_labels", "rcnn_manual_labels"),
            ("rcnn_unet_labels", "rcnn_manual_labels"))
COMPARED_METRICS = ("f1",)
# each phase-2 detector against each baseline (``baselines``), recorded where the baselines were run (AMi-Br)
BASELINE_COMPARED = tuple((m, b) for m in ("rcnn_dwt_labels", "rcnn_unet_labels", "rcnn_square_labels",
                                           "faster_rcnn_phase2")
                          for b in ("baseline_log_blobs", "baseline_position"))


def match_detections(boxes_per_image, scores_per_image, image_set: ImageSet, threshold: float, match_um: float):
    """Box centres with score >= ``threshold`` matched one-to-one to the points within ``match_um``.

    Args:
        boxes_per_image: per image ``(N_i, 4)`` boxes px.
        scores_per_image: per image ``(N_i,)`` scores.
        image_set: the images' points and pixel sizes.
        threshold: score cut-off.
        match_um: matching radius in µm (Sec. 4.2: 8).

    Returns:
        ``(aggregated MatchResult, per-image MatchResults)``.

    Reference: dwt_mitosis Sec. 4.2.
    """
    from microrepro.common.matching import aggregate, match_points
    from microrepro.datasets.base import boxes_to_points

    results = []
    for boxes, scores, points, px in zip(boxes_per_image, scores_per_image, image_set.points, image_set.pixel_sizes,
                                         strict=True):
        kept = boxes[scores >= threshold]
        results.append(match_points(boxes_to_points(kept), points, match_um, pixel_size_um=px))
    return aggregate(results), results


def f1_sweep(boxes_per_image, scores_per_image, image_set: ImageSet, match_um: float) -> dict[str, np.ndarray]:
    """Precision / recall / F1 against the score threshold (``common.metrics.detection_sweep``).

    The candidate thresholds are the 101 percentiles of all scores (duplicates removed), so the
    sweep adapts to SVM margins and probabilities alike.
    """
    from microrepro.common.matching import match_points
    from microrepro.common.metrics import detection_sweep
    from microrepro.datasets.base import boxes_to_points

    scores = np.concatenate([np.asarray(s, np.float64) for s in scores_per_image])
    grid = np.unique(np.quantile(scores, np.linspace(0, 1, 101)))
    px = image_set.pixel_sizes[0]
    return detection_sweep(lambda p, g: match_points(p, g, match_um, pixel_size_um=px),
                           [boxes_to_points(b) for b in boxes_per_image], scores_per_image, image_set.points, grid)


def choose_threshold(boxes_per_image, scores_per_image, image_set: ImageSet, match_um: float,
                     split: str = "val") -> thresholds.Threshold:
    """The score of best F1 on ``image_set`` (ties: the lowest), with its curve (``common.thresholds``).

    With no detection at all the threshold is 0 (F1 0).
    """
    n_scores = sum(len(s) for s in scores_per_image)
    if not n_scores:
        return thresholds.Threshold(0.0, rule=f"max_f1_{split}", metric="f1", metric_value=0.0, split=split,
                                    n_images=len(image_set))
    sweep = f1_sweep(boxes_per_image, scores_per_image, image_set, match_um)
    return thresholds.choose(sweep, "f1", split=split, n_images=len(image_set))


def detect_set(extractor, head, image_set: ImageSet, regions: RegionSet, cfg: DwtMitosisConfig):
    """R-CNN detections (unthresholded) of every image of ``image_set`` from its precomputed regions."""
    boxes, scores = [], []
    for k, image in enumerate(image_set.images):
        idx = regions.of_image(k)
        b, s = rcnn.detect(extractor, head, regions.warps[idx], regions.boxes[idx], cfg.rcnn.nms_iou,
                           image.shape[0], image.shape[1])
        boxes.append(b)
        scores.append(s)
    return boxes, scores


def evaluate_seg(run: Run, cfg: DwtMitosisConfig, seg_models: dict, test: ImageSet) -> None:
    """Phase-1 pixel metrics (p(mitosis) >= ``seg.threshold``) of every network on ``test``, intervals over fields."""
    from microrepro.common.metrics import pixel_counts, pixel_metrics

    run.extra["bootstrap"] = stats.settings()
    split = "synthetic_test" if test.info.kind == "synthetic" else "own_test"  # real masks: your own (own_data.py)
    for kind, model in seg_models.items():
        probs = predict_prob(model, test.images, cfg)
        masks, truth = [p >= cfg.seg.threshold for p in probs], [m > 0 for m in test.masks]
        metrics = pixel_metrics(masks, truth)
        intervals = stats.bootstrap(pixel_counts(masks, truth), stats.pixel_statistic)
        values = {k: metrics[k] for k in PIXEL_KEYS} | stats.interval_keys({k: intervals[k] for k in PIXEL_KEYS})
        run.add_metrics(SEG_MODELS[kind], split, values, test.info)
        print(f"[dwt_mitosis] {SEG_MODELS[kind]} on {split}: pixel F1 {metrics['f1']:.3f}, "
              f"IoU {metrics['iou']:.3f}")


def record_label_quality(run: Run, domain: str, train: ImageSet, generated: dict, manual: list | None) -> None:
    """Generated boxes of each phase-1 net against the manual boxes (where masks exist) and the points.

    The rates (``QUALITY_KEYS``) get bootstrap intervals over the training images: each resample
    calls ``labels.label_quality`` on the resampled images' boxes and points.
    """
    from microrepro.reproductions.dwt_mitosis.labels import label_quality

    run.extra["bootstrap"] = stats.settings()
    for kind, labels in generated.items():
        boxes = [g.boxes for g in labels]
        truth = manual if manual is not None else [np.zeros((0, 4))] * len(boxes)
        keep = None if manual is not None else ("n_generated", "point_coverage")

        def quality_of(subset, boxes=boxes, truth=truth, keep=keep) -> dict:
            idx = subset["image"]
            values = label_quality([boxes[i] for i in idx], [truth[i] for i in idx], [train.points[i] for i in idx])
            return values if keep is None else {k: values[k] for k in keep}

        per_image = {"image": np.arange(len(boxes))}
        quality = quality_of(per_image)
        intervals = stats.bootstrap(per_image, quality_of)
        quality |= stats.interval_keys({k: intervals[k] for k in QUALITY_KEYS if k in intervals})
        run.add_metrics(f"{kind}_labels", f"{domain}_det_train", quality, train.info)
        print(f"[dwt_mitosis] {domain}: {kind} labels on {len(train)} training images: " +
              ", ".join(f"{k} {v:.3f}" for k, v in quality.items() if not k.endswith(stats.CI_SUFFIXES)))


def rcnn_threshold(run: Run, cfg: DwtMitosisConfig, detector, name: str, domain: str, val: ImageSet,
                   regions: RegionSet) -> float:
    """Choose (best F1 on ``val``) or fix (``rcnn.score_threshold``) the R-CNN's threshold and store it.

    Args:
        detector: ``(extractor, head)`` of ``rcnn.load_rcnn``.
        name: the detector's name in the run (``rcnn_dwt_labels_synthetic``): its key in ``thresholds.json``.
        regions: the proposals of ``val``.

    Returns:
        The stored threshold (an SVM margin).
    """
    if cfg.rcnn.score_threshold is not None:
        chosen = thresholds.fixed(cfg.rcnn.score_threshold)
    else:
        boxes, scores = detect_set(*detector, val, regions, cfg)
        chosen = choose_threshold(boxes, scores, val, cfg.eval.match_um, f"{domain}_det_val")
        print(f"[dwt_mitosis] {name}: score threshold {chosen.value:.3f} "
              f"(F1 {chosen.metric_value:.3f} on {len(val)} validation images)")
    thresholds.save(run.run_dir, name, chosen)
    return chosen.value


def evaluate_rcnn(run: Run, cfg: DwtMitosisConfig, detector, name: str, model: str, split: str, test: ImageSet,
                  regions: RegionSet, threshold: float) -> dict[str, np.ndarray]:
    """Detection metrics of the R-CNN ``name`` on ``test`` at ``threshold``, its timing and figure.

    ``ms_per_image``: the selective-search share (measured when ``regions`` were built) plus the
    median time of scoring one test image (``common.training.median_seconds``).

    Returns:
        The per-image ``tp``, ``fp``, ``fn`` ``(I,)`` (for ``record_paired``).
    """
    from microrepro.common.training import median_seconds

    extractor, head = detector
    boxes, scores = detect_set(extractor, head, test, regions, cfg)
    _, per_image = match_detections(boxes, scores, test, threshold, cfg.eval.match_um)
    counts = [len(regions.of_image(k)) for k in range(len(test))]
    k = int(np.argsort(counts, kind="stable")[len(counts) // 2])  # an image of median proposal count
    idx = regions.of_image(k)
    shape = test.images[k].shape
    scoring = median_seconds(lambda: rcnn.detect(extractor, head, regions.warps[idx], regions.boxes[idx],
                                                 cfg.rcnn.nms_iou, shape[0], shape[1]), cfg.eval.timing_repeats)
    ms = 1000.0 * (regions.seconds_proposals / max(len(test), 1) + scoring)
    counts = _record(run, model, split, test, per_image, threshold, ms)
    detections_figure(run, f"detections_{name}", test, boxes, scores, threshold, cfg)
    return counts


def faster_threshold(run: Run, cfg: DwtMitosisConfig, model, name: str, domain: str, val: ImageSet) -> float:
    """Choose the Faster R-CNN's threshold (best F1 on ``val``) and store it."""
    from microrepro.reproductions.dwt_mitosis.faster import faster_detect

    boxes, scores = faster_detect(model, val.images)
    chosen = choose_threshold(boxes, scores, val, cfg.eval.match_um, f"{domain}_det_val")
    thresholds.save(run.run_dir, name, chosen)
    return chosen.value


def evaluate_faster(run: Run, cfg: DwtMitosisConfig, model, domain: str, test: ImageSet,
                    threshold: float) -> dict[str, np.ndarray]:
    """Detection metrics of the phase-2 Faster R-CNN on ``test`` at ``threshold``, timing and figure.

    Returns:
        The per-image ``tp``, ``fp``, ``fn`` ``(I,)``.
    """
    from microrepro.common.training import median_seconds
    from microrepro.reproductions.dwt_mitosis.faster import FASTER, faster_detect

    boxes, scores = faster_detect(model, test.images)
    _, per_image = match_detections(boxes, scores, test, threshold, cfg.eval.match_um)
    one = np.stack(test.images[:1]).astype(np.float32) / 255.0
    ms = 1000.0 * median_seconds(lambda: model.predict_detections(one), cfg.eval.timing_repeats)
    counts = _record(run, FASTER, f"{domain}_{test.name}", test, per_image, threshold, ms)
    detections_figure(run, f"detections_{FASTER}_{domain}", test, boxes, scores, threshold, cfg)
    return counts


def _record(run: Run, model: str, split: str, test: ImageSet, per_image: list, threshold: float,
            ms: float) -> dict[str, np.ndarray]:
    """Record a detector's row (rates with bootstrap intervals over images); return its per-image counts."""
    counts = stats.per_image_counts(per_image)
    metrics = {**stats.detection_row(counts), "threshold": float(threshold), "ms_per_image": ms}
    run.extra["bootstrap"] = stats.settings()
    run.add_metrics(model, split, metrics, test.info)
    print(f"[dwt_mitosis] {model} on {split}: recall {metrics['recall']:.3f}, precision {metrics['precision']:.3f}, "
          f"F1 {metrics['f1']:.3f} (95% {stats.ci_text(metrics, 'f1')})")
    return counts


def record_paired(run: Run, split: str, info, per_image: dict[str, dict], pairs=COMPARED) -> dict:
    """Paired bootstrap differences of Table 2's detectors on the same test images, under model ``paired``.

    Args:
        split: the test split (``synthetic_test``, ``amibr_bench_test``).
        info: its ``DataInfo``.
        per_image: ``{model: per-image tp/fp/fn}`` as returned by ``evaluate_rcnn``.
        pairs: the ``(a, b)`` pairs compared (default Table 2's ``COMPARED``; ``BASELINE_COMPARED``
            for the detectors against the baselines); a pair with a model missing is skipped.

    Returns:
        The recorded ``{f1_diff__<a>__vs__<b>: a − b, ..._ci_low, ..._ci_high}`` for each pair of
        ``COMPARED`` whose two models were evaluated (empty: nothing recorded).

    Reference: dwt_mitosis Table 2 (labels of the DWT net, a plain U-Net and manual boxes).
    """
    run.extra["bootstrap"] = stats.settings()
    paired = stats.compare(per_image, pairs, COMPARED_METRICS, stats.detection_statistic)
    if paired:
        run.add_metrics(stats.PAIRED, split, paired, info)
    return paired


# ----------------------------------------------------------------------------------------------
# figures


def detections_figure(run: Run, name: str, test: ImageSet, boxes, scores, threshold: float,
                      cfg: DwtMitosisConfig) -> Path:
    """The test image with the most mitoses: kept boxes, points, matches at ``eval.match_um``.

    Reference: dwt_mitosis Fig. 5 (detected boxes and ground-truth points).
    """
    from microrepro.common.figures import draw_detections
    from microrepro.common.matching import match_points
    from microrepro.datasets.base import boxes_to_points

    k = int(np.argmax([len(p) for p in test.points]))
    kept = boxes[k][scores[k] >= threshold]
    matched = match_points(boxes_to_points(kept), test.points[k], cfg.eval.match_um,
                           pixel_size_um=test.pixel_sizes[k])
    return draw_detections(test.images[k], kept, test.points[k], run.figure_path(name), matched,
                           title=f"{name}: {test.ids[k]}")


def _draw_boxes(image: np.ndarray, box_sets: list[tuple[np.ndarray, tuple]], points: np.ndarray) -> np.ndarray:
    import cv2

    canvas = image.copy()
    for boxes, colour in box_sets:
        for x1, y1, x2, y2 in np.asarray(boxes).reshape(-1, 4):
            cv2.rectangle(canvas, (int(x1), int(y1)), (int(x2) - 1, int(y2) - 1), colour, 1)
    for x, y in np.asarray(points).reshape(-1, 2):
        cv2.drawMarker(canvas, (int(round(x)), int(round(y))), (255, 255, 0), cv2.MARKER_CROSS, 8, 1)
    return canvas


def labels_figure(run: Run, name: str, image_set: ImageSet, generated: dict, manual: list | None, n: int) -> Path:
    """Montage of generated boxes: DWT green, U-Net blue, manual white; weak labels yellow crosses.

    Reference: dwt_mitosis Fig. 3 (generated labels).
    """
    from microrepro.common.figures import montage

    colours = {"dwt": (0, 200, 0), "unet": (40, 90, 255)}
    tiles, titles = [], []
    for k in range(min(n, len(image_set))):
        sets = [(generated[s][k].boxes, colours[s]) for s in generated]
        if manual is not None:
            sets.append((manual[k], (255, 255, 255)))
        tiles.append(_draw_boxes(image_set.images[k], sets, image_set.points[k]))
        titles.append(f"{image_set.ids[k]}")
    legend = "green DWT net, blue U-Net" + (", white manual" if manual is not None else "") + "; + weak label"
    titles = [f"{t}\n{legend}" if i == 0 else t for i, t in enumerate(titles)]
    return montage(tiles, titles, run.figure_path(name), ncols=4)
