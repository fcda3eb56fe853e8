"""common/thresholds.py and the shared training helpers: exact values on hand-built sweeps."""

import json

import numpy as np
import pytest

from microrepro.common import thresholds, training
from microrepro.common.errors import ConfigError, UserError


def test_choose_takes_the_maximum_and_the_lowest_of_ties():
    chosen = thresholds.choose({"thresholds": [0.1, 0.2, 0.3, 0.4], "f1": [0.5, 0.8, 0.8, 0.1]}, split="train",
                               n_images=4)
    assert (chosen.value, chosen.metric_value, chosen.rule, chosen.n_images) == (0.2, 0.8, "max_f1_train", 4)


def test_choose_ignores_nan_and_takes_the_lowest_tie_even_unsorted():
    chosen = thresholds.choose({"thresholds": [0.9, 0.3, 0.5], "mcc": [0.7, 0.7, np.nan]}, metric="mcc")
    assert chosen.value == 0.3 and chosen.rule == "max_mcc_train"


def test_choose_refuses_an_undefined_curve():
    with pytest.raises(ValueError, match="no defined value"):
        thresholds.choose({"thresholds": [0.1], "f1": [np.nan]})


def test_sweep_calls_the_evaluator_per_threshold():
    out = thresholds.sweep([0.25, 0.5], lambda t: {"f1": 2 * t, "count": 1.0})
    assert out["f1"].tolist() == [0.5, 1.0] and out["thresholds"].tolist() == [0.25, 0.5]


def test_grid_includes_the_stop():
    assert thresholds.grid(0.5, 0.975, 0.025).tolist()[-1] == 0.975
    assert len(thresholds.grid(0.05, 0.95, 0.025)) == 37


def test_save_load_round_trip_keeps_other_models(tmp_path):
    thresholds.save(tmp_path, "a", thresholds.fixed(0.6))
    thresholds.save(tmp_path, "b", thresholds.choose({"thresholds": [0.1, 0.2], "f1": [0.3, np.nan]}))
    assert thresholds.load(tmp_path, "a").value == 0.6
    stored = json.loads((tmp_path / "thresholds.json").read_text())
    assert stored["b"]["curve"]["f1"] == [0.3, None]
    assert thresholds.load(tmp_path, "b").value == 0.1


def test_load_missing_or_corrupt_is_one_clear_error(tmp_path):
    with pytest.raises(UserError, match="no operating threshold for model 'a'"):
        thresholds.load(tmp_path, "a")
    (tmp_path / "thresholds.json").write_text("{broken")
    with pytest.raises(UserError, match="not a thresholds file"):
        thresholds.load(tmp_path, "a")


def test_make_optimizer_names():
    assert type(training.make_optimizer("adam", 1e-3)).__name__ == "Adam"
    sgd = training.make_optimizer("momentum", 1e-2, momentum=0.8, clipnorm=5.0)
    assert type(sgd).__name__ == "SGD" and sgd.momentum == 0.8 and sgd.clipnorm == 5.0 and not sgd.nesterov
    assert training.make_optimizer("sgd", 1e-2, nesterov=True).get_config()["nesterov"] is True
    with pytest.raises(ConfigError, match="unknown optimizer 'rmsprop'"):
        training.make_optimizer("rmsprop", 1e-3)
    with pytest.raises(ConfigError, match="SGD option"):
        training.make_optimizer("adam", 1e-3, nesterov=True)


@pytest.mark.parametrize("steps, per_epoch, expected", [(10, 4, (3, 4)), (2, 50, (1, 2)), (100, 100, (1, 100))])
def test_steps_to_epochs(steps, per_epoch, expected):
    assert training.steps_to_epochs(steps, per_epoch) == expected


def test_schedule_record_has_one_spelling():
    record = training.schedule_record({"history": {"loss": [2.0, 1.0]}, "epochs_run": 2, "seconds": 3.14159},
                                      batch=4, steps_per_epoch=5, crop=64)
    assert record == {"epochs": 2, "steps": 10, "batch": 4, "seconds": 3.1, "stopped_by_time_budget": False,
                      "loss_first": 2.0, "loss_last": 1.0, "crop": 64}
    empty = training.schedule_record({"history": {}, "epochs_run": 0, "seconds": 0}, batch=1)
    assert empty["loss_first"] is None and empty["steps"] is None


def test_median_seconds_skips_warmup():
    calls = []
    assert training.median_seconds(lambda: calls.append(1), repeats=3, warmup=2) >= 0
    assert len(calls) == 5


def test_override_replaces_the_stored_threshold_only_inside_the_block(tmp_path):
    thresholds.save(tmp_path, "a", thresholds.fixed(0.6))
    with thresholds.override(0.3):
        assert (thresholds.load(tmp_path, "a").value, thresholds.load(tmp_path, "missing").rule) == (0.3, "user")
    with thresholds.override(None):
        assert thresholds.load(tmp_path, "a").value == 0.6
    assert thresholds.load(tmp_path, "a").value == 0.6
