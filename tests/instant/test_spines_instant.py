"""The real spines config with the "smoke" schedule, end to end on a tiny fixture (< 60 s)."""

import csv
import json

import numpy as np
import pytest

from microrepro.common.data_sources import DataSource
from microrepro.common.errors import ConfigError, UserError
from microrepro.common.runs import Run
from microrepro.reproductions.spines.task import TASK


def _write_fixture(root, n_images=8, seed=0):
    """A spines-layout folder: grey jpgs with bright blobs + train_labels.csv of 15x15 boxes."""
    import cv2

    rng = np.random.default_rng(seed)
    (root / "train").mkdir(parents=True)
    rows = [["filename", "width", "height", "class", "xmin", "ymin", "xmax", "ymax"]]
    for i in range(n_images):
        h, w = int(rng.integers(128, 160)), int(rng.integers(128, 160))
        image = rng.normal(30, 5, (h, w))
        for _ in range(int(rng.integers(1, 4))):
            cx, cy = int(rng.integers(15, w - 15)), int(rng.integers(15, h - 15))
            cv2.circle(image, (cx, cy), 5, 200, -1)
            rows.append([f"img{i}.jpg", w, h, "dendrite", cx - 7, cy - 7, cx + 7, cy + 7])
        cv2.imwrite(str(root / "train" / f"img{i}.jpg"), np.clip(image, 0, 255).astype(np.uint8))
    with open(root / "train_labels.csv", "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    return root


EXPECTED = {"precision", "recall", "f1", "map50", "ms_per_image", "f1_released", "precision_released", "recall_released"}


def _check_metrics(run, keys):
    metrics = json.loads((run.run_dir / "metrics.json").read_text())
    for key in keys:
        assert key in metrics, f"{key} missing from metrics"
        values = metrics[key]["val"]
        assert EXPECTED <= set(values)
        assert 0.0 <= values["f1"] <= 1.0 and values["ms_per_image"] > 0
        assert values["n_gt"] > 0 and values["tp"] + values["fn"] == values["n_gt"]
        assert run.schedule_run[key]["steps"] == 2
    return metrics


def test_smoke_schedule_yolo_and_sp_cnn_end_to_end(tmp_path):
    data_dir = _write_fixture(tmp_path / "spines")
    # Faster R-CNN has its own (slow) smoke test below: tracing its graph alone takes minutes on
    # a loaded 2-core CPU.
    cfg = TASK.load_config("paper", "smoke", {"data": {"val_fraction": 0.25}, "faster_rcnn": {"enabled": False}})
    assert cfg.yolo.train.steps == 2 and cfg.sp_cnn.train.steps == 2
    run = Run.create("spines", cfg, "paper", "smoke", seed=0, out=tmp_path / "run")
    TASK.reproduce(run, DataSource("spines", data_dir, "test fixture"))
    _check_metrics(run, ("yolov2", "sp_cnn", "sp_cnn_mse"))
    prov = json.loads((run.run_dir / "provenance.json").read_text())
    assert prov["splits"]["val"]["kind"] == "real" and prov["splits"]["val"]["n_images"] == 2
    for name in ("yolov2_loss", "yolov2_predictions", "f1_vs_threshold"):
        assert (run.run_dir / "figures" / f"{name}.png").is_file()

    # threshold_rule train_f1 (the base config's): chosen on the training images, stored beside
    # the weights, used for the metrics and as predict's default; sp_cnn keeps its fixed 0.5.
    chosen = json.loads((run.run_dir / "train" / "yolov2" / "operating_threshold.json").read_text())
    assert chosen["rule"] == "train_f1" and chosen["n_images"] == 6
    assert np.isclose(chosen["sweep"]["threshold"], chosen["threshold"]).sum() == 1
    assert chosen["train_f1"] == pytest.approx(max(chosen["sweep"]["f1"]))
    metrics = json.loads((run.run_dir / "metrics.json").read_text())
    assert metrics["yolov2"]["val"]["score_threshold"] == pytest.approx(chosen["threshold"])
    assert metrics["yolov2"]["val"]["train_f1_at_threshold"] == pytest.approx(chosen["train_f1"])
    assert metrics["sp_cnn"]["val"]["score_threshold"] == cfg.sp_cnn.peak_threshold
    assert not (run.run_dir / "train" / "sp_cnn" / "operating_threshold.json").exists()

    # predict: per-image CSV + overlay + counts.csv from the trained run
    out = tmp_path / "pred"
    images = sorted((data_dir / "train").glob("*.jpg"))[:2]
    written = TASK.predict(run.run_dir, images, out, model="yolov2", threshold=0.0)
    assert (out / "counts.csv").is_file() and len(written) == 2 * 2 + 1
    header = (out / f"{images[0].stem}.csv").read_text().splitlines()[0]
    assert header == "x,y,x1,y1,x2,y2,score"
    with pytest.raises(Exception, match="unknown spines model"):
        TASK.predict(run.run_dir, images, out, model="resnet")
    # Default threshold = the chosen one; without its file, a clear error that says what to do.
    default_out = tmp_path / "pred_default"
    TASK.predict(run.run_dir, images[:1], default_out, model="yolov2")
    scores = [float(r.split(",")[-1]) for r in (default_out / f"{images[0].stem}.csv").read_text().splitlines()[1:]]
    assert all(v >= chosen["threshold"] - 1e-4 for v in scores)
    (run.run_dir / "train" / "yolov2" / "operating_threshold.json").unlink()
    with pytest.raises(UserError, match="microrepro evaluate"):
        TASK.predict(run.run_dir, images[:1], tmp_path / "pred_missing", model="yolov2")


def test_unknown_threshold_rule_is_a_config_error_before_training(tmp_path):
    data_dir = _write_fixture(tmp_path / "spines")
    cfg = TASK.load_config("paper", "smoke", {"yolo": {"threshold_rule": "best"}})
    run = Run.create("spines", cfg, "paper", "smoke", seed=0, out=tmp_path / "run")
    with pytest.raises(ConfigError, match="threshold_rule must be one of fixed, train_f1"):
        TASK.reproduce(run, DataSource("spines", data_dir, "test fixture"))
    cfg = TASK.load_config("paper", "smoke", {"matching": {"threshold_step": 0.0}})
    run = Run.create("spines", cfg, "paper", "smoke", seed=0, out=tmp_path / "run2")
    with pytest.raises(ConfigError, match="threshold_step must be in"):
        TASK.reproduce(run, DataSource("spines", data_dir, "test fixture"))
    assert not (tmp_path / "run" / "train").exists() and not (tmp_path / "run2" / "train").exists()


@pytest.mark.slow
def test_smoke_schedule_faster_rcnn_end_to_end_and_evaluate(tmp_path):
    data_dir = _write_fixture(tmp_path / "spines")
    overrides = {"data": {"val_fraction": 0.25}, "yolo": {"enabled": False}, "sp_cnn": {"enabled": False}}
    cfg = TASK.load_config("released", "smoke", overrides)
    assert cfg.faster_rcnn.keep_aspect_ratio and cfg.faster_rcnn.loc_loss_weight == 2.0
    run = Run.create("spines", cfg, "released", "smoke", seed=0, out=tmp_path / "run")
    source = DataSource("spines", data_dir, "test fixture")
    TASK.reproduce(run, source)
    _check_metrics(run, ("faster_rcnn",))
    (run.run_dir / "metrics.json").unlink()
    run.metrics = {}
    TASK.evaluate(run, source)  # re-loads the trained weights
    assert "faster_rcnn" in json.loads((run.run_dir / "metrics.json").read_text())
    # released preset: the released evaluation's fixed 0.6, nothing chosen on training images
    assert cfg.faster_rcnn.threshold_rule == "fixed"
    assert json.loads((run.run_dir / "metrics.json").read_text())["faster_rcnn"]["val"]["score_threshold"] == 0.6
    assert not (run.run_dir / "train" / "faster_rcnn" / "operating_threshold.json").exists()
