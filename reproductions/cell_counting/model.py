"""c-ResUNet (Morelli et al., Sec. 4.4, Fig. 5) and its weighted binary cross-entropy (Sec. 4.5).

Keras functional API and ``keras.ops`` only, so the model and the loss run under the TensorFlow
and JAX backends.

Layout (released widths 16/32/64, bridge 128, input any H, W divisible by 2**len(filters)):

    input (B, H, W, 3) in [0, 1]
    "c": 1x1 conv -> BN -> ELU                                     (B, H, W, 1)  learned RGB->grey
    stem: conv3x3 -> BN -> ELU -> conv3x3                          (B, H, W, f0)
    encoder, per further width f: maxpool 2 -> residual block(f)   (B, H/2^k, W/2^k, f)
    maxpool 2 -> bridge: ``bridge_blocks`` residual blocks with 5x5 kernels (the "extended
        bottleneck"), the first with a 1x1 shortcut
    decoder, per width f (reversed): 2x2 stride-2 transposed conv(f) -> concat skip ->
        residual block(f) whose shortcut is the upsampled tensor
    1x1 conv, sigmoid                                              (B, H, W, 1) heat-map

A residual block is pre-activation (He et al. 2016): BN -> ELU -> conv -> BN -> ELU -> conv, plus a
shortcut (1x1 conv where the channel count changes, identity otherwise).
"""

from __future__ import annotations

import keras
from keras import layers, ops

from microrepro.common.serialize import constructor_config

INITIALIZER = "he_normal"


def residual_block(x, filters: int, kernel_size: int = 3, shortcut=None, activation: str = "elu", name: str = "",
                   bn_momentum: float = 0.99):
    """Pre-activation residual unit: (BN -> act -> conv) x 2 + shortcut.

    Args:
        x: input tensor ``(B, H, W, C)``.
        filters: output channels.
        kernel_size: 3 in encoder/decoder, 5 in the bridge (Sec. 4.4).
        shortcut: tensor added to the output; None makes a 1x1 conv of ``x`` when ``C != filters``
            and uses ``x`` itself otherwise.
        name: prefix for the layer names.
        bn_momentum: BatchNormalization moving-average momentum.

    Returns:
        ``(B, H, W, filters)`` tensor.

    Reference:
        Morelli et al., Sec. 4.4 ("two sequences of batch-normalization, activation and
        convolution" with a shortcut); He et al., Identity Mappings in Deep Residual Networks.
    """
    if shortcut is None:
        if x.shape[-1] != filters:
            shortcut = layers.Conv2D(filters, 1, padding="same", kernel_initializer=INITIALIZER,
                                     name=f"{name}_shortcut")(x)
        else:
            shortcut = x
    y = x
    for i in (1, 2):
        y = layers.BatchNormalization(momentum=bn_momentum, name=f"{name}_bn{i}")(y)
        y = layers.Activation(activation, name=f"{name}_act{i}")(y)
        y = layers.Conv2D(filters, kernel_size, padding="same", kernel_initializer=INITIALIZER,
                          name=f"{name}_conv{i}")(y)
    return layers.Add(name=f"{name}_add")([y, shortcut])


