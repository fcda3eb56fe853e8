"""Evaluation of the Table II detectors: 8 um matching, F1 sweeps, the operating threshold, size
terciles, seconds per HPF, the figures, and Fig. 4's F1 values.

A detection counts by its box centre (mitotic-figure class only); it is a true positive when
within ``eval.match_um`` (8 um) of a ground-truth centroid, one-to-one (``common.matching``),
counts summed over fields. The operating score threshold is the one of best F1 on training-slide
fields (``data.tune_fields``), chosen and stored with ``common.thresholds`` (``thresholds.json``);
``f1_oracle`` is the best F1 over the same grid on the test fields themselves.

Reference: MITOS-RCNN Sec. V-A (F1, eq. 3-5; TP = detection centre within 8 um of a ground-truth
centroid), Fig. 4 (confusion matrices), Sec. V-B.3 (seconds per HPF).
"""

from __future__ import annotations

import json

import numpy as np

from microrepro.common import matching, stats, thresholds
from microrepro.common.errors import ConfigError
from microrepro.common.metrics import detection_sweep
from microrepro.common.runs import DataInfo
from microrepro.reproductions.mitos_rcnn.detect import DEFAULT_PIXEL_SIZE_UM, FieldDetections

FIG4_MODEL = "fig4_confusion"
DETECTION_KEYS = ("precision", "recall", "f1")
TERCILE_KEYS = ("recall_small", "recall_medium", "recall_large")


# --------------------------------------------------------------------------------- Fig. 4
def confusion_f1(tp: int, fp: int, fn: int) -> float:
    """F1 = 2 TP / (2 TP + FP + FN) of a confusion matrix (eq. 3-5 combined).

    Examples (Fig. 4 of the paper): ``confusion_f1(72, 31, 28) = 144 / 203 = 0.70936``,
    ``confusion_f1(53, 58, 47) = 106 / 211 = 0.50237``, ``confusion_f1(96, 5, 4) = 192 / 201 =
    0.95522``.

    Raises:
        ValueError: negative counts, or all zero.

    Reference: MITOS-RCNN Sec. V-A, eq. (3)-(5).
    """
    if min(tp, fp, fn) < 0:
        raise ValueError(f"confusion counts must be >= 0, got tp={tp}, fp={fp}, fn={fn}")
    if 2 * tp + fp + fn == 0:
        raise ValueError("F1 of an empty confusion matrix is undefined")
    return 2.0 * tp / (2.0 * tp + fp + fn)


def fig4_metrics(published: dict) -> dict:
    """F1 of each Fig. 4 confusion matrix (counts read from published.yaml), keyed by position.

    Returns:
        ``{"f1_top": ..., "f1_middle": ..., "f1_bottom": ...}`` (Fig. 4 from top to bottom).

    Raises:
        ConfigError: published.yaml lacks ``fig4_confusion`` or a matrix lacks tp/fp/fn.

    Reference: MITOS-RCNN Fig. 4 and Table II.
    """
    matrices = published.get("fig4_confusion")
    if not matrices:
        raise ConfigError("published.yaml: no 'fig4_confusion' list of confusion matrices")
    out = {}
    for matrix in matrices:
        try:
            out[f"f1_{matrix['position']}"] = confusion_f1(int(matrix["tp"]), int(matrix["fp"]), int(matrix["fn"]))
        except KeyError as err:
            raise ConfigError(f"published.yaml: a fig4_confusion entry lacks {err}: {matrix}") from None
    return out


# ------------------------------------------------------------------------------- matching
def _pixel_size(field) -> float:
    return float(field.pixel_size_um or DEFAULT_PIXEL_SIZE_UM)


def match_field(detections: FieldDetections, field, threshold: float, match_um: float = 8.0) -> matching.MatchResult:
    """One-to-one match of mitosis detections (centres) to the field's centroids within ``match_um``.

    Reference: MITOS-RCNN Sec. V-A.
    """
    return matching.match_points(detections.mitoses(threshold), np.asarray(field.points).reshape(-1, 2), match_um,
                                 pixel_size_um=_pixel_size(field))


def aggregate_matches(detections: list[FieldDetections], fields: list, threshold: float,
                      match_um: float = 8.0) -> matching.MatchResult:
    """Counts summed over fields (micro-average, as the challenges score) at one threshold."""
    pairs = zip(detections, fields, strict=True)
    return matching.aggregate(match_field(d, f, threshold, match_um) for d, f in pairs)


