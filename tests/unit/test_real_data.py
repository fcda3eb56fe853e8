"""Loaders on the real data sets in ../shared/data (skipped cleanly when absent).

Kept fast: CSVs are parsed and files counted; only a few images and masks are decoded.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from microrepro.common.errors import DataError
from microrepro.datasets import amibr, dsb2018, fnc, spines, splits, stardist_nuclei, vgg_cells


def test_spines_train_split(shared_data):
    root = shared_data("spines")
    samples = spines.load(root, "train")
    assert len(samples) == 1653
    assert sum(s.count for s in samples) == 6248
    assert Counter(s.count for s in samples).keys() <= set(range(1, 9))  # 1-8 spines per image
    assert not spines.has_split(root, "test")  # held back for independent evaluation
    with pytest.raises(DataError, match="expected"):
        spines.load(root, "test")
    for sample in samples[:3]:  # the CSV's width/height are the image's
        assert sample.image.shape[:2] == (sample.meta["height"], sample.meta["width"])
    boxes = np.concatenate([s.boxes for s in samples])
    sizes = np.array([[s.meta["width"], s.meta["height"]] for s in samples for _ in range(s.count)])
    assert boxes.min() >= 0 and (boxes[:, 2] <= sizes[:, 0]).all() and (boxes[:, 3] <= sizes[:, 1]).all()


def test_spines_paper_split_90_10(shared_data):
    samples = spines.load(shared_data("spines"))
    train, val = splits.stratified_split(samples, 0.1, seed=0)
    assert len(val) == round(0.1 * 1653) and not {s.id for s in train} & {s.id for s in val}
    full, part = Counter(s.count for s in samples), Counter(s.count for s in val)
    assert all(abs(part[k] - 0.1 * n) < 1 for k, n in full.items())


def test_fnc_sample_two_yellow_fields(shared_data):
    samples = fnc.load(shared_data("fnc_sample"), split="sample", color="yellow")
    counts = {s.id: s.count for s in samples}
    assert counts == {"Mar23bS1C2R3_VLPAGr_200x": 4, "Mar32bS2C2R2_DMl_200x": 35}
    assert samples[0].meta["layout"] == "sample"
    assert all(s.boxes.shape == (s.count, 4) for s in samples)


def test_vgg_cells_200_images_176_pm_61(shared_data):
    samples = vgg_cells.load(shared_data("vgg_cells"))
    assert len(samples) == 200 and samples[0].id == "001" and samples[-1].id == "200"
    counts = np.array([s.count for s in samples])
    assert abs(counts.mean() - 176) <= 2 and abs(counts.std() - 61) <= 2
    train, test = vgg_cells.conventional_split(samples)
    assert len(train) == len(test) == 100


def test_dsb2018_65_images_4152_nuclei(shared_data):
    root = shared_data("dsb2018_stage1_test")
    ids = dsb2018.list_ids(root)
    assert len(ids) == 65
    assert sum(len(list((root / "stage1_test" / i / "masks").glob("*.png"))) for i in ids) == 4152
    samples = dsb2018.load(root, source="rle")
    assert len(samples) == 65 and sum(s.count for s in samples) == 4152
    # The per-nucleus PNGs and the run-length codes give the same nuclei (checked on a few ids).
    from_masks = {s.id: s for s in dsb2018.load(root, source="masks", ids=ids[:3])}
    for sample in samples[:3]:
        other = from_masks[sample.id]
        np.testing.assert_allclose(np.sort(sample.points, axis=0), np.sort(other.points, axis=0), atol=1e-3)
        np.testing.assert_array_equal(sample.mask > 0, other.mask > 0)


def test_dsb2018_fluorescence_heuristic(shared_data):
    samples = dsb2018.load(shared_data("dsb2018_stage1_test"), modality="fluorescence", source="rle")
    print(f"dsb2018 stage-1 test: {len(samples)} of 65 images classed as fluorescence")
    assert 45 <= len(samples) <= 55


def test_amibr_3475_crops(shared_data):
    root = shared_data("mitosis_amibr")
    samples = amibr.load(root)
    assert len(samples) == 3475
    labels = Counter(int(s.labels[0]) for s in samples)
    assert labels == {0: 2710, 1: 765}  # patches/normal and patches/atypical
    assert all(tuple(s.points[0]) == (64.0, 64.0) for s in samples)
    assert sum(s.count > 1 for s in samples) > 0  # neighbouring figures inside some crops
    # Crops that overlap on the slide share their pixels at exactly the offset the points assume.
    by_slide_xy = {(s.meta["dataset"], s.meta["slide"], s.meta["slide_xy"]): s for s in samples}
    pairs = []
    for sample in samples:
        x, y = sample.meta["slide_xy"]
        for px, py in sample.points[1:]:
            key = (sample.meta["dataset"], sample.meta["slide"], (x + px - 64, y + py - 64))
            if key in by_slide_xy:
                pairs.append((sample, by_slide_xy[key], int(px - 64), int(py - 64)))
    assert len(pairs) >= 10
    for a_sample, b_sample, dx, dy in pairs[:5]:
        a, b = a_sample.image.astype(int), b_sample.image.astype(int)
        ya, xa, yb, xb = max(dy, 0), max(dx, 0), max(-dy, 0), max(-dx, 0)
        h, w = 128 - abs(dy), 128 - abs(dx)
        assert np.abs(a[ya : ya + h, xa : xa + w] - b[yb : yb + h, xb : xb + w]).mean() < 1.0
    train, val = amibr.slide_split(samples, 0.1, seed=0)
    slides = [{(s.meta["dataset"], s.meta["slide"]) for s in part} for part in (train, val)]
    assert not slides[0] & slides[1]
    assert 0.1 * len(samples) <= len(val) < 0.2 * len(samples)
    tiled = amibr.mosaic(samples, grid=(4, 4), seed=0)
    assert tiled.image.shape == (512, 512, 3) and tiled.count >= 16


def test_stardist_125_nuclei(shared_data):
    (sample,) = stardist_nuclei.load(shared_data("nuclei_stardist"))
    assert sample.count == 125 and sample.image.dtype == np.uint16
    tiles = stardist_nuclei.tiles(sample, size=128)
    assert len(tiles) == 16
    assert all(t.mask.max() == t.count for t in tiles)  # relabelled 1..K per tile
    assert sum(t.count for t in tiles) >= 125  # nuclei cut by tile borders count in each tile
