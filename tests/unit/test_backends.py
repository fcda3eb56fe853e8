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
