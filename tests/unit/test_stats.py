"""Exact-value tests of common/stats.py (bootstrap over images) and the per-image counts of common/metrics.py."""

from __future__ import annotations

import math

import numpy as np
import pytest

from microrepro.common import stats
from microrepro.common.matching import MatchResult, aggregate
from microrepro.common.metrics import (
    class_mean_iou,
    pixel_counts,
    pixel_metrics,
    roc_curve,
    threshold_counts,
    threshold_sweep,
)
from microrepro.common.stats import Interval

DETECTIONS = {"tp": np.array([3, 0, 5, 2]), "fp": np.array([1, 2, 0, 1]), "fn": np.array([0, 1, 1, 2])}


def test_identical_images_give_a_zero_width_interval():
    same = {"tp": np.full(5, 2), "fp": np.full(5, 1), "fn": np.zeros(5, int)}
    intervals = stats.bootstrap(same, stats.detection_statistic)
    assert intervals == {"precision": Interval(2 / 3, 2 / 3), "recall": Interval(1.0, 1.0), "f1": Interval(0.8, 0.8)}


def test_two_images_span_their_own_values():
    # Resamples of 2 images: (a, a), (a, b), (b, b) with probability 1/4, 1/2, 1/4, so with 1000
    # resamples the 2.5th and 97.5th percentiles are the two images' own errors.
    intervals = stats.bootstrap({"pred": np.array([1, 3]), "gt": np.zeros(2)}, stats.counting_statistic)
    assert intervals["mae"] == Interval(1.0, 3.0) and intervals["mean_error"] == Interval(1.0, 3.0)
    assert intervals["medae"] == Interval(1.0, 3.0)


def test_fixed_seed_gives_the_stored_interval():
    intervals = stats.bootstrap(DETECTIONS, stats.detection_statistic, n_boot=1000, seed=0)
    assert intervals["precision"].low == pytest.approx(0.3, rel=1e-12)
    assert intervals["precision"].high == pytest.approx(17 / 18, rel=1e-12)
    assert intervals["recall"].low == pytest.approx(0.4, rel=1e-12) and intervals["recall"].high == pytest.approx(0.9)
    assert intervals["f1"].low == pytest.approx(0.375, rel=1e-12)
    assert intervals["f1"].high == pytest.approx(8 / 9, rel=1e-12)
    counts = stats.bootstrap({"pred": np.arange(8), "gt": np.zeros(8)}, stats.counting_statistic)
    assert counts == {"mae": Interval(2.0, 5.0), "medae": Interval(1.5, 6.0), "mean_error": Interval(2.0, 5.0)}
    assert stats.bootstrap(DETECTIONS, stats.detection_statistic) == intervals  # the defaults: 1000, seed 0


def test_the_level_sets_the_percentiles():
    values = {"x": np.arange(10, dtype=float)}
    wide = stats.bootstrap(values, stats.mean_statistic("x"), level=0.99)["x"]
    narrow = stats.bootstrap(values, stats.mean_statistic("x"), level=0.5)["x"]
    assert wide.low < narrow.low < 4.5 < narrow.high < wide.high
    with pytest.raises(ValueError, match="level"):
        stats.bootstrap(values, stats.mean_statistic("x"), level=1.0)


def test_fewer_than_two_images_give_nan_intervals():
    one = {key: value[:1] for key, value in DETECTIONS.items()}
    intervals = stats.bootstrap(one, stats.detection_statistic)
    assert set(intervals) == {"precision", "recall", "f1"}
    assert all(math.isnan(i.low) and math.isnan(i.high) for i in intervals.values())
    difference, interval = stats.paired_bootstrap(one, one, stats.detection_statistic, "f1")
    assert difference == 0.0 and math.isnan(interval.low) and not stats.excludes_zero(interval)


def test_undefined_values_are_left_out():
    # the statistic is undefined (NaN) on resamples without image 0: the interval uses the others
    def statistic(subset):
        return {"x": float(np.mean(subset["x"])) if 0 in subset["id"] else math.nan}

    per_image = {"id": np.arange(3), "x": np.zeros(3)}
    assert stats.bootstrap(per_image, statistic)["x"] == Interval(0.0, 0.0)
    assert math.isnan(stats.bootstrap(per_image, lambda s: {"x": None})["x"].low)


def test_paired_identical_models_differ_by_exactly_zero():
    difference, interval = stats.paired_bootstrap(DETECTIONS, dict(DETECTIONS), stats.detection_statistic, "f1")
    assert difference == 0.0 and interval == Interval(0.0, 0.0)
    assert not stats.excludes_zero(interval)


def test_paired_resampling_cancels_what_the_images_share():
    # b counts one cell fewer than a on every image; the images differ a lot. Unpaired intervals of
    # the two MAEs overlap widely, the paired difference is exactly -1 in every resample.
    gt = np.zeros(6)
    a = {"pred": np.array([1.0, 10, 20, 30, 40, 50]) + 1, "gt": gt}
    b = {"pred": np.array([1.0, 10, 20, 30, 40, 50]), "gt": gt}
    ia, ib = (stats.bootstrap(x, stats.counting_statistic)["mae"] for x in (a, b))
    assert ia.low < ib.high
    difference, interval = stats.paired_bootstrap(a, b, stats.counting_statistic, "mae")
    assert difference == pytest.approx(1.0) and interval.low == pytest.approx(1.0)
    assert interval.high == pytest.approx(1.0) and stats.excludes_zero(interval)
    assert stats.excludes_zero(Interval(-0.3, -0.1)) and not stats.excludes_zero(Interval(-0.1, 0.2))
    with pytest.raises(ValueError, match="same images"):
        stats.paired_bootstrap(a, {"pred": b["pred"][:3], "gt": gt[:3]}, stats.counting_statistic, "mae")
    with pytest.raises(KeyError, match="no 'f1'"):
        stats.paired_bootstrap(a, b, stats.counting_statistic, "f1")


