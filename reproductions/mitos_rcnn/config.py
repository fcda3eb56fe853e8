"""Typed configuration of the MITOS-RCNN reproduction (defaults = the paper as written).

``config.yaml`` only overrides these values; its presets ("paper", "released") and schedules
("smoke", "short", "paper") are resolved by ``microrepro.common.config.resolve``.

Sizes: ``model.input_size`` and the anchor sizes are in NETWORK-INPUT pixels; ``data.box_um`` and
the matching radius are in micrometres (converted with each image's pixel size); subsections are
cut from a field at ``data.scale`` input px per source px, i.e. ``input_size / scale`` source px.

Reference: Rao, "MITOS-RCNN: Mitotic Figure Detection in Breast Cancer Histopathology Images
Using Region Based Convolutional Neural Networks", Sec. IV.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal

from microrepro.common.config import (
    Fraction,
    NonNegFloat,
    NonNegInt,
    PositiveFloat,
    PositiveInt,
    Probability,
    Range,
    RuntimeConfig,
    sections,
)

ModelKey = Literal["faster_rcnn_conv5", "faster_rcnn_conv4", "mitos_rcnn"]  # model.MODEL_KEYS, the rows of Table II
UnitFloat = Annotated[float, Range(0, 1)]  # [0, 1] for what is not a probability (momentum)


@dataclass
class BackboneConfig:
    """VGG-16 (Sec. IV-B); keras.applications layer names so ImageNet weights load by name."""

    pretrained: str = "imagenet"  # none | imagenet | <path to a .weights.h5 / .h5 of VGG16>
    # 1.0 = VGG-16 (64..512 filters); < 1 only for CPU schedules
    width_multiplier: Annotated[float, Range(0, 1, min_open=True)] = 1.0
    freeze_blocks: Annotated[int, Range(0, 5)] = 0  # VGG blocks kept frozen, of 5 (py-faster-rcnn freezes conv1-2: 2)


@dataclass
class RPNConfig:
    """One region proposal network (Faster R-CNN Sec. 3.1; MITOS-RCNN Sec. IV-B.2)."""

    anchor_sizes: list[PositiveFloat] = field(default_factory=lambda: [32.0, 64.0, 128.0])
    anchor_ratios: list[PositiveFloat] = field(default_factory=lambda: [0.5, 1.0, 2.0])
    conv_channels: PositiveInt = 512  # Faster R-CNN VGG-16: 512
    positive_iou: Probability = 0.7
    negative_iou: Probability = 0.3
    batch_size_per_image: PositiveInt = 256
    positive_fraction: Probability = 0.5
    pre_nms_top_k_train: PositiveInt = 15000  # Sec. IV-B.2: RPN_1 "generates around 15k proposals"
    post_nms_top_k_train: PositiveInt = 2000
    pre_nms_top_k_test: PositiveInt = 6000
    post_nms_top_k_test: PositiveInt = 300
    nms_iou: Probability = 0.7  # Sec. IV-B.2: NMS 0.7 (both RPNs)


@sections
class ModelConfig:
    """The three detectors of Table II and their shared parts."""

    input_size: Annotated[int, Range(min=32)] = 299  # Sec. IV-A: "only 299x299 px images as input"; >= 32 for VGG
    num_classes: PositiveInt = 2  # Sec. IV-B: "mitotic figure" (0) and "not mitotic figure" (1), + background
    backbone: BackboneConfig
    rpn1: RPNConfig  # RPN_1 on conv4_3 (and the baselines' RPN)
    rpn2: RPNConfig = field(
        default_factory=lambda: RPNConfig(anchor_sizes=[64.0], anchor_ratios=[1.0], conv_channels=256)
    )  # RPN_2 on conv3+4: "sliding window ... scale of 64^2 px and a 1:1 aspect ratio"
    fused_channels: PositiveInt = 256  # Sec. IV-B.2: conv3+4 "reduced ... to a dimension of 256x1x1"
    l2_norm: Literal["learnable", "plain"] = "learnable"  # learnable (ParseNet/SSD per-channel scale) | plain
    l2_scale_init: PositiveFloat = 10.0  # ParseNet/SSD initial scale of the L2-normalised maps
    roi_op: Literal["pool", "align", "align_max"] = "pool"  # Sec. IV-B.2 "ROI pooling layer" (Fast R-CNN max pooling)
    roi_size: PositiveInt = 7  # Fast R-CNN VGG-16: 7x7
    roi_sampling_ratio: PositiveInt = 4  # cells read per bin side (exact pooling up to 21-cell ROIs)
    head_fc_units: list[PositiveInt] = field(default_factory=lambda: [4096, 4096])  # Fast R-CNN fc6/fc7
    head_batch_size_per_image: PositiveInt = 128  # Fast R-CNN Sec. 2.3
    head_positive_fraction: Probability = 0.25
    head_foreground_iou: Probability = 0.5
    lambda_box: NonNegFloat = 10.0  # eq. (2): lambda = 10
    # eq. (2) N_reg = number of anchor locations | sampled
    box_loss_normaliser: Literal["anchor_locations", "sampled"] = "anchor_locations"
    score_threshold: Probability = 0.05  # detections kept for the F1 threshold sweep
    detection_nms_iou: Probability = 0.3  # per-class NMS of the final boxes (Faster R-CNN test: 0.3)
    max_detections: PositiveInt = 50
    init_std: NonNegFloat = 0.01  # Sec. IV-B.4: new layers N(0, 0.01); 0 = He normal (CPU schedules from scratch)


@dataclass
class DataConfig:
    """Subsections, boxes and augmentation (Sec. IV-A), and the data sets we build."""

    scale: PositiveFloat = 0.777  # input px per source px: a 1539x1376 HPF in 4x4 subsections of ~385 px -> 299
    box_um: PositiveFloat = 10.0  # MITOS-BOXES: box side around each centroid (mitoses ~8-10 um; 40 px at 0.25 um/px)
    rotations: bool = True  # Sec. IV-A: 90, 180, 270 degrees
    macenko: bool = True  # Sec. IV-A: Macenko-normalised copies, originals kept
    tiles_per_field: PositiveInt = 16  # Sec. IV-A: 16 subsections per HPF (training crops per field)
    test_fraction: Fraction = 0.2  # share of AMi-Br slides held out for the real_mosaic split
    mosaic_grid: list[PositiveInt] = field(default_factory=lambda: [4, 4])  # 4x4 crops of 128 px = 512x512 fields
    max_train_fields: NonNegInt = 0  # 0 = all mosaics of the training slides
    max_test_fields: NonNegInt = 0  # 0 = all mosaics of the test slides
    tune_fields: NonNegInt = 8  # training-slide fields on which the score threshold is chosen
    synthetic_train_fields: PositiveInt = 64  # used when no real data is found (and for the synthetic rows)
    synthetic_test_fields: PositiveInt = 8  # per scanner profile (aperio + hamamatsu)
    synthetic_test_mitoses_per_mm2: NonNegFloat = 400.0  # 4x the generator's default: enough figures for size terciles
    synthetic_field_size: PositiveInt = 512
    synthetic_seed: NonNegInt = 2018
    train_on_synthetic_too: bool = False  # mix synthetic fields into the real training set
    tile_overlap_um: NonNegFloat = 12.0  # overlap of prediction tiles (> one mitosis)
    pixel_size_um: PositiveFloat | None = None  # your own data (own_data.py): µm per px when it has no meta.yaml


@dataclass
class TrainConfig:
    """Sec. IV-B.4: SGD, momentum 0.9, weight decay 5e-4, batch 10, 60k it @1e-3 + 20k @1e-4."""

    optimizer: Literal["sgd", "adam"] = "sgd"  # sgd (paper) | adam (CPU schedules from scratch)
    lr: PositiveFloat = 1.0e-3
    momentum: UnitFloat = 0.9
    weight_decay: NonNegFloat = 5.0e-4
    batch_size: PositiveInt = 10
    steps: PositiveInt = 80000
    lr_drop_step: NonNegInt = 60000  # lr x 0.1 from here on
    lr_drop_factor: Annotated[float, Range(0, 1, min_open=True)] = 0.1
    steps_per_epoch: PositiveInt = 1000  # steps between checkpoints / log rows
    max_minutes: NonNegFloat = 0.0  # 0 = no wall-clock cap (per model)
    clipnorm: NonNegFloat = 0.0  # 0 = none


@dataclass
class EvalConfig:
    """Matching (Sec. V-A) and timing (Sec. V-B.3)."""

    match_um: PositiveFloat = 8.0  # TP: detection centre within 8 um of a ground-truth centroid
    thresholds: list[Probability] = field(
        default_factory=lambda: [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95]
    )
    timing_field: list[PositiveInt] = field(default_factory=lambda: [1376, 1539])  # Aperio HPF (Table I), H x W
    timing_repeats: PositiveInt = 1
    n_figure_fields: NonNegInt = 4


@sections
class MitosRCNNConfig:
    """Top level; ``models`` lists the rows of Table II to train."""

    name: str = "mitos_rcnn_vgg16_amibr"
    models: list[ModelKey] = field(default_factory=lambda: ["faster_rcnn_conv5", "faster_rcnn_conv4", "mitos_rcnn"])
    model: ModelConfig
    data: DataConfig
    train: TrainConfig
    eval: EvalConfig
    runtime: RuntimeConfig  # strategy, precision (every model)
