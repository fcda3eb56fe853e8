"""The MITOS-RCNN feature extractor: VGG-16 to conv4_3 (or conv5_3) and the conv3+4 fusion.

* :func:`build_vgg16` -- VGG-16's convolutional layers under the keras.applications names
  (``block1_conv1`` ... ``block5_conv3``, so ImageNet weights load by name), returning the
  conv3_3 (stride 4), conv4_3 (stride 8) and, with block 5, conv5_3 (stride 16) maps;
* :class:`Conv34Fusion` -- conv4_3 deconvolved x2 to conv3_3's resolution, both L2-normalised
  (:class:`L2Normalization`), concatenated ("conv3+4") and reduced to 256 channels by a 1x1 conv.

Everything here is ``keras`` / ``keras.ops`` (TensorFlow and JAX backends).

Reference: Rao, MITOS-RCNN, Sec. IV-B and Fig. 2; Simonyan & Zisserman 2014 (VGG-16);
Liu, Rabinovich, Berg, ParseNet, 2015 (L2 normalisation with a learnt scale).
"""

from __future__ import annotations

from pathlib import Path

import keras
from keras import ops

from microrepro.common.errors import ConfigError
from microrepro.common.serialize import constructor_config

# VGG-16 (Simonyan & Zisserman, configuration D): (filters, convs) of blocks 1-5.
VGG16_BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))
# Caffe VGG-16 preprocessing (keras.applications.vgg16.preprocess_input "caffe" mode): BGR means.
_BGR_MEANS = (103.939, 116.779, 123.68)


class CaffePreprocess(keras.layers.Layer):
    """[0, 1] RGB -> 0-255 BGR minus the ImageNet means, the input the VGG-16 weights expect.

    Call: ``(B, H, W, 3)`` float in [0, 1] -> ``(B, H, W, 3)`` float.

    Reference: MITOS-RCNN Sec. IV-B.4 (the VGG-16 layers start from their ImageNet weights).
    """

    def call(self, images):
        bgr = ops.flip(ops.cast(images, "float32") * 255.0, axis=-1)
        return bgr - ops.convert_to_tensor(_BGR_MEANS, "float32")


def _filters(base: int, width_multiplier: float) -> int:
    return max(8, int(round(base * float(width_multiplier))))


def build_vgg16(
    input_size: int,
    width_multiplier: float = 1.0,
    blocks: int = 5,
    pretrained: str = "none",
    freeze_blocks: int = 0,
) -> keras.Model:
    """VGG-16 convolutional layers, returning the conv3_3, conv4_3 (and conv5_3) maps.

    Pools 1-3 come before conv4; pool 4 only when block 5 is built; pool 5 never (Faster R-CNN
    uses conv5_3 itself). Max pooling is 2x2/2 "valid", as in VGG-16.

    Args:
        input_size: S, square input side in px.
        width_multiplier: scales every block's filters (1.0 = VGG-16; CPU schedules use less).
        blocks: 4 (no conv5: MITOS-RCNN and the conv4 baseline) or 5 (standard Faster R-CNN).
        pretrained: "none" (Glorot init), "imagenet" (keras.applications weights, needs network
            or the Keras cache) or a path to VGG16 weights (``.h5`` / ``.weights.h5``).
        freeze_blocks: the first blocks kept frozen.

    Returns:
        keras.Model ``(B, S, S, 3)`` float in [0, 1] -> dict ``conv3`` ``(B, S/4, S/4, 256w)``,
        ``conv4`` ``(B, S/8, S/8, 512w)`` and, with ``blocks=5``, ``conv5`` ``(B, S/16, S/16, 512w)``
        (sizes floored at each pool).

    Raises:
        ConfigError: bad sizes, or ImageNet weights asked for but not available.

    Reference: Simonyan & Zisserman 2014 (VGG-16); MITOS-RCNN Sec. IV-B ("We refer to conv3_3 ...").
    """
    if blocks not in (4, 5):
        raise ConfigError(f"VGG-16 backbone: blocks must be 4 or 5, got {blocks}")
    if int(input_size) < 32:
        raise ConfigError(f"model.input_size must be at least 32 px, got {input_size}")
    if not 0 < float(width_multiplier) <= 1.0:
        raise ConfigError(f"model.backbone.width_multiplier must be in (0, 1], got {width_multiplier}")
    inputs = keras.Input((int(input_size), int(input_size), 3), name="image")
    x = CaffePreprocess(name="caffe_preprocess")(inputs)
    outputs = {}
    for b, (base, convs) in enumerate(VGG16_BLOCKS[:blocks], start=1):
        if b > 1:
            x = keras.layers.MaxPooling2D(2, strides=2, name=f"block{b - 1}_pool")(x)
        for c in range(1, convs + 1):
            conv = keras.layers.Conv2D(_filters(base, width_multiplier), 3, padding="same", activation="relu",
                                       name=f"block{b}_conv{c}", trainable=b > freeze_blocks)
            x = conv(x)
        if b >= 3:
            outputs[f"conv{b}"] = x
    model = keras.Model(inputs, outputs, name=f"vgg16_{blocks}blocks")
    load_vgg16_weights(model, pretrained, width_multiplier)
    return model


