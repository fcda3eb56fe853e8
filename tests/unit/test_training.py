"""common/training.py: resume to the same result, NaN stop, the papers' lr schedules, logs."""

import time

import keras
import numpy as np
import pytest

from microrepro.common import training
from microrepro.common.errors import ConfigError, TrainingError


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = (x @ np.array([1.0, -2.0, 0.5, 3.0], "float32"))[:, None]
    return x, y


def _model(lr=0.05):
    training.set_seed(1)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(lr, momentum=0.9), loss="mse")
    return model


class _Killed(Exception):
    pass


class _KillAt(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.kill_epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.kill_epoch:
            raise _Killed()


def _dataset():
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices(_data()).batch(16)


def _fit(model, run_dir, epochs=4, callbacks=(), lr_schedule=None):
    return training.fit(
        model, _dataset(), run_dir=run_dir, name="m", epochs=epochs, callbacks=list(callbacks),
        lr_schedule=lr_schedule, verbose=0,
    )


def test_killed_run_resumes_to_the_same_weights(tmp_path):
    straight = _model()
    result = _fit(straight, tmp_path / "a")
    assert result["epochs_run"] == 4

    interrupted = _model()
    with pytest.raises(_Killed):
        _fit(interrupted, tmp_path / "b", callbacks=[_KillAt(2)])
    assert len(training.read_log(tmp_path / "b/train/m/log.csv")["epoch"]) == 2
    resumed = _model()  # a fresh process would rebuild the model from scratch
    result = _fit(resumed, tmp_path / "b")
    assert result["epochs_run"] == 4
    for a, b in zip(straight.get_weights(), resumed.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    loss = result["history"]["loss"]
    assert loss[-1] < loss[0] / 2
    assert (tmp_path / "b/train/m/best.weights.h5").is_file()
    assert (tmp_path / "b/train/m/last.weights.h5").is_file()


def test_nan_loss_stops_with_a_clear_message(tmp_path):
    model = _model(lr=1e6)  # diverges within a few batches
    with pytest.raises(TrainingError, match="lower the learning rate"):
        _fit(model, tmp_path, epochs=50)


def test_step_schedule_divides_lr_every_n_epochs(tmp_path):
    model = _model(lr=0.01)
    result = _fit(model, tmp_path, epochs=5, lr_schedule={"kind": "step", "every_epochs": 2, "factor": 0.1})
    np.testing.assert_allclose(result["history"]["lr"], [0.01, 0.01, 0.001, 0.001, 0.0001], rtol=1e-5)


def test_plateau_schedule_reduces_lr_when_loss_stalls(tmp_path):
    model = _model()
    model.compile(optimizer=keras.optimizers.Adam(1e-9), loss="mse")  # too small to improve: plateau fires
    result = _fit(model, tmp_path, epochs=6, lr_schedule={"kind": "plateau", "factor": 0.7, "patience": 1, "min_lr": 0})
    lrs = result["history"]["lr"]
    assert lrs[-1] < lrs[0] * 0.7 ** 2 + 1e-15


def test_budget_cosine_anneals_over_steps_and_resumes_on_schedule(tmp_path):
    # 4 batches per epoch, 16 steps in all: the lr logged after epoch e was set before step 4e+3
    schedule = {"kind": "budget_cosine", "lr": 0.01, "steps": 16, "floor": 0.1}
    expected = [0.01 * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * (4 * e + 3) / 16))) for e in range(4)]
    with pytest.raises(_Killed):
        _fit(_model(lr=0.01), tmp_path, epochs=4, lr_schedule=schedule, callbacks=[_KillAt(2)])
    result = _fit(_model(lr=0.01), tmp_path, epochs=4, lr_schedule=schedule)  # resumed: same curve
    np.testing.assert_allclose(result["history"]["lr"], expected, rtol=1e-5)
    assert result["history"]["loss"][-1] < result["history"]["loss"][0]


def test_budget_cosine_follows_the_clock_when_the_budget_ends_first():
    callback = training.BudgetCosine(lr=1.0, steps=10**9, minutes=1.0)
    callback.start = time.perf_counter() - 120.0  # training began two minutes ago: the minute is gone
    assert callback.progress() == 1.0


def test_unknown_schedule_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown lr schedule"):
        training.schedule_callbacks({"kind": "cosine-ish"}, "loss")


def test_plot_history_writes_png(tmp_path):
    model = _model()
    _fit(model, tmp_path, epochs=2)
    out = training.plot_history(tmp_path, "m", tmp_path / "loss.png")
    assert out.stat().st_size > 1000
