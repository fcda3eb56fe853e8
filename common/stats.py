"""Bootstrap intervals over images: how far a reproduced number would move with other test images.

A paper's metric is a function of per-image data (matching counts, count errors, pixel confusion
counts). ``bootstrap`` resamples the IMAGES with replacement ``n_boot`` times, recomputes the
metric from each resample exactly as the paper computes it from all images (counts summed over
the resampled images, then precision / recall / F1: a micro-average), and reports the
percentile interval (2.5 / 97.5 % for ``level`` 0.95). ``paired_bootstrap`` resamples the SAME
image indices for two models evaluated on the same images, so an ordering ("A beats B") is
claimed only where the interval of the difference A − B excludes 0 (``excludes_zero``).

Storage convention of a run (rendered by ``common.results``):

- beside each metric ``m`` of ``run.add_metrics(model, split, ...)``: ``m_ci_low``, ``m_ci_high``
  (``interval_keys``; an undefined bound is stored as None);
- paired differences under model ``"paired"`` (``PAIRED``) and the evaluation split:
  ``<metric>_diff__<model_a>__vs__<model_b>`` (= a − b) with its ``_ci_low`` / ``_ci_high``
  (``paired_keys``, ``compare``);
- ``run.extra["bootstrap"] = settings()``: ``{"n_boot", "level", "unit": "image", "seed"}``.

Pure numpy; the statistics reuse ``common.metrics``' formulas, so the value of a statistic on all
images equals the point estimate the paper's evaluation reports.

Reference: Efron & Tibshirani 1993, *An Introduction to the Bootstrap*, Ch. 13 (percentile
interval) and Sec. 6.9 / 14 (resampling the independent units: here images).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from microrepro.common.metrics import _class_mean_iou_from_counts, _pixel_metrics_from_counts, _roc_from_counts, prf

N_BOOT, LEVEL, SEED = 1000, 0.95, 0
PAIRED = "paired"  # the model name under which paired differences are stored
CI_SUFFIXES = ("_ci_low", "_ci_high")

PerImage = Mapping[str, np.ndarray]
Statistic = Callable[[PerImage], Mapping[str, float]]


@dataclass(frozen=True)
class Interval:
    """A percentile interval ``[low, high]``; NaN bounds when undefined (fewer than 2 images)."""

    low: float
    high: float


NAN_INTERVAL = Interval(math.nan, math.nan)


def excludes_zero(interval: Interval) -> bool:
    """True when the interval is defined and lies strictly above or strictly below 0."""
    return bool(interval.low > 0 or interval.high < 0)  # NaN compares False


# --------------------------------------------------------------------------------------------
# resampling


def _n_images(per_image: PerImage) -> int:
    """The common length of axis 0 of every array of ``per_image`` (one row per image)."""
    lengths = {key: len(np.asarray(value)) for key, value in per_image.items()}
    if not lengths:
        raise ValueError("per_image holds no array")
    if len(set(lengths.values())) != 1:
        raise ValueError(f"per_image arrays differ in their number of images: {lengths}")
    return next(iter(lengths.values()))


def _indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    """``(n_boot, n)`` image indices drawn with replacement (the same for a given n, n_boot, seed)."""
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def _replicates(per_image: PerImage, statistic: Statistic, indices: np.ndarray, keys) -> dict[str, np.ndarray]:
    """``{key: (n_boot,)}`` values of ``statistic`` on each resample (NaN where a key is missing)."""
    arrays = {key: np.asarray(value) for key, value in per_image.items()}
    out = {key: np.full(len(indices), np.nan) for key in keys}
    for b, idx in enumerate(indices):
        values = statistic({key: value[idx] for key, value in arrays.items()})
        for key in out:
            value = values.get(key)
            out[key][b] = np.nan if value is None else float(value)
    return out


def _percentiles(values: np.ndarray, level: float) -> Interval:
    """Percentile interval of ``values`` at ``level``, NaN values ignored (all NaN -> NaN interval)."""
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    if np.all(np.isnan(values)):
        return NAN_INTERVAL
    tail = 100.0 * (1.0 - level) / 2.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        low, high = np.nanpercentile(values, [tail, 100.0 - tail])
    return Interval(float(low), float(high))


def bootstrap(per_image: PerImage, statistic: Statistic, n_boot: int = N_BOOT, seed: int = SEED,
              level: float = LEVEL) -> dict[str, Interval]:
    """Percentile bootstrap interval of every value of ``statistic``, resampling images.

    Args:
        per_image: ``{name: (I, ...) array}``, one row per image (e.g. ``tp``, ``fp``, ``fn`` of
            each image; predicted and true counts; pixel confusion counts).
        statistic: ``fn(subset) -> {metric: value}``; ``subset`` has the same keys with the rows
            of the resampled images (repeats included). Called once on all images to learn the
            metric names, then ``n_boot`` times.
        n_boot: number of resamples.
        seed: seed of the resampling (``np.random.default_rng``).
        level: coverage of the interval (0.95: the 2.5th and 97.5th percentiles).

    Returns:
        ``{metric: Interval}``; a resample where a metric is undefined (NaN or None) is left out;
        NaN intervals when there are fewer than 2 images.

    Reference: Efron & Tibshirani 1993, Ch. 13 (percentile interval).
    """
    n = _n_images(per_image)
    keys = list(statistic(per_image))
    if n < 2:
        return {key: NAN_INTERVAL for key in keys}
    values = _replicates(per_image, statistic, _indices(n, n_boot, seed), keys)
    return {key: _percentiles(values[key], level) for key in keys}


def paired_bootstrap(per_image_a: PerImage, per_image_b: PerImage, statistic: Statistic, key: str,
                     n_boot: int = N_BOOT, seed: int = SEED, level: float = LEVEL) -> tuple[float, Interval]:
    """Difference ``statistic_a[key] − statistic_b[key]`` of two models on the same images, with its interval.

    Each resample draws one set of image indices and applies it to BOTH models, so what the two
    models share (an easy or a hard image) cancels in the difference.

    Args:
        per_image_a, per_image_b: per-image data of models a and b, row i = the same image i.
        statistic: as in ``bootstrap``.
        key: the metric compared.
        n_boot, seed, level: as in ``bootstrap``.

    Returns:
        ``(difference on all images, Interval)``; a NaN interval with fewer than 2 images.

    Reference: Efron & Tibshirani 1993, Sec. 13 (percentile interval of a paired difference).
    """
    n = _n_images(per_image_a)
    if _n_images(per_image_b) != n:
        raise ValueError(f"paired models must be evaluated on the same images: {n} vs {_n_images(per_image_b)}")
    difference = _value(statistic(per_image_a), key) - _value(statistic(per_image_b), key)
    if n < 2:
        return difference, NAN_INTERVAL
    indices = _indices(n, n_boot, seed)
    a = _replicates(per_image_a, statistic, indices, [key])[key]
    b = _replicates(per_image_b, statistic, indices, [key])[key]
    return difference, _percentiles(a - b, level)


def _value(values: Mapping[str, float], key: str) -> float:
    if key not in values:
        raise KeyError(f"the statistic gives no {key!r}; it gives {sorted(values)}")
    return math.nan if values[key] is None else float(values[key])


# --------------------------------------------------------------------------------------------
# ready-made statistics (``common.metrics`` formulas)


def _sum(per_image: PerImage, key: str, axis: int = 0) -> np.ndarray:
    return np.asarray(per_image[key], np.int64).sum(axis=axis)


def detection_statistic(per_image: PerImage) -> dict[str, float]:
    """Precision / recall / F1 of counts summed over images (``metrics.prf``, micro-average).

    Args:
        per_image: ``tp``, ``fp``, ``fn``, each ``(I,)``.

    Returns:
        ``{"precision", "recall", "f1"}``.
    """
    precision, recall, f1 = prf(*(_sum(per_image, k) for k in ("tp", "fp", "fn")))
    return {"precision": float(precision), "recall": float(recall), "f1": float(f1)}


def per_image_counts(results) -> dict[str, np.ndarray]:
    """``{"tp", "fp", "fn"}`` ``(I,)`` int64 from one match result per image (``common.matching``)."""
    results = list(results)
    return {k: np.array([getattr(r, k) for r in results], np.int64) for k in ("tp", "fp", "fn")}


def detection_row(counts: PerImage) -> dict[str, float | int | None]:
    """A detector's recorded row from its per-image ``tp``/``fp``/``fn``: pooled ``precision``,
    ``recall``, ``f1``, totals ``tp``/``fp``/``fn``, and ``<rate>_ci_low``/``_ci_high`` of each rate
    (``bootstrap`` over images with ``detection_statistic``).
    """
    point = detection_statistic(counts)
    totals = {k: int(_sum(counts, k)) for k in ("tp", "fp", "fn")}
    return {**point, **totals, **interval_keys(bootstrap(counts, detection_statistic))}


def ci_text(values: Mapping[str, float | None], metric: str) -> str:
    """``0.700..0.800`` (the stored 95 % interval of ``metric``), ``n/a`` when undefined or absent."""
    low, high = values.get(f"{metric}_ci_low"), values.get(f"{metric}_ci_high")
    return "n/a" if low is None or high is None else f"{low:.3f}..{high:.3f}"


def counting_statistic(per_image: PerImage) -> dict[str, float]:
    """MAE, MedAE and signed mean error of per-image counts (``metrics.count_errors``).

    Args:
        per_image: ``pred``, ``gt``, each ``(I,)`` object counts.

    Returns:
        ``{"mae", "medae", "mean_error"}``; NaN for no image.
    """
    error = np.asarray(per_image["pred"], np.float64) - np.asarray(per_image["gt"], np.float64)
    if error.size == 0:
        return {"mae": math.nan, "medae": math.nan, "mean_error": math.nan}
    return {"mae": float(np.mean(np.abs(error))), "medae": float(np.median(np.abs(error))),
            "mean_error": float(np.mean(error))}


def pixel_statistic(per_image: PerImage) -> dict[str, float]:
    """Pixel metrics of confusion counts summed over images (``metrics.pixel_metrics``).

    Args:
        per_image: ``tp``, ``fp``, ``fn``, ``tn``, each ``(I,)`` (``metrics.pixel_counts``).

    Returns:
        ``{"specificity", "precision", "recall", "accuracy", "f1", "mcc", "iou"}``.
    """
    values = _pixel_metrics_from_counts(*(_sum(per_image, k) for k in ("tp", "fp", "fn", "tn")))
    return {key: float(value) for key, value in values.items()}


def class_mean_iou_statistic(per_image: PerImage) -> dict[str, float]:
    """Two-class mean IoU of pixel counts summed over images (``metrics.class_mean_iou``).

    Args:
        per_image: ``tp``, ``fp``, ``fn``, ``tn``, each ``(I,)``.

    Returns:
        ``{"mean_iou"}``.
    """
    return {"mean_iou": _class_mean_iou_from_counts(*(_sum(per_image, k) for k in ("tp", "fp", "fn", "tn")))}


def sweep_statistic(per_image: PerImage) -> dict[str, float]:
    """ROC AUC and best MCC over thresholds of per-image counts summed over images.

    Args:
        per_image: ``tp``, ``fp``, ``fn``, ``tn``, each ``(I, T)`` at ascending thresholds
            (``metrics.threshold_counts``).

    Returns:
        ``{"auc", "mcc_oracle"}`` as ``metrics.roc_curve`` and the maximum of ``threshold_sweep``'s
        MCC give them; ``auc`` is NaN without a positive or a negative pixel.
    """
    tp, fp, fn, tn = (_sum(per_image, k) for k in ("tp", "fp", "fn", "tn"))
    try:
        auc = _roc_from_counts(tp, fp, fn, tn)[2]
    except ValueError:
        auc = math.nan
    mcc = _pixel_metrics_from_counts(tp, fp, fn, tn)["mcc"]
    return {"auc": auc, "mcc_oracle": float(np.nanmax(mcc)) if np.any(np.isfinite(mcc)) else math.nan}


def mean_statistic(*keys: str) -> Statistic:
    """A statistic giving the mean over images of each of ``keys`` (per-image values ``(I,)``)."""

    def statistic(per_image: PerImage) -> dict[str, float]:
        return {key: float(np.mean(per_image[key])) if len(per_image[key]) else math.nan for key in keys}

    return statistic


# --------------------------------------------------------------------------------------------
# storage


def settings(n_boot: int = N_BOOT, level: float = LEVEL, seed: int = SEED) -> dict:
    """What ``run.extra["bootstrap"]`` records: resamples, coverage, the resampled unit, seed."""
    return {"n_boot": int(n_boot), "level": float(level), "unit": "image", "seed": int(seed)}


def _bound(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def interval_keys(intervals: Mapping[str, Interval]) -> dict[str, float | None]:
    """``{f"{m}_ci_low": low, f"{m}_ci_high": high}`` for every metric (None for an undefined bound)."""
    out = {}
    for metric, interval in intervals.items():
        out[f"{metric}_ci_low"] = _bound(interval.low)
        out[f"{metric}_ci_high"] = _bound(interval.high)
    return out


def paired_key(metric: str, model_a: str, model_b: str) -> str:
    """``<metric>_diff__<model_a>__vs__<model_b>``: the stored name of a − b."""
    return f"{metric}_diff__{model_a}__vs__{model_b}"


def paired_keys(metric: str, model_a: str, model_b: str, difference: float,
                interval: Interval) -> dict[str, float | None]:
    """The difference and its interval under ``paired_key`` and its ``_ci_low`` / ``_ci_high``."""
    key = paired_key(metric, model_a, model_b)
    return {key: _bound(difference), **interval_keys({key: interval})}


def compare(per_image: Mapping[str, PerImage], pairs: Sequence[tuple[str, str]], metrics: Sequence[str],
            statistic: Statistic, n_boot: int = N_BOOT, seed: int = SEED, level: float = LEVEL) -> dict:
    """Paired differences of several model pairs and metrics, as stored under model ``PAIRED``.

    Args:
        per_image: ``{model: per-image data}``, every model on the same images.
        pairs: ``(model_a, model_b)`` pairs; a pair with a model missing from ``per_image`` is skipped.
        metrics: the metrics of ``statistic`` compared.
        statistic, n_boot, seed, level: as in ``paired_bootstrap``.

    Returns:
        ``{paired_key: a − b, ..._ci_low, ..._ci_high}`` for every pair and metric.
    """
    out = {}
    for a, b in pairs:
        if a not in per_image or b not in per_image:
            continue
        for metric in metrics:
            difference, interval = paired_bootstrap(per_image[a], per_image[b], statistic, metric, n_boot, seed,
                                                    level)
            out.update(paired_keys(metric, a, b, difference, interval))
    return out
