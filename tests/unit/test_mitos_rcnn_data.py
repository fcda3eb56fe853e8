"""MITOS-RCNN data handling: boxes around centroids, subsections at the paper's scale, rotations."""

from __future__ import annotations

import numpy as np
import pytest

from microrepro.datasets.base import Sample
from microrepro.reproductions.mitos_rcnn import data as data_lib


def test_subsection_px_matches_a_quarter_hpf():
    assert data_lib.subsection_px(299, 0.777) == 385  # 1539 / 4 = 384.75
    assert data_lib.subsection_px(128, 0.777) == 165
    with pytest.raises(ValueError, match="scale"):
        data_lib.subsection_px(128, 0.0)


def test_boxes_around_centroids_exact_and_clipped():
    boxes = data_lib.boxes_around([[50, 60], [5, 95]], 40, height=100, width=100)
    np.testing.assert_array_equal(boxes, np.float32([[30, 40, 70, 80], [0, 75, 25, 100]]))
    assert data_lib.boxes_around(np.zeros((0, 2)), 10).shape == (0, 4)
    with pytest.raises(ValueError, match="positive"):
        data_lib.boxes_around([[1, 1]], 0)


def test_cut_subsection_zero_pads_outside():
    image = np.arange(16, dtype=np.uint8).reshape(4, 4)
    out = data_lib.cut_subsection(image, 2, 3, 3)
    np.testing.assert_array_equal(out, np.array([[14, 15, 0], [0, 0, 0], [0, 0, 0]], np.uint8))


def test_field_objects_marks_lookalikes_as_not_mitotic():
    field = Sample(id="f", image_array=np.zeros((8, 8, 3), np.uint8), points=[[1, 2]],
                   meta={"confusers": [{"kind": "lymphocyte", "x": 3.0, "y": 4.0}]})
    points, classes = data_lib.field_objects(field)
    np.testing.assert_array_equal(points, np.float32([[1, 2], [3, 4]]))
    np.testing.assert_array_equal(classes, [data_lib.MITOTIC, data_lib.NOT_MITOTIC])


def test_make_subsections_box_in_input_pixels():
    """A 200 px field, one figure at (100, 100), 0.25 um/px: 10 um box = 40 px; scale 0.5 -> 20 px."""
    image = np.zeros((200, 200, 3), np.uint8)
    field = Sample(id="f", image_array=image, points=[[100, 100]], pixel_size_um=0.25)
    subs = data_lib.make_subsections([field], input_size=100, scale=0.5, box_um=10.0, per_field=3, seed=0, max_boxes=4)
    # The subsection is the whole field (200 px source -> 100 px input): one box, exactly placed.
    assert subs.images.shape == (3, 100, 100, 3) and subs.boxes.shape == (3, 4, 4)
    np.testing.assert_allclose(subs.boxes[:, 0], np.tile([[40, 40, 60, 60]], (3, 1)))
    np.testing.assert_array_equal(subs.classes[:, 0], [0, 0, 0])
    assert np.all(subs.boxes[:, 1:] == -1) and np.all(subs.classes[:, 1:] == -1)


def test_make_subsections_only_keeps_centroids_inside():
    image = np.zeros((400, 400, 3), np.uint8)
    field = Sample(id="f", image_array=image, points=[[10, 10], [390, 390]], pixel_size_um=0.25)
    subs = data_lib.make_subsections([field], input_size=100, scale=1.0, box_um=10.0, per_field=20, seed=1)
    counts = (subs.classes >= 0).sum(axis=1)
    assert counts.max() <= 1  # a 100 px window never holds both corners
    for boxes, classes in zip(subs.boxes, subs.classes, strict=True):
        for box in boxes[classes >= 0]:
            assert 0 <= box[0] < box[2] <= 100 and 0 <= box[1] < box[3] <= 100


def test_training_dataset_rotations_keep_boxes_on_the_object():
    image = np.zeros((1, 64, 64, 3), np.uint8)
    image[0, 8:24, 40:56] = 255  # a bright square at x 40-56, y 8-24
    subs = data_lib.Subsections(image, np.float32([[[40, 8, 56, 24], [-1, -1, -1, -1]]]), np.int32([[0, -1]]))
    ds = data_lib.training_dataset(subs, batch_size=1, seed=3, rotations=True)
    seen = set()
    for images, target in ds.take(12):
        img, box = images.numpy()[0], target["boxes"].numpy()[0, 0]
        x1, y1, x2, y2 = box.astype(int)
        assert img[y1:y2, x1:x2].min() == 1.0 and img.sum() == 16 * 16 * 3  # the box covers the square exactly
        assert target["classes"].numpy()[0].tolist() == [0, -1]
        seen.add(tuple(box.tolist()))
    assert len(seen) > 1  # some rotation happened
