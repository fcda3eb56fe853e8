"""Spines evaluation and data helpers: NMS, Table 1 metrics, anchors vs a 15 px spine, resizing."""

import numpy as np
import pytest

from microrepro.datasets.base import Sample
from microrepro.reproductions.spines import data as data_lib
from microrepro.reproductions.spines import postprocess


def test_nms_keeps_the_best_of_overlapping_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 10]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.95])
    np.testing.assert_array_equal(postprocess.nms(boxes, scores, 0.5), [3, 2])
    np.testing.assert_array_equal(postprocess.nms(boxes, scores, 0.5, max_detections=1), [3])
    # IoU of boxes 0 and 1 is 81/119 = 0.68: kept with a 0.7 threshold
    np.testing.assert_array_equal(postprocess.nms(boxes[:3], scores[:3], 0.7), [0, 1, 2])
    with pytest.raises(ValueError, match="scores"):
        postprocess.nms(boxes, scores[:2], 0.5)


def test_evaluate_detections_paper_rule_released_rule_and_map():
    gt = [np.array([[10, 10, 25, 25], [40, 40, 55, 55]], np.float32), np.array([[5, 5, 20, 20]], np.float32)]
    detections = [
        # a TP, a duplicate on the same spine (FP one-to-one, TP for the released rule), a far FP
        (np.array([[11, 10, 26, 25], [12, 12, 27, 27], [80, 80, 95, 95]], np.float32), np.array([0.9, 0.8, 0.7])),
        # a TP below the F1 threshold (counts for mAP only)
        (np.array([[5, 5, 20, 20]], np.float32), np.array([0.3])),
    ]
    m = postprocess.evaluate_detections(detections, gt, score_threshold=0.5)
    assert (m["tp"], m["fp"], m["fn"]) == (1, 2, 2)
    assert m["precision"] == pytest.approx(1 / 3) and m["recall"] == pytest.approx(1 / 3)
    assert m["f1"] == pytest.approx(1 / 3)
    # released: score > 0.6 keeps 3 boxes of image 1; corners (11,10) and (12,12) are within 6 px of
    # (10,10): 2 TP, 1 FP; FN = 3 - 2 = 1
    assert m["precision_released"] == pytest.approx(2 / 3)
    assert m["recall_released"] == pytest.approx(2 / 3)
    # AP@0.5 over all scores: ranks 0.9 TP, 0.8 FP, 0.7 FP, 0.3 TP with 3 gt -> COCO 101-point AP
    recall_points = np.linspace(0, 1, 101)
    precision = np.where(recall_points <= 1 / 3, 1.0, np.where(recall_points <= 2 / 3, 0.5, 0.0))
    assert m["map50"] == pytest.approx(precision.mean(), abs=1e-9)


def test_f1_sweep_counts_per_threshold():
    gt = [np.array([[0, 0, 15, 15]], np.float32)]
    dets = [(np.array([[0, 0, 15, 15], [50, 50, 65, 65]], np.float32), np.array([0.9, 0.4]))]
    sweep = postprocess.f1_sweep(dets, gt, np.array([0.3, 0.5, 0.95]))
    np.testing.assert_allclose(sweep["f1"], [2 / 3, 1.0, 0.0])
    np.testing.assert_allclose(sweep["precision"], [0.5, 1.0, 0.0])


def test_choose_threshold_takes_the_max_f1_of_the_grid_lowest_on_ties():
    gt = [np.array([[0, 0, 15, 15], [40, 0, 55, 15]], np.float32), np.array([[0, 40, 15, 55]], np.float32)]
    dets = [
        (np.array([[0, 0, 15, 15], [40, 0, 55, 15], [80, 80, 95, 95]], np.float32), np.array([0.9, 0.62, 0.3])),
        (np.array([[0, 40, 15, 55], [90, 0, 105, 15]], np.float32), np.array([0.7, 0.6])),
    ]
    # t <= 0.3: 3 TP 2 FP (F1 0.75); 0.3 < t <= 0.6: 3 TP 1 FP (6/7); 0.6 < t <= 0.62: 3 TP (1.0);
    # 0.62 < t <= 0.7: 2 TP 0 FP (0.8).
    threshold, f1, sweep = postprocess.choose_threshold(dets, gt, step=0.01)
    assert threshold == pytest.approx(0.61) and f1 == pytest.approx(1.0)
    # The 0.025 grid has no point in (0.6, 0.62]: 6/7 from 0.325 to 0.6, the lowest is taken.
    threshold, f1, sweep = postprocess.choose_threshold(dets, gt, step=0.025)
    assert threshold == pytest.approx(0.325) and f1 == pytest.approx(6 / 7)
    np.testing.assert_allclose(sweep["threshold"], postprocess.threshold_grid(0.025))
    assert postprocess.threshold_grid(0.025)[[0, -1]].tolist() == [0.05, 0.95]
    with pytest.raises(ValueError, match="step"):
        postprocess.threshold_grid(0.0)


