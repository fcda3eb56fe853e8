"""dwt_mitosis task wiring: the run state, thresholds.json, predict's model names."""

from __future__ import annotations

import json
import math

import pytest

from microrepro.common import thresholds
from microrepro.common.errors import UserError
from microrepro.reproductions.dwt_mitosis import task as T


def test_models_and_default():
    assert T.TASK.default_model == "rcnn_dwt_labels" and T.TASK.default_model in T.TASK.models
    assert "rcnn_manual_labels_synthetic" in T.TASK.models and "rcnn_dwt_labels_amibr" in T.TASK.models
    assert T.FASTER not in T.TASK.models


def test_detector_name_prefers_amibr_then_synthetic():
    stored = {"rcnn_dwt_labels_amibr": 1, "rcnn_dwt_labels_synthetic": 2, "rcnn_manual_labels_synthetic": 3}
    assert T._detector_name("rcnn_dwt_labels", stored) == "rcnn_dwt_labels_amibr"
    assert T._detector_name("rcnn_dwt_labels_synthetic", stored) == "rcnn_dwt_labels_synthetic"
    assert T._detector_name("rcnn_manual_labels", stored) == "rcnn_manual_labels_synthetic"
    with pytest.raises(UserError, match="not in this run"):
        T._detector_name("rcnn_unet_labels", stored)


def test_state_of_an_older_run_moves_its_thresholds_to_thresholds_json(tmp_path):
    with pytest.raises(UserError, match="not a finished dwt_mitosis run"):
        T.read_state(tmp_path)
    old = {"thresholds": {"rcnn_dwt_labels_synthetic": -0.25}, "seg_kinds": ["dwt"], "domains": ["synthetic"],
           "sources": {"synthetic": ["dwt"]}}
    (tmp_path / T.STATE_FILE).write_text(json.dumps(old))
    state = T.read_state(tmp_path)
    assert "thresholds" not in state and state["domains"] == ["synthetic"]
    assert "thresholds" not in json.loads((tmp_path / T.STATE_FILE).read_text())
    stored = thresholds.load(tmp_path, "rcnn_dwt_labels_synthetic")
    assert stored.value == -0.25 and math.isfinite(stored.value)


def test_both_label_networks_get_the_same_cap_and_stop_at_their_own_plateau(tmp_path, monkeypatch):
    """short: one epoch cap for DWT-net and U-Net, early stopping on the validation loss, and the
    schedule record says which epoch's weights are used and whether the plateau ended training."""
    from microrepro.common import training
    from microrepro.common.runs import Run
    from microrepro.reproductions.dwt_mitosis import segmentation

    cfg = T.TASK.load_config("paper", "short")
    assert cfg.seg_train.early_stopping_patience > 0 and cfg.seg_train.epochs >= 20
    assert T.TASK.load_config("paper", "paper").seg_train.early_stopping_patience == 0  # Sec. 4.3: all 100 epochs
    seen = {}

    def fake_fit(model, train_ds, val_ds, **kwargs):
        seen[kwargs["name"]] = kwargs
        return {"history": {"loss": [1.0, 0.8, 0.7], "val_loss": [0.9, 0.6, 0.65]}, "epochs_run": 3, "seconds": 1.0}

    monkeypatch.setattr(training, "fit", fake_fit)
    monkeypatch.setattr(training, "plot_history", lambda *a, **k: None)
    monkeypatch.setattr(segmentation, "seg_datasets", lambda *a: (None, None))
    run = Run.create("dwt_mitosis", cfg, "paper", "short", 0, out=tmp_path / "run")
    records = {kind: segmentation.train_seg(kind, run, cfg, [None] * 32, None) for kind in ("dwt", "unet")}
    assert {k["epochs"] for k in seen.values()} == {cfg.seg_train.epochs}
    assert {k["early_stopping_patience"] for k in seen.values()} == {cfg.seg_train.early_stopping_patience}
    assert all(r["best_epoch"] == 2 and r["stopped_at_plateau"] for r in records.values())
