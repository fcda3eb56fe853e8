"""The shared predict loop (common/predict.py) with a fake predictor: exact files, names and counts."""

import csv

import numpy as np
import pytest
import tifffile

from microrepro.common import predict
from microrepro.common.errors import DataError, UserError
from microrepro.common.imageio import write_image


def _read(path):
    with open(path, newline="") as fh:
        return list(csv.reader(fh))


def _box_predictor(boxes, scores, threshold=0.5, min_size=1):
    def detect(image, thr):
        keep = np.asarray(scores) >= thr
        return predict.Objects.from_boxes(np.asarray(boxes, float)[keep], np.asarray(scores, float)[keep])

    return predict.Predictor("fake", "boxes", threshold, detect, noun="things", min_size=min_size)


def test_objects_from_boxes_centres_and_rows():
    objects = predict.Objects.from_boxes([[0, 0, 4, 2]], [0.25])
    assert objects.points.tolist() == [[2.0, 1.0]]
    assert objects.rows() == [["1", "2.00", "1.00", "0.00", "0.00", "4.00", "2.00", "0.2500", "", ""]]


def test_objects_clipped_to_the_image():
    objects = predict.Objects.from_boxes([[-3, -1, 12, 5]], [0.9]).clipped(height=4, width=10)
    assert objects.boxes.tolist() == [[0, 0, 10, 4]]
    assert objects.points.tolist() == [[4.5, 2.0]]


def test_objects_from_labels_renumbers_in_value_order():
    labels = np.zeros((6, 8), np.int32)
    labels[1:3, 1:4] = 9  # 6 px, value 9 -> id 2
    labels[4:6, 5:8] = 4  # 6 px, value 4 -> id 1
    objects = predict.Objects.from_labels(labels)
    assert objects.labels.max() == 2
    assert objects.areas.tolist() == [6.0, 6.0]
    assert objects.boxes.tolist() == [[5, 4, 8, 6], [1, 1, 4, 3]]
    assert objects.points.tolist() == [[6.5, 5.0], [2.5, 2.0]]


def test_objects_reject_mismatched_lengths():
    with pytest.raises(ValueError, match="2 points but 1 scores"):
        predict.Objects(points=[[0, 0], [1, 1]], scores=[0.5])


def test_output_names_keep_relative_folders_and_split_colliding_stems(tmp_path):
    names = predict.output_names([tmp_path / "a/x.jpg", tmp_path / "a/x.png", tmp_path / "b/x.jpg"])
    assert names == [("a/x.jpg", "a/x_jpg"), ("a/x.png", "a/x_png"), ("b/x.jpg", "b/x")]


def test_output_names_reject_the_same_file_twice(tmp_path):
    with pytest.raises(UserError, match="given more than once"):
        predict.output_names([tmp_path / "x.png", tmp_path / "x.png"])


def test_predict_images_writes_one_format_and_one_count_row_per_input(tmp_path):
    image = np.zeros((20, 30), np.uint8)
    inputs = [write_image(tmp_path / "in" / folder / name, image) for folder, name in
              (("a", "x.png"), ("a", "x.jpg"), ("b", "x.png"))]
    predictor = _box_predictor([[1, 1, 5, 5], [10, 10, 40, 15]], [0.9, 0.3], threshold=0.25)
    written = predict.predict_images(predictor, inputs, tmp_path / "out", progress=False)
    assert written[-1] == tmp_path / "out" / "counts.csv"
    rows = _read(tmp_path / "out" / "counts.csv")
    assert tuple(rows[0]) == predict.COUNT_COLUMNS
    assert [r[:2] for r in rows[1:]] == [["a/x.png", "2"], ["a/x.jpg", "2"], ["b/x.png", "2"]]
    objects = _read(tmp_path / "out" / "a" / "x_png.csv")
    assert tuple(objects[0]) == predict.OBJECT_COLUMNS
    assert objects[2][3:7] == ["10.00", "10.00", "30.00", "15.00"]  # clipped to the 30 px width
    assert (tmp_path / "out" / "b" / "x_overlay.png").is_file()
    assert not list((tmp_path / "out").rglob(".*partial*"))


