"""Faster R-CNN on one feature map, trainable with ``model.fit`` under TensorFlow and JAX.

``FasterRCNN(backbone, FasterRCNNConfig(...))``: the backbone is any ``keras.Model`` mapping a
fixed-size ``(B, H, W, 3)`` image batch to ONE feature map ``(B, H/s, W/s, C)`` of stride
``s = config.feature_stride``.

Training: ``model.compile(optimizer=...)`` (no loss) then ``model.fit(images, targets)`` with
``targets = {"boxes": (B, G, 4) xyxy px padded with -1 rows, "classes": (B, G) int32 0-based
padded with -1}``. The loss is computed in :meth:`FasterRCNN.compute_loss`, Keras 3's
backend-agnostic hook: ``call`` runs backbone, RPN and proposal selection; ``compute_loss``
assigns anchor targets, samples ROIs among the proposals (+ ground truth) and runs the box head
on them. Under JAX, Keras runs ``compute_loss`` inside the differentiated function with the
model's variables mapped (``stateless_compute_loss``), so the head's weights get gradients and
the sampling seed advances; under TensorFlow it runs inside the ``GradientTape``. The four loss
terms are logged as ``rpn_class_loss``, ``rpn_box_loss``, ``head_class_loss``, ``head_box_loss``.

Inference: :meth:`FasterRCNN.predict_detections` -> boxes, scores, classes, num_detections.

Reference:
    Ren, He, Girshick, Sun, "Faster R-CNN: Towards Real-Time Object Detection with Region
    Proposal Networks", NeurIPS 2015 (approximate joint training, Sec. 3.2).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

import keras
import numpy as np
from keras import ops

from microrepro.common.detection.anchors import generate_anchors, num_anchors_per_location
from microrepro.common.detection.heads import BoxHead, decode_detections
from microrepro.common.detection.losses import head_losses, rpn_losses
from microrepro.common.detection.rpn import ProposalLayer, RPNHead
from microrepro.common.detection.targets import head_targets, rpn_targets
from microrepro.common.errors import ConfigError

DETECTION_KEYS = ("boxes", "scores", "classes", "num_detections")


class TwoStageMixin:
    """What every two-stage detector here shares, written once: the target check, the second stage
    at inference, the second-stage (Fast R-CNN head) loss, the logged loss total and
    ``predict_detections``. :class:`FasterRCNN` and the MITOS-RCNN cascade use it; a model supplies
    ``box_head``, ``image_size``, ``seed_generator`` and ``loss_trackers``.
    """

    def _check_targets(self, y, sample_weight) -> tuple:
        """``(gt_boxes float32, gt_classes int32)`` of ``y``, or a ValueError naming the model."""
        name = type(self).__name__
        if not isinstance(y, dict) or "boxes" not in y or "classes" not in y:
            raise ValueError(f"{name} targets must be a dict with 'boxes' (B, G, 4) and 'classes' (B, G)")
        if sample_weight is not None:
            raise ValueError(f"{name} does not use sample_weight; pad the boxes instead")
        return ops.cast(y["boxes"], "float32"), ops.cast(y["classes"], "int32")

    def _second_stage(self, outputs: dict, features, proposals: dict, box_weights, score_threshold: float,
                      nms_iou: float, max_detections: int) -> dict:
        """Add the box head's ``class_logits`` / ``box_deltas`` on ``proposals`` and the decoded
        detections (``DETECTION_KEYS``) to ``outputs``."""
        class_logits, box_deltas = self.box_head(features, proposals["boxes"])
        outputs["class_logits"], outputs["box_deltas"] = class_logits, box_deltas
        outputs.update(decode_detections(proposals["boxes"], class_logits, box_deltas, self.image_size,
                                         proposals["valid"], box_weights, score_threshold, nms_iou, max_detections))
        return outputs

    def _second_stage_loss(self, features, proposals, proposal_valid, gt_boxes, gt_classes, *target_args,
                           beta: float = 1.0) -> tuple:
        """(class loss, box loss) of the box head on ROIs sampled by ``head_targets`` (its
        arguments after ``proposal_valid`` are ``target_args``)."""
        head = head_targets(proposals, gt_boxes, gt_classes, proposal_valid, *target_args, seed=self.seed_generator)
        class_logits, box_deltas = self.box_head(features, head["rois"])
        return head_losses(class_logits, box_deltas, head["classes"], head["box_targets"], head["weights"], beta)

    def _total_loss(self, terms: dict, weights: dict):
        """Log every term, then their weighted sum (in ``terms``' order) plus regularisation losses."""
        for name, value in terms.items():
            self.loss_trackers[name].update_state(value)
        total = sum(weights.get(name, 1.0) * value for name, value in terms.items())
        if self.losses:
            total = total + ops.sum(ops.stack([ops.cast(v, "float32") for v in self.losses]))
        return total

    def predict_detections(self, images, batch_size: int = 8) -> dict[str, np.ndarray]:
        """Detections for a stack of images (compiled by ``model.predict``).

        Args:
            images: ``(N, H, W, C)`` float32 in the training range, N >= 1, H, W = the input size.
            batch_size: images per forward pass.

        Returns:
            numpy dict ``boxes`` ``(N, K, 4)`` xyxy px (-1 rows unused), ``scores`` ``(N, K)``,
            ``classes`` ``(N, K)`` int32 0-based (-1 unused), ``num_detections`` ``(N,)``; with
            K = the model's maximum number of detections, valid rows first and sorted by score.
        """
        images = np.asarray(images, np.float32)
        if images.ndim != 4 or tuple(images.shape[1:3]) != self.image_size:
            raise ValueError(f"images must be (N, {self.image_size[0]}, {self.image_size[1]}, C), got {images.shape}")
        outputs = self.predict(images, batch_size=batch_size, verbose=0)
        return {key: np.asarray(outputs[key]) for key in DETECTION_KEYS}


@dataclass
class FasterRCNNConfig:
    """Every knob of :class:`FasterRCNN`; defaults are the Faster R-CNN paper's (VGG-16).

    Boxes and sizes are in input-image pixels. Ratios are height / width.
    """

    num_classes: int = 1
    feature_stride: int = 16
    # Anchors (Sec. 3.1.1: 3 scales x 3 ratios).
    anchor_sizes: tuple[float, ...] = (128.0, 256.0, 512.0)
    anchor_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    anchor_offset: float = 0.5
    # RPN (Sec. 3.1.2 / 3.1.3 / 3.3).
    rpn_conv_channels: int = 512
    rpn_positive_iou: float = 0.7
    rpn_negative_iou: float = 0.3
    rpn_batch_size_per_image: int = 256
    rpn_positive_fraction: float = 0.5
    rpn_allowed_border: float | None = None  # None keeps all anchors (TF OD API); 0 = the paper's rule
    rpn_pre_nms_top_k_train: int = 12000
    rpn_post_nms_top_k_train: int = 2000
    rpn_pre_nms_top_k_test: int = 6000
    rpn_post_nms_top_k_test: int = 300
    rpn_nms_iou: float = 0.7
    rpn_min_size: float = 0.0
    rpn_smooth_l1_beta: float = 1.0 / 9.0
    # Box head (Fast R-CNN).
    roi_op: Literal["align", "align_max", "pool"] = "align"
    roi_size: int = 7
    roi_sampling_ratio: int = 2
    head_fc_units: tuple[int, ...] = (1024, 1024)
    head_class_agnostic: bool = False
    head_batch_size_per_image: int = 128
    head_positive_fraction: float = 0.25
    head_foreground_iou: float = 0.5
    head_background_iou_low: float = 0.0
    head_box_weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)
    head_smooth_l1_beta: float = 1.0
    add_gt_to_proposals: bool = True
    # Loss weights (lambda of eq. 1; MITOS-RCNN eq. 2 uses head_box_loss_weight = 10).
    rpn_class_loss_weight: float = 1.0
    rpn_box_loss_weight: float = 1.0
    head_class_loss_weight: float = 1.0
    head_box_loss_weight: float = 1.0
    # Inference.
    score_threshold: float = 0.05
    detection_nms_iou: float = 0.5
    max_detections: int = 100
    seed: int | None = None

    def __post_init__(self) -> None:
        positive_ints = (
            "num_classes", "feature_stride", "rpn_conv_channels", "rpn_batch_size_per_image",
            "rpn_pre_nms_top_k_train", "rpn_post_nms_top_k_train", "rpn_pre_nms_top_k_test",
            "rpn_post_nms_top_k_test", "roi_size", "roi_sampling_ratio", "head_batch_size_per_image",
            "max_detections",
        )
        for name in positive_ints:
            if int(getattr(self, name)) <= 0:
                raise ConfigError(f"FasterRCNNConfig.{name} must be a positive integer, got {getattr(self, name)}")
        fractions = (
            "rpn_positive_iou", "rpn_negative_iou", "rpn_positive_fraction", "rpn_nms_iou",
            "head_positive_fraction", "head_foreground_iou", "head_background_iou_low", "detection_nms_iou",
        )
        for name in fractions:
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                raise ConfigError(f"FasterRCNNConfig.{name} must be in [0, 1], got {getattr(self, name)}")
        if self.rpn_negative_iou > self.rpn_positive_iou:
            raise ConfigError(
                f"FasterRCNNConfig.rpn_negative_iou ({self.rpn_negative_iou}) exceeds "
                f"rpn_positive_iou ({self.rpn_positive_iou})"
            )
        if self.head_background_iou_low > self.head_foreground_iou:
            raise ConfigError("FasterRCNNConfig.head_background_iou_low exceeds head_foreground_iou")
        for name in ("anchor_sizes", "anchor_ratios"):
            values = tuple(getattr(self, name))
            if not values or min(values) <= 0:
                raise ConfigError(f"FasterRCNNConfig.{name} must be a non-empty list of positive numbers, got {values}")
        if self.roi_op not in ("align", "align_max", "pool"):
            raise ConfigError(f"FasterRCNNConfig.roi_op must be align, align_max or pool, got {self.roi_op!r}")
        if len(self.head_box_weights) != 4 or min(self.head_box_weights) <= 0:
            raise ConfigError(
                f"FasterRCNNConfig.head_box_weights must be 4 positive numbers, got {self.head_box_weights}"
            )
        self.anchor_sizes = tuple(float(v) for v in self.anchor_sizes)
        self.anchor_ratios = tuple(float(v) for v in self.anchor_ratios)
        self.head_fc_units = tuple(int(v) for v in self.head_fc_units)
        self.head_box_weights = tuple(float(v) for v in self.head_box_weights)


