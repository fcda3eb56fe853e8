"""Known-answer tests of common/metrics.py, with cross-checks against scikit-learn and pycocotools."""

from __future__ import annotations

import contextlib
import io
import math

import numpy as np
import pytest

from microrepro.common.matching import get_matcher
from microrepro.common.metrics import (
    _pixel_metrics_from_counts,
    ap_from_matches,
    average_precision,
    best_f1_threshold,
    best_threshold,
    class_mean_iou,
    count_errors,
    detection_sweep,
    foreground_iou,
    image_matches,
    matched_object_iou,
    mean_instance_iou,
    pixel_metrics,
    prf,
    roc_curve,
    threshold_sweep,
)


# ----------------------------------------------------------------------------- counts, P/R/F1
def test_prf_exact_and_empty_conventions():
    assert prf(8, 2, 4) == pytest.approx((0.8, 8 / 12, 16 / 22), abs=1e-15)
    assert prf(0, 0, 0) == (1.0, 1.0, 1.0)  # nothing to find, nothing predicted
    assert prf(0, 0, 3) == (0.0, 0.0, 0.0)  # no predictions
    assert prf(0, 2, 0) == (0.0, 0.0, 0.0)  # no ground truth
    precision, recall, f1 = prf([1, 0], [1, 0], [0, 0])
    np.testing.assert_array_equal(precision, [0.5, 1.0])
    np.testing.assert_array_equal(recall, [1.0, 1.0])
    np.testing.assert_allclose(f1, [2 / 3, 1.0])


