"""Synthetic generators: determinism, exact ground truth, the statistics the papers depend on,
closeness to the real data (when present), previews, and the shared noise/shape helpers."""

from __future__ import annotations

import csv
import time
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest

from microrepro.common.imageio import read_image
from microrepro.datasets.base import Sample
from microrepro.datasets.synthetic import CONFIGS, GENERATORS, he_fields, neurons, noise, preview, simcep, spines, stats

# Small but real configs: every default is kept except the image size.
SMALL = {
    "simcep": simcep.SimcepConfig(),
    # A quarter of a real field, same cell density (5-10 cells when crowded).
    "neurons": neurons.NeuronsConfig(image_size=(600, 800), crowded_probability=0.4),
    "spines": spines.SpinesConfig(),
    "he": he_fields.HEConfig(image_size=(256, 256), mitoses_per_mm2=400.0),
}


@pytest.fixture(scope="module")
def small_samples():
    return {name: GENERATORS[name](4, 7, SMALL[name]) for name in GENERATORS}


def _same(a: Sample, b: Sample) -> bool:
    return (
        a.id == b.id
        and np.array_equal(a.image, b.image)
        and np.array_equal(a.mask, b.mask)
        and np.array_equal(a.points, b.points)
        and np.array_equal(a.boxes, b.boxes)
        and a.meta["confusers"] == b.meta["confusers"]
    )


# ----------------------------------------------------------------------------- API and determinism


def test_registry_lists_the_four_generators_and_configs():
    assert set(GENERATORS) == {"simcep", "neurons", "spines", "he"} == set(CONFIGS)
    for name, cls in CONFIGS.items():
        assert GENERATORS[name].__module__ == cls.__module__


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_same_seed_same_images_and_prefix_property(name, small_samples):
    three = GENERATORS[name](3, 7, SMALL[name])
    assert all(_same(a, b) for a, b in zip(three, small_samples[name][:3], strict=True))
    other = GENERATORS[name](1, 8, SMALL[name])[0]
    assert not np.array_equal(other.image, three[0].image)


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_sample_types_and_shapes(name, small_samples):
    for s in small_samples[name]:
        image = s.image
        assert image.dtype == np.uint8
        assert image.ndim == (3 if name in ("neurons", "he") else 2)
        assert s.mask.dtype == np.int32 and s.mask.shape == image.shape[:2]
        assert s.points.dtype == np.float32 and s.points.shape == (s.count, 2)
        assert s.boxes.dtype == np.float32 and s.boxes.shape == (s.count, 4)
        assert s.labels.dtype == np.int32 and np.array_equal(s.labels, np.zeros(s.count, np.int32))
        assert isinstance(s.meta["confusers"], list)


def test_negative_n_and_bad_config_raise_value_error():
    with pytest.raises(ValueError, match="n must be >= 0"):
        simcep.generate(-1, 0)
    with pytest.raises(ValueError, match="max_overlap"):
        simcep.generate(1, 0, simcep.SimcepConfig(max_overlap=1.5))
    with pytest.raises(ValueError, match="scanner"):
        he_fields.generate(1, 0, he_fields.HEConfig(scanner="leica"))
    with pytest.raises(ValueError, match="count_weights"):
        spines.generate(1, 0, spines.SpinesConfig(count_weights=()))
    with pytest.raises(ValueError, match="seed"):
        noise.image_rng(-1, 0, 0)


# ----------------------------------------------------------------------------- exact ground truth


@pytest.mark.parametrize("name", ["simcep", "neurons", "he"])
def test_mask_points_boxes_agree(name, small_samples):
    for s in small_samples[name]:
        mask = s.mask
        assert np.array_equal(np.unique(mask), np.arange(s.count + 1))  # labels 1..K, no gaps
        for k in range(1, s.count + 1):
            ys, xs = np.nonzero(mask == k)
            box = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]  # as base.mask_to_objects
            np.testing.assert_array_equal(s.boxes[k - 1], box)
            x, y = s.points[k - 1]
            if name == "he" and s.meta["phases"][k - 1] == "anaphase":
                # Two bars: the centre lies between them, inside the figure's box.
                assert box[0] <= x < box[2] and box[1] <= y < box[3]
            else:
                assert mask[int(round(y)), int(round(x))] == k


