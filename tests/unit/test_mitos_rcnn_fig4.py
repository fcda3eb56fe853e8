"""MITOS-RCNN Fig. 4: F1 recomputed from the published confusion matrices (exact values)."""

from __future__ import annotations

import pytest
import yaml

from microrepro.common.errors import ConfigError
from microrepro.reproductions.mitos_rcnn.evaluation import confusion_f1, fig4_metrics
from microrepro.reproductions.mitos_rcnn.task import TASK


def test_confusion_f1_exact():
    assert confusion_f1(72, 31, 28) == pytest.approx(144 / 203)
    assert confusion_f1(53, 58, 47) == pytest.approx(106 / 211)
    assert confusion_f1(96, 5, 4) == pytest.approx(192 / 201)
    assert confusion_f1(0, 3, 2) == 0.0
    assert confusion_f1(5, 0, 0) == 1.0


def test_confusion_f1_rejects_bad_counts():
    with pytest.raises(ValueError, match=">= 0"):
        confusion_f1(-1, 0, 0)
    with pytest.raises(ValueError, match="empty"):
        confusion_f1(0, 0, 0)


def test_fig4_captions_are_swapped_relative_to_table2():
    """The top matrix (captioned 'standard') gives Table II's conv4 F1 and vice versa."""
    published = yaml.safe_load(TASK.published_path.read_text())
    values = fig4_metrics(published)
    assert values == pytest.approx({"f1_top": 144 / 203, "f1_middle": 106 / 211, "f1_bottom": 192 / 201})
    table2 = {row["model"]: row["published"] for row in published["tables"][0]["rows"]}
    assert round(values["f1_top"], 3) == table2["faster_rcnn_conv4"] == 0.709
    assert round(values["f1_middle"], 3) == table2["faster_rcnn_conv5"] == 0.502
    assert round(values["f1_bottom"], 3) == table2["mitos_rcnn"] == 0.955


def test_fig4_metrics_errors_name_the_problem():
    with pytest.raises(ConfigError, match="fig4_confusion"):
        fig4_metrics({})
    with pytest.raises(ConfigError, match="lacks"):
        fig4_metrics({"fig4_confusion": [{"position": "top", "tp": 1, "fp": 2}]})


def test_published_metric_keys_match_what_the_task_records():
    published = yaml.safe_load(TASK.published_path.read_text())
    models = {row["model"] for table in published["tables"] for row in table["rows"]}
    assert {"faster_rcnn_conv5", "faster_rcnn_conv4", "mitos_rcnn", "fig4_confusion"} <= models
    metrics = {row["metric"] for table in published["tables"] for row in table["rows"]}
    assert metrics == {"f1", "f1_top", "f1_middle", "f1_bottom", "s_per_hpf"}