def test_count_errors_exact():
    errors = count_errors([3, 5, 10], [4, 5, 7])  # errors -1, 0, +3
    assert errors == pytest.approx({"mae": 4 / 3, "medae": 1.0, "mean_error": 2 / 3, "max_ae": 3.0})
    with pytest.raises(ValueError, match="2 predicted counts but 3"):
        count_errors([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="at least one"):
        count_errors([], [])


# ------------------------------------------------------------------------------ pixel metrics
def test_pixel_metrics_exact_values():
    gt = np.zeros((10, 10), bool)
    gt[0] = True  # 10 positives
    pred = gt.copy()
    pred[0, :2] = False  # 2 missed
    pred[5, 3:5] = True  # 2 false alarms
    m = pixel_metrics(pred, gt)
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (8, 2, 2, 88)
    assert m["precision"] == pytest.approx(0.8)
    assert m["recall"] == pytest.approx(0.8)
    assert m["specificity"] == pytest.approx(88 / 90)
    assert m["accuracy"] == pytest.approx(0.96)
    assert m["f1"] == pytest.approx(0.8)
    assert m["iou"] == pytest.approx(8 / 12)
    assert m["mcc"] == pytest.approx((8 * 88 - 2 * 2) / (10 * 90))  # = 7/9


def test_mcc_on_an_imbalanced_mask():
    from sklearn.metrics import matthews_corrcoef

    gt = np.zeros((100, 100), np.uint8)
    gt[50, 10:15] = 255  # 5 positive pixels out of 10 000, stored 0/255
    pred = np.zeros((100, 100), np.uint8)
    pred[50, 10:13] = 1  # 3 found
    pred[0, 0] = 1  # 1 false alarm
    m = pixel_metrics(pred, gt)
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (3, 1, 2, 9994)
    expected = (3 * 9994 - 1 * 2) / math.sqrt(4 * 5 * 9995 * 9996)  # 29980 / 44701.24 = 0.670675
    assert m["mcc"] == pytest.approx(expected, abs=1e-12)
    assert m["mcc"] == pytest.approx(0.670675, abs=1e-6)
    assert m["accuracy"] == pytest.approx(0.9997)  # accuracy hides the imbalance, MCC does not
    assert m["mcc"] == pytest.approx(matthews_corrcoef(gt.ravel() > 0, pred.ravel() > 0), abs=1e-12)


def test_pixel_metrics_degenerate_cases():
    empty = np.zeros((4, 4), bool)
    m = pixel_metrics(empty, empty)
    assert (m["precision"], m["recall"], m["f1"], m["iou"], m["specificity"], m["mcc"]) == (
        1.0, 1.0, 1.0, 1.0, 1.0, 0.0)
    full = np.ones((4, 4), bool)
    m = pixel_metrics(full, full)
    assert (m["specificity"], m["accuracy"], m["mcc"], m["iou"]) == (1.0, 1.0, 0.0, 1.0)
    m = pixel_metrics(empty, full)  # everything missed
    assert (m["precision"], m["recall"], m["f1"], m["mcc"]) == (0.0, 0.0, 0.0, 0.0)


def test_pixel_metrics_do_not_overflow_on_huge_counts():
    m = _pixel_metrics_from_counts(3_000_000_000, 0, 0, 5_000_000_000)
    assert float(m["mcc"]) == pytest.approx(1.0, abs=1e-15)
    m = _pixel_metrics_from_counts(3_000_000_000, 1_000_000_000, 1_000_000_000, 5_000_000_000)
    expected = (3e9 * 5e9 - 1e18) / math.sqrt(4e9 * 4e9 * 6e9 * 6e9)
    assert float(m["mcc"]) == pytest.approx(expected, rel=1e-12)


def test_pixel_metrics_sum_counts_over_images_of_different_shapes():
    a_pred, a_gt = np.array([[1, 0], [0, 0]]), np.array([[1, 1], [0, 0]])
    b_pred, b_gt = np.ones((1, 3), np.int32), np.array([[0, 1, 1]])
    m = pixel_metrics([a_pred, b_pred], [a_gt, b_gt])
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (3, 1, 1, 2)


def test_pixel_metrics_reject_probabilities_and_shape_mismatch():
    with pytest.raises(ValueError, match="threshold it first"):
        pixel_metrics(np.full((2, 2), 0.7), np.ones((2, 2), bool))
    with pytest.raises(ValueError, match="differs"):
        pixel_metrics(np.ones((2, 2), bool), np.ones((2, 3), bool))
    with pytest.raises(ValueError, match="1 pred arrays but 2"):
        pixel_metrics([np.ones((2, 2), bool)], [np.ones((2, 2), bool)] * 2)


# ---------------------------------------------------------------------------- threshold sweep
@pytest.mark.parametrize("strict", [False, True])
def test_threshold_sweep_equals_rethresholding(rng, strict):
    # probabilities on a 0.05 grid, so some pixels sit exactly on a threshold
    probs = [np.round(rng.random((17, 23)) * 20) / 20, np.round(rng.random((9, 5)) * 20) / 20]
    gts = [rng.random((17, 23)) < 0.3, rng.random((9, 5)) < 0.5]
    thresholds = [0.75, 0.1, 0.25, 0.5, 0.9, 0.0, 1.0]
    sweep = threshold_sweep(probs, gts, thresholds, strict=strict)
    np.testing.assert_array_equal(sweep["thresholds"], [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0])
    for k, t in enumerate(sweep["thresholds"]):
        binary = [(p > t) if strict else (p >= t) for p in probs]
        expected = pixel_metrics(binary, gts)
        for key, value in expected.items():
            assert sweep[key][k] == pytest.approx(value, abs=1e-15), (t, key)


def test_best_threshold_picks_the_first_maximum():
    sweep = {"thresholds": np.array([0.2, 0.4, 0.6, 0.8]),
             "mcc": np.array([0.1, 0.7, 0.7, np.nan]), "f1": np.array([0.5, 0.9, 0.3, 0.2])}
    assert best_threshold(sweep) == (0.4, 0.7)
    assert best_threshold(sweep, "f1") == (0.4, 0.9)
    with pytest.raises(ValueError, match="no metric 'auc'"):
        best_threshold(sweep, "auc")


def test_threshold_sweep_finds_the_separating_threshold():
    prob = np.array([[0.1, 0.2, 0.32, 0.65, 0.7, 0.9]])
    gt = np.array([[0, 0, 0, 1, 1, 1]], bool)
    sweep = threshold_sweep(prob, gt, np.linspace(0, 1, 21))
    threshold, mcc = best_threshold(sweep, "mcc")
    assert threshold == pytest.approx(0.35) and mcc == pytest.approx(1.0)


# ------------------------------------------------------------------------------------------ ROC
def test_roc_curve_matches_sklearn(rng):
    from sklearn.metrics import roc_auc_score

    probs = [np.round(rng.random((30, 40)), 2), np.round(rng.random((11, 7)), 2)]  # many ties
    gts = [(probs[0] + rng.normal(0, 0.3, (30, 40))) > 0.6, rng.random((11, 7)) < 0.4]
    fpr, tpr, thresholds, auc = roc_curve(probs, gts)
    flat_p = np.concatenate([p.ravel() for p in probs])
    flat_g = np.concatenate([g.ravel() for g in gts])
    assert auc == pytest.approx(roc_auc_score(flat_g, flat_p), abs=1e-12)
    assert len(fpr) == len(tpr) == len(thresholds) == len(np.unique(flat_p))
    k = 10
    positive = flat_p >= thresholds[k]
    assert tpr[k] == pytest.approx(np.sum(positive & flat_g) / flat_g.sum())
    assert fpr[k] == pytest.approx(np.sum(positive & ~flat_g) / (~flat_g).sum())
    # on a coarse grid the trapezoid is an approximation but stays close
    _, _, grid, coarse = roc_curve(probs, gts, np.linspace(0, 1, 101))
    assert len(grid) == 101 and coarse == pytest.approx(auc, abs=0.01)


def test_roc_curve_exact_small_case_and_errors():
    prob = np.array([0.9, 0.8, 0.4, 0.3])
    gt = np.array([1, 0, 1, 0], bool)
    fpr, tpr, thresholds, auc = roc_curve(prob, gt)
    np.testing.assert_array_equal(thresholds, [0.3, 0.4, 0.8, 0.9])
    np.testing.assert_array_equal(tpr, [1.0, 1.0, 0.5, 0.5])
    np.testing.assert_array_equal(fpr, [1.0, 0.5, 0.5, 0.0])
    assert auc == pytest.approx(0.75)
    with pytest.raises(ValueError, match="positive and negative"):
        roc_curve(prob, np.zeros(4, bool))


# -------------------------------------------------------------------------- detection sweep
def test_detection_sweep_exact_counts():
    preds = [np.array([[0, 1], [10, 10], [50, 50]], float), np.array([[5, 5]], float)]
    scores = [np.array([0.9, 0.4, 0.7]), np.array([0.3])]
    gts = [np.array([[0, 0], [10, 10]], float), np.zeros((0, 2))]
    sweep = detection_sweep(get_matcher("points", max_dist=3), preds, scores, gts, [0.0, 0.5, 0.8, 1.0])
    np.testing.assert_array_equal(sweep["tp"], [2, 1, 1, 0])
    np.testing.assert_array_equal(sweep["fp"], [2, 1, 0, 0])
    np.testing.assert_array_equal(sweep["fn"], [0, 1, 1, 2])
    np.testing.assert_allclose(sweep["precision"], [0.5, 0.5, 1.0, 0.0])
    np.testing.assert_allclose(sweep["recall"], [1.0, 0.5, 0.5, 0.0])
    np.testing.assert_allclose(sweep["f1"], [2 / 3, 0.5, 2 / 3, 0.0])
    assert best_f1_threshold(sweep) == (0.0, pytest.approx(2 / 3))
    with pytest.raises(ValueError, match="3 predictions but 2 scores"):
        detection_sweep(get_matcher("points", max_dist=3), preds, [scores[0][:2], scores[1]], gts, [0.5])


# ------------------------------------------------------------------------- average precision
def test_average_precision_hand_worked():
    gt = [np.array([[0, 0, 10, 10], [20, 0, 30, 10]], float)]
    pred = [np.array([[0, 0, 10, 10], [50, 50, 60, 60], [20, 0, 30, 10]], float)]
    scores = [np.array([0.9, 0.8, 0.7])]
    # ranked: TP, FP, TP -> precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1; interpolated 1, 2/3, 2/3;
    # the 51 recall points 0..0.50 read 1, the 50 points 0.51..1 read 2/3
    assert average_precision(pred, scores, gt) == pytest.approx((51 + 50 * 2 / 3) / 101, abs=1e-12)
    assert math.isnan(average_precision(pred, scores, [np.zeros((0, 4))]))
    assert average_precision([np.zeros((0, 4))], [np.zeros(0)], gt) == 0.0


def _pycocotools_ap(pred_boxes, pred_scores, gt_boxes, iou_threshold, max_det):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def xywh(box):
        return [float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])]

    images = [{"id": i + 1, "width": 200, "height": 200} for i in range(len(gt_boxes))]
    annotations, results = [], []
    for i, boxes in enumerate(gt_boxes):
        for box in boxes:
            bbox = xywh(box)  # ann ids start at 1: COCOeval treats a match with id 0 as none
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": 1,
                                "bbox": bbox, "area": bbox[2] * bbox[3], "iscrowd": 0})
        for box, score in zip(pred_boxes[i], pred_scores[i], strict=True):
            results.append({"image_id": i + 1, "category_id": 1, "bbox": xywh(box),
                            "score": float(score)})
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {"images": images, "annotations": annotations,
                        "categories": [{"id": 1, "name": "object"}]}
        coco.createIndex()
        evaluator = COCOeval(coco, coco.loadRes(results), "bbox")
        evaluator.params.iouThrs = np.array([iou_threshold])
        evaluator.params.maxDets = [max_det]
        evaluator.evaluate()
        evaluator.accumulate()
    precision = evaluator.eval["precision"][0, :, 0, 0, 0]  # [iou, recall, class, area all, maxDet]
    return float(np.mean(precision[precision > -1]))


