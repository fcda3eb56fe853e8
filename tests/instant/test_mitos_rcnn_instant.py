"""MITOS-RCNN: the real config with the ``smoke`` schedule (96 px input, 2 steps), end to end.

``reproduce`` runs on synthetic fields (no data folder) for the cascade model only; a second test
builds the real-data fields and subsections (AMi-Br mosaics, split by slide) without training.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from microrepro.common.data_sources import DataSource
from microrepro.common.runs import Run
from microrepro.reproductions.mitos_rcnn.task import TASK


def test_reproduce_smoke_schedule_on_synthetic_fields(tmp_path):
    cfg = TASK.load_config("paper", "smoke", {"models": ["mitos_rcnn"], "data": {"macenko": True}})
    run = Run.create("mitos_rcnn", cfg, "paper", "smoke", 0, out=tmp_path / "run")
    TASK.reproduce(run, DataSource("mitosis_amibr", None, "synthetic"))

    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert set(metrics) == {"fig4_confusion", "mitos_rcnn"}
    assert metrics["fig4_confusion"]["paper_fig4"]["f1_top"] == pytest.approx(144 / 203)
    assert set(metrics["mitos_rcnn"]) == {"synthetic_test", "timing"}  # no real data -> no real row
    row = metrics["mitos_rcnn"]["synthetic_test"]
    assert {"precision", "recall", "f1", "threshold", "f1_oracle", "tp", "fp", "fn"} <= set(row)
    assert 0.0 <= row["f1"] <= 1.0 and row["threshold"] in cfg.eval.thresholds
    assert metrics["mitos_rcnn"]["timing"]["s_per_hpf"] > 0

    prov = json.loads((tmp_path / "run" / "provenance.json").read_text())
    assert prov["splits"]["synthetic_test"]["kind"] == "synthetic"
    assert prov["schedule_run"]["mitos_rcnn"]["steps"] == 2
    assert prov["schedule_run"]["mitos_rcnn"]["input_size"] == 96
    assert prov["schedule_run"]["data"]["macenko_copies"] == 2  # originals kept, normalised copies added
    assert (tmp_path / "run" / "figures" / "mitos_rcnn_loss.png").is_file()
    assert (tmp_path / "run" / "train" / "mitos_rcnn" / "last.weights.h5").is_file()

    # predict on a whole field written as a PNG: CSV of detections, overlay, counts
    from microrepro.common.imageio import write_image
    from microrepro.datasets.synthetic import he_fields

    field = he_fields.generate(1, 5, he_fields.HEConfig(image_size=(200, 240)))[0]
    write_image(tmp_path / "hpf.png", field.image)
    written = TASK.predict(tmp_path / "run", [tmp_path / "hpf.png"], tmp_path / "pred", threshold=0.0)
    assert sorted(p.name for p in written) == ["counts.csv", "hpf.csv", "hpf_overlay.png"]
    header = (tmp_path / "pred" / "hpf.csv").read_text().splitlines()[0]
    assert header == "x,y,x1,y1,x2,y2,score,class"
    with pytest.raises(Exception, match="unknown mitos_rcnn model"):
        TASK.predict(tmp_path / "run", [tmp_path / "hpf.png"], tmp_path / "pred2", model="yolo")


def test_real_fields_are_split_by_slide_and_boxed(shared_data):
    root = shared_data("mitosis_amibr")
    cfg = TASK.load_config("paper", "smoke", {"data": {"max_train_fields": 3, "max_test_fields": 2, "macenko": False}})
    fields = TASK.load_fields(cfg, DataSource("mitosis_amibr", root, "test"), seed=0)
    test_fields, info = fields["tests"]["real_mosaic"]
    assert info.kind == "real" and info.n_images == 2 and fields["kind"] == "real"
    assert all(f.image.shape == (512, 512, 3) and len(f.points) >= 16 for f in fields["train"] + test_fields)
    train_ids = {t for f in fields["train"] for t in f.meta["tiles"]}
    test_ids = {t for f in test_fields for t in f.meta["tiles"]}
    assert not train_ids & test_ids
    subs, sub_info = TASK.subsections(cfg, fields["train"], seed=0)
    assert sub_info["subsections"] == 3 * cfg.data.tiles_per_field == len(subs)
    valid = subs.classes >= 0
    assert valid.any() and set(np.unique(subs.classes[valid])) == {0}  # AMi-Br: mitoses only
    sides = subs.boxes[valid][:, 2] - subs.boxes[valid][:, 0]
    # 10 um = 40 px at 0.25 um/px, x 96/124 input px per source px (smoke scale), clipped at edges
    assert sides.max() == pytest.approx(40 * 96 / 124, abs=0.01)