def load_vgg16_weights(model: keras.Model, pretrained: str, width_multiplier: float = 1.0) -> int:
    """Copy VGG-16 weights into ``model``'s layers of the same name; returns the layers copied.

    Raises:
        ConfigError: weights asked for with a width multiplier != 1, a missing file, or ImageNet
            weights that cannot be downloaded (offline and not in ``~/.keras/models``).

    Reference: MITOS-RCNN Sec. IV-B.4 ("all VGG-16 layers remained with their pre-trained weights").
    """
    if pretrained in ("none", "", None):
        return 0
    if float(width_multiplier) != 1.0:
        raise ConfigError(
            f"model.backbone.pretrained={pretrained!r} needs model.backbone.width_multiplier=1.0 "
            f"(got {width_multiplier}); set pretrained=none for a narrowed VGG"
        )
    if pretrained == "imagenet":
        try:
            source = keras.applications.VGG16(include_top=False, weights="imagenet")
        except Exception as err:  # urllib/HTTP errors: offline, proxy... one clear line instead
            raise ConfigError(
                "model.backbone.pretrained=imagenet: the VGG-16 ImageNet weights could not be loaded "
                f"({type(err).__name__}: {str(err)[:120]}); put vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5 "
                "in ~/.keras/models, pass a path, or set model.backbone.pretrained=none"
            ) from None
    else:
        path = Path(pretrained).expanduser()
        if not path.is_file():
            raise ConfigError(f"model.backbone.pretrained: {path} is not a file (use none, imagenet or a weights path)")
        source = keras.applications.VGG16(include_top=False, weights=None)
        source.load_weights(str(path))
    copied = 0
    for layer in model.layers:
        if layer.name.startswith("block") and "conv" in layer.name:
            layer.set_weights(source.get_layer(layer.name).get_weights())
            copied += 1
    return copied


class L2Normalization(keras.layers.Layer):
    """Channel-wise L2 normalisation, optionally times a learnt per-channel scale (ParseNet/SSD).

    Args:
        learnable: multiply by a trainable ``(C,)`` scale initialised to ``scale_init``; if False
            the plain unit-norm map is multiplied by the constant ``scale_init``.
        scale_init: ParseNet/SSD use 10-20 so the normalised map is not too small to learn from.

    Call: ``(B, H, W, C)`` -> ``(B, H, W, C)`` with ``||x[b, i, j, :]||_2 = scale``.

    Reference: MITOS-RCNN Sec. IV-B.2 ("we normalize each layer using L2 norm"); Liu et al.,
        ParseNet, Sec. 3.3.
    """

    def __init__(self, learnable: bool = True, scale_init: float = 10.0, epsilon: float = 1e-10, **kwargs):
        super().__init__(**kwargs)
        self.learnable = bool(learnable)
        self.scale_init = float(scale_init)
        self.epsilon = float(epsilon)

    def build(self, input_shape):
        if self.learnable:
            self.scale = self.add_weight(
                shape=(int(input_shape[-1]),), initializer=keras.initializers.Constant(self.scale_init), name="scale"
            )
        self.built = True

    def call(self, x):
        norm = ops.sqrt(ops.sum(ops.square(x), axis=-1, keepdims=True) + self.epsilon)
        x = x / norm
        return x * (self.scale if self.learnable else self.scale_init)

    def get_config(self):
        return constructor_config(self, ("learnable", "scale_init", "epsilon"), super().get_config())


