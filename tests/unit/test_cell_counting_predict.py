"""cell_counting on users' images: input conversion, stored thresholds, load_predictor and predict's files."""

import csv

import numpy as np
import pytest
from skimage.draw import disk

from microrepro.common import thresholds
from microrepro.common.errors import DataError, UserError
from microrepro.common.imageio import write_image
from microrepro.common.predict import COUNT_COLUMNS, OBJECT_COLUMNS
from microrepro.common.runs import Run
from microrepro.reproductions.cell_counting import evaluate as E
from microrepro.reproductions.cell_counting import inference as I
from microrepro.reproductions.cell_counting import postprocess as post
from microrepro.reproductions.cell_counting import task as T
from microrepro.reproductions.cell_counting.data import Field, rgb_uint8

SIZES = post.PostprocessSizes(hole_area=50, min_object=20, max_filter=9, footprint=13, min_marker=1)


def _red_channel_network(batch, training=False):
    """A stand-in c-ResUNet: the heat-map is the red channel ((B, H, W, 3) -> (B, H, W, 1))."""
    return np.asarray(batch)[..., :1]


def _field(fid="f"):
    labels = np.zeros((80, 120), np.int32)
    for k, centre in enumerate([(30, 30), (40, 90)], start=1):
        labels[disk(centre, 10, shape=labels.shape)] = k
    image = np.zeros(labels.shape + (3,), np.uint8)
    image[labels == 1] = (230, 200, 10)
    image[labels == 2] = (160, 140, 10)  # dimmer: red 160/255 = 0.63
    return Field(fid, image, labels)


def test_rgb_uint8_accepts_images_as_users_have_them():
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    assert rgb_uint8(rgb) is rgb  # the data set's 8-bit RGB passes unchanged
    grey = np.array([[0, 100], [200, 255]], np.uint8)
    np.testing.assert_array_equal(rgb_uint8(grey), np.repeat(grey[..., None], 3, -1))
    np.testing.assert_array_equal(rgb_uint8(grey[..., None]), np.repeat(grey[..., None], 3, -1))
    rgba = np.dstack([rgb, np.full((2, 3), 7, np.uint8)])
    np.testing.assert_array_equal(rgb_uint8(rgba), rgb)
    twelve_bit = np.array([[0, 4095]], np.uint16)  # stretched, not divided by 65535
    np.testing.assert_array_equal(rgb_uint8(twelve_bit)[..., 0], [[0, 255]])
    np.testing.assert_array_equal(rgb_uint8(np.array([[0.0, 0.5, 1.0]], np.float32))[..., 1], [[0, 128, 255]])
    np.testing.assert_array_equal(rgb_uint8(np.array([[10.0, np.nan, 1010.0]]))[..., 2], [[0, 0, 255]])
    np.testing.assert_array_equal(rgb_uint8(np.array([[True, False]]))[..., 0], [[255, 0]])
    colour16 = np.zeros((1, 2, 3), np.uint16)
    colour16[0, 1] = (1000, 500, 0)  # channels stretched together: the colour is kept
    np.testing.assert_array_equal(rgb_uint8(colour16)[0, 1], [255, 128, 0])
    with pytest.raises(DataError, match="grey or colour"):
        rgb_uint8(np.zeros((4, 4, 2), np.uint8))


def test_detect_returns_cells_with_labels_in_input_pixels():
    cfg = T.TASK.load_config("paper", "smoke",
                             {"data": {"scale": 1.0}, "postprocess": {"tile": 64, "tile_overlap": 16}})
    field = _field()
    detect = I.make_detect(_red_channel_network, cfg, I.FULL, SIZES)
    objects = detect(field.image, 0.5)
    assert len(objects) == 2 and objects.labels.shape == field.labels.shape and objects.scores is None
    np.testing.assert_allclose(np.sort(objects.points[:, 0]), [30.5, 90.5], atol=0.5)
    np.testing.assert_allclose(objects.areas, [(field.labels == 1).sum(), (field.labels == 2).sum()], rtol=0.1)
    assert len(detect(field.image, 0.7)) == 1  # the dim cell is below 0.7
    grey = detect(field.image[..., 0].astype(np.uint16) * 16, 0.5)  # 16-bit grey of the same field
    assert len(grey) == 2


