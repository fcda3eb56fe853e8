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
