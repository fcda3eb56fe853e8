"""The REAL cell_counting config, "smoke" schedule, end to end on a tiny synthetic set.

reproduce (both trainings, threshold sweeps, evaluation of the three model keys, timing),
then evaluate and predict on the finished run.
"""

import csv
import json

import numpy as np
import pytest

from microrepro.common.data_sources import DataSource
from microrepro.common.imageio import write_image
from microrepro.common.runs import Run
from microrepro.reproductions.cell_counting import task as T


@pytest.fixture
def small_neurons(monkeypatch):
    """The synthetic neuron generator at 256 x 320 px (same cell sizes and densities)."""
    from microrepro.datasets.synthetic import neurons

    def fields(n, seed):
        config = neurons.NeuronsConfig(image_size=(256, 320))
        return T.fields_from_samples(neurons.generate(n, seed, config))

    monkeypatch.setattr(T, "synthetic_fields", fields)


def test_smoke_reproduce_evaluate_predict(tmp_path, small_neurons):
    cfg = T.TASK.load_config("paper", "smoke", {"data": {"scale": 0.25, "synthetic_train_fields": 2}})
    run = Run.create("cell_counting", cfg, "paper", "smoke", seed=0, out=tmp_path / "run")
    T.TASK.reproduce(run, DataSource("fnc_sample", None, "synthetic generator"))

    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert set(metrics) == {T.FULL, T.NO_WEIGHTMAP, T.NO_WATERSHED}
    for key in metrics:
        values = metrics[key]["synthetic_test"]
        for name in ("f1", "f1_released", "mae", "medae", "mean_iou", "threshold"):
            assert np.isfinite(values[name]), (key, name)
        assert 0.0 <= values["f1"] <= 1.0 and values["mae"] >= 0
    assert metrics[T.FULL]["synthetic_test"]["s_per_field"] > 0
    assert metrics[T.FULL]["synthetic_test"]["ms_per_crop"] > 0
    assert run.splits["synthetic_test"]["kind"] == "synthetic"
    assert run.schedule_run[T.FULL]["steps"] == 2 and run.schedule_run[T.NO_WEIGHTMAP]["steps"] == 2
    state = json.loads((tmp_path / "run" / T.STATE_FILE).read_text())
    assert set(state["thresholds"]) == {T.FULL, T.NO_WEIGHTMAP, T.NO_WATERSHED}
    assert (tmp_path / "run" / "figures" / "f1_vs_threshold.png").is_file()
    assert (tmp_path / "run" / "train" / T.FULL / "best.weights.h5").is_file()

    # evaluate: reload the trained models and thresholds from the run folder
    again = Run.create("cell_counting", cfg, "paper", "smoke", seed=0, out=tmp_path / "run", resume=True)
    T.TASK.evaluate(again, DataSource("fnc_sample", None, "synthetic generator"))
    assert again.metrics[T.FULL]["synthetic_test"]["f1"] == pytest.approx(metrics[T.FULL]["synthetic_test"]["f1"])

    # predict: per-image CSV (x, y, area), overlay PNG, counts.csv
    image = np.zeros((96, 128, 3), np.uint8)
    image[30:50, 40:60] = (230, 200, 20)
    path = write_image(tmp_path / "field.png", image)
    written = T.TASK.predict(tmp_path / "run", [path], tmp_path / "out")
    names = {p.name for p in written}
    assert names == {"field_cells.csv", "field_overlay.png", "counts.csv"}
    with open(tmp_path / "out" / "field_cells.csv") as fh:
        assert next(csv.reader(fh)) == ["x", "y", "area"]
    with open(tmp_path / "out" / "counts.csv") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["image", "count"] and rows[1][0] == "field.png" and int(rows[1][1]) >= 0