def f1_sweep(detections: list[FieldDetections], fields: list, grid, match_um: float = 8.0) -> dict:
    """Micro-averaged precision / recall / F1 over fields at each score threshold of ``grid``.

    ``common.metrics.detection_sweep`` with the 8 um point matcher at each field's pixel size.

    Returns:
        ``{"thresholds", "tp", "fp", "fn", "precision", "recall", "f1"}`` numpy arrays ``(T,)``.

    Reference: MITOS-RCNN Sec. V-A.
    """

    def match(centres, truth):
        points, pixel_size_um = truth
        return matching.match_points(centres, points, match_um, pixel_size_um=pixel_size_um)

    truths = [(np.asarray(f.points).reshape(-1, 2), _pixel_size(f)) for f in fields]
    return detection_sweep(match, [d.mitoses() for d in detections], [d.mitotic_scores() for d in detections],
                           truths, grid)


def choose_threshold(detections: list[FieldDetections], fields: list, grid, match_um: float = 8.0
                     ) -> thresholds.Threshold:
    """The score threshold of best F1 on ``fields`` (ties: the lowest), with its sweep.

    The paper does not say how its operating point was chosen; ours is chosen on training-slide
    fields (``data.tune_fields``), never on a reported split.
    """
    sweep = f1_sweep(detections, fields, grid, match_um)
    return thresholds.choose(sweep, "f1", split="train", n_images=len(fields))


def size_tercile_recall(detections: list[FieldDetections], fields: list, threshold: float,
                        match_um: float = 8.0) -> dict:
    """Recall on the smallest, middle and largest third of the figures (by sqrt of box area).

    Needs ``field.boxes`` aligned with ``field.points`` (the synthetic generator's mask boxes);
    fields without boxes are skipped. Used for the ablation "does the cascade help small objects".

    Returns:
        ``{"recall_small", "recall_medium", "recall_large", "size_small_um", "size_large_um"}``
        (the size cut points in um), or {} when no field has sizes.

    Reference: MITOS-RCNN Sec. IV-B.1 (small-scale object detection, the reason for the cascade).
    """
    return _tercile_recall(*_field_sizes_hits(detections, fields, threshold, match_um))


def _field_sizes_hits(detections: list[FieldDetections], fields: list, threshold: float, match_um: float,
                      results: list | None = None) -> tuple[list, list]:
    """Per field with sizes: the figures' sizes (um) and whether each was matched (fields without boxes skipped)."""
    sizes, hits = [], []
    for i, (d, f) in enumerate(zip(detections, fields, strict=True)):
        boxes = np.asarray(f.boxes).reshape(-1, 4)
        if len(boxes) != len(np.asarray(f.points).reshape(-1, 2)) or not len(boxes):
            continue
        result = match_field(d, f, threshold, match_um) if results is None else results[i]
        areas = np.clip((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), 0, None)
        sizes.append(np.sqrt(areas) * _pixel_size(f))
        hits.append(result.matched_gt)
    return sizes, hits


def _tercile_recall(sizes: list, hits: list) -> dict:
    """``size_tercile_recall``'s values from per-field sizes and hits ({} without any field)."""
    if not sizes:
        return {}
    sizes, hits = np.concatenate(sizes), np.concatenate(hits)
    low, high = np.quantile(sizes, [1 / 3, 2 / 3])
    groups = {"recall_small": sizes <= low, "recall_medium": (sizes > low) & (sizes <= high),
              "recall_large": sizes > high}
    out = {name: float(hits[mask].mean()) if mask.any() else float("nan") for name, mask in groups.items()}
    out.update(size_small_um=float(low), size_large_um=float(high))
    return out


# ---------------------------------------------------------------------------- run metrics
def operating_threshold(run, key: str, model, cfg, tune: list, choose: bool) -> float:
    """``key``'s operating threshold: chosen on the ``tune`` fields and stored in the run's
    ``thresholds.json`` when ``choose`` or when none is stored yet, else the stored one.

    Reference: MITOS-RCNN Sec. V-A (F1 is the paper's metric; the rule is ours, README).
    """
    from microrepro.reproductions.mitos_rcnn.detect import detect_fields

    stored = None if choose else thresholds.read_all(run.run_dir).get(key)
    if stored is None:
        stored = choose_threshold(detect_fields(model, cfg, tune), tune, cfg.eval.thresholds, cfg.eval.match_um)
        thresholds.save(run.run_dir, key, stored)
        print(f"[mitos_rcnn] {key}: threshold {stored.value:g} ({stored.rule}, F1 {stored.metric_value:.3f} on "
              f"{stored.n_images} training-slide fields)")
    return stored.value