@keras.saving.register_keras_serializable(package="microrepro")
class FasterRCNN(TwoStageMixin, keras.Model):
    """Two-stage detector: backbone -> RPN -> proposals -> ROI features -> box head.

    Args:
        backbone: ``keras.Model`` with a fixed input ``(None, H, W, C)`` and one output
            ``(None, Hf, Wf, Cf)`` where ``Hf = ceil(H / stride)`` or ``floor(H / stride)``.
        config: :class:`FasterRCNNConfig`.

    Call:
        ``images`` ``(B, H, W, C)`` float -> dict: ``features``, ``rpn_logits`` ``(B, A)``,
        ``rpn_deltas`` ``(B, A, 4)``, ``proposals`` ``(B, K, 4)`` xyxy px, ``proposal_scores``,
        ``proposal_valid``; with ``training=False`` also ``class_logits``, ``box_deltas`` and the
        decoded ``boxes``/``scores``/``classes``/``num_detections`` (see ``decode_detections``).
    """

    def __init__(self, backbone: keras.Model, config: FasterRCNNConfig | None = None, **kwargs):
        super().__init__(**kwargs)
        config = config or FasterRCNNConfig()
        self.config = config
        self.backbone = backbone
        input_shape = tuple(backbone.input_shape)
        output_shape = backbone.output_shape
        if isinstance(output_shape, list) or len(output_shape) != 4:
            raise ConfigError(f"the backbone must have one (B, H, W, C) output, got {output_shape}")
        if len(input_shape) != 4 or input_shape[1] is None or input_shape[2] is None:
            raise ConfigError(f"the backbone needs a fixed input size (None, H, W, C), got {input_shape}")
        height, width = int(input_shape[1]), int(input_shape[2])
        feature_h, feature_w = int(output_shape[1]), int(output_shape[2])
        stride = config.feature_stride
        for size, feature in ((height, feature_h), (width, feature_w)):
            if feature not in (math.ceil(size / stride), size // stride):
                raise ConfigError(
                    f"FasterRCNNConfig.feature_stride={stride} does not fit the backbone: input {height}x{width} "
                    f"gives a {feature_h}x{feature_w} feature map"
                )
        self.image_size = (height, width)
        self.feature_size = (feature_h, feature_w)
        anchors = generate_anchors(
            feature_h, feature_w, stride, config.anchor_sizes, config.anchor_ratios, config.anchor_offset
        )
        # Static, so kept as numpy constants rather than variables.
        self.anchors = np.asarray(ops.convert_to_numpy(anchors), np.float32)
        self.anchor_valid = None
        if config.rpn_allowed_border is not None:
            b = float(config.rpn_allowed_border)
            a = self.anchors
            self.anchor_valid = (a[:, 0] >= -b) & (a[:, 1] >= -b) & (a[:, 2] <= width + b) & (a[:, 3] <= height + b)
        k = num_anchors_per_location(config.anchor_sizes, config.anchor_ratios)
        self.rpn_head = RPNHead(k, config.rpn_conv_channels, name="rpn_head")
        self.train_proposals = ProposalLayer(
            self.image_size, config.rpn_pre_nms_top_k_train, config.rpn_post_nms_top_k_train,
            config.rpn_nms_iou, config.rpn_min_size, name="train_proposals",
        )
        self.test_proposals = ProposalLayer(
            self.image_size, config.rpn_pre_nms_top_k_test, config.rpn_post_nms_top_k_test,
            config.rpn_nms_iou, config.rpn_min_size, name="test_proposals",
        )
        self.box_head = BoxHead(
            config.num_classes, 1.0 / stride, config.roi_size, config.roi_sampling_ratio, config.roi_op,
            config.head_fc_units, config.head_class_agnostic, name="box_head",
        )
        self.seed_generator = keras.random.SeedGenerator(config.seed, name="sampling_seed")
        self.loss_trackers = {
            name: keras.metrics.Mean(name=name)
            for name in ("rpn_class_loss", "rpn_box_loss", "head_class_loss", "head_box_loss")
        }
        self.build(input_shape)

    def build(self, input_shape):
        feature_shape = tuple(self.backbone.output_shape)
        self.rpn_head.build(feature_shape)
        self.box_head.build(feature_shape)
        self.built = True

    # -------------------------------------------------------------------------------- forward
    def call(self, images, training=False):
        features = self.backbone(images, training=training)
        logits, deltas = self.rpn_head(features)
        anchors = ops.convert_to_tensor(self.anchors)
        proposals = (self.train_proposals if training else self.test_proposals)(anchors, logits, deltas)
        outputs = {
            "features": features,
            "rpn_logits": logits,
            "rpn_deltas": deltas,
            "proposals": proposals["boxes"],
            "proposal_scores": proposals["scores"],
            "proposal_valid": proposals["valid"],
        }
        if not training:
            c = self.config
            self._second_stage(outputs, features, proposals, c.head_box_weights, c.score_threshold,
                               c.detection_nms_iou, c.max_detections)
        return outputs

    # ----------------------------------------------------------------------------------- loss
    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The four Faster R-CNN loss terms (weighted by the config) plus regularisation losses.

        ``y`` = ``{"boxes": (B, G, 4) xyxy px, -1 padded; "classes": (B, G) int, -1 padded}``.
        ``sample_weight`` is not supported (detection losses are normalised by sampled counts).
        """
        c = self.config
        gt_boxes, gt_classes = self._check_targets(y, sample_weight)
        anchor_valid = None if self.anchor_valid is None else ops.convert_to_tensor(self.anchor_valid)
        rpn = rpn_targets(
            ops.convert_to_tensor(self.anchors), gt_boxes, c.rpn_positive_iou, c.rpn_negative_iou,
            c.rpn_batch_size_per_image, c.rpn_positive_fraction, anchor_valid=anchor_valid, seed=self.seed_generator,
        )
        terms = {}
        terms["rpn_class_loss"], terms["rpn_box_loss"] = rpn_losses(
            y_pred["rpn_logits"], y_pred["rpn_deltas"], rpn["labels"], rpn["box_targets"], c.rpn_smooth_l1_beta
        )
        terms["head_class_loss"], terms["head_box_loss"] = self._second_stage_loss(
            y_pred["features"], y_pred["proposals"], y_pred["proposal_valid"], gt_boxes, gt_classes,
            c.head_batch_size_per_image, c.head_positive_fraction, c.head_foreground_iou, c.head_background_iou_low,
            c.head_box_weights, c.add_gt_to_proposals, beta=c.head_smooth_l1_beta,
        )
        return self._total_loss(terms, {
            "rpn_class_loss": c.rpn_class_loss_weight, "rpn_box_loss": c.rpn_box_loss_weight,
            "head_class_loss": c.head_class_loss_weight, "head_box_loss": c.head_box_loss_weight,
        })

    def get_config(self):
        return {
            "name": self.name,
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "config": dataclasses.asdict(self.config),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        backbone = keras.saving.deserialize_keras_object(config.pop("backbone"))
        return cls(backbone, FasterRCNNConfig(**config.pop("config")), **config)