def test_spine_points_boxes_and_mask_agree(small_samples):
    for s in small_samples["spines"]:
        h, w = s.image.shape
        assert 128 <= h <= 244 and 128 <= w <= 212
        assert s.pixel_size_um == pytest.approx(1 / 15.36)
        np.testing.assert_array_equal(s.points, np.round(s.points))  # integer pixels like the labels
        np.testing.assert_array_equal(s.boxes, np.concatenate([s.points - 7, s.points + 7], 1))
        assert s.mask.max() == s.count
        for k, (x, y) in enumerate(s.points, start=1):
            assert s.mask[int(y), int(x)] == k
        assert len(s.meta["spine_types"]) == s.count


def test_zero_object_images_are_valid():
    empty = [
        simcep.generate(1, 0, simcep.SimcepConfig(n_cells_mean=0))[0],
        neurons.generate(
            1, 0, replace(SMALL["neurons"], sparse_probability=1.0, crowded_probability=0.0, sparse_max=0)
        )[0],
        he_fields.generate(1, 0, he_fields.HEConfig(image_size=(128, 128), mitoses_per_mm2=0))[0],
    ]
    for s in empty:
        assert s.count == 0 and s.mask.max() == 0
        assert s.points.shape == (0, 2) and s.boxes.shape == (0, 4) and s.labels.shape == (0,)
        assert s.image.std() > 0  # still a textured image, not a blank
    assert stats(empty)["zero_object_fraction"] == 1.0