def field_intervals(results: list, sizes: list | None = None, hits: list | None = None) -> dict:
    """95 % bootstrap intervals over fields of precision / recall / F1 (and recall per size tercile).

    Args:
        results: per-field ``MatchResult`` s (``match_field``).
        sizes, hits: per field with sizes, ``_field_sizes_hits``' figure sizes and matched flags;
            each resample recomputes the tercile cut points and recalls from its fields' figures,
            as ``size_tercile_recall`` does from all of them.

    Returns:
        ``{f"{m}_ci_low", f"{m}_ci_high"}`` for ``DETECTION_KEYS`` (and ``TERCILE_KEYS`` with sizes).

    Reference: Efron & Tibshirani 1993, Ch. 13 (fields are the resampled unit).
    """
    out = stats.interval_keys(stats.bootstrap(per_field_counts(results), stats.detection_statistic))
    if sizes:
        def terciles(subset) -> dict:
            idx = subset["field"]
            values = _tercile_recall([sizes[i] for i in idx], [hits[i] for i in idx])
            return {k: values[k] for k in TERCILE_KEYS}

        intervals = stats.bootstrap({"field": np.arange(len(sizes))}, terciles)
        out.update(stats.interval_keys(intervals))
    return out


def per_field_counts(results: list) -> dict[str, np.ndarray]:
    """``{"tp", "fp", "fn"}``, each ``(F,)`` int64, of per-field ``MatchResult`` s."""
    return {k: np.array([getattr(r, k) for r in results], np.int64) for k in ("tp", "fp", "fn")}


def compared_pairs(models) -> tuple[tuple[str, str], ...]:
    """The pairs ``record_paired`` stores (a − b): MITOS-RCNN against each single-stage model, and
    every model against each baseline."""
    from microrepro.reproductions.mitos_rcnn.baselines import MODELS as BASELINES

    pairs = [("mitos_rcnn", "faster_rcnn_conv4"), ("mitos_rcnn", "faster_rcnn_conv5")]
    pairs += [(m, b) for m in models for b in BASELINES]
    return tuple(pairs)


def record_paired(run, split: str, info: DataInfo, per_field: dict[str, dict], models) -> dict:
    """Paired bootstrap F1 differences on the same fields of ``split``, under model ``paired``.

    Args:
        split: a test split (``real_bench``, ``synthetic_test``).
        info: its ``DataInfo``.
        per_field: ``{model: per-field tp/fp/fn}`` on ``split`` (``evaluate_model``'s ``per_field``;
            the baselines' on ``real_bench`` from ``baselines.evaluate_baselines``), every model on
            the same fields in the same order.
        models: the detectors trained in the run (``cfg.models``).

    Returns:
        The recorded ``{f1_diff__<a>__vs__<b>: a − b, ..._ci_low, ..._ci_high}`` of each pair of
        ``compared_pairs`` whose two models were evaluated on ``split`` (empty: nothing recorded). An
        ordering is claimed only where the interval excludes 0.

    Reference: MITOS-RCNN Table II (the cascade against conv4 / conv5); the baselines (README).
    """
    run.extra["bootstrap"] = stats.settings()
    paired = stats.compare(per_field, compared_pairs(models), ("f1",), stats.detection_statistic)
    if paired:
        run.add_metrics(stats.PAIRED, split, paired, info)
    return paired


