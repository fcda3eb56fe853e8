"""Spines evaluation and data helpers: NMS, Table 1 metrics, thresholds, anchors vs a 15 px spine, resizing,
images as users have them, tiled prediction of large fields."""

import numpy as np
import pytest

from microrepro.common import thresholds
from microrepro.datasets.base import Sample
from microrepro.reproductions.spines import data as data_lib
from microrepro.reproductions.spines import evaluate, postprocess
from microrepro.reproductions.spines.task import TASK

MATCHING = TASK.load_config("paper", "smoke").matching  # IoU >= 0.4 or centre within 6 px


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


def test_per_image_counts_and_bootstrap_intervals_leave_the_point_estimates_unchanged():
    from microrepro.common import stats

    rng = np.random.default_rng(0)
    gt, detections = [], []
    for _ in range(6):
        centres = rng.uniform(20, 100, (int(rng.integers(1, 5)), 2))
        gt.append(np.concatenate([centres - 7, centres + 7], 1).astype(np.float32))
        found = centres[: max(1, len(centres) - 1)] + rng.normal(0, 1, (max(1, len(centres) - 1), 2))
        found = np.concatenate([found, rng.uniform(20, 100, (2, 2))])
        detections.append((np.concatenate([found - 7, found + 7], 1).astype(np.float32),
                           rng.uniform(0, 1, len(found)).astype(np.float32)))
    plain = postprocess.evaluate_detections(detections, gt, score_threshold=0.4)
    per_image: dict = {}
    m = postprocess.evaluate_detections(detections, gt, score_threshold=0.4, per_image=per_image)
    assert m == plain  # the out-parameter changes no value
    assert set(per_image) == {"tp", "fp", "fn", "tp_released", "fp_released", "fn_released"}
    assert all(len(v) == 6 for v in per_image.values()) and per_image["tp"].sum() == m["tp"]
    # the statistic on all images is the point estimate, for both rules
    rates = postprocess.rates_statistic(per_image)
    for key in postprocess.RATE_KEYS:
        assert rates[key] == m[key], key
    ci = postprocess.table1_intervals(detections, gt, per_image, n_boot=50)
    assert set(ci) == {f"{k}{s}" for k in (*postprocess.RATE_KEYS, "map50") for s in stats.CI_SUFFIXES}
    for key in ("f1", "precision", "recall", "map50"):
        assert ci[f"{key}_ci_low"] <= m[key] + 1e-9 and m[key] - 1e-9 <= ci[f"{key}_ci_high"], key
    assert ci == postprocess.table1_intervals(detections, gt, per_image, n_boot=50)  # seeded


def test_f1_sweep_counts_per_threshold():
    gt = [np.array([[0, 0, 15, 15]], np.float32)]
    dets = [(np.array([[0, 0, 15, 15], [50, 50, 65, 65]], np.float32), np.array([0.9, 0.4]))]
    sweep = evaluate.f1_sweep(dets, gt, np.array([0.3, 0.5, 0.95]), MATCHING)
    np.testing.assert_allclose(sweep["f1"], [2 / 3, 1.0, 0.0])
    np.testing.assert_allclose(sweep["precision"], [0.5, 1.0, 0.0])
    np.testing.assert_array_equal(sweep["tp"], [1, 1, 0])


GT = [np.array([[0, 0, 15, 15], [40, 0, 55, 15]], np.float32), np.array([[0, 40, 15, 55]], np.float32)]
DETS = [
    (np.array([[0, 0, 15, 15], [40, 0, 55, 15], [80, 80, 95, 95]], np.float32), np.array([0.9, 0.62, 0.3])),
    (np.array([[0, 40, 15, 55], [90, 0, 105, 15]], np.float32), np.array([0.7, 0.6])),
]


def test_threshold_of_max_f1_on_the_grid_lowest_on_ties():
    # t <= 0.3: 3 TP 2 FP (F1 0.75); 0.3 < t <= 0.6: 3 TP 1 FP (6/7); 0.6 < t <= 0.62: 3 TP (1.0);
    # 0.62 < t <= 0.7: 2 TP 0 FP (0.8).
    chosen = thresholds.choose(evaluate.f1_sweep(DETS, GT, thresholds.grid(0.05, 0.95, 0.01), MATCHING), "f1")
    assert chosen.value == pytest.approx(0.61) and chosen.metric_value == pytest.approx(1.0)
    # The 0.025 grid has no point in (0.6, 0.62]: 6/7 from 0.325 to 0.6, the lowest is taken.
    grid = thresholds.grid(0.05, 0.95, 0.025)
    assert grid[[0, -1]].tolist() == [0.05, 0.95] and len(grid) == 37
    chosen = thresholds.choose(evaluate.f1_sweep(DETS, GT, grid, MATCHING), "f1", split="train", n_images=2)
    assert chosen.value == pytest.approx(0.325) and chosen.metric_value == pytest.approx(6 / 7)
    assert chosen.rule == "max_f1_train" and chosen.curve["thresholds"] == pytest.approx(grid.tolist())


