"""Tiled prediction and tiled detection: exact stitching, seams, duplicates on tile borders."""

from __future__ import annotations

import numpy as np
import pytest

from microrepro.common.tiling import core_bounds, detect_tiled, nms, predict_tiled, tile_origins


def box_filter_3x3(batch: np.ndarray) -> np.ndarray:
    """3×3 mean with reflect padding; the same additions in the same order for every pixel."""
    padded = np.pad(batch, [(0, 0), (1, 1), (1, 1), (0, 0)], mode="reflect")
    h, w = batch.shape[1:3]
    total = np.zeros_like(batch)
    for dy in range(3):
        for dx in range(3):
            total = total + padded[:, dy : dy + h, dx : dx + w]
    return total / np.float32(9.0)


class Recorder:
    """Wraps a predict_fn and records the batch sizes it was called with."""

    def __init__(self, fn):
        self.fn, self.sizes = fn, []

    def __call__(self, batch):
        self.sizes.append(batch.shape[0])
        return self.fn(batch)


# ----------------------------------------------------------------------------------------------
# tile_origins / core_bounds


def test_tile_origins_cell_counting_sizes():
    # 512 tiles at stride 400 (overlap 112): the cell_counting crops of 1600 x 1200 images.
    assert tile_origins(1600, 512, 112) == [0, 400, 800, 1088]
    assert tile_origins(1200, 512, 112) == [0, 400, 688]
    assert tile_origins(2000, 512, 64) == [0, 448, 896, 1344, 1488]


def test_tile_origins_small_and_exact_fit():
    assert tile_origins(100, 512, 64) == [0]
    assert tile_origins(512, 512, 64) == [0]
    assert tile_origins(960, 512, 64) == [0, 448]  # 448 + 512 == 960: no extra tile


@pytest.mark.parametrize("length", [513, 700, 1023, 1200, 1600, 2000, 2047])
@pytest.mark.parametrize("tile,overlap", [(512, 64), (256, 0), (128, 100)])
def test_tile_origins_cover_with_overlap(length, tile, overlap):
    origins = tile_origins(length, tile, overlap)
    assert origins[0] == 0 and origins[-1] + tile == length
    gaps = np.diff(origins)
    assert np.all(gaps > 0) and np.all(tile - gaps >= overlap)


@pytest.mark.parametrize("args", [(100, 64, 64), (100, 64, -1), (0, 64, 8), (100, 64.0, 8)])
def test_tile_origins_rejects_bad_arguments(args):
    with pytest.raises(ValueError):
        tile_origins(*args)


def test_core_bounds_split_overlaps_in_the_middle():
    origins = tile_origins(300, 128, 32)
    assert origins == [0, 96, 172]
    assert core_bounds(origins, 128, 300) == [(0, 112), (112, 198), (198, 300)]


# ----------------------------------------------------------------------------------------------
# predict_tiled


def test_identity_is_exact_on_1600x1200_rgb():
    image = np.random.default_rng(0).random((1200, 1600, 3), dtype=np.float32)
    recorder = Recorder(lambda batch: batch)
    out = predict_tiled(recorder, image, tile=512, overlap=64, batch_size=4)
    assert out.dtype == np.float32 and out.shape == (1200, 1600, 3)
    assert np.array_equal(out, image)
    # 3 x 4 = 12 tiles, never more than batch_size at once.
    assert sum(recorder.sizes) == 12 and max(recorder.sizes) <= 4


def test_pointwise_function_equals_whole_image_on_2000x2000():
    image = np.random.default_rng(1).random((2000, 2000), dtype=np.float32)

    def fn(batch):
        return np.concatenate([batch * batch * np.float32(0.5) + np.float32(0.25), np.float32(1) - batch], axis=-1)

    out = predict_tiled(fn, image, tile=512, overlap=64, batch_size=8, out_channels=2)
    assert out.shape == (2000, 2000, 2)
    assert np.array_equal(out, fn(image[None, ..., None])[0])


@pytest.mark.parametrize("blend", ["linear", "none"])
def test_box_filter_equals_full_image_filter(blend):
    # Overlap 32 -> zero-weight margin 8 >= the filter's receptive-field radius 1.
    image = np.random.default_rng(2).random((300, 410, 2), dtype=np.float32)
    expected = box_filter_3x3(image[None])[0]
    out = predict_tiled(box_filter_3x3, image, tile=128, overlap=32, batch_size=3, blend=blend)
    assert np.array_equal(out[1:-1, 1:-1], expected[1:-1, 1:-1])
    # Tiles on the image border see the same reflect padding as the whole image: exact there too.
    assert np.array_equal(out, expected)


def test_box_filter_shows_seams_without_a_zero_margin():
    # The counter-example: with margin 0 a tile's edge pixels, which the filter computed from
    # its own padding instead of the neighbouring pixels, get a small weight: no longer exact.
    image = np.random.default_rng(3).random((300, 410, 1), dtype=np.float32)
    expected = box_filter_3x3(image[None])[0]
    out = predict_tiled(box_filter_3x3, image, tile=128, overlap=32, margin=0)
    assert not np.array_equal(out, expected)
    assert np.abs(out - expected).max() < 0.2  # blended, not broken


