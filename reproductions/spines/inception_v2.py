"""Inception-V2 (BN-Inception) feature extractor in the Keras functional API.

Layer names and depths follow TF-slim ``inception_v2_base`` (the backbone of the TF Object
Detection API's ``faster_rcnn_inception_v2``): stem ``Conv2d_1a_7x7`` (separable, stride 2) ->
``MaxPool_2a_3x3`` -> ``Conv2d_2b_1x1`` -> ``Conv2d_2c_3x3`` -> ``MaxPool_3a_3x3`` -> ``Mixed_3b``,
``Mixed_3c``, ``Mixed_4a`` (stride 16 from here), ``Mixed_4b``..``Mixed_4e``. The OD API uses
``Mixed_4e`` (stride 16, 576 channels) as the first-stage feature map and ``Mixed_5a``..``5c``
as the second-stage box classifier on the cropped ROIs; both are built here.

Every conv is conv -> BatchNorm -> ReLU with "same" padding. ``width_multiplier`` scales every
depth (slim's ``depth_multiplier``, min depth 8) so a CPU schedule can use a thinner net.

Reference: paper Sec. 3.1 ("we used InceptionV2 architecture [23]"); Ioffe & Szegedy 2015
(BN-Inception, Fig. 5 / Table 1); TF-slim ``nets/inception_v2.py``; TF OD API
``faster_rcnn_inception_v2_feature_extractor.py``.
"""

from __future__ import annotations

from pathlib import Path

import keras
from keras import layers

MIN_DEPTH = 8

# (branch_0, branch_1 (1x1 -> 3x3), branch_2 (1x1 -> 3x3 -> 3x3), branch_3 (pool, 1x1), pool kind)
_MIXED = {
    "Mixed_3b": (64, (64, 64), (64, 96), 32, "avg"),
    "Mixed_3c": (64, (64, 96), (64, 96), 64, "avg"),
    "Mixed_4b": (224, (64, 96), (96, 128), 128, "avg"),
    "Mixed_4c": (192, (96, 128), (96, 128), 128, "avg"),
    "Mixed_4d": (160, (128, 160), (128, 160), 96, "avg"),
    "Mixed_4e": (96, (128, 192), (160, 192), 96, "avg"),
    "Mixed_5b": (352, (192, 320), (160, 224), 128, "avg"),
    "Mixed_5c": (352, (192, 320), (192, 224), 128, "max"),
}
# Grid-reduction blocks: (branch_0 (1x1 -> 3x3 stride 2), branch_1 (1x1 -> 3x3 -> 3x3 stride 2)) + max-pool.
_REDUCTION = {"Mixed_4a": ((128, 160), (64, 96)), "Mixed_5a": ((128, 192), (192, 256))}


def _depth(channels: int, width_multiplier: float) -> int:
    return max(MIN_DEPTH, int(channels * width_multiplier))


