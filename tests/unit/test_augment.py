"""Augmentations: exact geometry of flips/rotations, annotations follow pixels, seeding, padding."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from microrepro.common.augment import (
    AugmentConfig,
    augment,
    elastic_displacement,
    flip_horizontal,
    flip_vertical,
    rot90,
    sample,
    warp,
)

PAD = [-1.0, -1.0, -1.0, -1.0]


def bright_pixel_example(height: int, width: int, points) -> dict:
    """A bright image pixel at each point ([x, y]), one mask channel per point, one padding row."""
    image = np.zeros((height, width, 1), np.float32)
    mask = np.zeros((height, width, len(points)), np.float32)
    for label, (x, y) in enumerate(points):
        image[y, x] = 1.0
        mask[y, x, label] = 1.0
    return {
        "image": image,
        "mask": mask,
        "weights": np.ones((height, width, 1), np.float32),
        "points": np.array(list(points) + [(-1, -1)], np.float32),
        "labels": np.array(list(range(len(points))) + [-1], np.int32),
    }


def numpy(example: dict) -> dict:
    return {key: np.asarray(value) for key, value in example.items()}


def assert_points_on_bright_pixels(example: dict, tolerance: float = 0.0):
    """Each valid point sits on its own pixel (exactly, or within ``tolerance`` px of the
    brightest pixel of its mask channel after an interpolating warp)."""
    image, mask = example["image"][..., 0], example["mask"]
    for (x, y), label in zip(example["points"], example["labels"], strict=True):
        if label < 0:
            assert (x, y) == (-1, -1)
            continue
        if tolerance == 0:
            assert (x, y) == (int(x), int(y))
            assert image[int(y), int(x)] == 1.0 and mask[int(y), int(x), label] == 1.0
        else:
            row, col = np.unravel_index(np.argmax(mask[..., label]), mask.shape[:2])
            assert mask[row, col, label] > 0.2
            assert np.hypot(col - x, row - y) <= tolerance, (label, (x, y), (col, row))


# ----------------------------------------------------------------------------------------------
# exact transforms


def test_hflip_box_and_point_exact():
    example = {
        "image": np.zeros((8, 10, 1), np.float32),
        "boxes": np.array([[2, 3, 5, 7], PAD], np.float32),
        "labels": np.array([4, -1], np.int32),
    }
    out = numpy(flip_horizontal(example))
    assert out["boxes"].tolist() == [[5, 3, 8, 7], PAD]
    assert out["labels"].tolist() == [4, -1]
    out = numpy(flip_vertical(example))
    assert out["boxes"].tolist() == [[2, 1, 5, 5], PAD]


def test_flips_keep_points_on_their_pixel():
    example = bright_pixel_example(8, 10, [(2, 3), (9, 0), (0, 7)])
    out = numpy(flip_horizontal(example))
    assert out["points"].tolist() == [[7, 3], [0, 0], [9, 7], [-1, -1]]
    assert_points_on_bright_pixels(out)
    assert_points_on_bright_pixels(numpy(flip_vertical(example)))


def test_rot90_k1_exact():
    # Counter-clockwise like tf.image.rot90: point [x, y] -> [y, W - 1 - x] on a width-10 image.
    example = bright_pixel_example(8, 10, [(2, 3)])
    example["boxes"] = np.array([[2, 3, 5, 7], PAD], np.float32)
    out = numpy(rot90(example, 1))
    assert out["image"].shape == (10, 8, 1)
    assert out["points"].tolist() == [[3, 7], [-1, -1]]
    assert out["image"][7, 3, 0] == 1 and out["mask"][7, 3, 0] == 1 and out["mask"].sum() == 1
    assert out["boxes"].tolist() == [[3, 5, 7, 8], PAD]  # [y1, W - x2, y2, W - x1]
    np.testing.assert_array_equal(out["image"], tf.image.rot90(example["image"], 1).numpy())


@pytest.mark.parametrize("k", [0, 1, 2, 3, 5])
def test_rot90_keeps_points_on_their_pixel(k):
    example = bright_pixel_example(8, 10, [(2, 3), (9, 0), (0, 7), (5, 5)])
    out = numpy(rot90(example, tf.constant(k)))
    np.testing.assert_array_equal(out["image"], tf.image.rot90(example["image"], k).numpy())
    assert_points_on_bright_pixels(out)


def test_rot90_boxes_cover_the_same_pixels():
    example = {"image": np.zeros((8, 10, 1), np.float32), "mask": np.zeros((8, 10, 1), np.float32)}
    example["mask"][3:7, 2:5] = 1  # the pixels of box [2, 3, 5, 7]
    example["boxes"] = np.array([[2, 3, 5, 7]], np.float32)
    for k in range(4):
        out = numpy(rot90(example, k))
        x1, y1, x2, y2 = out["boxes"][0].astype(int)
        rows, cols = np.nonzero(out["mask"][..., 0])
        assert (x1, y1, x2, y2) == (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)


# ----------------------------------------------------------------------------------------------
# warps: rotation, zoom, elastic


def test_warp_identity_is_exact():
    rng = np.random.default_rng(0)
    example = {
        "image": rng.random((12, 9, 3), dtype=np.float32),
        "mask": rng.integers(0, 3, (12, 9, 1)).astype(np.float32),
        "boxes": np.array([[1, 2, 4, 6], PAD], np.float32),
        "points": np.array([[3, 4], [-1, -1]], np.float32),
    }
    zero_field = tf.zeros((12, 9, 2))
    out = numpy(warp(example, angle_degrees=0.0, scale=1.0, displacement=zero_field))
    for key in example:
        np.testing.assert_array_equal(out[key], example[key])


def test_warp_90_degrees_matches_rot90_on_a_square_image():
    image = np.random.default_rng(1).random((9, 9, 2), dtype=np.float32)
    out = numpy(warp({"image": image, "points": np.array([[2, 3]], np.float32)}, angle_degrees=90.0))
    np.testing.assert_allclose(out["image"], tf.image.rot90(image, 1).numpy(), atol=1e-5)
    np.testing.assert_allclose(out["points"], [[3, 6]], atol=1e-5)


@pytest.mark.parametrize("angle", [-170.0, -33.0, 17.0, 45.0, 122.0])
def test_arbitrary_rotation_keeps_points_on_their_pixel(angle):
    points = [(20, 20), (12, 30), (30, 14), (25, 25)]
    example = bright_pixel_example(41, 45, points)
    out = numpy(warp(example, angle_degrees=angle, interpolation={"mask": "bilinear"}))
    assert out["labels"].tolist() == [0, 1, 2, 3, -1]
    assert_points_on_bright_pixels(out, tolerance=1.0)


def test_rotation_moves_centres_exactly_and_boxes_per_rule():
    # 21 x 21 image, index centre (10, 10); a point 6 px right of it turns to 6 px above it.
    example = {
        "image": np.zeros((21, 21, 1), np.float32),
        "points": np.array([[16, 10]], np.float32),
        # a 4 x 4 box whose centre (edge coordinates 16.5, 10.5) is pixel [16, 10]
        "boxes": np.array([[14.5, 8.5, 18.5, 12.5]], np.float32),
    }
    out = numpy(warp(example, angle_degrees=90.0))
    np.testing.assert_allclose(out["points"], [[10, 4]], atol=1e-5)
    np.testing.assert_allclose(out["boxes"], [[8.5, 2.5, 12.5, 6.5]], atol=1e-5)
    out = numpy(warp(example, angle_degrees=45.0, box_rotation="corners"))
    half = 2 * np.sqrt(2)  # the box around a square turned by 45° is √2 larger
    cx, cy = 10.5 + 6 / np.sqrt(2), 10.5 - 6 / np.sqrt(2)
    np.testing.assert_allclose(out["boxes"], [[cx - half, cy - half, cx + half, cy + half]], atol=1e-4)


def test_zoom_scales_distances_and_box_sizes():
    example = {
        "image": np.zeros((21, 21, 1), np.float32),
        "points": np.array([[13, 8]], np.float32),
        # a 2 x 2 box centred on the same point (edge coordinates: the point + 0.5)
        "boxes": np.array([[12.5, 7.5, 14.5, 9.5]], np.float32),
    }
    out = numpy(warp(example, scale=2.0))
    # about the index centre (10, 10): [13, 8] -> [10 + 2*3, 10 - 2*2]; the box doubles around it
    np.testing.assert_allclose(out["points"], [[16, 6]], atol=1e-6)
    np.testing.assert_allclose(out["boxes"], [[14.5, 4.5, 18.5, 8.5]], atol=1e-6)


def test_objects_leaving_the_image_become_padding():
    example = bright_pixel_example(21, 21, [(0, 0), (10, 10)])
    example["boxes"] = np.array([[0, 0, 2, 2], [9, 9, 12, 12], PAD], np.float32)
    out = numpy(warp(example, angle_degrees=45.0))
    # the corner pixel lands outside the image, the centre pixel stays
    np.testing.assert_allclose(out["points"], [[-1, -1], [10, 10], [-1, -1]], atol=1e-5)
    assert out["labels"].tolist() == [-1, 1, -1]  # labels pair with boxes, which go the same way
    assert out["boxes"][0].tolist() == PAD and out["boxes"][2].tolist() == PAD


def test_nearest_interpolation_keeps_mask_labels():
    mask = np.zeros((32, 32, 1), np.float32)
    mask[5:15, 5:15], mask[18:28, 10:30] = 1, 2
    weights = np.zeros((32, 32, 1), np.float32)
    weights[10:20, 10:20] = 1
    example = {"image": np.zeros((32, 32, 1), np.float32), "mask": mask, "weights": weights}
    out = numpy(warp(example, angle_degrees=30.0, scale=1.1))
    assert set(np.unique(out["mask"])) == {0.0, 1.0, 2.0}
    assert len(np.unique(out["weights"])) > 2  # bilinear blends the weight map


def test_elastic_alpha_zero_is_identity():
    rng = np.random.default_rng(2)
    example = {
        "image": rng.random((16, 16, 1), dtype=np.float32),
        "points": np.array([[3, 5], [-1, -1]], np.float32),
        "boxes": np.array([[1, 1, 4, 4]], np.float32),
    }
    field = elastic_displacement(16, 16, alpha=0.0, sigma=4.0, seed=[1, 2])
    np.testing.assert_array_equal(field.numpy(), 0)
    out = numpy(warp(example, displacement=field))
    for key in example:
        np.testing.assert_array_equal(out[key], example[key])
    out = numpy(augment(example, AugmentConfig(elastic_alpha=0.0, elastic_sigma=4.0), seed=[3, 4]))
    for key in example:
        np.testing.assert_array_equal(out[key], example[key])


def test_elastic_moves_points_with_their_pixel():
    points = [(16, 16), (24, 40), (40, 24), (32, 32)]
    example = bright_pixel_example(64, 64, points)
    field = elastic_displacement(64, 64, alpha=150.0, sigma=8.0, seed=[5, 6])  # max |∇d| ≈ 0.8: no fold
    assert np.abs(field.numpy()).max() > 5.0  # a real deformation, not a no-op
    out = numpy(warp(example, displacement=field, interpolation={"mask": "bilinear"}))
    moved = np.hypot(*(out["points"][:4] - np.array(points, np.float32)).T)
    assert moved.max() > 1.0
    assert_points_on_bright_pixels(out, tolerance=1.0)


def test_sample_nearest_and_reflect():
    image = np.arange(12, dtype=np.float32).reshape(3, 4, 1)
    xs = tf.constant([[-1.0, 0.5, 3.0, 4.0]])
    ys = tf.constant([[0.0, 1.5, 2.0, 2.0]])
    # floor(x + 0.5): 0.5 -> 1 and 1.5 -> 2 (no banker's rounding); outside -> 0
    assert sample(image, xs, ys, "nearest", "constant").numpy()[..., 0].tolist() == [[0, 9, 11, 0]]
    assert sample(image, xs, ys, "nearest", "reflect").numpy()[..., 0].tolist() == [[0, 9, 11, 11]]
    assert sample(image, xs, ys, "bilinear", "nearest").numpy()[..., 0].tolist() == [[0, 6.5, 11, 11]]


# ----------------------------------------------------------------------------------------------
# the composed augmentation

FULL = AugmentConfig(
    flip_horizontal=True,
    flip_vertical=True,
    rot90=True,
    rotation_degrees=20.0,
    scale_range=(0.9, 1.1),
    elastic_alpha=40.0,
    elastic_sigma=4.0,
    brightness=0.1,
    contrast=(0.8, 1.2),
    gaussian_noise_std=0.02,
)


def full_example() -> dict:
    rng = np.random.default_rng(3)
    return {
        "image": rng.random((32, 32, 3), dtype=np.float32),
        "mask": (rng.random((32, 32, 1)) > 0.5).astype(np.float32),
        "weights": rng.random((32, 32, 1), dtype=np.float32),
        "boxes": np.array([[10, 10, 20, 20], PAD, PAD], np.float32),
        "points": np.array([[15, 15], [-1, -1]], np.float32),
        "labels": np.array([2, -1, -1], np.int32),
        "id": np.array(b"sample-7"),
    }


def test_same_seed_same_output_different_seed_different():
    first = numpy(augment(full_example(), FULL, seed=[7, 11]))
    again = numpy(augment(full_example(), FULL, seed=tf.constant([7, 11], tf.int64)))
    other = numpy(augment(full_example(), FULL, seed=[7, 12]))
    for key in first:
        np.testing.assert_array_equal(first[key], again[key])
    assert not np.array_equal(first["image"], other["image"])
    assert first["id"] == b"sample-7"


def test_padding_rows_stay_padding_under_every_transform():
    for seed in range(3):
        out = numpy(augment(full_example(), FULL, seed=[0, seed]))
        assert out["boxes"][1:].tolist() == [PAD, PAD]
        assert out["points"][1].tolist() == [-1, -1]
        assert out["labels"][1:].tolist() == [-1, -1]
        assert out["labels"][0] in (2, -1)
        assert out["image"].min() >= 0 and out["image"].max() <= 1
        assert set(np.unique(out["mask"])) <= {0.0, 1.0}


def test_default_config_is_identity_and_tf_function_matches_eager():
    example = full_example()
    out = numpy(augment(example, AugmentConfig(), seed=[1, 1]))
    for key in example:
        np.testing.assert_array_equal(out[key], example[key])
    # Graph mode (as inside tf.data) gives what eager mode gives; one warp keeps the trace short
    # (test_pipeline.py runs flips, rot90 and elastic inside tf.data).
    config = AugmentConfig(rotation_degrees=20.0, brightness=0.1)
    graph = tf.function(lambda ex, seed: augment(ex, config, seed), autograph=False)
    eager = numpy(augment(example, config, seed=[4, 4]))
    traced = numpy(graph(example, tf.constant([4, 4], tf.int64)))
    assert traced["id"] == eager["id"]
    for key in ("image", "mask", "weights", "boxes", "points", "labels"):
        np.testing.assert_allclose(traced[key], eager[key], atol=1e-5)


def test_photometric_changes_only_the_image():
    example = {"image": np.full((64, 64, 1), 0.5, np.float32), "mask": np.ones((64, 64, 1), np.float32)}
    out = numpy(augment(example, AugmentConfig(gaussian_noise_std=0.1), seed=[0, 1]))
    assert abs(float(np.std(out["image"] - 0.5)) - 0.1) < 0.01
    np.testing.assert_array_equal(out["mask"], example["mask"])
    out = numpy(augment(example, AugmentConfig(brightness=0.2), seed=[0, 1]))
    delta = np.unique(out["image"] - 0.5)
    assert len(delta) == 1 and 0 < abs(delta[0]) <= 0.2


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rotation_degrees": -5.0},
        {"brightness": float("nan")},
        {"scale_range": (1.2, 0.8)},
        {"scale_range": (0.0, 1.0)},
        {"contrast": (1.0,)},
        {"elastic_alpha": 10.0},  # sigma missing
        {"box_rotation": "edges"},
        {"fill_mode": "wrap"},
        {"interpolation": {"density": "cubic"}},
        {"interpolation": {"boxes": "nearest"}},
    ],
)
def test_config_rejects_bad_values(kwargs):
    with pytest.raises(ValueError):
        AugmentConfig(**kwargs)


def test_unregistered_dense_key_is_an_error():
    example = {"image": np.zeros((8, 8, 1), np.float32), "density": np.zeros((8, 8, 1), np.float32)}
    with pytest.raises(ValueError, match="density"):
        augment(example, AugmentConfig(flip_horizontal=True), seed=[0, 0])
    config = AugmentConfig(flip_horizontal=True, interpolation={"density": "bilinear"})
    out = augment(example, config, seed=[0, 0])
    assert out["density"].shape == (8, 8, 1)


def test_config_loads_from_yaml_values():
    # Papers keep augmentation settings in config.yaml: lists become tuples, bad keys are named.
    from microrepro.common.config import from_dict
    from microrepro.common.errors import ConfigError

    config = from_dict(AugmentConfig, {"rot90": True, "scale_range": [0.9, 1.1], "box_rotation": "corners"})
    assert config.scale_range == (0.9, 1.1) and config.rot90 and config.box_rotation == "corners"
    assert config.geometric and config.warps
    assert not AugmentConfig(brightness=0.1).geometric
    with pytest.raises(ConfigError, match="rotation_degree"):
        from_dict(AugmentConfig, {"rotation_degree": 10})
