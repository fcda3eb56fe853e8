"""fcn_segmentation data preparation, splits, thresholds and metrics on hand-built arrays."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from microrepro.reproductions.fcn_segmentation import data as fdata
from microrepro.reproductions.fcn_segmentation import evaluate as E
from microrepro.reproductions.fcn_segmentation.config import FcnSegmentationConfig
from microrepro.reproductions.fcn_segmentation.evaluate import METRIC_KEYS, choose_threshold, metrics_at
from microrepro.reproductions.fcn_segmentation.splits import finetune_pairs
from microrepro.reproductions.fcn_segmentation.task import TASK


def test_to_grey_takes_the_channel_maximum_and_drops_alpha():
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 2] = [[10, 20], [30, 40]]  # blue-only stain (VGG cells)
    rgba[..., 3] = 255  # alpha must not win the maximum
    np.testing.assert_array_equal(fdata.to_grey(rgba), [[10, 20], [30, 40]])
    grey = np.array([[1, 2], [3, 4]], np.uint16)
    assert fdata.to_grey(grey) is grey


def test_normalize_maps_percentiles_to_zero_and_one():
    image = np.array([[0, 50], [100, 200]], np.uint8)
    out = fdata.normalize(image, 0, 100)
    np.testing.assert_allclose(out, [[0, 0.25], [0.5, 1.0]], atol=1e-6)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(fdata.normalize(np.full((3, 3), 7, np.uint8)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="percentiles"):
        fdata.normalize(image, 50, 10)


def test_dihedral8_gives_the_eight_symmetries_in_order():
    image = np.array([[1, 2], [3, 4]])
    pairs = fdata.dihedral8(image, image * 10)
    expected = [
        [[1, 2], [3, 4]], [[2, 4], [1, 3]], [[4, 3], [2, 1]], [[3, 1], [4, 2]],  # rotations
        [[2, 1], [4, 3]], [[1, 3], [2, 4]], [[3, 4], [1, 2]], [[4, 2], [3, 1]],  # mirrored
    ]
    assert len(pairs) == 8 == len(fdata.DIHEDRAL_NAMES)
    for (img, msk), want in zip(pairs, expected, strict=True):
        np.testing.assert_array_equal(img, want)
        np.testing.assert_array_equal(msk, np.array(want) * 10)  # mask follows the image
    generic = np.arange(9).reshape(3, 3)
    assert len({p[0].tobytes() for p in fdata.dihedral8(generic, generic)}) == 8


def test_random_crops_are_aligned_and_pad_small_images():
    image = np.arange(100, dtype=np.float32).reshape(10, 10)
    crops = fdata.random_crops(image, image.astype(np.int32), 5, 4, np.random.default_rng(0))
    assert len(crops) == 5
    for img, msk in crops:
        assert img.shape == msk.shape == (4, 4)
        np.testing.assert_array_equal(img, msk)
        assert img[0, 1] - img[0, 0] == 1 and img[1, 0] - img[0, 0] == 10  # a contiguous window
    small = fdata.random_crops(np.ones((3, 5)), np.ones((3, 5)), 1, 6, np.random.default_rng(0))
    assert small[0][0].shape == (6, 6)


def test_pad_to_multiple_reflects_and_remembers_the_size():
    image = np.arange(15, dtype=np.float32).reshape(3, 5)
    padded, size = fdata.pad_to_multiple(image, 4)
    assert padded.shape == (4, 8) and size == (3, 5)
    np.testing.assert_array_equal(padded[:3, :5], image)
    np.testing.assert_array_equal(padded[3, :5], image[1])  # reflect: row 3 mirrors row 1


def test_disc_target_and_otsu_target():
    discs = fdata.disc_target(np.array([[2, 2], [9, 9], [50, 50]]), (10, 10), radius=1)
    assert discs.sum() == 5 + 3  # a full plus sign, a corner plus sign cut to 3 px, one point outside
    assert discs[2, 2] == discs[1, 2] == discs[2, 3] == 1 and discs[1, 1] == 0
    image = np.zeros((20, 20), np.uint8)
    image[5:10, 5:10] = 200
    target = fdata.otsu_target(image, sigma=0)
    np.testing.assert_array_equal(target, (image > 0).astype(np.uint8))
    assert fdata.otsu_target(np.zeros((4, 4)), 0).sum() == 0


def test_split_by_image_is_seeded_disjoint_and_keeps_both_sides():
    ids = [f"img{i}" for i in range(10)]
    rest, cut = fdata.split_by_image(ids, 0.4, seed=0)
    assert len(rest) == 6 and len(cut) == 4 and not set(rest) & set(cut) and sorted(rest + cut) == ids
    assert fdata.split_by_image(ids, 0.4, seed=0) == (rest, cut)
    assert fdata.split_by_image(ids, 0.4, seed=1) != (rest, cut)
    assert fdata.split_by_image(["a", "b"], 0.01, seed=0)[1] != []  # at least one held out
    assert fdata.split_by_image(["a", "b"], 0.0, seed=0) == (["a", "b"], [])


def test_crops_per_image_spreads_evenly():
    assert fdata.crops_per_image(4, 10) == [3, 3, 2, 2]
    assert fdata.crops_per_image(5, 2) == [1, 1, 1, 1, 1]
    assert fdata.crops_per_image(0, 5) == []


def _items(n_large: int, n_tiles: int) -> list[fdata.Item]:
    rng = np.random.default_rng(0)
    large = [fdata.Item(f"L{i}", rng.random((200, 150), dtype=np.float32), np.zeros((200, 150), np.uint8))
             for i in range(n_large)]
    tiles = [fdata.Item(f"T{i}", rng.random((128, 128), dtype=np.float32), np.ones((128, 128), np.uint8))
             for i in range(n_tiles)]
    return large + tiles


def test_finetune_pairs_reach_55_crops_times_8():
    cfg = FcnSegmentationConfig()
    pairs = finetune_pairs(_items(20, 7), cfg, seed=0)
    assert len(pairs) == 55 * 8
    assert all(img.shape == (128, 128) and msk.shape == (128, 128) for img, msk in pairs)
    assert sum(int(msk.all()) for _, msk in pairs) == 7 * 8  # each 128 px tile used once, ×8
    cfg.finetune.n_crops = 3  # fewer crops than images: a random subset, one crop each
    assert len(finetune_pairs(_items(20, 7), cfg, seed=0)) == 24
    cfg.finetune.dihedral = False
    assert len(finetune_pairs(_items(20, 7), cfg, seed=0)) == 3


def test_threshold_and_metrics_on_hand_built_probabilities():
    cfg = FcnSegmentationConfig()
    gt = np.array([[1, 1, 0, 0], [1, 0, 0, 0]], np.uint8)
    prob = np.array([[0.9, 0.7, 0.6, 0.1], [0.3, 0.2, 0.0, 0.0]], np.float32)
    # t in (0.2, 0.3]: tp 3, fp 1, fn 0, tn 4 -> MCC 12 / sqrt(240) = 0.775, the best range
    # (t in (0.6, 0.7]: tp 2, fp 0, fn 1, tn 5 -> 0.745); ties go to the lowest grid value.
    chosen = choose_threshold([prob], [gt], cfg, split="val")
    assert chosen.value == pytest.approx(0.21)
    assert (chosen.rule, chosen.metric, chosen.split, chosen.n_images) == ("max_mcc_val", "mcc", "val", 1)
    assert chosen.metric_value == pytest.approx(12 / np.sqrt(240))
    assert len(chosen.curve["mcc"]) == len(chosen.curve["thresholds"]) == cfg.eval.n_thresholds
    values = metrics_at([prob], [gt], 0.65, cfg)
    assert set(METRIC_KEYS) <= set(values)
    # tp 2, fp 0, fn 1, tn 5
    assert values["precision"] == 1.0 and values["specificity"] == 1.0
    assert values["recall"] == pytest.approx(2 / 3) and values["accuracy"] == pytest.approx(7 / 8)
    assert values["f1"] == pytest.approx(0.8)
    assert values["mcc"] == pytest.approx(10 / np.sqrt(2 * 3 * 5 * 6))
    assert values["threshold"] == 0.65
    assert values["auc"] == pytest.approx(14 / 15)  # 14 of the 15 (cell, background) pairs ordered


def test_metrics_carry_bootstrap_intervals_over_images():
    from microrepro.common import stats

    cfg = FcnSegmentationConfig()
    gt = np.array([[1, 1, 0, 0], [1, 0, 0, 0]], np.uint8)
    prob = np.array([[0.9, 0.7, 0.6, 0.1], [0.3, 0.2, 0.0, 0.0]], np.float32)
    one = metrics_at([prob], [gt], 0.65, cfg)
    assert one["mcc_ci_low"] is None and one["auc_ci_high"] is None  # one image: no interval
    # the same image twice: every resample is that image again, a zero-width interval
    twice = metrics_at([prob, prob], [gt, gt], 0.65, cfg)
    for key in (*METRIC_KEYS, "auc", "mcc_oracle"):
        assert twice[f"{key}_ci_low"] == pytest.approx(twice[key]) == pytest.approx(twice[f"{key}_ci_high"]), key
    assert "threshold_ci_low" not in twice and "threshold_oracle_ci_low" not in twice
    # four different images: the point estimate lies inside (this seed), the statistic on all images equals it
    rng = np.random.default_rng(0)
    probs = [rng.random((6, 8)).astype(np.float32) for _ in range(4)]
    gts = [(p + rng.normal(0, 0.3, p.shape) > 0.6).astype(np.uint8) for p in probs]
    values = metrics_at(probs, gts, 0.5, cfg)
    for key in (*METRIC_KEYS, "auc", "mcc_oracle"):
        assert values[f"{key}_ci_low"] <= values[key] <= values[f"{key}_ci_high"], key
    counts = E.per_image_counts(probs, gts, 0.5)
    assert stats.pixel_statistic(counts)["mcc"] == values["mcc"]


def test_predict_probability_pads_and_crops_back():
    from microrepro.reproductions.fcn_segmentation.model import build_fcrn_a

    model = build_fcrn_a(1, 2, encoder_filters=(2, 2, 2), bottleneck_filters=2, decoder_filters=(2, 2, 2))
    images = [np.zeros((13, 21), np.float32), np.ones((16, 16), np.float32), np.zeros((13, 21), np.float32)]
    probs = fdata.predict_probability(model, images)
    assert [p.shape for p in probs] == [(13, 21), (16, 16), (13, 21)]
    np.testing.assert_allclose(probs[0], probs[2])  # same input, same output, batched together
    assert fdata.predict_probability(model, images[1]).shape == (16, 16)


def test_every_preset_and_schedule_resolves_and_published_names_are_written():
    for preset in ("paper", "released"):
        for schedule in ("smoke", "short", "paper"):
            cfg = TASK.load_config(preset, schedule)
            assert cfg.pretrain.patch_size == 128 and cfg.finetune.n_crops >= 1
    paper = TASK.load_config("paper", "paper")
    assert (paper.pretrain.n_patches, paper.finetune.n_crops) == (200, 55)  # Sec. 7.1
    opt = paper.pretrain.train
    solver = (opt.lr, opt.momentum, opt.weight_decay, opt.lr_step_epochs, opt.lr_step_factor)
    assert solver == (0.01, 0.9, 1e-3, 20, 0.1)
    published = yaml.safe_load(TASK.published_path.read_text())
    rows = published["tables"][0]["rows"]
    written = set(METRIC_KEYS) | {"threshold", "mcc_gain_over_pretrained"}
    assert {row["metric"] for row in rows} <= written
    assert {row["model"] for row in rows} == {"fcrn_a_pretrained", "fcrn_a_finetuned"}
    thresholds = {row["model"]: row["published"] for row in rows if row["metric"] == "threshold"}
    assert thresholds == {"fcrn_a_pretrained": 0.25, "fcrn_a_finetuned": 0.67}  # Sec. 7.2