def build_c_resunet(
    filters: tuple[int, ...] | list[int] = (16, 32, 64),
    bridge_filters: int = 128,
    bridge_blocks: int = 2,
    bridge_kernel: int = 5,
    activation: str = "elu",
    colour_to_grey: bool = True,
    input_channels: int = 3,
    bn_momentum: float = 0.99,
    name: str = "c_resunet",
) -> keras.Model:
    """Build the c-ResUNet.

    Args:
        filters: encoder widths, one per resolution level (released: 16, 32, 64).
        bridge_filters: width of the bottleneck (released: 128).
        bridge_blocks: residual blocks at the bottleneck (released: 2, the second being the
            paper's "additional residual block").
        bridge_kernel: bottleneck kernel size (paper: 5x5).
        activation: "elu" as released.
        colour_to_grey: prepend the 1x1 conv -> BN -> act that learns a colour->grey mapping.
        input_channels: 3 (RGB).
        bn_momentum: BatchNormalization momentum (Keras default 0.99, as released; a run of a few
            hundred steps needs ~0.9 or its inference-time statistics stay near their init).

    Returns:
        A Keras model mapping ``(B, H, W, input_channels)`` float32 in [0, 1] to a sigmoid heat-map
        ``(B, H, W, 1)``; H and W must be divisible by ``2 ** len(filters)``.

    Reference:
        Morelli et al., Sec. 4.4 and Fig. 5; released ResUnet in 050_dev_model.py (n = 4).
    """
    filters = [int(f) for f in filters]
    # Widths and kernel sizes below 1 are refused by Keras' own layers (a ValueError naming them).
    if not filters or bridge_blocks < 1:
        raise ValueError(f"c-ResUNet needs at least one level and one bridge block, got filters {filters}, "
                         f"bridge_blocks {bridge_blocks}")
    inputs = keras.Input((None, None, input_channels), name="image")
    x = inputs
    if colour_to_grey:
        x = layers.Conv2D(1, 1, padding="same", kernel_initializer=INITIALIZER, name="colour_to_grey_conv")(x)
        x = layers.BatchNormalization(momentum=bn_momentum, name="colour_to_grey_bn")(x)
        x = layers.Activation(activation, name="colour_to_grey_act")(x)

    # Stem as released: conv -> BN -> act -> conv without a shortcut (full resolution, cheapest level).
    x = layers.Conv2D(filters[0], 3, padding="same", kernel_initializer=INITIALIZER, name="stem_conv1")(x)
    x = layers.BatchNormalization(momentum=bn_momentum, name="stem_bn")(x)
    x = layers.Activation(activation, name="stem_act")(x)
    x = layers.Conv2D(filters[0], 3, padding="same", kernel_initializer=INITIALIZER, name="stem_conv2")(x)
    skips = [x]
    for level, width in enumerate(filters[1:], start=1):
        x = layers.MaxPooling2D(2, name=f"enc{level}_pool")(x)
        x = residual_block(x, width, activation=activation, name=f"enc{level}", bn_momentum=bn_momentum)
        skips.append(x)

    x = layers.MaxPooling2D(2, name="bridge_pool")(x)
    for block in range(bridge_blocks):
        x = residual_block(x, bridge_filters, kernel_size=bridge_kernel, activation=activation,
                           name=f"bridge{block + 1}", bn_momentum=bn_momentum)

    for level in reversed(range(len(filters))):
        width = filters[level]
        up = layers.Conv2DTranspose(width, 2, strides=2, padding="same", name=f"dec{level}_up")(x)
        x = layers.Concatenate(name=f"dec{level}_concat")([up, skips[level]])
        x = residual_block(x, width, shortcut=up, activation=activation, name=f"dec{level}", bn_momentum=bn_momentum)

    # float32: the sigmoid (and so the BCE) stays float32 under runtime.precision=mixed_*
    outputs = layers.Conv2D(1, 1, activation="sigmoid", name="heatmap", dtype="float32")(x)
    return keras.Model(inputs, outputs, name=name)


class WeightedBCE(keras.losses.Loss):
    """Binary cross-entropy weighted per pixel by a weight map stacked into ``y_true``.

    ``y_true`` is ``(B, H, W, 2)``: channel 0 the binary target, channel 1 the pixel weight map
    (``weightmaps.py``); ``y_pred`` is the ``(B, H, W, 1)`` sigmoid heat-map. The per-pixel loss is
    ``w_class * w_map * BCE`` averaged over all pixels, with ``w_class = cell_weight`` on cells and
    ``background_weight`` elsewhere (released: 1.5 / 1 on top of the map; paper preset: 1 / 1
    because its map already holds the class weights). ``use_map=False`` (or a map of ones) gives
    plain BCE.

    Reference:
        Morelli et al., Sec. 4.5 ("weighted binary cross-entropy with weighted maps");
        released ``create_weighted_binary_crossentropy_overcrowding`` in 050_dev_model.py.
    """

    def __init__(self, cell_weight: float = 1.0, background_weight: float = 1.0, use_map: bool = True,
                 name: str = "weighted_bce", **kwargs):
        super().__init__(name=name, **kwargs)
        self.cell_weight = float(cell_weight)
        self.background_weight = float(background_weight)
        self.use_map = bool(use_map)

    def call(self, y_true, y_pred):
        target = y_true[..., 0:1]
        # use_map=False ignores channel 1 (the no-weight-map ablation shares the weighted data set),
        # except where it is 0: pixels that augmentation filled from outside the crop carry no loss.
        weight = y_true[..., 1:2] if self.use_map else ops.cast(y_true[..., 1:2] > 0, y_pred.dtype)
        epsilon = keras.config.epsilon()
        prob = ops.clip(y_pred, epsilon, 1.0 - epsilon)
        bce = -(target * ops.log(prob) + (1.0 - target) * ops.log(1.0 - prob))
        class_weight = target * self.cell_weight + (1.0 - target) * self.background_weight
        # Mean over H, W, 1 per sample; Keras then averages over the batch.
        return ops.mean(class_weight * weight * bce, axis=(1, 2, 3))

    def get_config(self):
        return constructor_config(self, ("cell_weight", "background_weight", "use_map"), super().get_config())


def binary_iou(threshold: float = 0.5):
    """A Keras metric fn: foreground IoU of ``y_pred > threshold`` vs channel 0 of ``y_true``."""

    def iou(y_true, y_pred):
        target = ops.cast(y_true[..., 0:1] > 0.5, "float32")
        pred = ops.cast(y_pred > threshold, "float32")
        inter = ops.sum(target * pred)
        union = ops.sum(ops.maximum(target, pred))
        return (inter + 1.0) / (union + 1.0)

    iou.__name__ = "iou"
    return iou
