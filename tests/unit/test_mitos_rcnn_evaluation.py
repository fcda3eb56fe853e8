"""MITOS-RCNN evaluation: field detection by subsections, 8 um matching, sweeps and the stored
threshold, size terciles, images as users have them."""

from __future__ import annotations

import numpy as np
import pytest

from microrepro.common import thresholds
from microrepro.datasets.base import Sample
from microrepro.reproductions.mitos_rcnn import detect, evaluation
from microrepro.reproductions.mitos_rcnn.detect import FieldDetections


class FakeModel:
    """Finds the brightest pixel of each input tile (one 10 px box there, score = brightness)."""

    def __init__(self):
        self.calls = []

    def predict_on_batch(self, batch):
        self.calls.append(batch.shape)
        n = len(batch)
        boxes = -np.ones((n, 3, 4), np.float32)
        scores, classes = np.zeros((n, 3), np.float32), -np.ones((n, 3), np.int32)
        num = np.zeros((n,), np.int32)
        for i, tile in enumerate(batch):
            grey = tile.mean(axis=-1)
            if grey.max() <= 0:
                continue
            y, x = np.unravel_index(np.argmax(grey), grey.shape)
            boxes[i, 0] = [x - 5, y - 5, x + 5, y + 5]
            scores[i, 0], classes[i, 0], num[i] = grey.max(), 0, 1
        return {"boxes": boxes, "scores": scores, "classes": classes, "num_detections": num}


def test_detect_field_merges_tiles_once_in_field_coordinates():
    image = np.zeros((100, 100, 3), np.uint8)
    image[70, 30] = 200  # one bright pixel at x=30, y=70
    model = FakeModel()
    # scale 1, input 40 -> 40 px subsections; overlap 10 -> origins 0, 30, 60 (3 x 3 tiles)
    det = detect.detect_field(model, image, input_size=40, scale=1.0, overlap_px=10, batch_size=4)
    assert [c[0] for c in model.calls] == [4, 4, 4]  # 9 tiles, padded to full batches
    assert len(det.boxes) == 1  # seen by several tiles, reported once (core rule + NMS)
    np.testing.assert_allclose(det.boxes[0], [25, 65, 35, 75])
    np.testing.assert_allclose(det.mitoses(), [[30, 70]])
    assert det.scores[0] == pytest.approx(200 / 255, rel=1e-5)


def test_detect_field_rescales_boxes_from_input_to_source_pixels():
    image = np.zeros((80, 80, 3), np.uint8)
    image[38:42, 38:42] = 255
    det = detect.detect_field(FakeModel(), image, input_size=40, scale=0.5, overlap_px=0, batch_size=2)
    # one 80 px subsection shrunk to 40 px: the 10 px input box is 20 px of the field
    assert len(det.boxes) == 1
    w, h = det.boxes[0, 2] - det.boxes[0, 0], det.boxes[0, 3] - det.boxes[0, 1]
    assert (w, h) == (20, 20)
    assert np.all(np.abs(det.mitoses()[0] - 39.5) <= 2.0)


def test_eight_micrometre_rule_uses_the_field_pixel_size():
    field = Sample(id="f", image_array=np.zeros((10, 10, 3), np.uint8), points=[[100, 100]], pixel_size_um=0.25)
    # 8 um at 0.25 um/px = 32 px: a centre 32 px away matches, 33 px away does not
    near = FieldDetections(np.float32([[127, 95, 137, 105]]), np.float32([0.9]), np.int32([0]))
    far = FieldDetections(np.float32([[128, 95, 138, 105]]), np.float32([0.9]), np.int32([0]))
    assert evaluation.match_field(near, field, 0.5).tp == 1
    assert evaluation.match_field(far, field, 0.5).tp == 0
    field_h = Sample(id="h", image_array=np.zeros((10, 10, 3), np.uint8), points=[[100, 100]], pixel_size_um=0.2273)
    assert evaluation.match_field(far, field_h, 0.5).tp == 1  # 33 px * 0.2273 = 7.5 um