def test_neuron_confusers_are_not_in_the_mask(small_samples):
    kinds = Counter(c["kind"] for s in small_samples["neurons"] for c in s.meta["confusers"])
    assert kinds["speck"] > 0 and kinds["haze_cell"] > 0
    for s in small_samples["neurons"]:
        specks = [c for c in s.meta["confusers"] if c["kind"] == "speck"]
        inside = sum(s.mask[int(c["y"]), int(c["x"])] > 0 for c in specks)
        assert inside <= max(1, len(specks) // 10)  # specks land on cells only by chance


def test_he_scanners_have_their_pixel_size_and_stains():
    a = he_fields.generate(1, 0, he_fields.HEConfig(image_size=(128, 128)))[0]
    b = he_fields.generate(1, 0, he_fields.HEConfig(image_size=(128, 128), scanner="hamamatsu"))[0]
    assert a.pixel_size_um == 0.2455 and b.pixel_size_um == 0.2273
    ma, mb = np.array(a.meta["stain_matrix"]), np.array(b.meta["stain_matrix"])
    np.testing.assert_allclose(np.linalg.norm(ma, axis=1), 1.0)
    assert (ma * mb).sum(1).min() < 0.99  # different stains: normalisation matters


# ----------------------------------------------------------------------------- statistics


def test_simcep_touching_fraction_and_coverage():
    samples = simcep.generate(40, 1)
    st = stats(samples)
    assert 0.1 <= st["touching_fraction"] <= 0.6
    assert 5 <= st["objects_per_image_mean"] <= 14
    coverage = np.mean([(s.mask > 0).mean() for s in samples])
    assert 0.05 <= coverage <= 0.25  # the paper: cells cover ~10 % of an image on average
    with_noise = np.mean([s.meta["background_noise"] for s in samples])
    assert 0.3 <= with_noise <= 0.7  # half of the images get background noise (paper Sec. 7.1)


def test_neuron_count_distribution_is_skewed_with_empty_and_crowded_fields():
    rng = np.random.default_rng(0)
    config = neurons.NeuronsConfig()
    counts = np.array([neurons.sample_count(rng, config)[0] for _ in range(4000)])
    assert 0.5 <= (counts <= 5).mean() <= 0.6
    assert 0.12 <= (counts >= 20).mean() <= 0.18
    assert (counts == 0).mean() > 0.05 and counts.max() == 40


@pytest.fixture(scope="module")
def many_spines():
    return spines.generate(50, 2)


def test_spine_counts_follow_the_real_histogram(many_spines):
    samples = many_spines
    st = stats(samples)
    assert st["objects_per_image_min"] >= 1 and st["objects_per_image_max"] <= 8
    assert abs(st["objects_per_image_mean"] - 3.78) < 0.6
    kinds = Counter(k for s in samples for k in s.meta["spine_types"])
    assert set(kinds) == {"mushroom", "thin", "stubby"}


def test_he_object_sizes_in_micrometres(small_samples):
    st = stats(small_samples["he"])
    assert st["objects_per_image_mean"] > 0
    assert 3.0 <= st["object_diameter_um_mean"] <= 12.0  # chromatin of 6-12 µm figures
    kinds = {c["kind"] for s in small_samples["he"] for c in s.meta["confusers"]}
    assert kinds <= set(he_fields.CONFUSER_KINDS) and len(kinds) >= 2


# ----------------------------------------------------------------------------- against real data


@pytest.fixture(scope="module")
def full_neurons():
    crowded = neurons.NeuronsConfig(sparse_probability=0.0, crowded_probability=1.0)
    return neurons.generate(1, 3, crowded) + neurons.generate(1, 3)


def _real_neuron_fields(root):
    folder = root / "dataset" / "yellow" / "sample"
    images = sorted((folder / "images").glob("*.png"))
    if not images:
        pytest.skip(f"no real neuron images under {folder}")
    return [(read_image(p), read_image(folder / "masks" / p.name, channels=1) > 0) for p in images]


def test_neuron_cell_area_and_background_match_the_real_fields(shared_data, full_neurons):
    from skimage.measure import label

    real = _real_neuron_fields(shared_data("fnc_sample"))
    real_areas = np.concatenate([np.bincount(label(m).ravel())[1:] for _, m in real])
    synth_areas = np.concatenate([np.bincount(s.mask.ravel())[1:] for s in full_neurons])
    assert abs(synth_areas.mean() / real_areas.mean() - 1.0) <= 0.4
    real_bg = np.mean([im[~m].reshape(-1, 3).mean(0) for im, m in real], axis=0)
    synth_bg = np.mean([s.image[s.mask == 0].reshape(-1, 3).mean(0) for s in full_neurons], axis=0)
    np.testing.assert_allclose(synth_bg, real_bg, atol=6.0)
    assert synth_bg[0] > synth_bg[1] > synth_bg[2]  # orange-red tissue, no blue
    # Cells are yellow: green close to red, blue low.
    fg = np.concatenate([s.image[s.mask > 0] for s in full_neurons]).astype(np.float64).mean(0)
    assert 0.5 <= fg[1] / fg[0] <= 0.95 and fg[2] < 0.15 * fg[0]


def test_neuron_field_is_fast(full_neurons):
    config = neurons.NeuronsConfig()
    start = time.process_time()
    neurons.generate_one(0, 11, config)
    assert time.process_time() - start < 2.0  # ~0.3 s CPU on one core (threads counted)


def test_simcep_patch_is_fast():
    simcep.generate(1, 0)
    start = time.process_time()
    simcep.generate(20, 0)
    assert (time.process_time() - start) / 20 < 0.05


def test_spines_look_like_the_real_crops(shared_data, many_spines):
    root = shared_data("spines")
    with open(root / "train_labels.csv", newline="") as fh:
        per_image = Counter(row["filename"] for row in csv.DictReader(fh))
    real_mean = np.mean(list(per_image.values()))
    synth = many_spines
    assert abs(stats(synth)["objects_per_image_mean"] - real_mean) < 0.6
    names = sorted(per_image)[:40]
    real_median = np.mean([np.median(read_image(root / "train" / n)) for n in names])
    synth_median = np.mean([np.median(s.image) for s in synth])
    assert abs(synth_median - real_median) < 12  # a dark background with a bright shaft
    real_p99 = np.mean([np.percentile(read_image(root / "train" / n), 99) for n in names])
    synth_p99 = np.mean([np.percentile(s.image, 99) for s in synth])
    assert abs(synth_p99 - real_p99) < 50


def test_he_colour_matches_real_mitosis_patches(shared_data):
    root = shared_data("mitosis_amibr")
    files = sorted((root / "patches" / "normal").glob("*.png"))[::50]
    if not files:
        pytest.skip("no AMi-Br patches")
    real = np.mean([read_image(f, channels=3).reshape(-1, 3).mean(0) for f in files], axis=0)
    synth = he_fields.generate(3, 0, he_fields.HEConfig(image_size=(384, 384)))
    mean = np.mean([s.image.reshape(-1, 3).mean(0) for s in synth], axis=0)
    np.testing.assert_allclose(mean, real, atol=20.0)
    assert mean[1] < mean[2] < mean[0]  # pink-purple: green absorbed most


# ----------------------------------------------------------------------------- preview


def test_preview_writes_a_png_with_real_row(tmp_path, small_samples):
    out = preview.preview("simcep", tmp_path / "sub" / "simcep.png", n=2, seed=0,
                  real_images=[np.zeros((64, 64), np.uint8), np.full((32, 48, 3), 200, np.uint8)])
    image = read_image(out)
    assert out.is_file() and image.ndim == 3 and image.shape[0] > 300  # two rows
    out2 = preview.preview("he", tmp_path / "he.png", samples=small_samples["he"][:2])
    assert read_image(out2).shape[0] < image.shape[0]  # one row only
    with pytest.raises(ValueError, match="unknown generator"):
        preview.preview("nope", tmp_path / "x.png")


def test_preview_with_real_finds_the_real_counterparts(tmp_path, shared_data):
    root = shared_data("spines").parent
    for name in ("spines", "he"):
        assert len(preview.REAL_IMAGES[name](root, 3)) == 3
    out = preview.preview_with_real("spines", tmp_path / "spines.png", n=2, data_root=root)
    assert read_image(out).shape[0] > 300  # synthetic row + real row
    lonely = preview.preview_with_real("spines", tmp_path / "alone.png", n=2, data_root=tmp_path / "none")
    assert read_image(lonely).shape[0] < read_image(out).shape[0]


# ----------------------------------------------------------------------------- helpers, exact values


def test_stats_exact_on_hand_built_samples():
    mask = np.zeros((10, 10), np.int32)
    mask[0:2, 0:2] = 1  # area 4, touches 2
    mask[2:4, 2:4] = 2  # area 4 (diagonal neighbour of 1)
    mask[7:10, 7:10] = 3  # area 9, alone
    a = Sample(id="a", image_array=np.zeros((10, 10), np.uint8), mask_array=mask, pixel_size_um=0.5,
               meta={"confusers": [{"kind": "x", "x": 1.0, "y": 1.0}]})
    b = Sample(id="b", image_array=np.zeros((10, 10), np.uint8), boxes=[[0, 0, 4, 9]], meta={})
    st = stats([a, b])
    assert st["n_images"] == 2
    assert st["objects_per_image_mean"] == 2.0 and st["zero_object_fraction"] == 0.0
    assert st["touching_fraction"] == pytest.approx(2 / 3)
    assert st["object_area_px_mean"] == pytest.approx(17 / 3)
    d = [2 * np.sqrt(4 / np.pi), 2 * np.sqrt(4 / np.pi), 2 * np.sqrt(9 / np.pi), 6.0]
    assert st["object_diameter_px_mean"] == pytest.approx(np.mean(d))
    assert st["object_diameter_um_mean"] == pytest.approx(np.mean(d[:3]) * 0.5)
    assert st["confuser_rate"] == pytest.approx(1 / 5)


def test_touching_labels_exact():
    mask = np.zeros((8, 8), np.int32)
    mask[1:3, 1:3] = 5
    mask[1:3, 3:5] = 2  # shares an edge with 5
    mask[6:8, 6:8] = 9
    np.testing.assert_array_equal(noise.touching_labels(mask), [2, 5])
    assert noise.touching_labels(np.zeros((4, 4), np.int32)).size == 0


def test_instances_to_targets_relabels_and_keeps_points_inside():
    mask = np.zeros((12, 12), np.int32)
    mask[2:5, 2:8] = 4
    mask[8:11, 1:4] = 9
    # An L-shaped object whose centroid falls outside it.
    mask[0:12, 10] = 7
    mask[11, 5:11] = 7
    out, points, boxes, kept = noise.instances_to_targets(mask, {4: (3.0, 3.0)})
    np.testing.assert_array_equal(kept, [4, 7, 9])
    np.testing.assert_array_equal(np.unique(out), [0, 1, 2, 3])
    np.testing.assert_array_equal(points[0], [3.0, 3.0])  # the preferred centre, inside
    np.testing.assert_array_equal(boxes, [[2, 2, 8, 5], [5, 0, 11, 12], [1, 8, 4, 11]])
    for k, (x, y) in enumerate(points, start=1):
        assert out[int(round(y)), int(round(x))] == k
    np.testing.assert_allclose(points[2], [2.0, 9.0])  # centroid of the 3x3 square


def test_raster_helpers_exact():
    window, disc = noise.raster_disc(5.0, 5.0, 2.0, (20, 20))
    assert disc.sum() == 13  # lattice points within radius 2
    window, poly = noise.raster_polygon(np.array([[2, 2], [6, 2], [6, 5], [2, 5]], np.float32), (10, 10))
    full = np.zeros((10, 10), bool)
    full[window] = poly
    assert full.sum() == 20 and full[2:6, 2:7].all()  # pixel centres on the edges are inside
    assert noise.raster_polygon(np.array([[-9, -9], [-5, -9], [-5, -5]], np.float32), (10, 10)) is None


def test_blob_polygon_without_irregularity_is_the_ellipse():
    rng = np.random.default_rng(0)
    poly = noise.blob_polygon(rng, 6.0, 3.0, 0.0, irregularity=0.0, vertices=8)
    np.testing.assert_allclose(poly[0], [6.0, 0.0], atol=1e-5)
    np.testing.assert_allclose(poly[2], [0.0, 3.0], atol=1e-5)
    np.testing.assert_allclose((poly[:, 0] / 6) ** 2 + (poly[:, 1] / 3) ** 2, 1.0, atol=1e-5)


def test_fractal_noise_is_normalised_seeded_and_band_limited():
    a = noise.fractal_noise((64, 96), np.random.default_rng(3), base_period=32, octaves=3)
    b = noise.fractal_noise((64, 96), np.random.default_rng(3), base_period=32, octaves=3)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (64, 96) and a.dtype == np.float32
    assert abs(a.mean()) < 1e-5 and a.std() == pytest.approx(1.0, abs=1e-4)
    smooth = noise.fractal_noise((64, 96), np.random.default_rng(3), base_period=32, octaves=1)
    rough = noise.fractal_noise((64, 96), np.random.default_rng(3), base_period=32, octaves=5, persistence=0.9)
    assert np.abs(np.diff(smooth, axis=1)).mean() < np.abs(np.diff(rough, axis=1)).mean()
    value = noise.fractal_noise((64, 96), np.random.default_rng(3), kind="value")
    assert value.std() == pytest.approx(1.0, abs=1e-4)
    with pytest.raises(ValueError, match="kind"):
        noise.fractal_noise((8, 8), np.random.default_rng(0), kind="simplex")
