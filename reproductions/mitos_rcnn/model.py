"""MITOS-RCNN and the two Faster R-CNN baselines of Table II, built from ``common/detection``.

Three detectors share one VGG-16 (``backbone.build_vgg16``):

* ``faster_rcnn_conv5`` -- the standard Faster R-CNN: RPN and ROI pooling on conv5_3 (stride 16);
* ``faster_rcnn_conv4`` -- the same on conv4_3 (stride 8), VGG-16 without block 5;
* ``mitos_rcnn`` -- VGG-16 without block 5; RPN_1 on conv4_3; the fused "conv3+4" map
  (``backbone.Conv34Fusion``); RPN_2 on conv3+4 with its own 64 px 1:1 anchors, whose proposals
  compete with RPN_1's in one top-k + NMS 0.7; ROI max pooling on conv3+4; FC head with softmax
  over (background, mitotic figure, not mitotic figure) and per-class box deltas.

The two baselines are the generic :class:`~microrepro.common.detection.faster_rcnn.FasterRCNN`;
the cascade needs two feature maps and two RPNs, which that class (one backbone output, one RPN)
does not allow, so :class:`MitosRCNN` composes the same parts (``RPNHead``, ``ProposalLayer``,
``BoxHead``, ``rpn_targets``, ``head_targets``, ``rpn_losses``, ``head_losses``,
``decode_detections``) and duplicates none of their arithmetic.

Everything here is ``keras`` / ``keras.ops`` (TensorFlow and JAX backends).

Reference: Rao, MITOS-RCNN, Sec. IV-B, eq. (2) and Fig. 2; Ren et al., Faster R-CNN, NeurIPS 2015.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

from microrepro.common.detection.anchors import generate_anchors
from microrepro.common.detection.boxes import HEAD_BOX_WEIGHTS
from microrepro.common.detection.faster_rcnn import FasterRCNN, FasterRCNNConfig, TwoStageMixin
from microrepro.common.detection.heads import BoxHead
from microrepro.common.detection.losses import rpn_losses
from microrepro.common.detection.rpn import ProposalLayer, RPNHead
from microrepro.common.detection.targets import rpn_targets
from microrepro.common.errors import ConfigError
from microrepro.reproductions.mitos_rcnn.backbone import Conv34Fusion, build_vgg16

MODEL_KEYS = ("faster_rcnn_conv5", "faster_rcnn_conv4", "mitos_rcnn")


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


def _anchors(feature_shape: tuple, stride: int, r) -> np.ndarray:
    """``(H * W * A, 4)`` float32 xyxy input-px anchors of RPN config ``r`` on a ``(None, H, W, C)`` map."""
    anchors = generate_anchors(feature_shape[1], feature_shape[2], stride, r.anchor_sizes, r.anchor_ratios)
    return np.asarray(ops.convert_to_numpy(anchors), np.float32)


def init_hidden_layers(layers, std: float, seed: int | None = None) -> None:
    """(Re-)initialise the kernels of the new hidden layers (RPN 3x3 convs, deconv, 1x1 reduction, FCs).

    ``std > 0``: N(0, std), the paper's "Weights in all layers of the RCNN were initialized from a
    zero-mean Gaussian distribution with standard deviation of 0.01" (Sec. IV-B.4). ``std == 0``:
    He-normal, used by the CPU schedules that train the VGG from scratch, where three N(0, 0.01)
    layers in a row (L2 norm -> 1x1 conv -> RPN_2 conv) leave RPN_2's logits near 0 for hundreds
    of steps. The sibling output layers keep Faster R-CNN's N(0, 0.01) / N(0, 0.001) either way.

    Reference: MITOS-RCNN Sec. IV-B.4.
    """
    if std < 0:
        raise ConfigError(f"model.init_std must be >= 0 (0 = He normal), got {std}")
    if std > 0:
        init = keras.initializers.RandomNormal(stddev=float(std), seed=seed)
    else:
        init = keras.initializers.HeNormal(seed=seed)
    for layer in layers:
        layer.kernel.assign(init(layer.kernel.shape))


class MitosRCNN(TwoStageMixin, keras.Model):
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

    LOSS_NAMES = ("rpn1_class_loss", "rpn1_box_loss", "rpn2_class_loss", "rpn2_box_loss", "head_class_loss",
                  "head_box_loss")

    def __init__(self, backbone: keras.Model, cfg, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.cfg = cfg
        self.backbone = backbone
        shapes = _output_shapes(backbone)
        if "conv3" not in shapes or "conv4" not in shapes:
            raise ConfigError(
                f"MitosRCNN needs a backbone with 'conv3' and 'conv4' outputs, got {sorted(shapes)}")
        self.image_size = (int(backbone.input_shape[1]), int(backbone.input_shape[2]))
        self.feature_shapes = shapes
        c3, c4 = shapes["conv3"], shapes["conv4"]
        stride3, stride4 = 4, 8  # conv3_3 after two 2x2 pools, conv4_3 after three
        r1, r2 = cfg.rpn1, cfg.rpn2
        self.anchors1 = _anchors(c4, stride4, r1)
        self.anchors2 = _anchors(c3, stride3, r2)
        self.rpn1_head = RPNHead(len(r1.anchor_sizes) * len(r1.anchor_ratios), r1.conv_channels, name="rpn1")
        self.fusion = Conv34Fusion(int(c4[-1]), cfg.fused_channels, cfg.l2_norm, cfg.l2_scale_init,
                                   cfg.init_std or 0.01, name="conv34")
        self.rpn2_head = RPNHead(len(r2.anchor_sizes) * len(r2.anchor_ratios), r2.conv_channels, name="rpn2")

        def proposals(r, training, name):
            top_pre = r.pre_nms_top_k_train if training else r.pre_nms_top_k_test
            top_post = r.post_nms_top_k_train if training else r.post_nms_top_k_test
            return ProposalLayer(self.image_size, top_pre, top_post, r.nms_iou, name=name)

        self.proposals1_train = proposals(r1, True, "rpn1_train")
        self.proposals1_test = proposals(r1, False, "rpn1_test")
        self.proposals2_train = proposals(r2, True, "rpn2_train")
        self.proposals2_test = proposals(r2, False, "rpn2_test")
        self.box_head = BoxHead(cfg.num_classes, 1.0 / stride3, cfg.roi_size, cfg.roi_sampling_ratio, cfg.roi_op,
                                cfg.head_fc_units, name="box_head")
        self.seed_generator = keras.random.SeedGenerator(seed, name="sampling_seed")
        self.rpn1_box_weight = rpn_box_loss_weight(cfg.lambda_box, cfg.box_loss_normaliser, r1.batch_size_per_image,
                                                   c4[1] * c4[2])
        self.rpn2_box_weight = rpn_box_loss_weight(cfg.lambda_box, cfg.box_loss_normaliser, r2.batch_size_per_image,
                                                   c3[1] * c3[2])
        self.loss_trackers = {name: keras.metrics.Mean(name=name) for name in self.LOSS_NAMES}
        self.build((None,) + tuple(backbone.input_shape[1:]))
        hidden = [self.rpn1_head.conv, self.rpn2_head.conv, self.fusion.deconv, self.fusion.reduce, *self.box_head.fcs]
        init_hidden_layers(hidden, cfg.init_std, seed)

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
        propose1 = self.proposals1_train if training else self.proposals1_test
        p1 = propose1(ops.convert_to_tensor(self.anchors1), logits1, deltas1)
        fused = self.fusion(conv3, conv4)
        logits2, deltas2 = self.rpn2_head(fused)
        # RPN_2 "utilizes inputs from two sources": RPN_1's proposals and its own sliding window;
        # both compete in one top-k and NMS (0.7), ranked by their own objectness.
        propose2 = self.proposals2_train if training else self.proposals2_test
        p2 = propose2(ops.convert_to_tensor(self.anchors2), logits2, deltas2,
                      extra_boxes=p1["boxes"], extra_scores=p1["scores"], extra_valid=p1["valid"])
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
            self._second_stage(outputs, fused, p2, HEAD_BOX_WEIGHTS, self.cfg.score_threshold,
                               self.cfg.detection_nms_iou, self.cfg.max_detections)
        return outputs

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Eq. (2) for both RPNs plus the Fast R-CNN head loss, plus regularisation losses.

        ``y`` = ``{"boxes": (B, G, 4) xyxy px, -1 padded; "classes": (B, G) int, -1 padded}``.
        """
        c = self.cfg
        gt_boxes, gt_classes = self._check_targets(y, sample_weight)
        terms = {}
        for stage, anchors, r in (("rpn1", self.anchors1, c.rpn1), ("rpn2", self.anchors2, c.rpn2)):
            target = rpn_targets(ops.convert_to_tensor(anchors), gt_boxes, r.positive_iou, r.negative_iou,
                                 r.batch_size_per_image, r.positive_fraction, seed=self.seed_generator)
            cls_loss, box_loss = rpn_losses(y_pred[f"{stage}_logits"], y_pred[f"{stage}_deltas"], target["labels"],
                                            target["box_targets"])
            terms[f"{stage}_class_loss"], terms[f"{stage}_box_loss"] = cls_loss, box_loss
        terms["head_class_loss"], terms["head_box_loss"] = self._second_stage_loss(
            y_pred["fused"], y_pred["proposals"], y_pred["proposal_valid"], gt_boxes, gt_classes,
            c.head_batch_size_per_image, c.head_positive_fraction, c.head_foreground_iou)
        return self._total_loss(terms, {"rpn1_box_loss": self.rpn1_box_weight, "rpn2_box_loss": self.rpn2_box_weight})


