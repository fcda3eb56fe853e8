"""The tf.data pipeline: padding, crop grids, random crops, determinism, batching, throughput."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from microrepro.common.augment import AugmentConfig
from microrepro.common.pipeline import (
    crop_origins,
    example_from_sample,
    extract_crops,
    make_dataset,
    pad_annotations,
    pipeline_throughput,
    random_crop,
)
from microrepro.datasets.base import Sample

PAD = [-1.0, -1.0, -1.0, -1.0]


def take(dataset, n):
    return [tf.nest.map_structure(np.asarray, element) for element in dataset.take(n)]


def coordinate_image(height: int, width: int) -> np.ndarray:
    """float32 image whose pixel (r, c) holds r * width + c, so any crop tells where it came from."""
    return np.arange(height * width, dtype=np.float32).reshape(height, width, 1)


def bright_points_examples(n: int, size: int, count: int, seed: int = 0):
    """uint8 images with a 255 pixel at each point, as a dict of arrays (points padded to 4)."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, size, size, 1), np.uint8)
    points = []
    for i in range(n):
        pts = rng.integers(0, size, (count, 2))
        images[i, pts[:, 1], pts[:, 0]] = 255
        points.append(pts.astype(np.float32))
    return {"image": images, "points": pad_annotations(points, 4)}


# ----------------------------------------------------------------------------------------------
# numpy helpers


def test_pad_annotations_exact():
    boxes = [np.array([[1, 2, 3, 4]], np.float32), np.zeros((0, 4), np.float32), np.array([[5, 6, 7, 8], [0, 0, 1, 1]])]
    out = pad_annotations(boxes, 3)
    assert out.shape == (3, 3, 4) and out.dtype == np.float32
    assert out.tolist() == [
        [[1, 2, 3, 4], PAD, PAD],
        [PAD, PAD, PAD],
        [[5, 6, 7, 8], [0, 0, 1, 1], PAD],
    ]
    labels = pad_annotations([np.array([3], np.int32), np.array([], np.int32)])
    assert labels.tolist() == [[3], [-1]] and labels.dtype == np.int32
    with pytest.raises(ValueError, match="max_n"):
        pad_annotations(boxes, 1)
    with pytest.raises(ValueError, match="widths"):
        pad_annotations([np.zeros((1, 4)), np.zeros((1, 2))])


def test_crop_origins_cell_counting_gives_twelve_crops():
    # cell_counting Sec. 4.1: twelve partially overlapping 512 x 512 crops of a 1600 x 1200 image.
    origins = crop_origins(1200, 1600, 512, 400)
    assert len(origins) == 12
    assert sorted({y for y, _ in origins}) == [0, 400, 688]
    assert sorted({x for _, x in origins}) == [0, 400, 800, 1088]
    assert origins[:2] == [(0, 0), (0, 400)] and origins[-1] == (688, 1088)
    with pytest.raises(ValueError, match="stride"):
        crop_origins(1200, 1600, 512, 600)


def test_extract_crops_match_origins_and_pad_small_images():
    image = coordinate_image(1200, 1600)[..., 0]
    crops = extract_crops(image, 512, 400)
    assert crops.shape == (12, 512, 512)
    for crop, (y, x) in zip(crops, crop_origins(1200, 1600, 512, 400), strict=True):
        assert crop[0, 0] == y * 1600 + x and crop[-1, -1] == (y + 511) * 1600 + x + 511
    small = extract_crops(np.ones((3, 5, 2), np.uint8), 4, 4)
    assert small.shape == (2, 4, 4, 2) and small[0, 3].sum() == 0  # zero-padded bottom row


def test_example_from_sample():
    mask = np.zeros((6, 8), np.int32)
    mask[1:3, 2:4] = 7
    sample = Sample(id="a", image_array=np.ones((6, 8), np.uint8), points=[[3, 2]], mask_array=mask)
    example = example_from_sample(sample)
    assert example["mask"].dtype == np.uint8 and example["mask"].sum() == 4
    assert example["points"].tolist() == [[3, 2]] and example["labels"].tolist() == [0]
    assert example_from_sample(sample, mask="instances")["mask"].max() == 7
    assert "mask" not in example_from_sample(sample, mask=None)


