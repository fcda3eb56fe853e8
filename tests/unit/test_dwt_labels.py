"""dwt_mitosis label generation: boxes from segmentations + weak labels, manual boxes, quality."""

from __future__ import annotations

import numpy as np
import pytest

from microrepro.reproductions.dwt_mitosis import labels as L


def two_regions() -> np.ndarray:
    prob = np.zeros((20, 30), np.float32)
    prob[2:6, 3:9] = 0.9  # rows 2-5, cols 3-8 -> box [3, 2, 9, 6]
    prob[10:15, 20:22] = 0.7  # rows 10-14, cols 20-21 -> box [20, 10, 22, 15]
    prob[18, 0] = 0.6  # a single pixel -> box [0, 18, 1, 19]
    return prob


def test_region_boxes_are_minimum_enclosing_xyxy():
    regions = L.segment_regions(two_regions(), 0.5)
    assert regions.dtype == np.int32 and regions.max() == 3
    np.testing.assert_array_equal(L.region_boxes(regions), [[3, 2, 9, 6], [20, 10, 22, 15], [0, 18, 1, 19]])


def test_min_area_and_threshold():
    assert L.segment_regions(two_regions(), 0.5, min_area_px=2).max() == 2
    assert L.segment_regions(two_regions(), 0.8).max() == 1
    with pytest.raises(ValueError, match="2-D"):
        L.segment_regions(np.zeros((2, 2, 2)))


def test_points_in_boxes_edges():
    boxes = np.array([[3, 2, 9, 6]], np.float32)
    pts = np.array([[3, 2], [8.9, 5.9], [9, 4], [5, 6], [2.99, 4]], np.float32)
    np.testing.assert_array_equal(L.points_in_boxes(pts, boxes), [[True, True, False, False, False]])


def test_boxes_kept_only_with_a_weak_label():
    points = np.array([[5, 3], [21, 12], [28, 1]], np.float32)  # in region 1, in region 2, on background
    result = L.boxes_from_segmentation(two_regions(), points, 0.5)
    np.testing.assert_array_equal(result.boxes, [[3, 2, 9, 6], [20, 10, 22, 15]])
    np.testing.assert_array_equal(result.kept, [True, True, False])
    np.testing.assert_array_equal(result.covered, [True, True, False])
    assert len(result.region_boxes) == 3


def test_no_region_no_box():
    result = L.boxes_from_segmentation(np.zeros((8, 8)), np.array([[4, 4]], np.float32))
    assert result.boxes.shape == (0, 4)
    np.testing.assert_array_equal(result.covered, [False])


def test_manual_boxes_grow_to_include_the_point():
    mask = np.zeros((20, 20), np.int32)
    mask[4:8, 4:10] = 1  # box [4, 4, 10, 8]
    mask[12:16, 12:14] = 2  # box [12, 12, 14, 16]
    points = np.array([[6, 5], [15.5, 13]], np.float32)  # inside 1; right of 2 on background
    np.testing.assert_array_equal(L.manual_boxes(mask, points), [[4, 4, 10, 8], [12, 12, 16, 16]])
    assert L.manual_boxes(np.zeros((5, 5), np.int32), points).shape == (0, 4)


def test_square_boxes_clipped():
    boxes = L.square_boxes(np.array([[2, 10]], np.float32), 8, height=12, width=20)
    np.testing.assert_array_equal(boxes, [[0, 6, 6, 12]])


def test_label_quality_exact():
    generated = [np.array([[0, 0, 10, 10], [50, 50, 60, 60]], np.float32), np.zeros((0, 4), np.float32)]
    manual = [np.array([[0, 0, 10, 5]], np.float32), np.array([[0, 0, 4, 4]], np.float32)]
    points = [np.array([[5, 2], [30, 30]], np.float32), np.array([[2, 2]], np.float32)]
    q = L.label_quality(generated, manual, points)
    assert q["box_iou_mean"] == pytest.approx(0.25)  # IoU 0.5 and 0 (no box in image 2)
    assert q["frac_iou_ge_0.5"] == pytest.approx(0.5)
    assert q["n_generated"] == 2 and q["n_manual"] == 2
    assert q["point_coverage"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="manual"):
        L.label_quality(generated, manual[:1])