def _random_boxes(rng, n, jitter_from=None):
    if jitter_from is not None and len(jitter_from):
        base = jitter_from[rng.integers(0, len(jitter_from), n)]
        return base + rng.normal(0, 2, (n, 4))
    xy = rng.uniform(0, 150, (n, 2))
    wh = rng.uniform(10, 40, (n, 2))
    return np.concatenate([xy, xy + wh], axis=1)


@pytest.mark.parametrize("iou_threshold, max_det", [(0.5, 1000), (0.75, 1000), (0.5, 3)])
def test_average_precision_agrees_with_pycocotools(rng, iou_threshold, max_det):
    gt_boxes, pred_boxes, pred_scores = [], [], []
    for image in range(7):
        gt = _random_boxes(rng, int(rng.integers(1, 6)))
        if image == 2:
            gt = np.zeros((0, 4))  # image with predictions but no ground truth
        near = _random_boxes(rng, int(rng.integers(1, 6)), jitter_from=gt)
        pred = np.concatenate([near, _random_boxes(rng, int(rng.integers(0, 4)))])
        pred[:, 2:] = np.maximum(pred[:, 2:], pred[:, :2] + 1)
        if image == 4:
            pred = np.zeros((0, 4))  # image with ground truth but no predictions
        gt_boxes.append(gt)
        pred_boxes.append(pred)
        pred_scores.append(rng.random(len(pred)))
    ours = average_precision(pred_boxes, pred_scores, gt_boxes, iou_threshold,
                             max_detections=max_det)
    reference = _pycocotools_ap(pred_boxes, pred_scores, gt_boxes, iou_threshold, max_det)
    assert 0.05 < reference < 0.99  # a non-trivial case
    assert ours == pytest.approx(reference, abs=1e-6)