def test_linear_blend_ramps_across_a_seam():
    # Each tile predicts a constant: its own left origin. Across the seam between tiles at
    # x = 0 and x = 96 the output must move gradually from 0 to 96, not jump.
    image = np.zeros((128, 224), np.float32)
    origins = iter([0.0, 96.0])

    def fn(batch):
        return np.stack([np.full(batch.shape[1:3], next(origins), np.float32) for _ in batch])[..., None]

    out = predict_tiled(fn, image, tile=128, overlap=32, batch_size=1)[0, :, 0]
    assert np.all(out[: 96 + 8] == 0)  # tile 1 has weight 0 on its first margin=8 columns
    assert np.all(out[128 - 8 :] == 96)  # tile 0 has weight 0 on its last 8 columns
    ramp = out[96 + 8 : 128 - 8]
    assert np.all(np.diff(ramp) > 0) and 0 < ramp[0] < ramp[-1] < 96


def test_image_smaller_than_tile_is_padded_and_cropped_back():
    image = np.random.default_rng(4).random((100, 70), dtype=np.float32)
    out = predict_tiled(lambda b: b, image, tile=128, overlap=16)
    assert out.shape == (100, 70, 1)
    assert np.array_equal(out[..., 0], image)


def test_predict_tiled_rejects_wrong_output_shapes():
    image = np.zeros((64, 64, 1), np.float32)
    with pytest.raises(ValueError, match="must return"):
        predict_tiled(lambda b: b[:, ::2, ::2], image, tile=32, overlap=8)
    with pytest.raises(ValueError, match="out_channels"):
        predict_tiled(lambda b: b, image, tile=32, overlap=8, out_channels=2)
    with pytest.raises(ValueError, match="blend"):
        predict_tiled(lambda b: b, image, tile=32, overlap=8, blend="gaussian")
    with pytest.raises(ValueError, match="margin"):
        predict_tiled(lambda b: b, image, tile=32, overlap=8, margin=5)


# ----------------------------------------------------------------------------------------------
# nms / detect_tiled


def test_nms_exact():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30], [0, 0, 10, 5]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.95], np.float32)
    # IoU(0,1) = 90/110 = 0.818 > 0.5; IoU(3,0) = 50/100 = 0.5, not above the threshold.
    assert nms(boxes, scores, 0.5).tolist() == [3, 0, 2]
    # At 0.4 box 3 also removes box 0 (0.5) and box 1 (IoU 45/105 = 0.43).
    assert nms(boxes, scores, 0.4).tolist() == [3, 2]
    assert nms(np.zeros((0, 4)), np.zeros(0)).tolist() == []


def blob_detector(calls: list | None = None):
    """Boxes (x2/y2 exclusive) of the connected bright regions of a tile, score = mean value."""
    from skimage.measure import label, regionprops

    def detect(patch):
        regions = regionprops(label(patch > 0.5), intensity_image=patch)
        boxes = [(r.bbox[1], r.bbox[0], r.bbox[3], r.bbox[2]) for r in regions]
        if calls is not None:
            calls.append(len(boxes))
        return np.asarray(boxes, np.float32).reshape(-1, 4), np.array([r.intensity_mean for r in regions], np.float32)

    return detect


def test_object_on_a_tile_seam_is_reported_once():
    # Tiles of 128 at overlap 32 over 300 px start at 0, 96, 172; the first cut is at x = 112.
    image = np.zeros((300, 300), np.float32)
    objects = {
        "on the cut": (107, 40, 117, 50),  # x1, y1, x2, y2, centred on the cut x = 112
        "across tile 0's right edge": (123, 200, 133, 210),
        "on a corner of four tiles": (107, 107, 117, 117),
        "inside one tile": (20, 20, 30, 30),
    }
    for value, (x1, y1, x2, y2) in zip((0.9, 0.8, 0.7, 0.6), objects.values(), strict=True):
        image[y1:y2, x1:x2] = value
    calls: list[int] = []
    boxes, scores = detect_tiled(blob_detector(calls), image, tile=128, overlap=32, iou_threshold=0.5)
    assert sum(calls) > len(objects)  # the tiles did see the seam objects several times...
    assert sorted(map(tuple, boxes.tolist())) == sorted(objects.values())  # ...reported once each
    np.testing.assert_allclose(scores, [0.9, 0.8, 0.7, 0.6], rtol=1e-6)


def test_detect_tiled_small_image_and_no_detections():
    image = np.zeros((50, 60, 3), np.float32)
    image[10:20, 30:40] = 1.0
    boxes, scores = detect_tiled(lambda p: blob_detector()(p[..., 0]), image, tile=64, overlap=16)
    assert boxes.tolist() == [[30, 10, 40, 20]] and scores.tolist() == [1.0]
    boxes, scores = detect_tiled(blob_detector(), np.zeros((200, 200), np.float32), tile=64, overlap=16)
    assert boxes.shape == (0, 4) and scores.shape == (0,)
