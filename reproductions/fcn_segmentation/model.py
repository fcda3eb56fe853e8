"""FCRN-A (Xie, Noble & Zisserman) with a two-class softmax head, as used by Marzo & La Rosa.

Layer graph (all kernels 3×3, "same" padding, stride 1)::

    input (H, W, C)
    conv 32  - ReLU - maxpool 2×2      ┐
    conv 64  - ReLU - maxpool 2×2      │ "Conv" blocks of Fig. 6
    conv 128 - ReLU - maxpool 2×2      ┘
    conv 512 - ReLU                      Xie's "fully connected" layer, as a 3×3 conv
    upsample ×2 - conv 128 - ReLU      ┐
    upsample ×2 - conv 64  - ReLU      │ "unConv" blocks of Fig. 6
    upsample ×2 - conv 32  - ReLU      ┘
    conv 1×1 → 2 channels - softmax      background / cell probabilities

The paper writes an unConv block as upsample–ReLU–conv. ReLU commutes with nearest-neighbour
(and bilinear, which is a convex combination) upsampling, so conv–ReLU followed by upsample–conv
computes exactly the same function; we keep the ReLU beside its conv, as Xie's Keras port does.

Reference: Marzo & La Rosa 2016, Sec. 7 and Fig. 6 (≈1.3 M parameters, receptive field 38×38);
Xie et al. 2016, "Microscopy cell counting with fully convolutional regression networks", FCRN-A.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
from keras import layers

from microrepro.common.errors import ConfigError

# Filters of the encoder convolutions, the bottleneck and the decoder convolutions (FCRN-A).
ENCODER_FILTERS = (32, 64, 128)
BOTTLENECK_FILTERS = 512
DECODER_FILTERS = (128, 64, 32)


def build_fcrn_a(
    input_channels: int = 1,
    num_classes: int = 2,
    *,
    encoder_filters: tuple[int, ...] = ENCODER_FILTERS,
    bottleneck_filters: int = BOTTLENECK_FILTERS,
    decoder_filters: tuple[int, ...] = DECODER_FILTERS,
    batch_norm: bool = False,
    kernel_initializer: str = "glorot_uniform",
    l2: float = 0.0,
    upsampling: str = "nearest",
    input_size: int | None = None,
    name: str = "fcrn_a",
) -> keras.Model:
    """Build FCRN-A with a ``num_classes`` softmax output.

    Args:
        input_channels: channels C of the input image (1 for the grey fluorescence images here).
        num_classes: output channels of the softmax (2: background, cell).
        encoder_filters: filters of the conv–ReLU–pool blocks (FCRN-A: 32, 64, 128).
        bottleneck_filters: filters of the 3×3 conv after the last pooling (FCRN-A: 512).
        decoder_filters: filters of the upsample–conv blocks (FCRN-A: 128, 64, 32); must have the
            same length as ``encoder_filters`` so the output has the input's size.
        batch_norm: add BatchNormalization after every 3×3 conv (and drop its bias), as in
            Xie's Keras port; the paper (Caffe, 2016) does not mention it.
        kernel_initializer: "glorot_uniform" is Caffe's "xavier" filler (Sec. 7.1);
            Xie's port uses "orthogonal".
        l2: coefficient of an L2 kernel regulariser ``l2 * sum(w**2)``; Caffe's
            ``weight_decay: wd`` adds ``wd * w`` to the gradient, i.e. ``l2 = wd / 2``.
        upsampling: "nearest" (Xie's port, UpSampling2D default) or "bilinear".
        input_size: fixed spatial size for the Input, or None for any size divisible by 8.
        name: Keras model name.

    Returns:
        A functional ``keras.Model`` mapping ``(B, H, W, C)`` float32 in [0, 1] to
        ``(B, H, W, num_classes)`` softmax probabilities (channel 1 = cell). H and W must be
        divisible by ``2 ** len(encoder_filters)`` (8).

    Raises:
        ConfigError: inconsistent filter lists or an unknown upsampling mode.

    Reference: Marzo & La Rosa 2016, Sec. 7, Fig. 6; Xie et al. 2016, FCRN-A.
    """
    if len(encoder_filters) != len(decoder_filters):
        raise ConfigError(
            f"model: encoder_filters {list(encoder_filters)} and decoder_filters {list(decoder_filters)} "
            "must have the same length (one upsampling per pooling)"
        )
    if upsampling not in ("nearest", "bilinear"):
        raise ConfigError(f"model.upsampling: {upsampling!r} is not one of ['nearest', 'bilinear']")
    if num_classes < 2:
        raise ConfigError(f"model.num_classes: a softmax head needs at least 2 classes, got {num_classes}")
    regularizer = keras.regularizers.L2(l2) if l2 > 0 else None

    def conv_relu(x, filters: int, layer_name: str):
        x = layers.Conv2D(
            filters,
            3,
            padding="same",
            use_bias=not batch_norm,
            kernel_initializer=kernel_initializer,
            kernel_regularizer=regularizer,
            name=f"{layer_name}_conv",
        )(x)
        if batch_norm:
            x = layers.BatchNormalization(name=f"{layer_name}_bn")(x)
        return layers.ReLU(name=f"{layer_name}_relu")(x)

    size = (input_size, input_size) if input_size else (None, None)
    inputs = keras.Input(shape=(*size, input_channels), name="image")
    x = inputs
    for i, filters in enumerate(encoder_filters, start=1):
        x = conv_relu(x, filters, f"block{i}")
        x = layers.MaxPooling2D(2, name=f"block{i}_pool")(x)
    x = conv_relu(x, bottleneck_filters, f"block{len(encoder_filters) + 1}")
    for i, filters in enumerate(decoder_filters, start=len(encoder_filters) + 2):
        x = layers.UpSampling2D(2, interpolation=upsampling, name=f"block{i}_up")(x)
        x = conv_relu(x, filters, f"block{i}")
    outputs = layers.Conv2D(
        num_classes,
        1,
        activation="softmax",
        kernel_initializer=kernel_initializer,
        kernel_regularizer=regularizer,
        name="probabilities",
        dtype="float32",  # softmax (and so the loss) in float32 under runtime.precision=mixed_*
    )(x)
    return keras.Model(inputs, outputs, name=name)


@dataclass(frozen=True)
class ReceptiveField:
    """Receptive field of one layer's output units, in input pixels.

    Attributes:
        size: side of the square input window that can influence one output unit.
        jump: distance in input pixels between two neighbouring output units.
    """

    size: float
    jump: float


def receptive_fields(model: keras.Model) -> dict[str, ReceptiveField]:
    """Receptive field after every layer, computed by walking the model's layer graph.

    Standard recurrence (Araujo et al. 2019): a layer with kernel ``k`` and stride ``s`` maps
    ``(r, j)`` to ``(r + (k - 1) * j, j * s)``. An ``UpSampling2D`` by ``f`` divides the jump by
    ``f``; nearest-neighbour copies one input unit (no growth), bilinear mixes two neighbours
    (``r + j``). Dilation enlarges the kernel to ``d * (k - 1) + 1``. Pointwise layers (ReLU,
    BatchNormalization, Activation, Dropout) leave it unchanged. The model must be a chain
    (every layer with a single input), which FCRN-A is.

    Args:
        model: a built functional or sequential Keras model.

    Returns:
        ``{layer_name: ReceptiveField}`` in graph order, the input layer being ``(1, 1)``.

    Raises:
        ValueError: a layer type whose receptive-field effect is unknown, or a non-chain model.

    Reference: Marzo & La Rosa 2016, Sec. 7 ("effective receptive field of size 38×38").
    """
    out: dict[str, ReceptiveField] = {}
    size, jump = 1.0, 1.0
    pointwise = (
        layers.ReLU,
        layers.Activation,
        layers.BatchNormalization,
        layers.Dropout,
        layers.InputLayer,
    )
    for layer in model.layers:
        if len(getattr(layer, "_inbound_nodes", [None])) > 1:
            raise ValueError(f"layer {layer.name}: shared layers are not supported by receptive_fields")
        if isinstance(layer, (layers.Conv2D, layers.MaxPooling2D, layers.AveragePooling2D)):
            if isinstance(layer, layers.Conv2D):
                kernel = layer.kernel_size[0]
                dilation = layer.dilation_rate[0]
                kernel = dilation * (kernel - 1) + 1
                stride = layer.strides[0]
            else:
                kernel = layer.pool_size[0]
                stride = layer.strides[0]
            size = size + (kernel - 1) * jump
            jump = jump * stride
        elif isinstance(layer, layers.UpSampling2D):
            factor = layer.size[0]
            if layer.interpolation == "bilinear":
                size = size + jump
            elif layer.interpolation != "nearest":
                raise ValueError(f"layer {layer.name}: unsupported upsampling {layer.interpolation!r}")
            jump = jump / factor
        elif not isinstance(layer, pointwise):
            raise ValueError(
                f"layer {layer.name} ({type(layer).__name__}): unknown effect on the receptive field"
            )
        out[layer.name] = ReceptiveField(size=size, jump=jump)
    return out


def count_parameters(model: keras.Model, trainable_only: bool = True) -> int:
    """Number of (trainable) scalar parameters of ``model``."""
    weights = model.trainable_weights if trainable_only else model.weights
    return int(sum(int(keras.ops.size(w)) for w in weights))