def test_predict_images_writes_label_tiff_for_segmenters(tmp_path):
    labels = np.zeros((16, 16), np.int32)
    labels[2:6, 2:6] = 5

    def detect(image, thr):
        return predict.Objects.from_labels(labels)

    src = write_image(tmp_path / "cells.tif", np.zeros((16, 16), np.uint16))
    predict.predict_images(predict.Predictor("fake", "seg", 0.5, detect), [src], tmp_path / "out", progress=False)
    written = tifffile.imread(tmp_path / "out" / "cells_labels.tif")
    assert written.dtype == np.uint16 and written.max() == 1 and int((written == 1).sum()) == 16
    assert _read(tmp_path / "out" / "counts.csv")[1][-1] == "cells_labels.tif"


def test_resume_keeps_done_images_and_counts_them(tmp_path):
    inputs = [write_image(tmp_path / f"{i}.png", np.zeros((8, 8), np.uint8)) for i in range(2)]
    predict.predict_images(_box_predictor([[1, 1, 2, 2]], [0.9]), inputs[:1], tmp_path / "out", progress=False)

    def must_not_run_twice(image, thr):
        calls.append(1)
        return predict.Objects.from_boxes(np.zeros((0, 4)), np.zeros(0))

    calls = []
    predictor = predict.Predictor("fake", "boxes", 0.5, must_not_run_twice)
    predict.predict_images(predictor, inputs, tmp_path / "out", resume=True, progress=False)
    assert len(calls) == 1
    assert [r[:2] for r in _read(tmp_path / "out" / "counts.csv")[1:]] == [["0.png", "1"], ["1.png", "0"]]


def test_stacks_need_a_plane_and_small_images_are_refused(tmp_path):
    stack = tmp_path / "stack.tif"
    tifffile.imwrite(stack, np.zeros((5, 32, 32), np.uint16))
    predictor = _box_predictor([], [], min_size=16)
    with pytest.raises(DataError, match="5 planes"):
        predict.predict_images(predictor, [stack], tmp_path / "out", progress=False)
    with pytest.raises(DataError, match="outside 0..4"):
        predict.predict_images(predictor, [stack], tmp_path / "out", plane=7, progress=False)
    predict.predict_images(predictor, [stack], tmp_path / "out", plane=2, progress=False)
    tiny = write_image(tmp_path / "tiny.png", np.zeros((1, 1), np.uint8))
    with pytest.raises(DataError, match="smaller than the 16 px"):
        predict.predict_images(predictor, [tiny], tmp_path / "out2", progress=False)
    assert not (tmp_path / "out2" / "counts.csv").exists()


@pytest.mark.parametrize("value", [5, -1, float("nan")])
def test_thresholds_outside_the_score_range_are_refused(value):
    with pytest.raises(UserError, match="outside"):
        predict.check_threshold(value)


def test_thresholds_inside_an_unbounded_range_pass():
    assert predict.check_threshold(-0.5, (-np.inf, np.inf)) == -0.5


def test_to_uint8_keeps_the_shape_and_maps_every_dtype():
    eight = np.array([[0, 7, 255]], np.uint8)
    assert predict.to_uint8(eight) is eight
    np.testing.assert_array_equal(predict.to_uint8(np.array([[True, False]])), [[255, 0]])
    np.testing.assert_array_equal(predict.to_uint8(np.array([[0.0, 0.5, 1.0]], np.float32)), [[0, 128, 255]])
    np.testing.assert_array_equal(predict.to_uint8(np.array([[100, 4195]], np.uint16)), [[0, 255]])  # stretched
    np.testing.assert_array_equal(predict.to_uint8(np.array([[-1.0, np.inf, 3.0]])), [[0, 0, 255]])  # inf -> lowest
    np.testing.assert_array_equal(predict.to_uint8(np.full((2, 2), np.nan)), np.zeros((2, 2), np.uint8))
    rgb = np.zeros((2, 2, 3), np.uint16)
    rgb[0, 0] = (1000, 500, 0)
    assert predict.to_uint8(rgb)[0, 0].tolist() == [255, 128, 0]  # one stretch over all channels


def test_convert_channels_handles_single_channel_stacks_and_float_colour():
    from microrepro.common.imageio import convert_channels

    single = np.arange(6, dtype=np.uint16).reshape(2, 3, 1)
    assert convert_channels(single, 3).shape == (2, 3, 3)
    assert convert_channels(single, 1).shape == (2, 3)
    colour = np.full((2, 2, 3), 0.5, np.float32)
    grey = convert_channels(colour, 1)
    assert grey.dtype == np.float32 and np.allclose(grey, 0.5)
