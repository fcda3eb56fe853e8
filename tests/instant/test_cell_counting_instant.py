"""The REAL cell_counting config, "smoke" schedule, end to end on a tiny synthetic set.

reproduce (both trainings, threshold sweeps, evaluation of the three model keys, timing),
then evaluate and predict on the finished run.
"""

import csv
import json

import numpy as np
import pytest

from microrepro.common import thresholds
from microrepro.common.data_sources import DataSource
from microrepro.common.imageio import write_image
from microrepro.common.predict import COUNT_COLUMNS, OBJECT_COLUMNS
from microrepro.common.runs import Run
from microrepro.reproductions.cell_counting import data as D
from microrepro.reproductions.cell_counting import task as T
from microrepro.reproductions.cell_counting.inference import FULL, MODELS, NO_WEIGHTMAP, SKIPPED


@pytest.fixture
def small_neurons(monkeypatch):
    """The synthetic neuron generator at 256 x 320 px (same cell sizes and densities)."""
    from microrepro.datasets.synthetic import neurons

    def fields(n, seed):
        config = neurons.NeuronsConfig(image_size=(256, 320))
        return D.fields_from_samples(neurons.generate(n, seed, config))

    monkeypatch.setattr(D, "synthetic_fields", fields)


def test_smoke_reproduce_evaluate_predict(tmp_path, small_neurons):
    cfg = T.TASK.load_config("paper", "smoke", {"data": {"scale": 0.25, "synthetic_train_fields": 2}})
    run = Run.create("cell_counting", cfg, "paper", "smoke", seed=0, out=tmp_path / "run")
    T.TASK.reproduce(run, DataSource("fnc_sample", None, "synthetic generator"))

    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert set(metrics) == {*MODELS, "paired"}
    for key in MODELS:
        values = metrics[key]["synthetic_test"]
        for name in ("f1", "f1_released", "mae", "medae", "mean_iou", "threshold"):
            assert np.isfinite(values[name]), (key, name)
        assert 0.0 <= values["f1"] <= 1.0 and values["mae"] >= 0
    # every Table 1 metric carries its 95 % bootstrap interval over fields; the README's orderings
    # are paired differences on the same fields, under model "paired"
    for key in MODELS:
        values = metrics[key]["synthetic_test"]
        for name in ("f1", "precision", "recall", "f1_released", "mae", "medae", "mean_error", "mean_iou",
                     "foreground_iou"):
            low, high = values[f"{name}_ci_low"], values[f"{name}_ci_high"]
            assert low is None or low <= high, (key, name)
        assert "threshold_ci_low" not in values
    paired = metrics["paired"]["synthetic_test"]
    assert set(paired) == {f"{m}_diff__{FULL}__vs__{b}{s}" for b in (*SKIPPED, NO_WEIGHTMAP)
                           for m in ("f1", "mae") for s in ("", "_ci_low", "_ci_high")}
    for b in (*SKIPPED, NO_WEIGHTMAP):
        diff = paired[f"f1_diff__{FULL}__vs__{b}"]
        assert diff == pytest.approx(metrics[FULL]["synthetic_test"]["f1"] - metrics[b]["synthetic_test"]["f1"])
    provenance = json.loads((tmp_path / "run" / "provenance.json").read_text())
    assert provenance["bootstrap"] == {"n_boot": 1000, "level": 0.95, "unit": "image", "seed": 0}
    assert metrics[FULL]["synthetic_test"]["s_per_field"] > 0
    assert metrics[FULL]["synthetic_test"]["ms_per_crop"] > 0
    assert run.splits["synthetic_test"]["kind"] == "synthetic"
    assert run.schedule_run[FULL]["steps"] == 2 and run.schedule_run[NO_WEIGHTMAP]["steps"] == 2
    state = json.loads((tmp_path / "run" / T.STATE_FILE).read_text())
    assert set(state) == {"sizes", "mean_cell_diameter", "models", "train_fields"}  # thresholds live apart
    stored = thresholds.read_all(tmp_path / "run")
    assert set(stored) == set(MODELS)
    for key, threshold in stored.items():
        assert threshold.rule == "max_f1_train" and threshold.n_images == 1
        assert threshold.curve["thresholds"] == [0.5, 0.7] and len(threshold.curve["f1"]) == 2
        assert threshold.value == metrics[key]["synthetic_test"]["threshold"]
    assert (tmp_path / "run" / "figures" / "f1_vs_threshold.png").is_file()
    assert (tmp_path / "run" / "train" / FULL / "best.weights.h5").is_file()

    # evaluate: reload the trained models and the stored thresholds from the run folder
    again = Run.create("cell_counting", cfg, "paper", "smoke", seed=0, out=tmp_path / "run", resume=True)
    T.TASK.evaluate(again, DataSource("fnc_sample", None, "synthetic generator"))
    for key in MODELS:
        assert again.metrics[key]["synthetic_test"]["f1"] == pytest.approx(metrics[key]["synthetic_test"]["f1"])
        assert again.metrics[key]["synthetic_test"]["mae"] == pytest.approx(metrics[key]["synthetic_test"]["mae"])
    # a run without thresholds.json: evaluate chooses them again on the same training fields
    thresholds.path(tmp_path / "run").unlink()
    T.TASK.evaluate(again, DataSource("fnc_sample", None, "synthetic generator"))
    assert {k: t.value for k, t in thresholds.read_all(tmp_path / "run").items()} == {
        k: t.value for k, t in stored.items()}

    # predict (common.predict): per image <stem>.csv, overlay, label TIFF; counts.csv one row per image
    image = np.zeros((96, 128, 3), np.uint8)
    image[30:50, 40:60] = (230, 200, 20)
    grey16 = (image.mean(axis=-1) * 16).astype(np.uint16)  # a 12-bit grey camera image
    paths = [write_image(tmp_path / "in" / "field.png", image), write_image(tmp_path / "in" / "grey.tif", grey16)]
    written = T.TASK.predict(tmp_path / "run", paths, tmp_path / "out")
    names = {p.name for p in written}
    assert names == {"field.csv", "field_overlay.png", "field_labels.tif", "grey.csv", "grey_overlay.png",
                     "grey_labels.tif", "counts.csv"}
    for stem in ("field", "grey"):
        with open(tmp_path / "out" / f"{stem}.csv") as fh:
            assert tuple(next(csv.reader(fh))) == OBJECT_COLUMNS
    with open(tmp_path / "out" / "counts.csv") as fh:
        rows = list(csv.reader(fh))
    assert tuple(rows[0]) == COUNT_COLUMNS and len(rows) == 1 + len(paths)
    assert [r[0] for r in rows[1:]] == ["field.png", "grey.tif"]
    for row in rows[1:]:
        assert int(row[1]) >= 0 and row[2] == FULL
        assert float(row[3]) == pytest.approx(stored[FULL].value)