def test_anchor_iou_with_a_spine_released_vs_ours():
    # released anchors 64-512 px; a 15 px spine resized x2.5 to ~37 px: at best 37^2/64^2
    assert postprocess.anchor_max_iou(37.0, [64, 128, 256, 512]) == pytest.approx(37**2 / 64**2)
    assert postprocess.anchor_max_iou(15.0, [64, 128, 256, 512]) == pytest.approx(225 / 4096)
    assert postprocess.anchor_max_iou(37.0, [24, 32, 48, 64]) == pytest.approx(32**2 / 37**2)
    assert postprocess.anchor_max_iou(32.0, [32.0]) == 1.0


def test_resize_and_prepare_scale_boxes_and_keep_originals():
    image = np.zeros((100, 50), np.uint8)
    resized, (sx, sy) = data_lib.resize_image(image, 64)
    assert resized.shape == (64, 64) and (sx, sy) == (64 / 50, 64 / 100)
    padded, scale = data_lib.resize_image(image, 64, keep_aspect_ratio=True)
    assert scale == (32 / 50, 64 / 100) and padded.shape == (64, 64)
    sample = Sample(id="a", image_array=image, boxes=np.array([[-3, 10, 12, 25], [40, 80, 55, 95]], np.float32))
    prep = data_lib.prepare([sample], 64, max_boxes=4)
    np.testing.assert_allclose(prep.boxes[0, 0], [0, 10 * sy, 12 * sx, 25 * sy])  # clipped at x = 0
    np.testing.assert_allclose(prep.boxes[0, 1], [40 * sx, 80 * sy, 50 * sx, 95 * sy])  # clipped at x = 50
    np.testing.assert_array_equal(prep.boxes[0, 2:], -1)
    np.testing.assert_array_equal(prep.gt_boxes[0], sample.boxes)  # evaluation keeps the original boxes
    back = postprocess.rescale_boxes(prep.boxes[0, 1:2], prep.scales[0])
    np.testing.assert_allclose(back[0], [40, 80, 50, 95], rtol=1e-5)


def test_detection_dataset_flips_boxes_with_the_image():
    image = np.zeros((32, 32), np.uint8)
    image[4:10, 2:8] = 255
    sample = Sample(id="a", image_array=image, boxes=np.array([[2, 4, 8, 10]], np.float32))
    prep = data_lib.prepare([sample], 32, max_boxes=2)
    ds = data_lib.detection_dataset(prep, 1, seed=0, flip_horizontal=True, rot90=True, normalised=False)
    for images, boxes in ds.take(12):
        im = images.numpy()[0, ..., 0]
        x1, y1, x2, y2 = boxes.numpy()[0, 0]
        assert im[int(y1) : int(y2), int(x1) : int(x2)].mean() == pytest.approx(1.0)  # box still on the blob
        assert im.sum() == pytest.approx(36.0)
        np.testing.assert_array_equal(boxes.numpy()[0, 1], -1)


def _layout(root, split, n):
    import cv2

    (root / split).mkdir(parents=True)
    lines = ["filename,width,height,class,xmin,ymin,xmax,ymax"]
    for i in range(n):
        cv2.imwrite(str(root / split / f"img{i}.jpg"), np.full((40, 50), 30, np.uint8))
        lines += [f"img{i}.jpg,50,40,dendrite,{5 + j * 10},5,{19 + j * 10},19" for j in range(1 + i % 2)]
    (root / f"{split}_labels.csv").write_text("\n".join(lines) + "\n")


def test_load_splits_uses_test_when_present_else_a_stratified_val(tmp_path):
    from microrepro.common.data_sources import DataSource
    from microrepro.reproductions.spines.task import TASK

    cfg = TASK.load_config("paper", "short", {"data": {"val_fraction": 0.2}})
    _layout(tmp_path, "train", 10)
    s = data_lib.load_splits(DataSource("spines", tmp_path, "t"), cfg, seed=0)
    assert s["eval_split"] == "val" and s["kind"] == "real"
    assert (len(s["train"]), len(s["eval"])) == (8, 2)
    assert sorted(x.count for x in s["eval"]) == [1, 2]  # one image per stratum (1 and 2 spines)
    _layout(tmp_path, "test", 3)
    s = data_lib.load_splits(DataSource("spines", tmp_path, "t"), cfg, seed=0)
    assert s["eval_split"] == "test" and (len(s["train"]), len(s["eval"])) == (10, 3)
    synthetic = data_lib.load_splits(DataSource("spines", None, "none"), TASK.load_config("paper", "smoke"), seed=0)
    assert synthetic["kind"] == "synthetic" and synthetic["eval_split"] == "synthetic_val"
    assert len(synthetic["train"]) == 8 and len(synthetic["eval"]) == 1  # smoke: 12 images, 10 % val, 8 train max