def evaluate_model(run, key: str, model, cfg, tests: dict, threshold: float, per_field: dict | None = None) -> dict:
    """Metrics of ``model`` at ``threshold`` on every test split, recorded in ``run``; returns the sweeps.

    Args:
        run: the ``Run``.
        key: the model's name.
        model: the trained detector.
        cfg: ``MitosRCNNConfig``.
        tests: ``{split: (fields, DataInfo)}``.
        threshold: the operating score threshold.
        per_field: when given, ``per_field[split]`` is set to the per-field counts
            (``per_field_counts``) of each split, for ``record_paired``.

    Returns:
        ``{split: f1_sweep}`` on each test split (for ``f1_oracle`` and the figures).

    Precision / recall / F1 (and recall per size tercile) carry 95 % bootstrap intervals over the
    split's fields (``field_intervals``); ``f1_oracle`` none (a maximum over thresholds chosen on
    the test fields themselves).

    Reference: MITOS-RCNN Sec. V-A and Table II.
    """
    from microrepro.reproductions.mitos_rcnn.detect import detect_fields

    e = cfg.eval
    sweeps = {}
    for split, (test_fields, info) in tests.items():
        detections = detect_fields(model, cfg, test_fields)
        results = [match_field(d, f, threshold, e.match_um) for d, f in zip(detections, test_fields, strict=True)]
        total = matching.aggregate(results)  # = aggregate_matches(detections, test_fields, threshold, match_um)
        values = {"precision": total.precision, "recall": total.recall, "f1": total.f1, "tp": total.tp,
                  "fp": total.fp, "fn": total.fn, "threshold": threshold}
        sweep = f1_sweep(detections, test_fields, e.thresholds, e.match_um)
        values["f1_oracle"] = float(np.max(sweep["f1"]))  # best threshold chosen on the test fields themselves
        sizes, hits = _field_sizes_hits(detections, test_fields, threshold, e.match_um, results)
        values.update(_tercile_recall(sizes, hits))  # = size_tercile_recall(...)
        values.update(field_intervals(results, sizes, hits))
        run.extra["bootstrap"] = stats.settings()
        run.add_metrics(key, split, values, info)
        if per_field is not None:
            per_field[split] = per_field_counts(results)
        sweeps[split] = sweep
        print(f"[mitos_rcnn] {key} on {split}: P {total.precision:.3f} R {total.recall:.3f} F1 {total.f1:.3f} "
              f"(threshold {threshold})")
        if split == "real_bench" or (split == "synthetic_test" and "real_bench" not in tests):
            _overlays(run, key, detections, test_fields, threshold, cfg)
    return sweeps


def _overlays(run, key: str, detections, fields, threshold: float, cfg) -> None:
    """Overlays of the first ``eval.n_figure_fields`` test fields (TP / FP / FN) and their montage."""
    from microrepro.common.figures import draw_detections, montage
    from microrepro.common.imageio import read_image

    tiles, titles = [], []
    for i in range(min(cfg.eval.n_figure_fields, len(fields))):
        d, f = detections[i], fields[i]
        result = match_field(d, f, threshold, cfg.eval.match_um)
        path = run.run_dir / "overlays" / f"{key}_{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        draw_detections(f.image, d.mitoses(threshold), f.points, path, result, title=f"{key}: {f.id}")
        tiles.append(read_image(path))
        titles.append(f"TP {result.tp} FP {result.fp} FN {result.fn}")
    if tiles:
        montage(tiles, titles, run.figure_path(f"{key}_detections"), ncols=min(4, len(tiles)))


def time_hpf(run, key: str, model, cfg, kind: str, crops: list) -> None:
    """Seconds per full HPF (``eval.timing_field``, Aperio 1376x1539 by default), tiled, on this machine.

    Args:
        kind: "real" or "synthetic" (the row's data kind).
        crops: AMi-Br crops to tile the field from (real data), else a synthetic field is used.

    Reference: MITOS-RCNN Sec. V-B.3.
    """
    from microrepro.common.runs import device_name
    from microrepro.reproductions.mitos_rcnn.data import timing_field
    from microrepro.reproductions.mitos_rcnn.detect import overlap_px, seconds_per_field

    h, w = (int(v) for v in cfg.eval.timing_field)
    field, what = timing_field(h, w, crops if kind == "real" else [])
    overlap = overlap_px(cfg.data.tile_overlap_um, field.pixel_size_um)
    seconds = seconds_per_field(model, field.image, cfg.model.input_size, cfg.data.scale, overlap,
                                cfg.eval.timing_repeats)
    info = DataInfo(kind, what, 1, "", f"{h}x{w} px field, {device_name()}")
    run.add_metrics(key, "timing", {"s_per_hpf": seconds}, info)
    print(f"[mitos_rcnn] {key}: {seconds:.2f} s per {h}x{w} field")


def write_sweeps(run, sweeps: dict) -> None:
    """F1 against the score threshold per test split (figure ``f1_vs_threshold_<split>``) and the
    curves as ``f1_sweeps.json`` (``{model: {split: {metric: [...]}}}``; test splits only: the
    curve each operating threshold was chosen on is in ``thresholds.json``)."""
    from microrepro.common.figures import plot_curves

    for split in next(iter(sweeps.values()), {}):
        curves = {k: (s[split]["thresholds"], s[split]["f1"]) for k, s in sweeps.items()}
        plot_curves(curves, "score threshold", "F1 (8 um rule)", f"F1 vs score threshold ({split})",
                    run.figure_path(f"f1_vs_threshold_{split}"))
    data = {key: {split: {metric: np.asarray(values).tolist() for metric, values in sweep.items()}
                  for split, sweep in per_split.items()} for key, per_split in sweeps.items()}
    (run.run_dir / "f1_sweeps.json").write_text(json.dumps(data, indent=1))