def test_ap_of_a_resample_from_matches_done_once_is_average_precision(rng):
    gt_boxes = [_random_boxes(rng, int(rng.integers(0, 5))) for _ in range(6)]
    pred_boxes = [np.concatenate([_random_boxes(rng, 3, jitter_from=g), _random_boxes(rng, 2)]) for g in gt_boxes]
    pred_scores = [np.round(rng.random(len(p)), 1) for p in pred_boxes]  # ties across images: order matters
    matches = image_matches(pred_boxes, pred_scores, gt_boxes, 0.5)
    for _ in range(5):  # bootstrap-like resamples: repeats, omissions, any order
        idx = rng.integers(0, 6, 6)
        direct = average_precision([pred_boxes[i] for i in idx], [pred_scores[i] for i in idx],
                                   [gt_boxes[i] for i in idx], 0.5)
        from_matches = ap_from_matches([matches[i] for i in idx])
        assert (np.isnan(from_matches) and np.isnan(direct)) or from_matches == direct


# ------------------------------------------------------------------------------------ mean IoU
def test_class_mean_iou_is_tf_two_class_mean_iou():
    gt = np.array([[1, 1, 1, 1, 0, 0, 0, 0, 0, 0]])
    pred = np.array([[1, 1, 1, 0, 0, 0, 0, 0, 0, 1]])
    # foreground IoU 3/5, background IoU 5/7
    assert class_mean_iou(pred, gt) == pytest.approx((3 / 5 + 5 / 7) / 2)
    assert mean_instance_iou(pred, gt) == pytest.approx((3 / 5 + 5 / 7) / 2)
    # a class absent from both is left out of the mean (TF counts only valid entries)
    assert class_mean_iou(np.zeros((2, 2), int), np.zeros((2, 2), int)) == 1.0


def test_foreground_iou_per_image_and_pooled():
    gt = [np.array([[1, 1, 1, 1, 0, 0]]), np.zeros((2, 2), int), np.array([[1, 0]])]
    pred = [np.array([[1, 1, 1, 0, 0, 1]]), np.zeros((2, 2), int), np.array([[0, 1]])]
    assert foreground_iou(pred, gt) == pytest.approx((3 / 5 + 1.0 + 0.0) / 3)
    assert foreground_iou(pred, gt, per_image=False) == pytest.approx(3 / 7)
    assert mean_instance_iou(pred, gt, mode="foreground") == pytest.approx((3 / 5 + 1.0) / 3)


def test_matched_object_iou_on_label_images():
    gt = np.zeros((8, 8), np.int32)
    gt[0:2, 0:2] = 7  # 4 px
    gt[5:8, 5:8] = 3  # 9 px, missed
    pred = np.zeros((8, 8), np.int32)
    pred[0:2, 0:3] = 1  # 6 px covering object 7: IoU 4/6
    pred[4, 0] = 2  # spurious
    assert matched_object_iou(pred, gt) == pytest.approx(4 / 6)
    assert mean_instance_iou(pred, gt, mode="matched_objects") == pytest.approx(4 / 6)
    assert math.isnan(matched_object_iou(pred, gt, iou_threshold=0.7))
    with pytest.raises(ValueError, match="mode"):
        mean_instance_iou(pred, gt, mode="dice")
