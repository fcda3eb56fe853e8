"""Haar DWT/IWT layers: exact inverse, equal to PyWavelets after the documented band order, gradients flow."""

import numpy as np
import pytest
import pywt

from microrepro.reproductions.dwt_mitosis.wavelets import DWT, IWT, haar_dwt, haar_iwt


def _x(shape=(2, 8, 6, 3), seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def test_iwt_inverts_dwt_exactly():
    x = _x()
    y = np.asarray(haar_iwt(haar_dwt(x)))
    np.testing.assert_allclose(y, x, atol=1e-6)
    z = _x((1, 4, 4, 8), 1)  # and the other way round
    np.testing.assert_allclose(np.asarray(haar_dwt(haar_iwt(z))), z, atol=1e-6)


def test_dwt_equals_pywavelets_with_documented_band_order():
    x = _x((1, 8, 6, 2))
    y = np.asarray(haar_dwt(x))
    c = x.shape[-1]
    for ch in range(c):
        ca, (ch_, cv, cd) = pywt.dwt2(x[0, :, :, ch].astype(np.float64), "haar")
        np.testing.assert_allclose(y[0, :, :, ch], ca, atol=1e-5)  # LL
        np.testing.assert_allclose(y[0, :, :, c + ch], -cv, atol=1e-5)  # HL
        np.testing.assert_allclose(y[0, :, :, 2 * c + ch], -ch_, atol=1e-5)  # LH
        np.testing.assert_allclose(y[0, :, :, 3 * c + ch], cd, atol=1e-5)  # HH


def test_hand_worked_block():
    block = np.array([[0.0, 1.0], [4.0, 5.0]], "float32")[None, :, :, None]
    np.testing.assert_allclose(np.asarray(haar_dwt(block)).ravel(), [5.0, 1.0, 4.0, 0.0])


def test_energy_is_preserved_orthonormal():
    x = _x()
    assert float(np.sum(np.asarray(haar_dwt(x)) ** 2)) == pytest.approx(float(np.sum(x**2)), rel=1e-5)


def test_layers_shapes_and_gradients():
    import keras
    import tensorflow as tf

    inputs = keras.Input((16, 16, 3))
    down = DWT()(inputs)
    assert tuple(down.shape) == (None, 8, 8, 12)
    conv = keras.layers.Conv2D(12, 3, padding="same")(down)
    up = IWT()(conv)
    assert tuple(up.shape) == (None, 16, 16, 3)
    model = keras.Model(inputs, up)
    x = tf.constant(_x((2, 16, 16, 3)))
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(model(x) ** 2)
    grads = tape.gradient(loss, model.trainable_weights)
    assert all(g is not None and float(tf.reduce_sum(tf.abs(g))) > 0 for g in grads)
    with pytest.raises(ValueError, match="divisible by 4"):
        IWT()(keras.Input((4, 4, 6)))
