"""Model-side code is keras/keras.ops only: the same small model trains under TensorFlow and JAX."""

import json
import os
import subprocess
import sys

import pytest

SCRIPT = r"""
import json, numpy as np, keras
from keras import layers, ops

keras.utils.set_random_seed(0)
inputs = keras.Input((32, 32, 1))
x = layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
x = layers.BatchNormalization()(x)
outputs = layers.Conv2D(1, 1, activation="sigmoid")(x)
model = keras.Model(inputs, outputs)

def mse(y_true, y_pred):  # keras.ops only, like every loss of the suite
    return ops.mean(ops.square(y_true - y_pred))

model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=mse)
rng = np.random.default_rng(0)
images = rng.random((16, 32, 32, 1)).astype("float32")
masks = 0.5 * images + 0.25
history = model.fit(images, masks, epochs=20, batch_size=8, verbose=0).history["loss"]
print(json.dumps({"backend": keras.backend.backend(), "first": history[0], "last": history[-1]}))
"""


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_small_model_trains_under_backend(backend):
    if backend == "jax":
        pytest.importorskip("jax")
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2", JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["backend"] == backend
    assert result["last"] < result["first"] / 2


RESUME_SCRIPT = r"""
import json, sys
from pathlib import Path
import keras, numpy as np, tensorflow as tf
from microrepro.common import training
from microrepro.reproductions.spines import train as spines_train
from microrepro.reproductions.spines.task import TASK

cfg = TASK.load_config("paper", "smoke")
root = Path(sys.argv[1])
rng = np.random.default_rng(0)


def part(size):  # multi-scale: two batches at 64 px then two at 96 px, the same every epoch
    x = rng.random((4, size, size, 1)).astype("float32")
    b = np.tile(np.float32([[0.2, 0.2, 0.4, 0.45], [0.5, 0.6, 0.7, 0.8], [-1, -1, -1, -1]]), (4, 1, 1))
    return tf.data.Dataset.from_tensor_slices((x, b)).batch(2)


data = part(64).concatenate(part(96))


def model():  # a fresh process would rebuild it from the config
    training.set_seed(0)
    m = spines_train.build_yolo(cfg)
    m.compile(optimizer=keras.optimizers.Adam(1e-3), loss=spines_train.yolo_loss(cfg))
    return m


class Killed(Exception):
    pass


class KillAt(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 2:
            raise Killed()


def fit(m, run, callbacks=()):
    return training.fit(m, data, run_dir=root / run, name="yolov2", epochs=4, monitor="loss",
                        callbacks=list(callbacks), verbose=0, tensorboard=False)


straight = model()
fit(straight, "a")
try:
    fit(model(), "b", [KillAt()])
except Killed:
    pass
killed_epochs = len(training.read_log(root / "b/train/yolov2/log.csv")["epoch"])
resumed = model()
result = fit(resumed, "b")
diff = max(float(np.max(np.abs(a - b))) for a, b in zip(straight.get_weights(), resumed.get_weights()))
best = training.load_weights(model(), root / "b", "yolov2", "best")
x = np.asarray(next(iter(data))[0])
print(json.dumps({
    "backend": keras.backend.backend(), "killed_epochs": killed_epochs, "epochs_run": result["epochs_run"],
    "max_weight_diff": diff, "loss": result["history"]["loss"],
    "best_is_last": int(np.argmin(result["history"]["loss"])) == 3,
    "best_vs_last": float(np.max(np.abs(np.asarray(best(x)) - np.asarray(resumed(x))))),
}))
"""


def test_multiscale_yolo_resumes_to_the_same_weights_under_jax(tmp_path):
    # common/training.fit under jax.jit: a run killed after 2 of 4 epochs and continued from its
    # backup ends with the weights of an uninterrupted run; the best checkpoint loads back.
    pytest.importorskip("jax")
    env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="2", JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", RESUME_SCRIPT, str(tmp_path)], env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["backend"] == "jax"
    assert result["killed_epochs"] == 2 and result["epochs_run"] == 4
    assert result["max_weight_diff"] < 1e-5, result
    assert result["loss"][-1] < result["loss"][0]
    if result["best_is_last"]:
        assert result["best_vs_last"] < 1e-6, result
    for name in ("best", "last"):
        assert (tmp_path / f"b/train/yolov2/{name}.weights.h5").is_file()