def faster_rcnn_config(cfg, stride: int, seed: int | None = None) -> FasterRCNNConfig:
    """The generic Faster R-CNN config of a Table II baseline, from the shared ModelConfig.

    Reference: MITOS-RCNN Sec. V-B.1 and Table II (the standard Faster R-CNN and its conv4 variant).
    """
    r = cfg.rpn1
    cells = math.floor(cfg.input_size / stride) ** 2
    # Every RPN value has the same name in RPNConfig as in FasterRCNNConfig after "rpn_";
    # the head values of ModelConfig keep theirs.
    rpn = {f"rpn_{key}": getattr(r, key) for key in _SHARED_RPN}
    head = {key: getattr(cfg, key) for key in _SHARED_HEAD}
    return FasterRCNNConfig(
        feature_stride=stride, anchor_sizes=tuple(r.anchor_sizes), anchor_ratios=tuple(r.anchor_ratios),
        rpn_smooth_l1_beta=1.0 / 9.0, head_fc_units=tuple(cfg.head_fc_units), seed=seed,
        rpn_box_loss_weight=rpn_box_loss_weight(cfg.lambda_box, cfg.box_loss_normaliser, r.batch_size_per_image,
                                                cells),
        **rpn, **head,
    )


_SHARED_RPN = ("conv_channels", "positive_iou", "negative_iou", "batch_size_per_image", "positive_fraction",
               "pre_nms_top_k_train", "post_nms_top_k_train", "pre_nms_top_k_test", "post_nms_top_k_test", "nms_iou")
_SHARED_HEAD = ("num_classes", "roi_op", "roi_size", "roi_sampling_ratio", "head_batch_size_per_image",
                "head_positive_fraction", "head_foreground_iou", "score_threshold", "detection_nms_iou",
                "max_detections")


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