def test_per_image_arrays_must_have_one_row_per_image():
    with pytest.raises(ValueError, match="number of images"):
        stats.bootstrap({"tp": np.ones(3), "fp": np.ones(2), "fn": np.ones(3)}, stats.detection_statistic)
    with pytest.raises(ValueError, match="n_boot"):
        stats.bootstrap(DETECTIONS, stats.detection_statistic, n_boot=0)


def test_statistics_on_all_images_are_the_point_estimates():
    results = [MatchResult(int(t), int(p), int(n), int(t + p), int(t + n))
               for t, p, n in zip(*DETECTIONS.values(), strict=True)]
    total = aggregate(results)
    assert stats.detection_statistic(DETECTIONS) == {"precision": total.precision, "recall": total.recall,
                                                     "f1": total.f1}

    rng = np.random.default_rng(3)
    probs = [rng.random((9, 7)), rng.random((5, 12)), rng.random((6, 6))]
    gts = [p + rng.normal(0, 0.3, p.shape) > 0.6 for p in probs]
    preds = [p >= 0.5 for p in probs]
    counts = pixel_counts(preds, gts)
    assert counts["tp"].shape == (3,) and counts["tp"].dtype == np.int64
    expected = pixel_metrics(preds, gts)
    assert stats.pixel_statistic(counts) == {k: expected[k] for k in stats.pixel_statistic(counts)}
    assert stats.class_mean_iou_statistic(counts) == {"mean_iou": class_mean_iou(preds, gts)}

    grid = np.linspace(0, 1, 11)
    per_image = threshold_counts(probs, gts, grid)
    sweep = threshold_sweep(probs, gts, grid)
    assert per_image["tp"].shape == (3, 11)
    for key in ("tp", "fp", "fn", "tn"):
        np.testing.assert_array_equal(per_image[key].sum(axis=0), sweep[key])
    values = stats.sweep_statistic({k: per_image[k] for k in ("tp", "fp", "fn", "tn")})
    assert values["auc"] == roc_curve(probs, gts, grid)[3]
    assert values["mcc_oracle"] == np.nanmax(sweep["mcc"])
    no_cells = {k: v[:, :1] * 0 if k in ("tp", "fn") else v[:, :1] for k, v in per_image.items() if k != "thresholds"}
    assert math.isnan(stats.sweep_statistic(no_cells)["auc"])

    assert stats.mean_statistic("iou")({"iou": np.array([0.5, 1.0])}) == {"iou": 0.75}
    assert stats.counting_statistic({"pred": np.array([2, 5]), "gt": np.array([3, 3])}) == {
        "mae": 1.5, "medae": 1.5, "mean_error": 0.5}


def test_storage_keys():
    assert stats.interval_keys({"f1": Interval(0.25, 0.5), "mae": Interval(math.nan, math.nan)}) == {
        "f1_ci_low": 0.25, "f1_ci_high": 0.5, "mae_ci_low": None, "mae_ci_high": None}
    assert stats.paired_key("f1", "a", "b") == "f1_diff__a__vs__b"
    assert stats.paired_keys("f1", "a", "b", 0.1, Interval(-0.05, 0.2)) == {
        "f1_diff__a__vs__b": 0.1, "f1_diff__a__vs__b_ci_low": -0.05, "f1_diff__a__vs__b_ci_high": 0.2}
    assert stats.settings() == {"n_boot": 1000, "level": 0.95, "unit": "image", "seed": 0}
    compared = stats.compare({"a": DETECTIONS, "b": DETECTIONS}, [("a", "b"), ("a", "missing")], ["f1", "recall"],
                             stats.detection_statistic)
    assert compared == {"f1_diff__a__vs__b": 0.0, "f1_diff__a__vs__b_ci_low": 0.0, "f1_diff__a__vs__b_ci_high": 0.0,
                        "recall_diff__a__vs__b": 0.0, "recall_diff__a__vs__b_ci_low": 0.0,
                        "recall_diff__a__vs__b_ci_high": 0.0}
    assert all(key.endswith(stats.CI_SUFFIXES) for key in stats.interval_keys({"x": Interval(0, 1)}))


def test_detection_row_pools_counts_and_carries_rate_intervals():
    def result(tp, fp, fn):
        return MatchResult(tp=tp, fp=fp, fn=fn, n_pred=tp + fp, n_gt=tp + fn)

    counts = stats.per_image_counts([result(3, 1, 0), result(1, 1, 2), result(2, 0, 1)])
    assert counts["tp"].tolist() == [3, 1, 2] and counts["tp"].dtype == np.int64
    row = stats.detection_row(counts)
    assert (row["tp"], row["fp"], row["fn"]) == (6, 2, 3)
    assert row["precision"] == pytest.approx(6 / 8) and row["recall"] == pytest.approx(6 / 9)
    for k in ("precision", "recall", "f1"):
        assert row[f"{k}_ci_low"] <= row[k] <= row[f"{k}_ci_high"]
    assert stats.ci_text(row, "f1").count("..") == 1 and stats.ci_text({}, "f1") == "n/a"
