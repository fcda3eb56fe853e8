"""The REAL dwt_mitosis config, "smoke" schedule, end to end on tiny synthetic fields.

reproduce (phase-1 nets, label generation and quality, selective search, R-CNN per label source,
Faster R-CNN phase 2, evaluation at 8 µm, figures), then evaluate and predict on the finished run.
"""

import csv
import json

import numpy as np
import pytest

from microrepro.common.data_sources import DataSource
from microrepro.common.imageio import write_image
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
    assert set(metrics[T.SEG_MODELS["dwt"]]["synthetic_test"]) == {"precision", "recall", "f1", "iou", "mcc"}
    quality = metrics["dwt_labels"]["synthetic_det_train"]
    assert quality["n_manual"] >= 1 and 0.0 <= quality["point_coverage"] <= 1.0
    for model in (T.rcnn_model("dwt"), T.rcnn_model("manual"), T.FASTER):
        values = metrics[model]["synthetic_test"]
        for name in ("recall", "precision", "f1"):
            assert 0.0 <= values[name] <= 1.0, (model, name)
    manual = metrics[T.rcnn_model("manual")]["synthetic_test"]
    assert manual["ms_per_image"] > 0 and np.isfinite(manual["threshold"])
    assert run.splits["synthetic_test"]["kind"] == "synthetic"
    assert run.schedule_run["dwt_unet_seg"]["steps"] == 2
    assert run.schedule_run["rcnn_manual_labels_synthetic"]["steps"] == 2
    assert run.schedule_run["rcnn_manual_labels_synthetic"]["batch"] == 32 + 96
    assert run.schedule_run["faster_rcnn_phase2_synthetic"]["steps"] == 1
    state = json.loads((tmp_path / "run" / T.STATE_FILE).read_text())
    assert "rcnn_manual_labels_synthetic" in state["thresholds"] and state["domains"] == ["synthetic"]
    figures = {p.name for p in (tmp_path / "run" / "figures").glob("*.png")}
    assert {"generated_boxes_synthetic.png", "detections_rcnn_manual_labels_synthetic.png",
            "training_dwt_unet_seg.png"} <= figures
    assert (tmp_path / "run" / "train" / "rcnn_manual_labels_synthetic" / "head.npz").is_file()

    # evaluate: reload the networks, SVMs and thresholds from the run folder
    again = Run.open("dwt_mitosis", tmp_path / "run", cfg)
    T.TASK.evaluate(again, SYNTHETIC)
    assert again.metrics[T.rcnn_model("manual")]["synthetic_test"]["f1"] == pytest.approx(manual["f1"])

    # predict: per-image CSV (box, score, centre), overlay PNG, counts.csv
    rng = np.random.default_rng(0)
    image = rng.integers(150, 230, (64, 64, 3)).astype(np.uint8)
    image[20:36, 24:40] = (60, 30, 110)
    path = write_image(tmp_path / "field.png", image)
    written = T.TASK.predict(tmp_path / "run", [path], tmp_path / "out", model="rcnn_manual_labels", threshold=-1e9)
    assert {p.name for p in written} == {"field_mitoses.csv", "field_overlay.png", "counts.csv"}
    with open(tmp_path / "out" / "field_mitoses.csv") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["x1", "y1", "x2", "y2", "score", "x", "y"] and len(rows) >= 2
    with open(tmp_path / "out" / "counts.csv") as fh:
        counts = list(csv.reader(fh))
    assert counts[1] == ["field.png", str(len(rows) - 1)]
    with pytest.raises(T.UserError, match="not in this run"):
        T.TASK.predict(tmp_path / "run", [path], tmp_path / "out", model="rcnn_unet_labels")
