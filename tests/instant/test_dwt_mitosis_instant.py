"""The REAL dwt_mitosis config, "smoke" schedule, end to end on tiny synthetic fields.

reproduce (phase-1 nets, label generation and quality, selective search, R-CNN per label source,
Faster R-CNN phase 2, thresholds chosen on validation fields, evaluation at 8 µm, figures), then
evaluate (thresholds read back from thresholds.json) and predict (common.predict files) on the run.
"""

import csv
import json
import math

import numpy as np
import pytest

from microrepro.common import thresholds
from microrepro.common.data_sources import DataSource
from microrepro.common.errors import UserError
from microrepro.common.imageio import write_image
from microrepro.common.predict import COUNT_COLUMNS, OBJECT_COLUMNS
from microrepro.common.runs import Run
from microrepro.reproductions.dwt_mitosis import task as T

SYNTHETIC = DataSource("mitosis_amibr", None, "synthetic generator")


def test_smoke_reproduce_evaluate_predict(tmp_path):
    # manual labels always give boxes; the U-Net row is covered by the unit tests (one training less)
    cfg = T.TASK.load_config("paper", "smoke", {"label_sources": ["dwt", "manual"]})
    run = Run.create("dwt_mitosis", cfg, "paper", "smoke", seed=0, out=tmp_path / "run")
    T.TASK.reproduce(run, SYNTHETIC)

    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert T.SEG_MODELS["dwt"] in metrics and "dwt_labels" in metrics
    pixel = ("precision", "recall", "f1", "iou", "mcc")
    assert set(metrics[T.SEG_MODELS["dwt"]]["synthetic_test"]) == {
        f"{k}{s}" for k in pixel for s in ("", "_ci_low", "_ci_high")}
    quality = metrics["dwt_labels"]["synthetic_det_train"]
    assert quality["n_manual"] >= 1 and 0.0 <= quality["point_coverage"] <= 1.0
    for model in (T.rcnn_model("dwt"), T.rcnn_model("manual"), T.FASTER):
        values = metrics[model]["synthetic_test"]
        for name in ("recall", "precision", "f1"):
            assert 0.0 <= values[name] <= 1.0, (model, name)
        for name in ("recall", "precision", "f1"):  # 95 % bootstrap interval over test images
            low, high = values[f"{name}_ci_low"], values[f"{name}_ci_high"]
            assert low is None or low <= high, (model, name)
        assert "tp_ci_low" not in values and "threshold_ci_low" not in values
    assert {"box_iou_mean_ci_low", "point_coverage_ci_high"} <= set(quality) and "n_manual_ci_low" not in quality
    # Table 2's ordering: paired difference of F1 on the same test fields, DWT-net vs manual labels
    key = f"f1_diff__{T.rcnn_model('dwt')}__vs__{T.rcnn_model('manual')}"
    paired = metrics["paired"]["synthetic_test"]
    assert set(paired) == {key, f"{key}_ci_low", f"{key}_ci_high"}
    assert paired[key] == pytest.approx(metrics[T.rcnn_model("dwt")]["synthetic_test"]["f1"]
                                        - metrics[T.rcnn_model("manual")]["synthetic_test"]["f1"])
    bootstrap = json.loads((tmp_path / "run" / "provenance.json").read_text())["bootstrap"]
    assert bootstrap == {"n_boot": 1000, "level": 0.95, "unit": "image", "seed": 0}
    manual = metrics[T.rcnn_model("manual")]["synthetic_test"]
    assert manual["ms_per_image"] > 0 and np.isfinite(manual["threshold"])
    assert run.splits["synthetic_test"]["kind"] == "synthetic"
    assert run.schedule_run["dwt_unet_seg"]["steps"] == 2
    assert run.schedule_run["rcnn_manual_labels_synthetic"]["steps"] == 2
    assert run.schedule_run["rcnn_manual_labels_synthetic"]["batch"] == 32 + 96
    assert run.schedule_run["faster_rcnn_phase2_synthetic"]["steps"] == 1
    state = json.loads((tmp_path / "run" / T.STATE_FILE).read_text())
    assert "thresholds" not in state and state["domains"] == ["synthetic"]
    stored = thresholds.read_all(tmp_path / "run")
    assert {"rcnn_manual_labels_synthetic", "faster_rcnn_phase2_synthetic"} <= set(stored)
    chosen = stored["rcnn_manual_labels_synthetic"]
    assert chosen.value == pytest.approx(manual["threshold"]) and chosen.rule == "max_f1_synthetic_det_val"
    assert chosen.curve["f1"] and len(chosen.curve["f1"]) == len(chosen.curve["thresholds"])
    figures = {p.name for p in (tmp_path / "run" / "figures").glob("*.png")}
    assert {"generated_boxes_synthetic.png", "detections_rcnn_manual_labels_synthetic.png",
            "training_dwt_unet_seg.png"} <= figures
    assert (tmp_path / "run" / "train" / "rcnn_manual_labels_synthetic" / "head.npz").is_file()

    # evaluate: reload the networks, SVMs and thresholds from the run folder
    again = Run.open("dwt_mitosis", tmp_path / "run", cfg)
    T.TASK.evaluate(again, SYNTHETIC)
    assert again.metrics[T.rcnn_model("manual")]["synthetic_test"]["f1"] == pytest.approx(manual["f1"])
    assert again.metrics["paired"]["synthetic_test"][key] == pytest.approx(paired[key])
    assert again.extra["bootstrap"] == bootstrap

    # predict (common.predict): objects CSV, overlay PNG, counts.csv; grey, 16-bit, RGBA and float inputs
    rng = np.random.default_rng(0)
    image = rng.integers(150, 230, (64, 64, 3)).astype(np.uint8)
    image[20:36, 24:40] = (60, 30, 110)
    inputs = [write_image(tmp_path / "in" / "field.png", image),
              write_image(tmp_path / "in" / "grey.png", image[..., 1]),
              write_image(tmp_path / "in" / "deep.tif", image.astype(np.uint16) * 257),
              write_image(tmp_path / "in" / "rgba.png", np.dstack([image, np.full((64, 64), 255, np.uint8)])),
              write_image(tmp_path / "in" / "float.tif", image.astype(np.float32) / 255.0)]
    written = T.TASK.predict(tmp_path / "run", inputs, tmp_path / "out", model="rcnn_manual_labels", threshold=-1e9)
    names = {p.name for p in written}
    assert {"field.csv", "field_overlay.png", "grey.csv", "deep.csv", "rgba.csv", "float.csv", "counts.csv"} <= names
    assert not any(name.endswith("_labels.tif") for name in names)  # a detector: no label image
    with open(tmp_path / "out" / "field.csv") as fh:
        rows = list(csv.reader(fh))
    assert tuple(rows[0]) == OBJECT_COLUMNS and len(rows) >= 2
    assert {r[OBJECT_COLUMNS.index("class")] for r in rows[1:]} == {"mitosis"}
    with open(tmp_path / "out" / "float.csv") as fh:
        assert len(list(csv.reader(fh))) == len(rows)  # the same field as float in [0, 1]
    with open(tmp_path / "out" / "counts.csv") as fh:
        counts = list(csv.DictReader(fh))
    with open(tmp_path / "out" / "counts.csv") as fh:
        assert tuple(next(csv.reader(fh))) == COUNT_COLUMNS
    assert [c["image"] for c in counts] == ["field.png", "grey.png", "deep.tif", "rgba.png", "float.tif"]
    field = counts[0]
    assert field["count"] == str(len(rows) - 1) and field["model"] == "rcnn_manual_labels_synthetic"
    assert field["objects_csv"] == "field.csv" and field["labels_tif"] == ""

    # the stored threshold is used when none is given; SVM margins may be negative
    predictor = T.TASK.load_predictor(tmp_path / "run", "rcnn_manual_labels")
    assert predictor.threshold == pytest.approx(chosen.value) and predictor.score_range == (-math.inf, math.inf)
    assert predictor.min_size >= 1 and predictor.noun == "mitoses"
    from microrepro.common import cli

    argv = ["predict", str(tmp_path / "run"), str(tmp_path / "in"), "--out", str(tmp_path / "out2"),
            "--model", "rcnn_manual_labels_synthetic", "--threshold", "-0.5"]
    assert cli.main(argv) == 0
    with open(tmp_path / "out2" / "counts.csv") as fh:
        rows_cli = list(csv.DictReader(fh))
    assert len(rows_cli) == len(inputs) and {r["threshold"] for r in rows_cli} == {"-0.5"}
    with pytest.raises(UserError, match="not in this run"):
        T.TASK.predict(tmp_path / "run", inputs[:1], tmp_path / "out", model="rcnn_unet_labels")
    with pytest.raises(UserError, match="unknown dwt_mitosis model"):
        T.TASK.predict(tmp_path / "run", inputs[:1], tmp_path / "out", model="faster_rcnn_phase2")