# ----------------------------------------------------------------------------------------------
# random_crop


def test_random_crop_moves_pixels_and_annotations_together():
    image = coordinate_image(20, 30)
    example = {
        "image": image,
        "mask": image.copy(),
        "points": np.array([[5, 4], [29, 19], [-1, -1]], np.float32),
        "boxes": np.array([[4, 3, 8, 7], [20, 10, 30, 20], PAD], np.float32),
        "labels": np.array([1, 2, -1], np.int32),
    }
    out = {k: np.asarray(v) for k, v in random_crop(example, (10, 12), seed=[3, 9]).items()}
    assert out["image"].shape == (10, 12, 1)
    np.testing.assert_array_equal(out["mask"], out["image"])
    y0, x0 = divmod(int(out["image"][0, 0, 0]), 30)
    again = random_crop(example, (10, 12), seed=[3, 9])["image"].numpy()
    np.testing.assert_array_equal(again, out["image"])
    for (x, y), (px, py) in zip(out["points"], example["points"], strict=True):
        if (x, y) != (-1, -1):
            assert (x, y) == (px - x0, py - y0)
            assert out["image"][int(y), int(x), 0] == py * 30 + px  # still on its own pixel
    for box, src in zip(out["boxes"], example["boxes"], strict=True):
        if box.tolist() != PAD:
            shifted = src - [x0, y0, x0, y0]
            np.testing.assert_array_equal(box, np.clip(shifted, 0, [12, 10, 12, 10]))
    assert out["boxes"][2].tolist() == PAD and out["labels"][2] == -1


def test_random_crop_drops_objects_outside_and_clips_boxes():
    # A 20 x 20 crop of a 20 x 40 image can only start at y = 0; find the seed's x0 from pixel 0.
    image = coordinate_image(20, 40)
    example = {
        "image": image,
        "boxes": np.array([[0, 0, 4, 4], [36, 16, 40, 20], [10, 5, 30, 9]], np.float32),
        "points": np.array([[0, 0], [39, 19]], np.float32),
        "labels": np.array([0, 1, 2], np.int32),
    }
    for seed in range(8):
        out = {k: np.asarray(v) for k, v in random_crop(example, 20, seed=[0, seed]).items()}
        x0 = int(out["image"][0, 0, 0])
        assert out["labels"].tolist() == [0 if x0 <= 1 else -1, 1 if x0 >= 19 else -1, 2 if x0 <= 19 else -1]
        assert out["points"][0].tolist() == ([0, 0] if x0 == 0 else [-1, -1])
        if out["labels"][2] == 2:
            assert out["boxes"][2].tolist() == [max(10 - x0, 0), 5, min(30 - x0, 20), 9]


def test_random_crop_pads_small_images():
    out = random_crop({"image": np.ones((5, 6, 1), np.float32), "weights": np.ones((5, 6, 1), np.float32)}, 8, [1, 1])
    assert out["image"].shape == (8, 8, 1) and out["weights"].shape == (8, 8, 1)
    assert float(tf.reduce_sum(out["image"])) == 30.0


# ----------------------------------------------------------------------------------------------
# make_dataset


def test_unshuffled_dataset_reproduces_the_arrays_in_order():
    images = np.random.default_rng(0).integers(0, 256, (5, 8, 8, 3)).astype(np.uint8)
    masks = np.random.default_rng(1).integers(0, 2, (5, 8, 8)).astype(bool)
    dataset = make_dataset(
        {"image": images, "mask": masks}, batch_size=2, shuffle=False, repeat=False, drop_remainder=False
    )
    batches = take(dataset, 10)
    assert [b["image"].shape[0] for b in batches] == [2, 2, 1]
    image = np.concatenate([b["image"] for b in batches])
    assert image.dtype == np.float32
    np.testing.assert_array_equal(image, images.astype(np.float32) / np.float32(255))
    np.testing.assert_array_equal(np.concatenate([b["mask"] for b in batches])[..., 0], masks)
    assert dataset.options().deterministic is True


