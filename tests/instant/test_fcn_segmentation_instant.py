"""fcn_segmentation end to end: the real config, smoke schedule, on tiny on-disk fixtures.

The fixtures copy the real layouts (DSB 2018 per-image folders with per-nucleus masks, the StarDist
tif pair, VGG NNNcell/NNNdots pairs) with SIMCEP-like images, so the loaders, the split by image,
pre-training, fine-tuning, threshold choice, metrics, figures, evaluate and predict all run.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from microrepro.common import thresholds
from microrepro.common.data_sources import DataSource
from microrepro.common.imageio import read_image, write_image
from microrepro.common.predict import COUNT_COLUMNS, OBJECT_COLUMNS
from microrepro.common.runs import Run
from microrepro.datasets.synthetic import simcep
from microrepro.reproductions.fcn_segmentation.task import FINETUNED, PRETRAINED, TASK, VGG

SIZE = 64  # fixture images; crops/patches shrunk to 32 px through overrides


def _write_fixtures(root):
    samples = simcep.generate(6, seed=3, config=simcep.SimcepConfig(image_size=(SIZE, SIZE)))
    dsb = root / "dsb2018_stage1_test" / "stage1_test"
    for sample in samples[:4]:
        folder = dsb / sample.id
        write_image(folder / "images" / f"{sample.id}.png", np.repeat(sample.image[..., None], 3, axis=-1))
        for label in range(1, int(sample.mask.max()) + 1):
            if (sample.mask == label).any():
                write_image(folder / "masks" / f"{label}.png", ((sample.mask == label) * 255).astype(np.uint8))
    import tifffile

    big = simcep.generate(1, seed=4, config=simcep.SimcepConfig(image_size=(2 * SIZE, 2 * SIZE)))[0]
    (root / "nuclei_stardist").mkdir()
    tifffile.imwrite(root / "nuclei_stardist" / "img2d.tif", big.image.astype(np.uint16))
    tifffile.imwrite(root / "nuclei_stardist" / "mask2d.tif", big.mask.astype(np.uint16))
    vgg = root / "vgg_cells" / "cells"
    for i, sample in enumerate(simcep.generate(6, seed=5, config=simcep.SimcepConfig(image_size=(SIZE, SIZE)))):
        rgb = np.zeros((SIZE, SIZE, 3), np.uint8)
        rgb[..., 2] = sample.image  # VGG cells are blue
        dots = np.zeros((SIZE, SIZE, 3), np.uint8)
        for x, y in sample.points.astype(int):
            dots[y, x] = (255, 0, 0)
        write_image(vgg / f"{i + 1:03d}cell.png", rgb)
        write_image(vgg / f"{i + 1:03d}dots.png", dots)
    return root / "dsb2018_stage1_test"


def test_reproduce_evaluate_predict_on_fixtures(tmp_path):
    data_path = _write_fixtures(tmp_path / "data")
    overrides = {
        "pretrain": {"patch_size": 32, "generator": {"image_size": [SIZE, SIZE], "n_cells_mean": 9.0}},
        "finetune": {"crop_size": 32},
        "vgg": {"crop_size": 32},
        "eval": {"timing_size": 32},
    }
    cfg = TASK.load_config("paper", "smoke", overrides)
    run = Run.create("fcn_segmentation", cfg, "paper", "smoke", 0, out=tmp_path / "run")
    TASK.reproduce(run, DataSource("dsb2018_stage1_test", data_path, "test"))

    table1 = {"specificity", "precision", "recall", "accuracy", "f1", "mcc", "threshold"}
    assert table1 <= set(run.metrics[PRETRAINED]["real_eval"])
    assert table1 <= set(run.metrics[PRETRAINED]["synthetic_test"])
    assert table1 | {"mcc_gain_over_pretrained"} <= set(run.metrics[FINETUNED]["real_eval"])
    assert table1 <= set(run.metrics[VGG]["test"])
    for name, model in run.metrics.items():
        for values in model.values():
            for key in table1 - {"threshold"}:
                if key in values and name != "paired":
                    assert -1.0 <= values[key] <= 1.0
    # 95 % bootstrap intervals over images beside every metric; the fine-tuning gain paired on the same images
    for model, split in ((PRETRAINED, "real_eval"), (FINETUNED, "real_eval"), (PRETRAINED, "synthetic_test"),
                         (VGG, "test")):
        values = run.metrics[model][split]
        for key in ("specificity", "precision", "recall", "accuracy", "f1", "mcc", "auc", "mcc_oracle"):
            low, high = values[f"{key}_ci_low"], values[f"{key}_ci_high"]
            assert low is None or low <= high, (model, split, key)
        assert "threshold_ci_low" not in values and "threshold_oracle_ci_low" not in values
    gain_key = f"mcc_diff__{FINETUNED}__vs__{PRETRAINED}"
    paired = run.metrics["paired"]["real_eval"]
    assert set(paired) == {gain_key, f"{gain_key}_ci_low", f"{gain_key}_ci_high"}
    finetuned = run.metrics[FINETUNED]["real_eval"]
    assert paired[gain_key] == pytest.approx(finetuned["mcc_gain_over_pretrained"], abs=1e-12)
    assert finetuned["mcc_gain_over_pretrained_ci_low"] == paired[f"{gain_key}_ci_low"]
    assert finetuned["mcc_gain_over_pretrained_ci_high"] == paired[f"{gain_key}_ci_high"]
    assert json.loads((run.run_dir / "provenance.json").read_text())["bootstrap"]["unit"] == "image"
    assert run.metrics[FINETUNED]["timing"]["ms_per_image"] > 0
    assert run.splits["real_eval"]["kind"] == "real" and run.splits["real_eval"]["checksum"]
    assert run.splits["synthetic_test"]["kind"] == "synthetic"

    split = json.loads((run.run_dir / "split.json").read_text())
    parts = [set(split[k]) for k in ("train", "val", "eval")]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])  # by image
    # 4 DSB images + 16 StarDist tiles (128 px image, 32 px tiles), the smoke schedule keeping
    # only max_eval_images = 2 of the evaluation part
    assert len(parts[2]) == 2 and len(parts[0]) + len(parts[1]) + 2 <= 4 + 16
    assert any(i.startswith("stardist") for i in parts[0]) and any(not i.startswith("stardist") for i in parts[0])
    assert split["datasets"] == ["dsb2018_stage1_test", "nuclei_stardist"]
    for name in ("roc", "examples", f"loss_{PRETRAINED}", f"loss_{FINETUNED}", f"loss_{VGG}"):
        assert (run.run_dir / "figures" / f"{name}.png").stat().st_size > 0
    assert set(run.schedule_run) == {PRETRAINED, FINETUNED, VGG}
    assert run.schedule_run[FINETUNED]["epochs"] == 1

    before = {name: dict(run.metrics[name][split]) for name, split in ((FINETUNED, "real_eval"), (VGG, "test"))}
    TASK.evaluate(run, DataSource("dsb2018_stage1_test", data_path, "test"))  # reload, same split
    assert run.metrics[FINETUNED]["real_eval"]["mcc"] == pytest.approx(before[FINETUNED]["mcc"], abs=1e-6)
    assert run.metrics[VGG]["test"]["f1"] == pytest.approx(before[VGG]["f1"], abs=1e-6)

    image = next((data_path / "stage1_test").glob("*/images/*.png"))
    stored = thresholds.read_all(run.run_dir)
    assert set(stored) == {PRETRAINED, FINETUNED, VGG}
    assert stored[FINETUNED].rule.startswith("max_mcc_finetune_") and stored[PRETRAINED].rule == "max_mcc_synthetic_val"
    assert stored[FINETUNED].value == run.metrics[FINETUNED]["real_eval"]["threshold"]
    written = TASK.predict(run.run_dir, [image], tmp_path / "pred")
    names = {p.name for p in written}
    assert {f"{image.stem}.csv", f"{image.stem}_overlay.png", f"{image.stem}_labels.tif", "counts.csv"} == names
    with open(tmp_path / "pred" / "counts.csv", newline="") as fh:
        reader = csv.reader(fh)
        assert tuple(next(reader)) == COUNT_COLUMNS
        rows = list(reader)
    assert len(rows) == 1 and rows[0][0] == image.name and rows[0][2] == FINETUNED
    assert float(rows[0][3]) == pytest.approx(stored[FINETUNED].value, abs=1e-4)
    with open(tmp_path / "pred" / f"{image.stem}.csv", newline="") as fh:
        reader = csv.reader(fh)
        assert tuple(next(reader)) == OBJECT_COLUMNS
        detections = list(reader)
    assert len(detections) == int(rows[0][1])
    labels = read_image(tmp_path / "pred" / f"{image.stem}_labels.tif")
    assert int(labels.max()) == len(detections)
    assert sum(int(d[-1]) for d in detections) == int((labels > 0).sum())

    # evaluate chooses a missing threshold again on the same validation data, and stores it
    (run.run_dir / "thresholds.json").unlink()
    TASK.evaluate(run, DataSource("dsb2018_stage1_test", data_path, "test"))
    again = thresholds.read_all(run.run_dir)
    assert {name: t.value for name, t in again.items()} == {name: t.value for name, t in stored.items()}
    assert again[VGG].rule == "max_mcc_vgg_val" and again[VGG].n_images == stored[VGG].n_images
