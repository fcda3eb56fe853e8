"""MITOS-RCNN and the two Faster R-CNN baselines of Table II, built from ``common/detection``.

Three detectors share one VGG-16 (keras.applications layer names ``block1_conv1`` ...
``block5_conv3``, so ImageNet weights load by name):

* ``faster_rcnn_conv5`` -- the standard Faster R-CNN: RPN and ROI pooling on conv5_3 (stride 16);
* ``faster_rcnn_conv4`` -- the same on conv4_3 (stride 8), VGG-16 without block 5;
* ``mitos_rcnn`` -- VGG-16 without block 5; RPN_1 on conv4_3; conv4_3 upsampled x2 by a
  deconvolution to conv3_3's resolution, both L2-normalised, concatenated ("conv3+4") and reduced
  to 256 channels by a 1x1 conv; RPN_2 on conv3+4 with its own 64 px 1:1 anchors, whose
  proposals compete with RPN_1's in one top-k + NMS 0.7; ROI max pooling on conv3+4; FC head
  with softmax over (background, mitotic figure, not mitotic figure) and per-class box deltas.

The two baselines are the generic :class:`~microrepro.common.detection.faster_rcnn.FasterRCNN`;
the cascade needs two feature maps and two RPNs, which that class (one backbone output, one RPN)
does not allow, so :class:`MitosRCNN` composes the same parts (``RPNHead``, ``ProposalLayer``,
``BoxHead``, ``rpn_targets``, ``head_targets``, ``rpn_losses``, ``head_losses``,
``decode_detections``) and duplicates none of their arithmetic.

Everything here is ``keras`` / ``keras.ops`` (TensorFlow and JAX backends).

Reference: Rao, MITOS-RCNN, Sec. IV-B and Fig. 2; Ren et al., Faster R-CNN, NeurIPS 2015;
Liu, Rabinovich, Berg, ParseNet, 2015 (L2 normalisation with a learnt scale).
"""

from __future__ import annotations

import math
from pathlib import Path

import keras
import numpy as np
from keras import ops

from microrepro.common.detection.anchors import generate_anchors
from microrepro.common.detection.faster_rcnn import DETECTION_KEYS, FasterRCNN, FasterRCNNConfig
from microrepro.common.detection.heads import BoxHead, decode_detections
from microrepro.common.detection.losses import head_losses, rpn_losses
from microrepro.common.detection.rpn import ProposalLayer, RPNHead
from microrepro.common.detection.targets import head_targets, rpn_targets
from microrepro.common.errors import ConfigError

MODEL_KEYS = ("faster_rcnn_conv5", "faster_rcnn_conv4", "mitos_rcnn")
# VGG-16 (Simonyan & Zisserman, configuration D): (filters, convs) of blocks 1-5.
VGG16_BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))
# Caffe VGG-16 preprocessing (keras.applications.vgg16.preprocess_input "caffe" mode): BGR means.
_BGR_MEANS = (103.939, 116.779, 123.68)


