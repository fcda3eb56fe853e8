"""The real spines config with the "smoke" schedule, end to end on a tiny fixture (< 60 s):
reproduce -> evaluate -> predict."""

import csv
import json

import numpy as np
import pytest

from microrepro.common import thresholds
from microrepro.common.data_sources import DataSource
from microrepro.common.errors import UserError
from microrepro.common.predict import COUNT_COLUMNS, OBJECT_COLUMNS
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


EXPECTED = {"precision", "recall", "f1", "map50", "ms_per_image", "f1_released", "precision_released",
            "recall_released"}


def _check_metrics(run, keys):
    metrics = json.loads((run.run_dir / "metrics.json").read_text())
    for key in keys:
        assert key in metrics, f"{key} missing from metrics"
        values = metrics[key]["holdout"]
        assert EXPECTED <= set(values)
        assert 0.0 <= values["f1"] <= 1.0 and values["ms_per_image"] > 0
        assert values["n_gt"] > 0 and values["tp"] + values["fn"] == values["n_gt"]
        assert run.schedule_run[key]["steps"] == 2
    return metrics


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.reader(fh))


def test_smoke_schedule_yolo_and_sp_cnn_end_to_end(tmp_path):
    data_dir = _write_fixture(tmp_path / "spines")
    # Faster R-CNN has its own (slow) smoke test below: tracing its graph alone takes minutes on
    # a loaded 2-core CPU.
    cfg = TASK.load_config("paper", "smoke", {"data": {"holdout_fraction": 0.25}, "faster_rcnn": {"enabled": False}})
    assert cfg.yolo.train.steps == 2 and cfg.sp_cnn.train.steps == 2
    run = Run.create("spines", cfg, "paper", "smoke", seed=0, out=tmp_path / "run")
    source = DataSource("spines", data_dir, "test fixture")
    TASK.reproduce(run, source)
    _check_metrics(run, ("yolov2", "sp_cnn", "sp_cnn_hard", "sp_cnn_mse"))
    # bootstrap intervals over images beside each rate and mAP, paired F1 differences (common.stats)
    recorded = json.loads((run.run_dir / "metrics.json").read_text())
    for key in ("yolov2", "sp_cnn", "sp_cnn_hard", "sp_cnn_mse"):
        for metric in ("precision", "recall", "f1", "map50", "precision_released", "recall_released",
                       "f1_released"):
            assert {f"{metric}_ci_low", f"{metric}_ci_high"} <= set(recorded[key]["holdout"]), (key, metric)
    paired = recorded["paired"]["holdout"]
    for metric in ("f1", "f1_released"):
        for other in ("sp_cnn", "sp_cnn_hard"):
            name = f"{metric}_diff__sp_cnn_mse__vs__{other}"
            assert {name, f"{name}_ci_low", f"{name}_ci_high"} <= set(paired)
            diff = recorded["sp_cnn_mse"]["holdout"][metric] - recorded[other]["holdout"][metric]
            assert paired[name] == pytest.approx(diff)
    assert not any("faster_rcnn" in k for k in paired)  # Faster R-CNN is off in this run
    prov = json.loads((run.run_dir / "provenance.json").read_text())
    assert prov["bootstrap"] == {"n_boot": 1000, "level": 0.95, "unit": "image", "seed": 0}
    assert prov["splits"]["holdout"]["kind"] == "real" and prov["splits"]["holdout"]["n_images"] == 2
    for name in ("yolov2_loss", "yolov2_predictions", "f1_vs_threshold"):
        assert (run.run_dir / "figures" / f"{name}.png").is_file()

    # threshold_rule train_f1 (the base config's): chosen on the training images, stored in the
    # run's thresholds.json with its curve, used for the metrics and as predict's default; sp_cnn
    # keeps its fixed 0.5, stored the same way.
    chosen = thresholds.load(run.run_dir, "yolov2")
    # 8 images: holdout 2 (25 %), val 1 (10 % of 6), train 5
    assert chosen.rule == "max_f1_train" and chosen.split == "train" and chosen.n_images == 5
    assert np.isclose(chosen.curve["thresholds"], chosen.value).sum() == 1
    assert chosen.metric_value == pytest.approx(max(chosen.curve["f1"]))
    metrics = json.loads((run.run_dir / "metrics.json").read_text())
    assert metrics["yolov2"]["holdout"]["score_threshold"] == pytest.approx(chosen.value)
    assert metrics["yolov2"]["holdout"]["train_f1_at_threshold"] == pytest.approx(chosen.metric_value)
    assert metrics["sp_cnn"]["holdout"]["score_threshold"] == cfg.sp_cnn.peak_threshold
    assert thresholds.load(run.run_dir, "sp_cnn").rule == "fixed"
    assert not list(run.run_dir.glob("train/*/operating_threshold.json"))

    # evaluate: the stored weights and the stored threshold give the same numbers again
    (run.run_dir / "metrics.json").unlink()
    run.metrics = {}
    TASK.evaluate(run, source)
    again = json.loads((run.run_dir / "metrics.json").read_text())
    for key in ("yolov2", "sp_cnn", "sp_cnn_hard", "sp_cnn_mse"):
        for metric in ("f1", "map50", "score_threshold", "tp", "fp"):
            assert again[key]["holdout"][metric] == pytest.approx(metrics[key]["holdout"][metric]), (key, metric)

    # predict (common.predict): one objects CSV + overlay per image, counts.csv with one row per image
    out = tmp_path / "pred"
    images = sorted((data_dir / "train").glob("*.jpg"))[:2]
    written = TASK.predict(run.run_dir, images, out, model="yolov2", threshold=0.0)
    assert written[-1] == out / "counts.csv" and len(written) == 2 * 2 + 1
    counts = _rows(out / "counts.csv")
    assert tuple(counts[0]) == COUNT_COLUMNS and [r[0] for r in counts[1:]] == [p.name for p in images]
    objects = _rows(out / f"{images[0].stem}.csv")
    assert tuple(objects[0]) == OBJECT_COLUMNS and int(counts[1][1]) == len(objects) - 1
    assert all(r[8] == "spine" for r in objects[1:])
    with pytest.raises(UserError, match="unknown spines model"):
        TASK.predict(run.run_dir, images, out, model="resnet")
    # Images as users have them: 16-bit, colour, float, and a field larger than a tile (tiled).
    import cv2
    import tifffile

    grey = cv2.imread(str(images[0]), cv2.IMREAD_GRAYSCALE)
    odd = tmp_path / "odd"
    odd.mkdir()
    tifffile.imwrite(odd / "sixteen.tif", grey.astype(np.uint16) * 200)
    tifffile.imwrite(odd / "colour.tif", np.dstack([grey] * 3))
    tifffile.imwrite(odd / "float.tif", grey.astype(np.float32) / 255)
    tifffile.imwrite(odd / "field.tif", np.tile(grey, (3, 4)))
    users = sorted(odd.glob("*.tif"))
    TASK.predict(run.run_dir, users, tmp_path / "pred_users", model="sp_cnn_mse", threshold=0.0)
    assert len(_rows(tmp_path / "pred_users" / "counts.csv")) == 1 + len(users)
    # Default threshold = the stored one; without it, a clear error that says what to do.
    default_out = tmp_path / "pred_default"
    TASK.predict(run.run_dir, images[:1], default_out, model="yolov2")
    scores = [float(r[7]) for r in _rows(default_out / f"{images[0].stem}.csv")[1:]]
    assert all(v >= chosen.value - 1e-4 for v in scores)
    thresholds.path(run.run_dir).unlink()
    with pytest.raises(UserError, match="microrepro evaluate"):
        TASK.predict(run.run_dir, images[:1], tmp_path / "pred_missing", model="yolov2")


@pytest.mark.slow
def test_smoke_schedule_faster_rcnn_end_to_end_and_evaluate(tmp_path):
    data_dir = _write_fixture(tmp_path / "spines")
    overrides = {"data": {"holdout_fraction": 0.25}, "yolo": {"enabled": False}, "sp_cnn": {"enabled": False}}
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
    assert json.loads((run.run_dir / "metrics.json").read_text())["faster_rcnn"]["holdout"]["score_threshold"] == 0.6
    stored = thresholds.load(run.run_dir, "faster_rcnn")
    assert (stored.value, stored.rule, stored.curve) == (0.6, "fixed", {})
    # predict with the stored 0.6: the common files, one row per image
    images = sorted((data_dir / "train").glob("*.jpg"))[:2]
    TASK.predict(run.run_dir, images, tmp_path / "pred", model="faster_rcnn")
    assert tuple(_rows(tmp_path / "pred" / "counts.csv")[0]) == COUNT_COLUMNS
    assert len(_rows(tmp_path / "pred" / "counts.csv")) == 3