def test_operating_threshold_is_stored_once_per_run_and_read_back(tmp_path):
    import dataclasses

    from microrepro.reproductions.spines.models import SPECS

    samples = [Sample(id=str(i), image_array=np.zeros((120, 120), np.uint8), boxes=b) for i, b in enumerate(GT)]
    calls = []

    def fake_detect(model, cfg, prepared):
        calls.append(len(prepared))
        return DETS

    cfg = TASK.load_config("paper", "smoke", {"matching": {"threshold_step": 0.025}})
    spec = dataclasses.replace(SPECS["yolov2"], detect=fake_detect)
    chosen = evaluate.operating_threshold(tmp_path, spec, None, cfg, samples)
    assert (chosen.value, chosen.rule, chosen.n_images) == (pytest.approx(0.325), "max_f1_train", 2)
    assert thresholds.load(tmp_path, "yolov2").value == pytest.approx(0.325)
    # evaluate keeps the threshold chosen for the stored weights; reproduce chooses again
    assert evaluate.operating_threshold(tmp_path, spec, None, cfg, samples, reuse=True).value == chosen.value
    assert calls == [2]
    evaluate.operating_threshold(tmp_path, spec, None, cfg, samples)
    assert calls == [2, 2]
    # rule fixed: the configured value, stored the same way, nothing detected
    fixed_cfg = TASK.load_config("released", "smoke")
    fixed = evaluate.operating_threshold(tmp_path, spec, None, fixed_cfg, samples)
    assert (fixed.value, fixed.rule) == (fixed_cfg.yolo.score_threshold, "fixed") and calls == [2, 2]
    sp_cnn = evaluate.operating_threshold(tmp_path, SPECS["sp_cnn"], None, cfg, samples)
    assert (sp_cnn.value, sp_cnn.rule) == (cfg.sp_cnn.peak_threshold, "fixed")
    assert set(thresholds.read_all(tmp_path)) == {"yolov2", "sp_cnn"}


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


def test_detection_dataset_augmentation_is_a_function_of_the_seed():
    """Stateless draws per element: the same seed gives the same batches (a run repeats), another seed others.

    With stateful draws inside the parallel map, which element got which draw depended on the threads,
    and the spines smoke run's first tiny-YOLO loss differed by ~10 % between two fresh processes.
    """
    rng = np.random.default_rng(0)
    samples = [Sample(id=str(k), image_array=rng.integers(0, 255, (32, 32), dtype=np.uint8),
                      boxes=np.array([[2, 4, 8, 10]], np.float32)) for k in range(6)]
    prep = data_lib.prepare(samples, 32, max_boxes=2)

    def batches(seed):
        ds = data_lib.detection_dataset(prep, 2, seed=seed, flip_horizontal=True, rot90=True, brightness=0.2,
                                        contrast=0.2, multiscale_sizes=[24, 32])
        return [(i.numpy(), b.numpy()) for i, b in ds.take(9)]

    first, again, other = batches(0), batches(0), batches(1)
    for (a_img, a_box), (b_img, b_box) in zip(first, again, strict=True):
        np.testing.assert_array_equal(a_img, b_img)
        np.testing.assert_array_equal(a_box, b_box)
    assert any(a.shape != b.shape or not np.array_equal(a, b) for (a, _), (b, _) in zip(first, other, strict=True))
    assert len({img.shape[1] for img, _ in first}) == 2  # both multi-scale sizes are drawn


def _layout(root, split, n):
    import cv2

    (root / split).mkdir(parents=True)
    lines = ["filename,width,height,class,xmin,ymin,xmax,ymax"]
    for i in range(n):
        cv2.imwrite(str(root / split / f"img{i}.jpg"), np.full((40, 50), 30, np.uint8))
        lines += [f"img{i}.jpg,50,40,dendrite,{5 + j * 10},5,{19 + j * 10},19" for j in range(1 + i % 2)]
    (root / f"{split}_labels.csv").write_text("\n".join(lines) + "\n")


