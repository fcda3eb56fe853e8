"""Haar discrete wavelet transform (DWT) and its inverse (IWT) as Keras layers (keras.ops only).

The transform is MWCNN's (Liu et al. 2018; public code lpj0/MWCNN, PyTorch ``dwt_init``): for every
2×2 block with samples x1 = (even row, even col), x2 = (odd row, even col), x3 = (even row, odd col),
x4 = (odd row, odd col), each divided by 2::

    LL =  x1 + x2 + x3 + x4
    HL = -x1 - x2 + x3 + x4      (difference along x: vertical edges)
    LH = -x1 + x2 - x3 + x4      (difference along y: horizontal edges)
    HH =  x1 - x2 - x3 + x4

which is the orthonormal Haar transform. Channels are band-major: ``[LL(C), HL(C), LH(C), HH(C)]``.
Relation to PyWavelets ``cA, (cH, cV, cD) = pywt.dwt2(x, "haar")`` (tested):
``LL = cA, HL = -cV, LH = -cH, HH = cD``. (MWCNN's MATLAB code swaps the two detail bands; we follow
the PyTorch order because the dwt_mitosis authors used PyTorch, Sec. 4.3.)

Reference: dwt_mitosis Sec. 3.1 and Fig. 2; Liu et al. 2018 (MWCNN).
"""

from __future__ import annotations

import keras
from keras import ops


def haar_dwt(x):
    """(B, H, W, C) with even H, W -> (B, H/2, W/2, 4C), band-major [LL, HL, LH, HH]."""
    x01 = x[:, 0::2, :, :] / 2.0
    x02 = x[:, 1::2, :, :] / 2.0
    x1 = x01[:, :, 0::2, :]
    x2 = x02[:, :, 0::2, :]
    x3 = x01[:, :, 1::2, :]
    x4 = x02[:, :, 1::2, :]
    ll = x1 + x2 + x3 + x4
    hl = -x1 - x2 + x3 + x4
    lh = -x1 + x2 - x3 + x4
    hh = x1 - x2 - x3 + x4
    return ops.concatenate([ll, hl, lh, hh], axis=-1)


def haar_iwt(y):
    """Inverse of ``haar_dwt``: (B, h, w, 4C) -> (B, 2h, 2w, C); exact up to float rounding."""
    c = y.shape[-1] // 4
    ll, hl, lh, hh = y[..., :c], y[..., c : 2 * c], y[..., 2 * c : 3 * c], y[..., 3 * c :]
    x1 = (ll - hl - lh + hh) / 2.0
    x2 = (ll - hl + lh - hh) / 2.0
    x3 = (ll + hl - lh - hh) / 2.0
    x4 = (ll + hl + lh + hh) / 2.0
    shape = ops.shape(ll)
    h, w = shape[1], shape[2]
    # interleave rows: even rows from x1/x3, odd rows from x2/x4
    even_cols = ops.reshape(ops.stack([x1, x2], axis=2), (-1, 2 * h, w, c))
    odd_cols = ops.reshape(ops.stack([x3, x4], axis=2), (-1, 2 * h, w, c))
    # interleave columns
    return ops.reshape(ops.stack([even_cols, odd_cols], axis=3), (-1, 2 * h, 2 * w, c))


@keras.saving.register_keras_serializable(package="microrepro")
class DWT(keras.layers.Layer):
    """Haar DWT down-sampling: (B, H, W, C) -> (B, H/2, W/2, 4C); no weights, lossless."""

    def call(self, inputs):
        return haar_dwt(inputs)

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        return (b, None if h is None else h // 2, None if w is None else w // 2, 4 * c)


@keras.saving.register_keras_serializable(package="microrepro")
class IWT(keras.layers.Layer):
    """Inverse Haar DWT up-sampling: (B, h, w, 4C) -> (B, 2h, 2w, C)."""

    def build(self, input_shape):
        if input_shape[-1] % 4:
            raise ValueError(f"IWT needs a channel count divisible by 4, got {input_shape[-1]}")

    def call(self, inputs):
        return haar_iwt(inputs)

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        return (b, None if h is None else h * 2, None if w is None else w * 2, c // 4)
