"""fcn_segmentation predict: images as users have them → cells → the shared predict files."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from microrepro.common import thresholds
from microrepro.common.errors import DataError, UserError
from microrepro.common.imageio import read_image, write_image
from microrepro.common.predict import COUNT_COLUMNS, OBJECT_COLUMNS
from microrepro.common.runs import Run
from microrepro.common.training import train_dir
from microrepro.reproductions.fcn_segmentation import segment
from microrepro.reproductions.fcn_segmentation.task import FINETUNED, PRETRAINED, TASK, VGG
from microrepro.reproductions.fcn_segmentation.train import build_model, make_sgd

TINY = {"encoder_filters": [2, 2, 2], "bottleneck_filters": 4, "decoder_filters": [2, 2, 2]}


def test_cells_are_the_connected_components_of_the_cut_map():
    prob = np.zeros((6, 8), np.float32)
    prob[1:3, 1:3] = 0.9  # a 2x2 cell
    prob[4, 5:8] = 0.6  # a 1x3 cell
    prob[3, 3] = 0.7  # touches the first cell only by a corner: 4-connectivity keeps it apart
    objects = segment.cells(prob, 0.5)
    assert len(objects) == 3
    np.testing.assert_allclose(objects.areas, [4, 1, 3])
    np.testing.assert_allclose(objects.boxes[0], [1, 1, 3, 3])  # x1, y1, x2, y2 (x2/y2 exclusive)
    np.testing.assert_allclose(objects.points[0], [2, 2])  # centroid, corner-origin frame
    np.testing.assert_allclose(objects.scores, [0.9, 0.7, 0.6], atol=1e-6)  # mean probability
    assert objects.labels.max() == 3 and (objects.labels > 0).sum() == 8
    assert len(segment.cells(prob, 0.95)) == 0


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A run folder holding a tiny FCRN-A (random weights) and stored thresholds."""
    root = tmp_path_factory.mktemp("fcn_predict")
    cfg = TASK.load_config("paper", "smoke", {"model": TINY})
    run = Run.create("fcn_segmentation", cfg, "paper", "smoke", 0, out=root / "run")
    model = build_model(cfg.model)
    folder = train_dir(run.run_dir, FINETUNED)
    folder.mkdir(parents=True)
    model.save_weights(str(folder / "best.weights.h5"))
    thresholds.save(run.run_dir, FINETUNED, thresholds.fixed(0.5))
    return run.run_dir


def _images(folder):
    rng = np.random.default_rng(0)
    grey = (rng.random((20, 27)) * 200).astype(np.uint8)
    grey[4:10, 5:12] = 255
    images = {
        "grey8.png": grey,
        "grey16.tif": grey.astype(np.uint16) * 257,
        "rgb.png": np.repeat(grey[..., None], 3, axis=-1),
        "rgba.png": np.concatenate([np.repeat(grey[..., None], 3, axis=-1), np.full((20, 27, 1), 255, np.uint8)], -1),
    }
    paths = [write_image(folder / name, image) for name, image in images.items()]
    import tifffile

    tifffile.imwrite(folder / "float.tif", grey.astype(np.float32) / 255)
    return paths + [folder / "float.tif"]


def test_predict_writes_the_shared_files_for_every_kind_of_image(tiny_run, tmp_path):
    paths = _images(tmp_path / "in")
    written = TASK.predict(tiny_run, paths, tmp_path / "out", threshold=0.5)
    assert written[-1].name == "counts.csv"
    with open(tmp_path / "out" / "counts.csv", newline="") as fh:
        reader = csv.reader(fh)
        assert tuple(next(reader)) == COUNT_COLUMNS
        rows = list(reader)
    assert [r[0] for r in rows] == [p.name for p in paths]  # one row per input image
    counts = []
    for path, row in zip(paths, rows, strict=True):
        stem = path.stem
        with open(tmp_path / "out" / f"{stem}.csv", newline="") as fh:
            reader = csv.reader(fh)
            assert tuple(next(reader)) == OBJECT_COLUMNS
            objects = list(reader)
        labels = read_image(tmp_path / "out" / f"{stem}_labels.tif")
        assert labels.shape == (20, 27) and int(labels.max()) == len(objects) == int(row[1])
        assert sum(int(o[-1]) for o in objects) == int((labels > 0).sum())  # area_px
        assert (tmp_path / "out" / f"{stem}_overlay.png").stat().st_size > 0
        assert row[2] == FINETUNED and float(row[3]) == 0.5
        counts.append(labels)
    # grey 8/16-bit, RGB, RGBA (alpha dropped) and float of the same picture give the same cells
    for labels in counts[1:]:
        np.testing.assert_array_equal(labels, counts[0])


def test_predict_reads_the_stored_threshold_and_checks_inputs(tiny_run, tmp_path):
    image = write_image(tmp_path / "a.png", np.zeros((16, 16), np.uint8))
    TASK.predict(tiny_run, [image], tmp_path / "out")
    row = next(csv.DictReader(open(tmp_path / "out" / "counts.csv")))
    assert float(row["threshold"]) == 0.5  # thresholds.json
    with pytest.raises(UserError, match="outside"):
        TASK.predict(tiny_run, [image], tmp_path / "out2", threshold=1.5)
    with pytest.raises(UserError, match="unknown fcn_segmentation model"):
        TASK.predict(tiny_run, [image], tmp_path / "out2", model="unet")
    with pytest.raises(UserError, match=PRETRAINED):  # no threshold stored for it
        TASK.predict(tiny_run, [image], tmp_path / "out2", model=PRETRAINED)
    small = write_image(tmp_path / "small.png", np.zeros((5, 30), np.uint8))
    with pytest.raises(DataError, match="smaller than the 8 px"):
        TASK.predict(tiny_run, [small], tmp_path / "out3")
    assert TASK.models == (FINETUNED, PRETRAINED, VGG) and TASK.default_model == FINETUNED


def test_sgd_follows_the_config():
    from microrepro.reproductions.fcn_segmentation.config import OptimConfig

    sgd = make_sgd(OptimConfig(lr=0.01, momentum=0.9))
    assert (float(sgd.learning_rate), sgd.momentum, sgd.nesterov, sgd.weight_decay) == \
        (pytest.approx(0.01), 0.9, False, None)
    nesterov = make_sgd(OptimConfig(nesterov=True, weight_decay=1e-3, weight_decay_mode="decoupled"))
    assert nesterov.nesterov and nesterov.get_config()["nesterov"] and nesterov.weight_decay == 1e-3