def test_same_seed_same_batches_and_epochs_reshuffle():
    data = {"image": np.arange(6, dtype=np.float32).reshape(6, 1, 1, 1) / 10}
    first = take(make_dataset(data, batch_size=6, seed=3), 2)
    second = take(make_dataset(data, batch_size=6, seed=3), 2)
    other = take(make_dataset(data, batch_size=6, seed=4), 1)
    np.testing.assert_array_equal(first[0]["image"], second[0]["image"])
    np.testing.assert_array_equal(first[1]["image"], second[1]["image"])
    epoch0, epoch1 = (np.round(b["image"].ravel() * 10).astype(int).tolist() for b in first)
    assert sorted(epoch0) == sorted(epoch1) == list(range(6))  # every example once per epoch
    assert epoch0 != epoch1  # a new order each epoch
    assert not np.array_equal(first[0]["image"], other[0]["image"])


def test_random_crops_are_reproducible_and_change_every_epoch():
    data = {"image": coordinate_image(16, 16)[None].repeat(2, axis=0)}

    def origins(seed):
        batches = take(make_dataset(data, batch_size=2, seed=seed, crop_size=4, shuffle=False), 3)
        return [b["image"][:, 0, 0, 0].tolist() for b in batches]  # crop origin as y * 16 + x

    first = origins(seed=1)
    assert first == origins(seed=1)
    assert first != origins(seed=2)
    assert len({value for batch in first for value in batch}) > 2  # new crops per element/epoch


def test_augmented_crops_keep_points_on_their_pixels():
    data = bright_points_examples(n=4, size=40, count=3)
    config = AugmentConfig(flip_horizontal=True, flip_vertical=True, rot90=True)
    seen = 0
    for batch in take(make_dataset(data, batch_size=2, seed=5, augment=config, crop_size=24), 4):
        assert batch["image"].shape == (2, 24, 24, 1)
        for image, points in zip(batch["image"], batch["points"], strict=True):
            for x, y in points:
                if (x, y) != (-1, -1):
                    assert image[int(y), int(x), 0] == 1.0
                    seen += 1
            # every bright pixel of the crop is an annotated point (none lost, none invented)
            assert (image == 1.0).sum() == sum((p != -1).any() for p in points)
    assert seen > 0


def test_variable_size_list_needs_crop_or_batch_one():
    rng = np.random.default_rng(2)
    examples = [
        {"image": rng.random((30, 20), dtype=np.float32), "boxes": np.array([[1, 1, 5, 5]], np.float32)},
        {
            "image": rng.random((24, 28), dtype=np.float32),
            "boxes": np.array([[2, 2, 6, 6], [10, 10, 14, 14]], np.float32),
        },
    ]
    with pytest.raises(ValueError, match="crop_size"):
        make_dataset(examples, batch_size=2)
    single = take(make_dataset(examples, batch_size=1, shuffle=False, repeat=False), 2)
    assert single[0]["image"].shape == (1, 30, 20, 1) and single[1]["image"].shape == (1, 24, 28, 1)
    assert single[0]["boxes"].tolist() == [[[1, 1, 5, 5], PAD]]  # padded to the longest list
    cropped = take(make_dataset(examples, batch_size=2, crop_size=16, seed=1), 1)[0]
    assert cropped["image"].shape == (2, 16, 16, 1) and cropped["boxes"].shape == (2, 2, 4)


def test_to_model_and_labels_padding():
    examples = [
        {"image": np.zeros((8, 8, 3), np.uint8), "boxes": np.array([[0, 0, 2, 2]]), "labels": np.array([1])},
        {"image": np.zeros((8, 8, 3), np.uint8), "boxes": np.zeros((0, 4)), "labels": np.zeros((0,))},
    ]

    def to_model(example):
        if tf.reduce_any(example["labels"] >= 0):  # python control flow: AutoGraph converts it
            weight = tf.constant(1.0)
        else:
            weight = tf.constant(0.5)
        return example["image"], example["labels"], weight

    x, y, w = take(make_dataset(examples, batch_size=2, shuffle=False, to_model=to_model, max_annotations=3), 1)[0]
    assert x.shape == (2, 8, 8, 3) and y.tolist() == [[1, -1, -1], [-1, -1, -1]] and w.tolist() == [1.0, 0.5]


