"""MITOS-RCNN: the real config with the ``smoke`` schedule (96 px input, 2 steps), end to end.

``reproduce`` runs on synthetic fields (no data folder) for the cascade model only, then
``evaluate`` and ``predict`` on the run; a second test builds the real-data fields and
subsections (AMi-Br benchmark fields, split by slide) and the baselines without training.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from microrepro.common import thresholds
from microrepro.common.data_sources import DataSource
from microrepro.common.errors import UserError
from microrepro.common.predict import COUNT_COLUMNS, OBJECT_COLUMNS
from microrepro.common.runs import Run
from microrepro.reproductions.mitos_rcnn import data as data_lib
from microrepro.reproductions.mitos_rcnn.task import TASK


def test_reproduce_smoke_schedule_on_synthetic_fields(tmp_path):
    cfg = TASK.load_config("paper", "smoke", {"models": ["mitos_rcnn"], "data": {"macenko": True}})
    run = Run.create("mitos_rcnn", cfg, "paper", "smoke", 0, out=tmp_path / "run")
    TASK.reproduce(run, DataSource("mitosis_amibr", None, "synthetic"))

    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert set(metrics) == {"fig4_confusion", "mitos_rcnn"}  # the baselines are for the real data only
    assert metrics["fig4_confusion"]["paper_fig4"]["f1_top"] == pytest.approx(144 / 203)
    assert set(metrics["mitos_rcnn"]) == {"synthetic_test", "timing"}  # no real data -> no real row
    row = metrics["mitos_rcnn"]["synthetic_test"]
    assert {"precision", "recall", "f1", "threshold", "f1_oracle", "tp", "fp", "fn"} <= set(row)
    assert 0.0 <= row["f1"] <= 1.0 and row["threshold"] in cfg.eval.thresholds
    # 95 % bootstrap intervals over the test fields (common.stats); none for the test-chosen f1_oracle
    assert {f"{m}_ci_{b}" for m in ("precision", "recall", "f1", "recall_small", "recall_medium", "recall_large")
            for b in ("low", "high")} <= set(row)
    assert "f1_oracle_ci_low" not in row
    assert metrics["mitos_rcnn"]["timing"]["s_per_hpf"] > 0

    prov = json.loads((tmp_path / "run" / "provenance.json").read_text())
    assert prov["splits"]["synthetic_test"]["kind"] == "synthetic"
    assert prov["schedule_run"]["mitos_rcnn"]["steps"] == 2
    assert prov["schedule_run"]["mitos_rcnn"]["input_size"] == 96
    assert prov["schedule_run"]["data"]["macenko_copies"] == 2  # originals kept, normalised copies added
    assert (tmp_path / "run" / "figures" / "mitos_rcnn_loss.png").is_file()
    assert (tmp_path / "run" / "train" / "mitos_rcnn" / "last.weights.h5").is_file()
    # the operating threshold: chosen on the training fields, stored once (not in metrics.json alone)
    stored = thresholds.load(tmp_path / "run", "mitos_rcnn")
    assert stored.value == row["threshold"] and stored.rule == "max_f1_train" and stored.split == "train"
    assert stored.curve["thresholds"] == pytest.approx(cfg.eval.thresholds)
    assert len(stored.curve["f1"]) == len(cfg.eval.thresholds) and stored.n_images == cfg.data.tune_fields

    # evaluate and predict read the stored threshold back (here a configured one, replacing the chosen)
    thresholds.save(tmp_path / "run", "mitos_rcnn", thresholds.fixed(0.3))
    rerun = Run.open("mitos_rcnn", tmp_path / "run", cfg)
    TASK.evaluate(rerun, DataSource("mitosis_amibr", None, "synthetic"))
    assert rerun.metrics["mitos_rcnn"]["synthetic_test"]["threshold"] == 0.3
    assert thresholds.load(tmp_path / "run", "mitos_rcnn").rule == "fixed"  # not re-chosen

    # predict on whole fields as users have them: an RGB PNG and a 16-bit grey TIFF in another folder
    from microrepro.common.imageio import write_image
    from microrepro.datasets.synthetic import he_fields

    field = he_fields.generate(1, 5, he_fields.HEConfig(image_size=(200, 240)))[0]
    write_image(tmp_path / "in" / "hpf.png", field.image)
    grey = (field.image.astype(np.float64).mean(axis=-1) * 257).astype(np.uint16)
    write_image(tmp_path / "in" / "more" / "grey.tif", grey)
    images = [tmp_path / "in" / "hpf.png", tmp_path / "in" / "more" / "grey.tif"]
    written = TASK.predict(tmp_path / "run", images, tmp_path / "pred", threshold=0.0)
    assert sorted(p.relative_to(tmp_path / "pred").as_posix() for p in written) == [
        "counts.csv", "hpf.csv", "hpf_overlay.png", "more/grey.csv", "more/grey_overlay.png"]
    for name in ("hpf.csv", "more/grey.csv"):
        with open(tmp_path / "pred" / name, newline="") as fh:
            rows = list(csv.reader(fh))
        assert tuple(rows[0]) == OBJECT_COLUMNS
        assert all(r[8] == "mitotic_figure" and 0.0 <= float(r[7]) <= 1.0 for r in rows[1:])
    with open(tmp_path / "pred" / "counts.csv", newline="") as fh:
        counts = list(csv.reader(fh))
    assert tuple(counts[0]) == COUNT_COLUMNS
    assert [r[0] for r in counts[1:]] == ["hpf.png", "more/grey.tif"]  # one row per input image
    assert all(r[2] == "mitos_rcnn" and float(r[3]) == 0.0 for r in counts[1:])

    # without --threshold: the stored one
    TASK.predict(tmp_path / "run", images[:1], tmp_path / "pred_stored")
    stored_row = (tmp_path / "pred_stored" / "counts.csv").read_text().splitlines()[1].split(",")
    assert float(stored_row[3]) == 0.3

    with pytest.raises(UserError, match="unknown mitos_rcnn model"):
        TASK.predict(tmp_path / "run", images[:1], tmp_path / "pred2", model="yolo")
    with pytest.raises(UserError, match="outside"):
        TASK.predict(tmp_path / "run", images[:1], tmp_path / "pred3", threshold=1.5)
    with pytest.raises(UserError, match="not trained in this run"):
        TASK.predict(tmp_path / "run", images[:1], tmp_path / "pred4", model="faster_rcnn_conv4")
    # a field smaller than one subsection is zero-padded; an RGBA float TIFF is converted
    rgba = np.dstack([field.image[:20, :30] / 255.0, np.ones((20, 30))]).astype(np.float32)
    write_image(tmp_path / "tiny.tif", rgba)
    TASK.predict(tmp_path / "run", [tmp_path / "tiny.tif"], tmp_path / "pred_tiny", threshold=0.0)
    assert (tmp_path / "pred_tiny" / "tiny_overlay.png").is_file()
    # a run without a stored threshold: an error saying how to get one, unless one is given
    (tmp_path / "run" / "thresholds.json").rename(tmp_path / "thresholds.json")
    with pytest.raises(UserError, match="no operating threshold"):
        TASK.predict(tmp_path / "run", images[:1], tmp_path / "pred5")
    assert TASK.predict(tmp_path / "run", images[:1], tmp_path / "pred6", threshold=0.5)[-1].name == "counts.csv"


def test_real_fields_are_split_by_slide_and_boxed(shared_data, tmp_path):
    root = shared_data("mitosis_amibr")
    cfg = TASK.load_config("paper", "smoke", {"data": {"max_train_fields": 3, "max_test_fields": 2, "macenko": False}})
    fields = data_lib.load_fields(cfg, DataSource("mitosis_amibr", root, "test"), seed=0)
    test_fields, info = fields.tests["real_bench"]
    assert info.kind == "real" and info.n_images == 2 and fields.kind == "real" and "real_mosaic" not in fields.tests
    assert all(f.image.shape == (512, 512, 3) and len(f.points) >= 1 for f in fields.train + test_fields)
    train_ids = {src[0] for f in fields.train for src in f.meta["sources"]}
    test_ids = {src[0] for f in test_fields for src in f.meta["sources"]}
    assert not train_ids & test_ids
    assert {c.id for c in fields.timing_crops} >= test_ids
    assert fields.tune == fields.train[-cfg.data.tune_fields :]
    # the old mosaics are only there for the baselines' contrast, on the same slide split
    old_train, old_test, old_info = fields.baseline_sets["real_mosaic"]
    assert len(old_train) == 3 and len(old_test) == 2 and all(len(f.meta["windows"]) == 16 for f in old_test)
    assert not {t for f in old_train for t in f.meta["tiles"]} & test_ids
    subs, sub_info = data_lib.training_subsections(cfg, fields.train, seed=0)
    assert sub_info["subsections"] == 3 * cfg.data.tiles_per_field == len(subs)
    valid = subs.classes >= 0
    assert valid.any() and set(np.unique(subs.classes[valid])) == {0}  # AMi-Br: mitoses only
    sides = subs.boxes[valid][:, 2] - subs.boxes[valid][:, 0]
    # 10 um = 40 px at 0.25 um/px, x 96/124 input px per source px (smoke scale), clipped at edges
    assert sides.max() == pytest.approx(40 * 96 / 124, abs=0.01)

    cfg = TASK.load_config("paper", "smoke", {"models": ["mitos_rcnn"]})
    run = Run.create("mitos_rcnn", cfg, "paper", "smoke", 0, out=tmp_path / "run")
    from microrepro.reproductions.mitos_rcnn import baselines

    per_field: dict = {}
    chosen = baselines.evaluate_baselines(run, cfg, fields.baseline_sets, per_field)
    assert chosen["real_mosaic"]["position"] == "grid_128px"  # the old fields: a figure at every tile centre
    assert run.metrics["baseline_position"]["real_mosaic"]["f1"] > 0.9
    assert run.metrics["baseline_position"]["real_bench"]["f1"] < 0.5
    assert run.schedule_run["baselines"] == chosen
    for baseline in ("baseline_position", "baseline_log_blobs"):  # fitted on the training fields, beside the models
        assert set(run.metrics[baseline]) == {"real_bench", "real_mosaic"}
        assert {"precision", "recall", "f1", "tp", "fp", "fn", "train_f1"} <= set(run.metrics[baseline]["real_bench"])
    assert run.splits["real_mosaic"]["n_images"] == 2
    # per-field counts of the baselines, for the paired comparisons on the same fields
    from microrepro.reproductions.mitos_rcnn import evaluation

    bench = per_field["real_bench"]
    assert set(bench) == {"baseline_position", "baseline_log_blobs"}
    assert int(bench["baseline_log_blobs"]["tp"].sum()) == run.metrics["baseline_log_blobs"]["real_bench"]["tp"]
    assert len(bench["baseline_position"]["fn"]) == len(test_fields)
    as_model = dict(bench, mitos_rcnn=bench["baseline_log_blobs"])  # a stand-in model with the blobs' detections
    paired = evaluation.record_paired(run, "real_bench", info, as_model, ["mitos_rcnn"])
    assert paired["f1_diff__mitos_rcnn__vs__baseline_log_blobs"] == 0.0
    key = "f1_diff__mitos_rcnn__vs__baseline_position"
    assert paired[key] == pytest.approx(run.metrics["baseline_log_blobs"]["real_bench"]["f1"]
                                        - run.metrics["baseline_position"]["real_bench"]["f1"])
    assert {f"{key}_ci_low", f"{key}_ci_high"} <= set(run.metrics["paired"]["real_bench"])