def test_not_mitotic_detections_and_low_scores_are_not_counted():
    field = Sample(id="f", image_array=np.zeros((10, 10, 3), np.uint8), points=[[50, 50]], pixel_size_um=0.25)
    boxes = np.float32([[45, 45, 55, 55], [45, 45, 55, 55], [0, 0, 10, 10]])
    det = FieldDetections(boxes, np.float32([0.9, 0.8, 0.3]), np.int32([1, 0, 0]))
    result = evaluation.match_field(det, field, 0.5)
    assert (result.tp, result.fp, result.fn) == (1, 0, 0)
    result = evaluation.match_field(det, field, 0.2)
    assert (result.tp, result.fp, result.fn) == (1, 1, 0)


def test_f1_sweep_and_the_stored_threshold(tmp_path):
    points = [[50, 50], [150, 150]]
    field = Sample(id="f", image_array=np.zeros((10, 10, 3), np.uint8), points=points, pixel_size_um=0.25)
    boxes = np.float32([[45, 45, 55, 55], [300, 300, 310, 310], [145, 145, 155, 155], [140, 140, 160, 160]])
    # the last box is a look-alike ("not mitotic figure"): never counted
    det = FieldDetections(boxes, np.float32([0.9, 0.6, 0.3, 0.95]), np.int32([0, 0, 0, 1]))
    sweep = evaluation.f1_sweep([det], [field], [0.2, 0.5, 0.8])
    np.testing.assert_allclose(sweep["f1"], [2 * 2 / (4 + 1), 2 / (2 + 1 + 1), 2 / (2 + 1)])
    np.testing.assert_array_equal(sweep["tp"], [2, 1, 1])
    np.testing.assert_array_equal(sweep["thresholds"], [0.2, 0.5, 0.8])
    chosen = evaluation.choose_threshold([det], [field], [0.2, 0.5, 0.8])
    assert (chosen.value, chosen.rule, chosen.n_images) == (0.2, "max_f1_train", 1)
    assert chosen.metric_value == pytest.approx(0.8) and chosen.curve["f1"] == pytest.approx(sweep["f1"].tolist())
    # ties go to the lowest threshold: 0.8 and 0.7 keep the same single TP (0.5 adds an FP)
    tie = FieldDetections(boxes[:2], np.float32([0.9, 0.6]), np.int32([0, 0]))
    assert evaluation.choose_threshold([tie], [field], [0.8, 0.7, 0.5]).value == 0.7
    thresholds.save(tmp_path, "mitos_rcnn", chosen)
    assert thresholds.load(tmp_path, "mitos_rcnn").value == 0.2


def test_size_tercile_recall():
    points = np.float32([[20, 20], [60, 60], [100, 100], [140, 140], [180, 180], [220, 220]])
    sides = np.float32([20, 24, 28, 32, 36, 40])
    boxes = np.concatenate([points - sides[:, None] / 2, points + sides[:, None] / 2], axis=1)
    field = Sample(id="f", image_array=np.zeros((10, 10, 3), np.uint8), points=points, boxes=boxes, pixel_size_um=0.25)
    # detections on the 3rd, 4th, 5th and 6th figures only
    found = points[2:]
    found_boxes = np.concatenate([found - 5, found + 5], axis=1)
    det = FieldDetections(found_boxes, np.full(4, 0.9, np.float32), np.zeros(4, np.int32))
    out = evaluation.size_tercile_recall([det], [field], 0.5)
    assert out["recall_small"] == 0.0 and out["recall_medium"] == 1.0 and out["recall_large"] == 1.0
    assert out["size_small_um"] == pytest.approx(np.quantile(sides * 0.25, 1 / 3))
    no_sizes = Sample(id="g", image_array=np.zeros((10, 10, 3), np.uint8), points=points, pixel_size_um=0.25)
    assert evaluation.size_tercile_recall([det], [no_sizes], 0.5) == {}


