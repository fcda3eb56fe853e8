"""Known-answer tests of common/matching.py: every expected count was worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from microrepro.common.errors import ConfigError
from microrepro.common.matching import (
    MATCHERS,
    MatchResult,
    aggregate,
    box_centres,
    box_iou,
    get_matcher,
    match_boxes,
    match_points,
    match_points_released_cell_counting,
    match_spines,
    match_spines_released,
    object_centres,
)


def square(cx: float, cy: float, side: float = 15.0) -> list[float]:
    """A side×side box centred on (cx, cy), xyxy."""
    return [cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2]


def counts(result: MatchResult) -> tuple[int, int, int]:
    return result.tp, result.fp, result.fn


# ------------------------------------------------------------------------------------ points
def test_duplicate_prediction_is_one_tp_and_one_fp():
    result = match_points([[10, 11], [11, 10]], [[10, 10]], max_dist=3)
    assert counts(result) == (1, 1, 0)
    assert result.precision == 0.5
    assert result.recall == 1.0
    assert result.f1 == pytest.approx(2 / 3, abs=1e-12)
    assert result.pairs.tolist() == [[0, 0]]
    assert result.pair_values.tolist() == [1.0]


def test_hungarian_and_greedy_differ():
    # gt at x=0 and x=10; preds at x=6 (4 from gt1, 6 from gt0) and x=15 (5 from gt1, 15 from gt0).
    # Greedy takes the globally closest pair pred0-gt1 (4) first, leaving pred1 with nothing;
    # Hungarian pairs pred0-gt0 (6) and pred1-gt1 (5).
    pred, gt = [[6, 0], [15, 0]], [[0, 0], [10, 0]]
    hungarian = match_points(pred, gt, max_dist=6)
    greedy = match_points(pred, gt, max_dist=6, method="greedy")
    assert counts(hungarian) == (2, 0, 0)
    assert hungarian.pairs.tolist() == [[0, 0], [1, 1]]
    assert hungarian.pair_values.tolist() == [6.0, 5.0]
    assert counts(greedy) == (1, 1, 1)
    assert greedy.pairs.tolist() == [[0, 1]]


def test_hungarian_never_forces_pairs_beyond_the_threshold():
    result = match_points([[0, 0], [1, 0]], [[100, 0], [1, 1]], max_dist=5)
    assert counts(result) == (1, 1, 1)
    assert result.pairs.tolist() == [[1, 1]]


def test_hungarian_minimises_total_distance_among_maximal_matchings():
    result = match_points([[1, 0], [9, 0]], [[0, 0], [10, 0]], max_dist=20)
    assert result.pairs.tolist() == [[0, 0], [1, 1]]
    assert result.pair_values.tolist() == [1.0, 1.0]


def test_micrometre_threshold_is_converted_with_the_pixel_size():
    # 2 µm at 0.25 µm/px = 8 px: 7.9 px matches, 8.1 px does not
    result = match_points([[7.9, 0], [108.1, 0]], [[0, 0], [100, 0]], 2.0, pixel_size_um=0.25)
    assert counts(result) == (1, 1, 1)
    assert result.pairs.tolist() == [[0, 0]]
    # mitosis criterion: 8 µm at 0.2455 µm/px = 32.587 px
    near = match_points([[32.5, 0]], [[0, 0]], 8.0, pixel_size_um=0.2455)
    far = match_points([[32.7, 0]], [[0, 0]], 8.0, pixel_size_um=0.2455)
    assert (near.tp, far.tp) == (1, 0)


def test_inclusive_controls_a_pair_at_exactly_the_threshold():
    assert match_points([[3, 4]], [[0, 0]], 5).tp == 1  # distance exactly 5
    assert match_points([[3, 4]], [[0, 0]], 5, inclusive=False).tp == 0


@pytest.mark.parametrize(
    "pred, gt, expected",
    [
        ([], [], (0, 0, 0, 1.0, 1.0, 1.0)),
        ([], [[1, 1], [5, 5]], (0, 0, 2, 0.0, 0.0, 0.0)),
        ([[1, 1]], [], (0, 1, 0, 0.0, 0.0, 0.0)),
    ],
    ids=["both-empty", "no-predictions", "no-ground-truth"],
)
def test_empty_cases_follow_the_documented_convention(pred, gt, expected):
    for method in ("hungarian", "greedy"):
        result = match_points(pred, gt, 5, method=method)
        assert (*counts(result), result.precision, result.recall, result.f1) == expected
        assert result.pairs.shape == (0, 2)


def test_bad_points_raise_value_error():
    with pytest.raises(ValueError, match=r"shape \(N, 2\)"):
        match_points([[1, 2, 3]], [[0, 0]], 5)
    with pytest.raises(ValueError, match="NaN"):
        match_points([[np.nan, 0]], [[0, 0]], 5)
    with pytest.raises(ValueError, match="pixel_size_um"):
        match_points([[0, 0]], [[0, 0]], 5, pixel_size_um=0)
    with pytest.raises(ValueError, match="method"):
        match_points([[0, 0]], [[0, 0]], 5, method="nearest")


# ---------------------------------------------------------------------- cell_counting released
def test_released_cell_counting_rule_is_sequential_and_strict():
    # gt at 0 and 40; pred0 at 35 (5 from gt1, 35 from gt0), pred1 at 80 (40 from gt1, 80 from gt0).
    pred, gt = [[35, 0], [80, 0]], [[0, 0], [40, 0]]
    by_pred = match_points_released_cell_counting(pred, gt, 50)
    assert counts(by_pred) == (1, 1, 1)  # pred0 takes gt1 first, pred1 is left with nothing
    assert by_pred.pairs.tolist() == [[0, 1]]
    by_gt = match_points_released_cell_counting(pred, gt, 50, order="gt")
    assert counts(by_gt) == (2, 0, 0)  # gt0 takes pred0 (35), gt1 takes pred1 (40)
    assert by_gt.pairs.tolist() == [[0, 0], [1, 1]]
    assert counts(match_points(pred, gt, 50, inclusive=False)) == (2, 0, 0)
    # strict: exactly 50 px is not a match
    assert match_points_released_cell_counting([[30, 40]], [[0, 0]], 50).tp == 0
    # ties go to the lowest gt index, as the released loop with `dist < min_dist`
    tie = match_points_released_cell_counting([[5, 0]], [[0, 0], [10, 0]], 50)
    assert tie.pairs.tolist() == [[0, 0]]


# ------------------------------------------------------------------------------------- boxes
def test_box_iou_exact_values():
    iou = box_iou([[0, 0, 10, 10]], [[5, 0, 15, 10], [0, 0, 10, 10], [20, 20, 30, 30], [2, 2, 2, 8]])
    assert iou.shape == (1, 4)
    np.testing.assert_allclose(iou[0], [1 / 3, 1.0, 0.0, 0.0], atol=1e-15)
    assert box_iou(np.zeros((0, 4)), [[0, 0, 1, 1]]).shape == (0, 1)
    with pytest.raises(ValueError, match="x2 >= x1"):
        box_iou([[10, 0, 0, 10]], [[0, 0, 1, 1]])


def test_box_centres():
    np.testing.assert_array_equal(box_centres([[0, 0, 10, 4], [2, 2, 3, 3]]), [[5, 2], [2.5, 2.5]])


def test_greedy_box_matching_by_score_differs_from_hungarian():
    gt = [[0, 0, 10, 10], [6, 0, 16, 10]]
    # pred0: IoU 65/135 = 0.481 with gt0, 75/125 = 0.6 with gt1; pred1: IoU 80/120 = 0.667 with gt1
    pred = [[3.5, 0, 13.5, 10], [8, 0, 18, 10]]
    greedy = match_boxes(pred, gt, 0.4, scores=[0.9, 0.8], method="greedy")
    assert counts(greedy) == (1, 1, 1)  # pred0 (higher score) takes gt1, pred1 finds nothing
    assert greedy.pairs.tolist() == [[0, 1]]
    assert greedy.pair_values[0] == pytest.approx(0.6, abs=1e-12)
    hungarian = match_boxes(pred, gt, 0.4)
    assert counts(hungarian) == (2, 0, 0)
    np.testing.assert_allclose(hungarian.pair_values, [65 / 135, 80 / 120], atol=1e-12)
    # with the scores swapped, greedy visits pred1 first and both match
    assert match_boxes(pred, gt, 0.4, scores=[0.1, 0.8], method="greedy").tp == 2


def test_box_threshold_is_inclusive():
    assert match_boxes([[5, 0, 15, 10]], [[0, 0, 10, 10]], 1 / 3).tp == 1
    assert match_boxes([[5, 0, 15, 10]], [[0, 0, 10, 10]], 0.34).tp == 0


# ------------------------------------------------------------------------------------ spines
def test_spines_released_rule_absorbs_duplicates_unlike_the_paper_rule():
    gt = [square(20, 20), square(60, 60)]
    # two predictions on spine 0 (corner distances 0 and sqrt(5)), none on spine 1
    pred = [square(20, 20), square(22, 21)]
    released = match_spines_released(pred, gt)
    assert counts(released) == (2, 0, 0)  # both count as TP; FN = 2 − 2 although spine 1 is missed
    assert released.pairs.tolist() == [[0, 0], [1, 0]]
    np.testing.assert_allclose(released.pair_values, [0.0, np.sqrt(5)])
    paper = match_spines(pred, gt)
    assert counts(paper) == (1, 1, 1)
    # the released FN goes negative when duplicates outnumber the spines
    assert counts(match_spines_released(pred, gt[:1])) == (2, 0, -1)
    assert match_spines_released(pred, gt[:1]).recall == 2.0


def test_spines_released_uses_top_left_corners_and_first_gt_hit():
    gt = [square(20, 20), square(24, 20)]
    pred = [[13, 13, 40, 40]]  # a big box: top-left corner on gt0's corner, centre far from both
    released = match_spines_released(pred, gt)
    assert released.pairs.tolist() == [[0, 0]]
    assert match_spines(pred, gt).tp == 0  # centres 9.2 and 7.0 px away, IoUs below 0.3


def test_spines_paper_rule_accepts_iou_or_distance():
    gt = [square(20, 20)]
    # offset 6.2 px: centre distance > 6 but IoU = 8.8/21.2 = 0.415 >= 0.4
    pred = [square(26.2, 20)]
    assert match_spines(pred, gt).tp == 1
    assert match_spines(pred, gt, iou_threshold=0.5).tp == 0
    # offset 6 px with a tiny box: IoU ~ 0 but distance 6 <= 6
    assert match_spines([square(26, 20, side=1)], gt).tp == 1


# -------------------------------------------------------------------------------- aggregation
def test_aggregate_sums_counts_micro_average():
    a = match_points([[0, 0]], [[0, 0]], 1)  # 1 tp
    b = match_points([[0, 0], [9, 9]], [[50, 50]], 1)  # 2 fp, 1 fn
    total = aggregate([a, b])
    assert counts(total) == (1, 2, 1)
    assert (total.n_pred, total.n_gt) == (3, 2)
    assert total.precision == pytest.approx(1 / 3)
    assert total.recall == 0.5
    assert total.pairs.shape == (0, 2)
    assert counts(a + b) == counts(sum([a, b])) == (1, 2, 1)
    empty = aggregate([])
    assert counts(empty) == (0, 0, 0) and empty.f1 == 1.0
    with pytest.raises(ValueError, match="aggregated"):
        _ = total.matched_pred


def test_match_result_checks_its_counts_and_masks():
    with pytest.raises(ValueError, match="inconsistent"):
        MatchResult(tp=1, fp=0, fn=0, n_pred=2, n_gt=1)
    result = match_points([[0, 0], [30, 30]], [[1, 0], [90, 90], [0, 1]], 2)
    assert result.matched_pred.tolist() == [True, False]
    assert result.matched_gt.tolist() == [True, False, False]
    assert result.to_dict() == {"tp": 1, "fp": 1, "fn": 2, "n_pred": 2, "n_gt": 3,
                                "precision": 0.5, "recall": 1 / 3, "f1": 0.4}


# ---------------------------------------------------------------------------- object centres
def test_object_centres_centroid_and_released_bbox_centre():
    labels = np.zeros((6, 8), np.int32)
    labels[0:4, 0:2] = 7  # 4 rows x 2 cols
    labels[2:5, 5:8] = 3  # 3 x 3
    np.testing.assert_allclose(object_centres(labels), [[6, 3], [0.5, 1.5]])  # label order 3, 7
    np.testing.assert_array_equal(object_centres(labels, "bbox_released"), [[6, 3], [1, 2]])
    assert object_centres(np.zeros((3, 3), np.int32)).shape == (0, 2)
    assert object_centres(np.zeros((3, 3), np.int32), "bbox_released").shape == (0, 2)
    with pytest.raises(ValueError, match="integer"):
        object_centres(np.zeros((3, 3), np.float32))


# --------------------------------------------------------------------------------- registry
def test_registry_binds_config_parameters():
    assert {"points", "points_greedy", "boxes", "spines", "spines_released",
            "points_released_cell_counting"} <= set(MATCHERS)
    matcher = get_matcher("points", max_dist=8.0, pixel_size_um=0.25)
    assert matcher([[31, 0]], [[0, 0]]).tp == 1  # 8 µm = 32 px
    assert get_matcher("points_greedy", max_dist=6)([[6, 0], [15, 0]], [[0, 0], [10, 0]]).tp == 1
    with pytest.raises(ConfigError, match="unknown matcher"):
        get_matcher("chamfer")
    with pytest.raises(ConfigError, match="max_distance"):
        get_matcher("points", max_distance=3)