def test_load_splits_reports_test_else_a_fixed_holdout_and_chooses_on_val(tmp_path):
    from microrepro.common.data_sources import DataSource
    from microrepro.reproductions.spines.task import TASK

    def splits(seed=0, **data):
        cfg = TASK.load_config("paper", "short", {"data": {"val_fraction": 0.2, "holdout_fraction": 0.2, **data}})
        return data_lib.load_splits(DataSource("spines", tmp_path, "t"), cfg, seed=seed)

    def ids(samples):
        return {x.id for x in samples}

    _layout(tmp_path, "train", 20)
    s = splits()
    assert s["eval_split"] == "holdout" and s["kind"] == "real"
    assert (len(s["train"]), len(s["eval"])) == (13, 4)  # 20 -> holdout 4, then val round(3.2) = 3, train 13
    assert sorted(x.count for x in s["eval"]) == [1, 1, 2, 2]  # stratified by spines per image
    trial = splits(evaluate_on="val")
    assert trial["eval_split"] == "val" and len(trial["eval"]) == 3
    assert ids(trial["train"]) == ids(s["train"])  # a trial trains on what the reported run trains on
    assert not ids(trial["eval"]) & ids(s["eval"]) and not ids(trial["eval"]) & ids(s["train"])
    other_seed, other_trial = splits(seed=1), splits(seed=1, evaluate_on="val")
    assert ids(other_seed["eval"]) == ids(s["eval"])  # every run seed reports on the same holdout
    assert not ids(other_trial["eval"]) & ids(s["eval"])  # and never chooses on it
    _layout(tmp_path, "test", 3)
    s = splits()
    assert s["eval_split"] == "test" and (len(s["train"]), len(s["eval"])) == (16, 3)  # val 4 of 20 set aside
    assert splits(evaluate_on="val")["eval_split"] == "val"
    smoke = TASK.load_config("paper", "smoke")
    synthetic = data_lib.load_splits(DataSource("spines", None, "none"), smoke, seed=0)
    assert synthetic["kind"] == "synthetic" and synthetic["eval_split"] == "synthetic_val"
    assert len(synthetic["train"]) == 8 and len(synthetic["eval"]) == 1  # smoke: 12 images, 10 % val, 8 train max
    smoke.data.evaluate_on = "val"
    selection = data_lib.load_splits(DataSource("spines", None, "none"), smoke, seed=0)
    assert selection["eval_split"] == "synthetic_selection"
    assert selection["eval"][0].id != synthetic["eval"][0].id


def test_images_as_users_have_them_become_8_bit_grey():
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert data_lib.grey_uint8(grey) is grey  # the data set's own images pass untouched
    np.testing.assert_array_equal(data_lib.grey_uint8(grey[..., None]), grey)
    rgba = np.dstack([grey, grey, grey, np.full_like(grey, 7)])
    np.testing.assert_array_equal(data_lib.grey_uint8(rgba), grey)
    wide = np.array([[1000, 3000], [2000, 5000]], np.uint16)  # 16-bit: stretched min..max
    np.testing.assert_array_equal(data_lib.grey_uint8(wide), [[0, 128], [64, 255]])
    unit = np.array([[0.0, 0.5], [1.0, np.nan]], np.float32)  # float in [0, 1]: x255, NaN -> lowest
    np.testing.assert_array_equal(data_lib.grey_uint8(unit), [[0, 128], [255, 0]])
    colour = np.zeros((2, 2, 3), np.float32)
    colour[..., 1] = 0.5  # green 0.5: luminance 0.587 * 0.5, not rounded to 0 before scaling
    np.testing.assert_array_equal(data_lib.grey_uint8(colour), np.full((2, 2), 75))
    np.testing.assert_array_equal(data_lib.grey_uint8(np.array([[-2.0, 2.0]])), [[0, 255]])
    assert data_lib.grey_uint8(np.array([[True, False]])).tolist() == [[255, 0]]
    with pytest.raises(Exception, match="shape"):
        data_lib.grey_uint8(np.zeros((2, 2, 2, 2)))


def _blob_detector(calls):
    """A stand-in detector: one 15 px box per bright blob of the prepared image, score 0.9."""
    from scipy import ndimage

    def detect(prepared):
        calls.append(prepared.images.shape)
        labels, n = ndimage.label(prepared.images[0] > 128)
        centres = np.array(ndimage.center_of_mass(labels > 0, labels, range(1, n + 1))).reshape(-1, 2)[:, ::-1]
        centres = (centres + 0.5) / prepared.scales[0]
        boxes = postprocess.points_to_square_boxes(centres, 15)
        return [(boxes, np.full(len(boxes), 0.9, np.float32))]

    return detect


def test_detect_image_tiles_a_large_field_and_keeps_small_ones_whole():
    from microrepro.reproductions.spines.detect import PREDICT_TILE, detect_image

    field = np.full((500, 700), 1000, np.uint16)  # 16-bit, larger than a tile on both sides
    centres = [(40, 30), (250, 250), (650, 460), (380, 200)]
    for x, y in centres:
        field[y - 4 : y + 5, x - 4 : x + 5] = 9000
    calls = []
    boxes, scores = detect_image(_blob_detector(calls), field, size=128)
    assert len(calls) > 1 and all(shape == (1, 128, 128) for shape in calls)
    found = sorted((float(b[0] + b[2]) / 2, float(b[1] + b[3]) / 2) for b in boxes)
    np.testing.assert_allclose(found, sorted((x + 0.5, y + 0.5) for x, y in centres), atol=1.5)  # each spine once
    assert scores.tolist() == [pytest.approx(0.9)] * len(centres)
    small = field[:200, :PREDICT_TILE]
    calls.clear()
    boxes, _ = detect_image(_blob_detector(calls), small, size=128)
    assert len(calls) == 1 and len(boxes) == 1  # one pass over the whole image, resized