def test_bootstrap_intervals_over_fields_and_paired_f1_differences():
    from microrepro.common import matching, stats

    rng = np.random.default_rng(0)
    fields, detections, others = [], [], []
    for i in range(5):
        points = rng.uniform(20, 200, (4, 2)).astype(np.float32)
        sides = rng.uniform(16, 40, 4).astype(np.float32)
        boxes = np.concatenate([points - sides[:, None] / 2, points + sides[:, None] / 2], axis=1)
        fields.append(Sample(id=f"f{i}", image_array=np.zeros((10, 10, 3), np.uint8), points=points, boxes=boxes,
                             pixel_size_um=0.25))
        for out, keep in ((detections, points[: 1 + i % 4]), (others, points[:1])):
            found = np.concatenate([keep, rng.uniform(20, 200, (1, 2)).astype(np.float32)])
            out.append(FieldDetections(np.concatenate([found - 5, found + 5], axis=1),
                                       np.full(len(found), 0.9, np.float32), np.zeros(len(found), np.int32)))
    results = [evaluation.match_field(d, f, 0.5) for d, f in zip(detections, fields, strict=True)]
    total = evaluation.aggregate_matches(detections, fields, 0.5)
    assert matching.aggregate(results).to_dict() == total.to_dict()
    sizes, hits = evaluation._field_sizes_hits(detections, fields, 0.5, 8.0, results)
    terciles = evaluation.size_tercile_recall(detections, fields, 0.5)
    assert evaluation._tercile_recall(sizes, hits) == terciles
    ci = evaluation.field_intervals(results, sizes, hits)
    assert set(ci) == {f"{k}{s}" for k in (*evaluation.DETECTION_KEYS, *evaluation.TERCILE_KEYS)
                       for s in stats.CI_SUFFIXES}
    point = {"precision": total.precision, "recall": total.recall, "f1": total.f1, **terciles}
    for key in (*evaluation.DETECTION_KEYS, *evaluation.TERCILE_KEYS):
        assert ci[f"{key}_ci_low"] <= point[key] + 1e-9 and point[key] - 1e-9 <= ci[f"{key}_ci_high"], key
    assert set(evaluation.field_intervals(results)) == {f"{k}{s}" for k in evaluation.DETECTION_KEYS
                                                         for s in stats.CI_SUFFIXES}

    class FakeRun:
        def __init__(self):
            self.metrics, self.extra = {}, {}

        def add_metrics(self, model, split, values, info=None):
            self.metrics.setdefault(model, {}).setdefault(split, {}).update(values)

    run = FakeRun()
    per_field = {"mitos_rcnn": evaluation.per_field_counts(results),
                 "baseline_log_blobs": evaluation.per_field_counts(
                     [evaluation.match_field(d, f, 0.5) for d, f in zip(others, fields, strict=True)])}
    paired = evaluation.record_paired(run, "synthetic_test", None, per_field, ["mitos_rcnn"])
    key = "f1_diff__mitos_rcnn__vs__baseline_log_blobs"
    assert set(paired) == {key, f"{key}_ci_low", f"{key}_ci_high"}  # pairs with a missing model are skipped
    other = evaluation.aggregate_matches(others, fields, 0.5)
    assert paired[key] == pytest.approx(total.f1 - other.f1)
    assert run.metrics["paired"]["synthetic_test"] == paired and run.extra["bootstrap"] == stats.settings()
    assert evaluation.record_paired(FakeRun(), "s", None, {"mitos_rcnn": per_field["mitos_rcnn"]}, ["mitos_rcnn"]) == {}


@pytest.mark.parametrize(
    "image",
    [
        np.full((6, 5), 128, np.uint8),  # grey
        np.full((6, 5, 1), 128, np.uint8),  # grey with a channel axis
        np.full((6, 5, 3), 128, np.uint8),  # RGB
        np.dstack([np.full((6, 5, 3), 128, np.uint8), np.zeros((6, 5), np.uint8)]),  # RGBA (alpha dropped)
        np.full((6, 5, 3), 128 * 257, np.uint16),  # 16 bit
        np.full((6, 5), 128 / 255, np.float32),  # float in [0, 1]
    ],
    ids=["grey", "grey1", "rgb", "rgba", "uint16", "float"],
)
def test_images_as_users_have_them_become_rgb_uint8(image):
    out = detect.as_rgb_uint8(image)
    assert out.dtype == np.uint8 and out.shape == (6, 5, 3)
    assert np.all(out == 128)


def test_float_images_are_clipped_to_the_unit_range():
    out = detect.as_rgb_uint8(np.float32([[-0.5, 2.0]]))
    np.testing.assert_array_equal(out[0], [[0, 0, 0], [255, 255, 255]])


def test_overlap_px_uses_the_field_pixel_size():
    assert detect.overlap_px(12.0, 0.25) == 48
    assert detect.overlap_px(12.0, None) == 48  # no pixel size: 0.25 um/px
    assert detect.overlap_px(12.0, 0.2273) == 53