def _conv(x, filters: int, kernel: int, name: str, strides: int = 1):
    x = layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(epsilon=1e-3, momentum=0.997, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def _mixed(x, name: str, wm: float):
    b0, (b1a, b1b), (b2a, b2b), b3, pool = _MIXED[name]

    def d(c):
        return _depth(c, wm)

    branch_0 = _conv(x, d(b0), 1, f"{name}_b0_1x1")
    branch_1 = _conv(_conv(x, d(b1a), 1, f"{name}_b1_1x1"), d(b1b), 3, f"{name}_b1_3x3")
    branch_2 = _conv(x, d(b2a), 1, f"{name}_b2_1x1")
    branch_2 = _conv(branch_2, d(b2b), 3, f"{name}_b2_3x3a")
    branch_2 = _conv(branch_2, d(b2b), 3, f"{name}_b2_3x3b")
    pool_layer = layers.AveragePooling2D if pool == "avg" else layers.MaxPooling2D
    branch_3 = pool_layer(3, strides=1, padding="same", name=f"{name}_b3_pool")(x)
    branch_3 = _conv(branch_3, d(b3), 1, f"{name}_b3_1x1")
    return layers.Concatenate(axis=-1, name=name)([branch_0, branch_1, branch_2, branch_3])


def _reduction(x, name: str, wm: float):
    (b0a, b0b), (b1a, b1b) = _REDUCTION[name]

    def d(c):
        return _depth(c, wm)

    branch_0 = _conv(_conv(x, d(b0a), 1, f"{name}_b0_1x1"), d(b0b), 3, f"{name}_b0_3x3", strides=2)
    branch_1 = _conv(x, d(b1a), 1, f"{name}_b1_1x1")
    branch_1 = _conv(branch_1, d(b1b), 3, f"{name}_b1_3x3a")
    branch_1 = _conv(branch_1, d(b1b), 3, f"{name}_b1_3x3b", strides=2)
    branch_2 = layers.MaxPooling2D(3, strides=2, padding="same", name=f"{name}_b2_pool")(x)
    return layers.Concatenate(axis=-1, name=name)([branch_0, branch_1, branch_2])


ENDPOINTS = (
    "Mixed_3b", "Mixed_3c", "Mixed_4a", "Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e",
    "Mixed_5a", "Mixed_5b", "Mixed_5c",
)


def endpoint_stride(endpoint: str) -> int:
    """Output stride of the feature map ending at ``endpoint`` (8 for Mixed_3*, 16 for Mixed_4*, 32 for Mixed_5*)."""
    if endpoint not in ENDPOINTS:
        raise ValueError(f"final_endpoint / feature_endpoint must be one of {list(ENDPOINTS)}, got {endpoint!r}")
    return {"3": 8, "4": 16, "5": 32}[endpoint[len("Mixed_")]]


def build_inception_v2(
    in_channels: int = 3,
    width_multiplier: float = 1.0,
    input_size: int | None = None,
    final_endpoint: str = "Mixed_4e",
    name: str = "inception_v2",
    bn_momentum: float = 0.997,
) -> keras.Model:
    """BN-Inception up to ``final_endpoint`` (default ``Mixed_4e``, output stride 16).

    Args:
        in_channels: input channels (3 for ImageNet/COCO weights; 1 for grey from scratch).
        width_multiplier: scales every depth (slim ``depth_multiplier``), min 8 channels.
        input_size: fixed square input size or None (any size).
        final_endpoint: "Mixed_3c" (stride 8), "Mixed_4e" (stride 16) or "Mixed_5c" (stride 32).
        bn_momentum: moving-statistics momentum of every BatchNormalization (slim / OD API
            ``batch_norm_decay`` 0.997: ~1000 steps to settle, fine for 200k-step fine-tuning;
            0.9 settles in tens of steps, which a from-scratch run of a few hundred steps needs).

    Returns:
        Model ``(B, H, W, in_channels)`` -> ``(B, ceil(H/16), ceil(W/16), C)`` for Mixed_4e,
        ``C = 576 * width_multiplier`` (at least 8 per branch).

    Reference: TF-slim ``inception_v2_base`` (use_separable_conv=True for Conv2d_1a_7x7).
    """
    if width_multiplier <= 0:
        raise ValueError(f"width_multiplier must be > 0, got {width_multiplier}")
    if not 0.0 <= bn_momentum < 1.0:
        raise ValueError(f"bn_momentum must be in [0, 1), got {bn_momentum}")
    endpoint_stride(final_endpoint)  # validates the name
    wm = width_multiplier
    inputs = keras.Input((input_size, input_size, in_channels), name="image")
    # slim: separable 7x7 with depthwise multiplier min(depth(64)/3, 8) then pointwise to depth(64).
    multiplier = max(1, min(int(_depth(64, wm) / 3), 8))
    x = layers.SeparableConv2D(
        _depth(64, wm), 7, strides=2, padding="same", depth_multiplier=multiplier, use_bias=False,
        name="Conv2d_1a_7x7_conv",
    )(inputs)
    x = layers.BatchNormalization(epsilon=1e-3, momentum=0.997, name="Conv2d_1a_7x7_bn")(x)
    x = layers.ReLU(name="Conv2d_1a_7x7_relu")(x)
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="MaxPool_2a_3x3")(x)
    x = _conv(x, _depth(64, wm), 1, "Conv2d_2b_1x1")
    x = _conv(x, _depth(192, wm), 3, "Conv2d_2c_3x3")
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="MaxPool_3a_3x3")(x)
    for block in ENDPOINTS:
        x = _reduction(x, block, wm) if block in _REDUCTION else _mixed(x, block, wm)
        if block == final_endpoint:
            break
    model = keras.Model(inputs, x, name=name)
    for layer in model.layers:  # one place for the momentum instead of threading it through every block
        if isinstance(layer, layers.BatchNormalization):
            layer.momentum = float(bn_momentum)
    return model


def build_second_stage(in_channels: int, width_multiplier: float = 1.0, name: str = "inception_v2_5x") -> keras.Model:
    """``Mixed_5a``..``Mixed_5c`` applied to cropped ROI features, as the OD API's box classifier.

    Args:
        in_channels: channels of the ROI features (``Mixed_4e`` output).
        width_multiplier: as in :func:`build_inception_v2`.

    Returns:
        Model ``(R, h, w, in_channels)`` -> ``(R, ceil(h/2), ceil(w/2), C5)``, C5 = 1024 * wm.
    """
    inputs = keras.Input((None, None, in_channels), name="roi_features")
    x = _reduction(inputs, "Mixed_5a", width_multiplier)
    x = _mixed(x, "Mixed_5b", width_multiplier)
    x = _mixed(x, "Mixed_5c", width_multiplier)
    return keras.Model(inputs, x, name=name)


def load_pretrained(model: keras.Model, pretrained: str, what: str = "faster_rcnn.pretrained") -> str:
    """Initialise from ``pretrained``: "none", "imagenet"/"coco" or a ``.weights.h5`` path.

    Returns:
        One line describing the initialisation (for provenance).

    Raises:
        ConfigError: "imagenet"/"coco" (the TF-slim / OD-API checkpoints need a download this suite
            does not make offline; convert them to a Keras .weights.h5 of this layout and pass the
            path) or a missing / incompatible file.
    """
    from microrepro.common.errors import ConfigError

    if pretrained in ("", "none", None):
        return "random initialisation (no pretrained weights)"
    if pretrained in ("imagenet", "coco"):
        raise ConfigError(
            f"{what}={pretrained}: the {pretrained} Inception-V2 checkpoint (TF-slim / TF OD API model zoo) is not "
            "available offline and has no Keras port; convert it to a .weights.h5 for this layout and pass its path, "
            f"or use {what}=none"
        )
    path = Path(pretrained).expanduser()
    if not path.is_file():
        raise ConfigError(f"{what}={pretrained}: no such weights file")
    try:
        model.load_weights(str(path))
    except Exception as err:  # noqa: BLE001 - one clear line for any mismatch
        raise ConfigError(f"{what}={path}: weights do not fit this model ({err})") from None
    return f"weights from {path}"