def test_thresholds_are_chosen_stored_and_fixed(tmp_path):
    cfg = T.TASK.load_config("paper", "smoke", {"data": {"scale": 1.0}, "postprocess": {
        "tile": 64, "tile_overlap": 16, "threshold_grid": [0.5, 0.9, 0.1]}})
    run = Run.create("cell_counting", cfg, "paper", "smoke", seed=0, out=tmp_path / "run")
    fields = [_field("a"), _field("b")]
    networks = {I.FULL: _red_channel_network}
    cuts = E.choose_thresholds(run, cfg, networks, fields, SIZES, [I.FULL, I.NO_WATERSHED])
    # both cells above 0.5 and 0.6 (F1 1), only the bright one from 0.7 on: the lowest of the best
    assert cuts == {I.FULL: 0.5, I.NO_WATERSHED: 0.5}
    stored = thresholds.load(run.run_dir, I.FULL)
    assert stored.rule == "max_f1_train" and stored.metric_value == 1.0 and stored.n_images == 1
    np.testing.assert_allclose(stored.curve["f1"], [1, 1, 2 / 3, 2 / 3, 2 / 3])
    assert (run.run_dir / "figures" / "f1_vs_threshold.png").is_file()

    fixed = T.TASK.load_config("paper", "smoke", {"postprocess": {"threshold": 0.55}})
    assert E.choose_thresholds(run, fixed, networks, fields, SIZES, [I.FULL]) == {I.FULL: 0.55}
    assert thresholds.load(run.run_dir, I.FULL).rule == "fixed"
    assert thresholds.load(run.run_dir, I.NO_WATERSHED).value == 0.5  # other keys kept


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A run folder as reproduce leaves it, with untrained c_resunet weights (no ablation network)."""
    import dataclasses
    import json

    from microrepro.reproductions.cell_counting.train import build_model

    root = tmp_path_factory.mktemp("cc_run")
    cfg = T.TASK.load_config("paper", "smoke", {"train": {"ablation": False}})
    run = Run.create("cell_counting", cfg, "paper", "smoke", seed=0, out=root / "run")
    run.save()
    weights = run.run_dir / "train" / I.FULL / "best.weights.h5"
    weights.parent.mkdir(parents=True)
    build_model(cfg).save_weights(str(weights))
    T.state_path(run.run_dir).write_text(json.dumps({
        "sizes": dataclasses.asdict(SIZES), "mean_cell_diameter": 20.0, "models": [I.FULL], "train_fields": []}))
    for key in (I.FULL, I.NO_WATERSHED):
        thresholds.save(run.run_dir, key, thresholds.fixed(0.5))
    return run.run_dir


def test_load_predictor_reads_the_run(trained_run):
    predictor = T.TASK.load_predictor(trained_run, I.NO_WATERSHED)
    assert predictor.threshold == 0.5 and predictor.model == I.NO_WATERSHED and predictor.paper == "cell_counting"
    assert predictor.score_range == (0.0, 1.0) and predictor.min_size == 1 and predictor.noun == "cells"
    with pytest.raises(UserError, match="not trained in this run"):
        T.TASK.load_predictor(trained_run, I.NO_WEIGHTMAP)
    with pytest.raises(UserError, match="unknown cell_counting model"):
        T.TASK.predict(trained_run, [], trained_run / "out", model="unet")
    with pytest.raises(UserError, match="not a finished cell_counting run"):
        T.TASK.load_predictor(trained_run / "train", I.FULL)


def test_predict_writes_the_shared_files_for_every_kind_of_image(trained_run, tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
    images = {
        "rgb.png": rgb,
        "rgba.png": np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)]),
        "grey16.tif": rng.integers(0, 4096, (40, 56), dtype=np.uint16),
        "float.tif": rng.random((40, 56, 3), dtype=np.float32),
        "tiny.png": rgb[:3, :5],  # smaller than one tile, and 1 px at the smoke scale 0.125
    }
    paths = [write_image(tmp_path / "in" / name, image) for name, image in images.items()]
    written = T.TASK.predict(trained_run, paths, tmp_path / "out", threshold=0.25)
    assert written[-1].name == "counts.csv"
    with open(written[-1]) as fh:
        rows = list(csv.reader(fh))
    assert tuple(rows[0]) == COUNT_COLUMNS and [r[0] for r in rows[1:]] == list(images)
    for name, row in zip(images, rows[1:], strict=True):
        stem = name.split(".")[0]
        assert row[1:6] == [row[1], I.FULL, "0.25", f"{stem}.csv", f"{stem}_overlay.png"]
        assert row[6] == f"{stem}_labels.tif"
        with open(tmp_path / "out" / f"{stem}.csv") as fh:
            table = list(csv.reader(fh))
        assert tuple(table[0]) == OBJECT_COLUMNS and len(table) - 1 == int(row[1])
        assert (tmp_path / "out" / f"{stem}_labels.tif").is_file()
    with pytest.raises(UserError, match="outside"):
        T.TASK.predict(trained_run, paths[:1], tmp_path / "out2", threshold=1.5)