@pytest.mark.parametrize(
    "examples,kwargs,match",
    [
        ({"image": np.zeros((2, 4, 4)), "mask": np.zeros((3, 4, 4))}, {}, "equally long"),
        ({"image": np.zeros((2, 4, 4)), "mask": np.zeros((2, 5, 4))}, {}, "images are"),
        ({"image": np.zeros((2, 4, 4))}, {"batch_size": 0}, "batch_size"),
        ([], {}, "empty"),
        ([{"image": np.zeros((4, 4))}, {"mask": np.zeros((4, 4))}], {}, "image"),
        ("images/", {}, "dict of arrays"),
    ],
)
def test_make_dataset_rejects_bad_input(examples, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_dataset(examples, **{"batch_size": 1, **kwargs})


def test_pipeline_throughput_reports_rates():
    dataset = make_dataset({"image": np.zeros((8, 16, 16, 1), np.uint8)}, batch_size=4)
    stats = pipeline_throughput(dataset, n_batches=5, warmup=1)
    assert stats["batches"] == 5 and stats["images"] == 20
    assert stats["images_per_s"] == pytest.approx(4 * stats["batches_per_s"])
    assert stats["seconds"] > 0
    finite = make_dataset({"image": np.zeros((4, 4, 4, 1), np.uint8)}, batch_size=4, repeat=False)
    with pytest.raises(ValueError, match="no batch"):
        pipeline_throughput(finite, n_batches=3, warmup=1)


def test_full_augmentation_runs_in_graph_mode_and_points_follow():
    # Rotation, zoom and elastic traced inside tf.data (eager determinism: test_augment.py).
    data = bright_points_examples(n=3, size=40, count=2, seed=1)
    config = AugmentConfig(
        rotation_degrees=15.0,
        scale_range=(0.9, 1.1),
        elastic_alpha=30.0,
        elastic_sigma=4.0,
        brightness=0.05,
        gaussian_noise_std=0.01,
    )
    seen = 0
    for batch in take(make_dataset(data, batch_size=3, seed=2, augment=config, crop_size=32), 2):
        assert batch["image"].shape == (3, 32, 32, 1) and batch["points"].shape == (3, 4, 2)
        assert np.all(batch["points"][:, 2:] == -1)  # padding rows stay padding
        assert 0 <= batch["image"].min() and batch["image"].max() <= 1
        for image, points in zip(batch["image"][..., 0], batch["points"], strict=True):
            padded = np.pad(image, 1)
            for x, y in points[(points != -1).any(axis=1)]:
                col, row = int(round(x)) + 1, int(round(y)) + 1
                # the (interpolated) bright pixel is within a pixel of the moved point
                assert padded[row - 1 : row + 2, col - 1 : col + 2].max() > 0.2, (x, y)
                seen += 1
    assert seen > 0


def test_real_fluorescent_neuronal_cells_crops_and_augmentation(shared_data):
    # The cell_counting data: 1600 x 1200 RGB fields with 0/255 masks of yellow neurons.
    from microrepro.common.imageio import read_image

    folder = shared_data("fnc_sample") / "dataset" / "yellow" / "sample"
    names = sorted(p.name for p in (folder / "images").glob("*.png"))
    images = np.stack([read_image(folder / "images" / name, channels=3) for name in names])
    masks = np.stack([read_image(folder / "masks" / name, channels=1) > 0 for name in names])
    assert images.shape[1:] == (1200, 1600, 3)
    crops = extract_crops(masks[1], 512, 400)
    assert crops.shape == (12, 512, 512)
    assert crops.any(axis=(1, 2)).sum() > 1  # the crowded field has cells in several crops

    config = AugmentConfig(flip_horizontal=True, flip_vertical=True, rot90=True)
    batch = take(make_dataset({"image": images, "mask": masks}, batch_size=2, augment=config, crop_size=512), 1)[0]
    image, mask = batch["image"], batch["mask"][..., 0]
    assert set(np.unique(mask)) <= {0.0, 1.0}
    # The mask still sits on the cells: yellow (red + green) is brighter inside it than outside.
    yellow = image[..., 0] + image[..., 1]
    assert mask.sum() > 100  # seeded: these crops do hold cells
    assert yellow[mask == 1].mean() > yellow[mask == 0].mean() + 0.1