class CaffePreprocess(keras.layers.Layer):
    """[0, 1] RGB -> 0-255 BGR minus the ImageNet means, the input the VGG-16 weights expect.

    Call: ``(B, H, W, 3)`` float in [0, 1] -> ``(B, H, W, 3)`` float.
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
            x = keras.layers.Conv2D(
                _filters(base, width_multiplier), 3, padding="same", activation="relu",
                name=f"block{b}_conv{c}", trainable=b > freeze_blocks,
            )(x)  # fmt: skip
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
        config = super().get_config()
        config.update(learnable=self.learnable, scale_init=self.scale_init, epsilon=self.epsilon)
        return config


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

    def __init__(self, conv4_channels: int, out_channels: int = 256, l2_norm: str = "learnable", l2_scale_init: float = 10.0, init_std: float = 0.01, **kwargs):
        super().__init__(**kwargs)
        if l2_norm not in ("learnable", "plain"):
            raise ConfigError(f"model.l2_norm must be 'learnable' or 'plain', got {l2_norm!r}")
        init = keras.initializers.RandomNormal(stddev=float(init_std))
        self.conv4_channels, self.out_channels = int(conv4_channels), int(out_channels)
        self.l2_norm, self.l2_scale_init, self.init_std = l2_norm, float(l2_scale_init), float(init_std)
        # kernel 4, stride 2: each output cell mixes 2x2 input cells (bilinear-upsampling footprint).
        self.deconv = keras.layers.Conv2DTranspose(self.conv4_channels, 4, strides=2, padding="same", kernel_initializer=init, name="deconv4")
        self.norm3 = L2Normalization(l2_norm == "learnable", l2_scale_init, name="l2norm3")
        self.norm4 = L2Normalization(l2_norm == "learnable", l2_scale_init, name="l2norm4")
        self.reduce = keras.layers.Conv2D(self.out_channels, 1, activation="relu", kernel_initializer=init, name="reduce34")

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
        config = super().get_config()
        config.update(conv4_channels=self.conv4_channels, out_channels=self.out_channels, l2_norm=self.l2_norm,
                      l2_scale_init=self.l2_scale_init, init_std=self.init_std)
        return config


def rpn_box_loss_weight(lambda_box: float, normaliser: str, sampled: int, locations: int) -> float:
    """The weight of an RPN's box loss that realises eq. (2) with the common losses.

    ``common.detection.losses`` divides both RPN terms by the number of sampled anchors
    (N_cls = 256). Eq. (2) divides the box term by N_reg, "the number of anchors" -- in Faster
    R-CNN the number of anchor LOCATIONS (~2400) -- and multiplies it by lambda = 10, so the box
    term's weight relative to ours is ``lambda * N_cls / N_reg``.

    Args:
        lambda_box: lambda of eq. (2) (paper: 10).
        normaliser: "anchor_locations" (eq. 2 as in Faster R-CNN) or "sampled" (lambda used as
            is on the sampled-normalised loss).
        sampled: N_cls, anchors sampled per image.
        locations: N_reg, feature-map cells of that RPN.

    Returns:
        The multiplier of ``rpn_box_loss``.

    Example:
        ``rpn_box_loss_weight(10, "anchor_locations", 256, 2560) == 1.0``.

    Reference: MITOS-RCNN eq. (2); Faster R-CNN Sec. 3.1.2 (lambda = 10, N_reg ~ 2400).
    """
    if normaliser == "sampled":
        return float(lambda_box)
    if normaliser == "anchor_locations":
        if locations <= 0 or sampled <= 0:
            raise ValueError(f"sampled and locations must be positive, got {sampled}, {locations}")
        return float(lambda_box) * float(sampled) / float(locations)
    raise ConfigError(f"model.box_loss_normaliser must be 'anchor_locations' or 'sampled', got {normaliser!r}")


def _output_shapes(backbone: keras.Model) -> dict[str, tuple]:
    """``{name: (None, H, W, C)}`` of a dict-output backbone (``output_shape`` flattens dicts)."""
    spec = backbone.compute_output_spec(keras.KerasTensor((1,) + tuple(backbone.input_shape[1:])))
    if not isinstance(spec, dict):
        raise ConfigError("MitosRCNN needs a backbone returning a dict of feature maps")
    return {name: (None,) + tuple(t.shape[1:]) for name, t in spec.items()}


def init_hidden_layers(layers, std: float, seed: int | None = None) -> None:
    """(Re-)initialise the kernels of the new hidden layers (RPN 3x3 convs, deconv, 1x1 reduction, FCs).

    ``std > 0``: N(0, std), the paper's "Weights in all layers of the RCNN were initialized from a
    zero-mean Gaussian distribution with standard deviation of 0.01" (Sec. IV-B.4). ``std == 0``:
    He-normal, used by the CPU schedules that train the VGG from scratch, where three N(0, 0.01)
    layers in a row (L2 norm -> 1x1 conv -> RPN_2 conv) leave RPN_2's logits near 0 for hundreds
    of steps. The sibling output layers keep Faster R-CNN's N(0, 0.01) / N(0, 0.001) either way.
    """
    if std < 0:
        raise ConfigError(f"model.init_std must be >= 0 (0 = He normal), got {std}")
    init = keras.initializers.RandomNormal(stddev=float(std), seed=seed) if std > 0 else keras.initializers.HeNormal(seed=seed)
    for layer in layers:
        layer.kernel.assign(init(layer.kernel.shape))


class MitosRCNN(keras.Model):
    """The two-stage top-down cascade Faster R-CNN of MITOS-RCNN.

    Args:
        backbone: keras.Model ``(B, S, S, 3)`` -> dict with ``conv3`` (stride 4) and ``conv4``
            (stride 8), e.g. ``build_vgg16(S, blocks=4)``.
        cfg: the reproduction's ``ModelConfig``.
        seed: sampling seed (anchor / ROI sampling).

    Call:
        ``images`` ``(B, S, S, 3)`` float in [0, 1] -> dict: ``fused`` (conv3+4), ``rpn1_logits``
        ``(B, A1)``, ``rpn1_deltas`` ``(B, A1, 4)``, ``rpn2_logits``, ``rpn2_deltas``, ``proposals``
        ``(B, K, 4)`` xyxy px (RPN_2's output), ``proposal_scores``, ``proposal_valid``; with
        ``training=False`` also ``class_logits``, ``box_deltas`` and the decoded ``boxes``
        ``(B, D, 4)`` xyxy px, ``scores``, ``classes`` (0 mitotic figure, 1 not mitotic figure,
        -1 unused) and ``num_detections``.

    Training: ``compile(optimizer)`` then ``fit(images, {"boxes": (B, G, 4) xyxy px -1 padded,
    "classes": (B, G) int -1 padded})``; six loss terms are logged (``rpn1_*``, ``rpn2_*``,
    ``head_*``).

    Reference: MITOS-RCNN Sec. IV-B.2-IV-B.4 and Fig. 2.
    """

    LOSS_NAMES = ("rpn1_class_loss", "rpn1_box_loss", "rpn2_class_loss", "rpn2_box_loss", "head_class_loss", "head_box_loss")

    def __init__(self, backbone: keras.Model, cfg, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.cfg = cfg
        self.backbone = backbone
        shapes = _output_shapes(backbone)
        if "conv3" not in shapes or "conv4" not in shapes:
            raise ConfigError(f"MitosRCNN needs a backbone with 'conv3' and 'conv4' outputs, got {sorted(shapes)}")
        self.image_size = (int(backbone.input_shape[1]), int(backbone.input_shape[2]))
        self.feature_shapes = shapes
        c3, c4 = shapes["conv3"], shapes["conv4"]
        stride3, stride4 = 4, 8  # conv3_3 after two 2x2 pools, conv4_3 after three
        r1, r2 = cfg.rpn1, cfg.rpn2
        self.anchors1 = np.asarray(ops.convert_to_numpy(generate_anchors(c4[1], c4[2], stride4, r1.anchor_sizes, r1.anchor_ratios)), np.float32)
        self.anchors2 = np.asarray(ops.convert_to_numpy(generate_anchors(c3[1], c3[2], stride3, r2.anchor_sizes, r2.anchor_ratios)), np.float32)
        self.rpn1_head = RPNHead(len(r1.anchor_sizes) * len(r1.anchor_ratios), r1.conv_channels, name="rpn1")
        self.fusion = Conv34Fusion(int(c4[-1]), cfg.fused_channels, cfg.l2_norm, cfg.l2_scale_init, cfg.init_std or 0.01, name="conv34")
        self.rpn2_head = RPNHead(len(r2.anchor_sizes) * len(r2.anchor_ratios), r2.conv_channels, name="rpn2")

        def proposals(r, training, name):
            top_pre = r.pre_nms_top_k_train if training else r.pre_nms_top_k_test
            top_post = r.post_nms_top_k_train if training else r.post_nms_top_k_test
            return ProposalLayer(self.image_size, top_pre, top_post, r.nms_iou, name=name)

        self.proposals1_train, self.proposals1_test = proposals(r1, True, "rpn1_train"), proposals(r1, False, "rpn1_test")
        self.proposals2_train, self.proposals2_test = proposals(r2, True, "rpn2_train"), proposals(r2, False, "rpn2_test")
        self.box_head = BoxHead(cfg.num_classes, 1.0 / stride3, cfg.roi_size, cfg.roi_sampling_ratio, cfg.roi_op, cfg.head_fc_units, name="box_head")
        self.seed_generator = keras.random.SeedGenerator(seed, name="sampling_seed")
        self.rpn1_box_weight = rpn_box_loss_weight(cfg.lambda_box, cfg.box_loss_normaliser, r1.batch_size_per_image, c4[1] * c4[2])
        self.rpn2_box_weight = rpn_box_loss_weight(cfg.lambda_box, cfg.box_loss_normaliser, r2.batch_size_per_image, c3[1] * c3[2])
        self.loss_trackers = {name: keras.metrics.Mean(name=name) for name in self.LOSS_NAMES}
        self.build((None,) + tuple(backbone.input_shape[1:]))
        init_hidden_layers(
            [self.rpn1_head.conv, self.rpn2_head.conv, self.fusion.deconv, self.fusion.reduce, *self.box_head.fcs], cfg.init_std, seed
        )

    def build(self, input_shape):
        c3, c4 = self.feature_shapes["conv3"], self.feature_shapes["conv4"]
        self.rpn1_head.build(c4)
        self.fusion.build(c3, c4)
        fused = tuple(c3[:-1]) + (self.cfg.fused_channels,)
        self.rpn2_head.build(fused)
        self.box_head.build(fused)
        self.built = True

    def call(self, images, training=False):
        features = self.backbone(images, training=training)
        conv3, conv4 = features["conv3"], features["conv4"]
        logits1, deltas1 = self.rpn1_head(conv4)
        p1 = (self.proposals1_train if training else self.proposals1_test)(ops.convert_to_tensor(self.anchors1), logits1, deltas1)
        fused = self.fusion(conv3, conv4)
        logits2, deltas2 = self.rpn2_head(fused)
        # RPN_2 "utilizes inputs from two sources": RPN_1's proposals and its own sliding window;
        # both compete in one top-k and NMS (0.7), ranked by their own objectness.
        p2 = (self.proposals2_train if training else self.proposals2_test)(
            ops.convert_to_tensor(self.anchors2), logits2, deltas2,
            extra_boxes=p1["boxes"], extra_scores=p1["scores"], extra_valid=p1["valid"],
        )  # fmt: skip
        outputs = {
            "fused": fused,
            "rpn1_logits": logits1,
            "rpn1_deltas": deltas1,
            "rpn2_logits": logits2,
            "rpn2_deltas": deltas2,
            "proposals": p2["boxes"],
            "proposal_scores": p2["scores"],
            "proposal_valid": p2["valid"],
        }
        if not training:
            class_logits, box_deltas = self.box_head(fused, p2["boxes"])
            outputs["class_logits"], outputs["box_deltas"] = class_logits, box_deltas
            outputs.update(
                decode_detections(
                    p2["boxes"], class_logits, box_deltas, self.image_size, p2["valid"],
                    score_threshold=self.cfg.score_threshold, nms_iou=self.cfg.detection_nms_iou,
                    max_detections=self.cfg.max_detections,
                )  # fmt: skip
            )
        return outputs

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Eq. (2) for both RPNs plus the Fast R-CNN head loss, plus regularisation losses.

        ``y`` = ``{"boxes": (B, G, 4) xyxy px, -1 padded; "classes": (B, G) int, -1 padded}``.
        """
        if not isinstance(y, dict) or "boxes" not in y or "classes" not in y:
            raise ValueError("MitosRCNN targets must be a dict with 'boxes' (B, G, 4) and 'classes' (B, G)")
        if sample_weight is not None:
            raise ValueError("MitosRCNN does not use sample_weight; pad the boxes instead")
        c = self.cfg
        gt_boxes = ops.cast(y["boxes"], "float32")
        gt_classes = ops.cast(y["classes"], "int32")
        terms = {}
        for stage, anchors, r in (("rpn1", self.anchors1, c.rpn1), ("rpn2", self.anchors2, c.rpn2)):
            target = rpn_targets(
                ops.convert_to_tensor(anchors), gt_boxes, r.positive_iou, r.negative_iou, r.batch_size_per_image,
                r.positive_fraction, seed=self.seed_generator,
            )  # fmt: skip
            cls_loss, box_loss = rpn_losses(y_pred[f"{stage}_logits"], y_pred[f"{stage}_deltas"], target["labels"], target["box_targets"])
            terms[f"{stage}_class_loss"], terms[f"{stage}_box_loss"] = cls_loss, box_loss
        head = head_targets(
            y_pred["proposals"], gt_boxes, gt_classes, y_pred["proposal_valid"], c.head_batch_size_per_image,
            c.head_positive_fraction, c.head_foreground_iou, seed=self.seed_generator,
        )  # fmt: skip
        class_logits, box_deltas = self.box_head(y_pred["fused"], head["rois"])
        terms["head_class_loss"], terms["head_box_loss"] = head_losses(
            class_logits, box_deltas, head["classes"], head["box_targets"], head["weights"]
        )
        for name, value in terms.items():
            self.loss_trackers[name].update_state(value)
        total = (
            terms["rpn1_class_loss"] + self.rpn1_box_weight * terms["rpn1_box_loss"]
            + terms["rpn2_class_loss"] + self.rpn2_box_weight * terms["rpn2_box_loss"]
            + terms["head_class_loss"] + terms["head_box_loss"]
        )  # fmt: skip
        if self.losses:
            total = total + ops.sum(ops.stack([ops.cast(v, "float32") for v in self.losses]))
        return total

    def predict_detections(self, images, batch_size: int = 8) -> dict[str, np.ndarray]:
        """Detections for ``(N, S, S, 3)`` float32 images in [0, 1]; same dict as ``FasterRCNN``."""
        images = np.asarray(images, np.float32)
        if images.ndim != 4 or tuple(images.shape[1:3]) != self.image_size:
            raise ValueError(f"images must be (N, {self.image_size[0]}, {self.image_size[1]}, 3), got {images.shape}")
        outputs = self.predict(images, batch_size=batch_size, verbose=0)
        return {key: np.asarray(outputs[key]) for key in DETECTION_KEYS}


def faster_rcnn_config(cfg, stride: int, seed: int | None = None) -> FasterRCNNConfig:
    """The generic Faster R-CNN config of a Table II baseline, from the shared ModelConfig."""
    r = cfg.rpn1
    cells = math.floor(cfg.input_size / stride) ** 2
    return FasterRCNNConfig(
        num_classes=cfg.num_classes,
        feature_stride=stride,
        anchor_sizes=tuple(r.anchor_sizes),
        anchor_ratios=tuple(r.anchor_ratios),
        rpn_conv_channels=r.conv_channels,
        rpn_positive_iou=r.positive_iou,
        rpn_negative_iou=r.negative_iou,
        rpn_batch_size_per_image=r.batch_size_per_image,
        rpn_positive_fraction=r.positive_fraction,
        rpn_pre_nms_top_k_train=r.pre_nms_top_k_train,
        rpn_post_nms_top_k_train=r.post_nms_top_k_train,
        rpn_pre_nms_top_k_test=r.pre_nms_top_k_test,
        rpn_post_nms_top_k_test=r.post_nms_top_k_test,
        rpn_nms_iou=r.nms_iou,
        rpn_smooth_l1_beta=1.0 / 9.0,
        roi_op=cfg.roi_op,
        roi_size=cfg.roi_size,
        roi_sampling_ratio=cfg.roi_sampling_ratio,
        head_fc_units=tuple(cfg.head_fc_units),
        head_batch_size_per_image=cfg.head_batch_size_per_image,
        head_positive_fraction=cfg.head_positive_fraction,
        head_foreground_iou=cfg.head_foreground_iou,
        rpn_box_loss_weight=rpn_box_loss_weight(cfg.lambda_box, cfg.box_loss_normaliser, r.batch_size_per_image, cells),
        score_threshold=cfg.score_threshold,
        detection_nms_iou=cfg.detection_nms_iou,
        max_detections=cfg.max_detections,
        seed=seed,
    )


def build_model(key: str, cfg, seed: int | None = None) -> keras.Model:
    """One detector of Table II.

    Args:
        key: "faster_rcnn_conv5", "faster_rcnn_conv4" or "mitos_rcnn".
        cfg: ``ModelConfig``.
        seed: sampling / initialisation seed.

    Returns:
        A built (not compiled) FasterRCNN or MitosRCNN with ``predict_detections``.
    """
    if key not in MODEL_KEYS:
        raise ConfigError(f"unknown model {key!r}; choose from {', '.join(MODEL_KEYS)}")
    b = cfg.backbone
    if cfg.roi_op not in ("pool", "align", "align_max"):
        raise ConfigError(f"model.roi_op must be pool, align or align_max, got {cfg.roi_op!r}")
    blocks = 5 if key == "faster_rcnn_conv5" else 4
    vgg = build_vgg16(cfg.input_size, b.width_multiplier, blocks, b.pretrained, b.freeze_blocks)
    if key == "mitos_rcnn":
        return MitosRCNN(vgg, cfg, seed=seed, name="mitos_rcnn")
    level = "conv5" if blocks == 5 else "conv4"
    single = keras.Model(vgg.inputs, vgg.get_layer(f"block{blocks}_conv3").output, name=f"vgg16_{level}")
    model = FasterRCNN(single, faster_rcnn_config(cfg, 16 if blocks == 5 else 8, seed), name=key)
    init_hidden_layers([model.rpn_head.conv, *model.box_head.fcs], cfg.init_std, seed)
    return model