class Conv34Fusion(keras.layers.Layer):
    """conv3_3 and conv4_3 -> "conv3+4": deconv x2, L2 norm both, concatenate, 1x1 conv to 256.

    Args:
        conv4_channels: channels of the deconvolved conv4_3 (kept equal to conv4_3's).
        out_channels: channels after the 1x1 reduction (paper: 256).
        l2_norm: "learnable" or "plain" (see :class:`L2Normalization`).
        l2_scale_init: initial (or constant) scale of the normalised maps.
        init_std: std of the N(0, std) init of the new convolutions (paper: 0.01).

    Call: ``conv3`` ``(B, H3, W3, C3)``, ``conv4`` ``(B, H4, W4, C4)`` with ``H3 in (2 H4, 2 H4 + 1)``
    -> ``(B, H3, W3, out_channels)`` (ReLU). An odd conv3 size (e.g. 75 from a 300 px input) is met
    by zero-padding the deconvolved map by one row/column at the bottom/right.

    Reference: MITOS-RCNN Sec. IV-B.2 and Fig. 2 (HyperNet / Eggert et al. style feature fusion).
    """

    def __init__(self, conv4_channels: int, out_channels: int = 256, l2_norm: str = "learnable",
                 l2_scale_init: float = 10.0, init_std: float = 0.01, **kwargs):
        super().__init__(**kwargs)
        if l2_norm not in ("learnable", "plain"):
            raise ConfigError(f"model.l2_norm must be 'learnable' or 'plain', got {l2_norm!r}")
        init = keras.initializers.RandomNormal(stddev=float(init_std))
        self.conv4_channels, self.out_channels = int(conv4_channels), int(out_channels)
        self.l2_norm, self.l2_scale_init, self.init_std = l2_norm, float(l2_scale_init), float(init_std)
        # kernel 4, stride 2: each output cell mixes 2x2 input cells (bilinear-upsampling footprint).
        self.deconv = keras.layers.Conv2DTranspose(self.conv4_channels, 4, strides=2, padding="same",
                                                   kernel_initializer=init, name="deconv4")
        self.norm3 = L2Normalization(l2_norm == "learnable", l2_scale_init, name="l2norm3")
        self.norm4 = L2Normalization(l2_norm == "learnable", l2_scale_init, name="l2norm4")
        self.reduce = keras.layers.Conv2D(self.out_channels, 1, activation="relu", kernel_initializer=init,
                                          name="reduce34")

    def build(self, conv3_shape, conv4_shape):
        self.deconv.build(conv4_shape)
        self.norm3.build(conv3_shape)
        self.norm4.build(tuple(conv3_shape[:-1]) + (self.conv4_channels,))
        self.reduce.build(tuple(conv3_shape[:-1]) + (int(conv3_shape[-1]) + self.conv4_channels,))
        self.built = True

    def call(self, conv3, conv4):
        up = self.deconv(conv4)
        h3, w3 = conv3.shape[1], conv3.shape[2]
        pad_h, pad_w = h3 - up.shape[1], w3 - up.shape[2]
        if pad_h not in (0, 1) or pad_w not in (0, 1):
            raise ValueError(f"conv3 {conv3.shape} and upsampled conv4 {up.shape} do not fit")
        if pad_h or pad_w:
            up = ops.pad(up, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)))
        fused = ops.concatenate([self.norm3(conv3), self.norm4(up)], axis=-1)
        return self.reduce(fused)

    def get_config(self):
        names = ("conv4_channels", "out_channels", "l2_norm", "l2_scale_init", "init_std")
        return constructor_config(self, names, super().get_config())
