"""Typed configuration of the spines reproduction (defaults = the paper as written, full size).

``config.yaml`` only overrides these values; its presets ("paper", "released") and schedules
("smoke", "short", "paper") are resolved by ``microrepro.common.config.resolve``.

Reference: Aroui, "Deep Learning for Dendritic Spines Detection", Sec. 2-5.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal

from microrepro.common import config as cfgtypes  # range types: cfgtypes.PositiveInt, cfgtypes.Probability...

# train.make_optimizer: Adam (paper), or SGD with momentum (the released OD API / darknet solvers)
Optimizer = Literal["adam", "momentum"]
# models.THRESHOLD_RULES: fixed (the configured score threshold) | train_f1 (max F1 on training images)
ThresholdRule = Literal["fixed", "train_f1"]
# inception_v2.ENDPOINTS, spelt out for the type (tests/unit/test_config_checks.py keeps the two equal)
InceptionEndpoint = Literal[
    "Mixed_3b", "Mixed_3c", "Mixed_4a", "Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_5a", "Mixed_5b",
    "Mixed_5c",
]
UnitFloat = Annotated[float, cfgtypes.Range(0, 1)]  # [0, 1] for what is not a probability (momentum, contrast)


@dataclass
class DataConfig:
    """Which images are used and how a split is carved (Sec. 2)."""

    val_fraction: cfgtypes.Fraction = 0.1  # Sec. 2: 90/10, stratified by spines per image
    # With no test split, a second stratified carve of train (always seed `holdout_seed`, so every run
    # seed reports on the same images) is what the tables report; `val` (seeded by the run) is where
    # choices are made and is never reported (README "Splits").
    holdout_fraction: cfgtypes.Fraction = 0.1
    holdout_seed: cfgtypes.NonNegInt = 0
    # reported: the test split (else the holdout) -> results/runs/spines/; val: a model-selection trial,
    # evaluated on the validation split only -> results/runs/spines/choices/ (never in the tables)
    evaluate_on: Literal["reported", "val"] = "reported"
    box_size: cfgtypes.PositiveInt = 15  # Sec. 2: a 15x15 px square around each centre is the box
    max_train_images: cfgtypes.NonNegInt = 0  # 0 = all; smoke/learns schedules use a handful
    max_eval_images: cfgtypes.NonNegInt = 0  # 0 = all images of the evaluation split
    max_boxes: cfgtypes.PositiveInt = 16  # padding length of the box tensor (the data has at most 8)
    synthetic_images: cfgtypes.PositiveInt = 200  # used only when no real data is found


@dataclass
class MatchConfig:
    """How a detection counts as a true positive (Sec. 2, eq. 1)."""

    iou_threshold: cfgtypes.Probability = 0.4  # Sec. 3.1 "Thresholding at 0.4 IOU"
    max_dist: cfgtypes.NonNegFloat = 6.0  # Sec. 2 "golden distance of 6 pixels"
    map_iou_threshold: cfgtypes.Probability = 0.5  # Table 1 "mAP@0.5"
    released_max_dist: cfgtypes.NonNegFloat = 6.0  # released eval: top-left corners within 6 px, no one-to-one
    released_score_threshold: cfgtypes.Probability = 0.6  # released eval: score threshold 0.60
    threshold_images: cfgtypes.NonNegInt = 300  # threshold_rule train_f1: training images it is chosen on (0 = all)
    # threshold_rule train_f1: grid 0.05, 0.075, ..., 0.95 (common.thresholds.grid; a step in (0, 0.9])
    threshold_step: Annotated[float, cfgtypes.Range(0, 0.9, min_open=True)] = 0.025


@dataclass
class TrainConfig:
    """One model's optimisation schedule."""

    optimizer: Optimizer = "adam"
    lr: cfgtypes.PositiveFloat = 1e-3
    momentum: UnitFloat = 0.9
    weight_decay: cfgtypes.NonNegFloat = 0.0
    batch_size: cfgtypes.PositiveInt = 1
    steps: cfgtypes.PositiveInt = 9000  # total optimisation steps
    steps_per_epoch: cfgtypes.PositiveInt = 100  # steps between checkpoints / log rows
    max_minutes: cfgtypes.NonNegFloat = 0.0  # 0 = no wall-clock cap; short CPU schedules stop at this budget
    # constant (the papers: Sec. 3.1 / 3.2 give one learning rate) | cosine: decays to 0 over whichever ends
    # first, steps or max_minutes (common.training.BudgetCosine), so a time-budgeted run ends annealed.
    lr_schedule: Literal["constant", "cosine"] = "constant"
    # XLA for the training step. False = Keras' own choice ("auto": XLA on a GPU or under JAX, not on a
    # TensorFlow CPU); True forces it (results/benchmarks.md measures what it pays on a CPU, README).
    xla: bool = False


@dataclass
class YoloConfig:
    """tiny-YOLOv2 (Sec. 3.2, Fig. 6) and the released darknet tiny-yolo-voc settings."""

    enabled: bool = True
    input_size: cfgtypes.PositiveInt = 448  # released: 448 -> 14x14 grid (stride 32)
    multiscale_sizes: list[cfgtypes.PositiveInt] = field(
        default_factory=lambda: [320, 352, 384, 416, 448, 480, 512, 544, 576]
    )
    width_multiplier: cfgtypes.PositiveFloat = 1.0  # 1.0 = darknet tiny-yolo-voc (16...1024 filters)
    anchors: list[list[cfgtypes.PositiveFloat]] = field(
        default_factory=lambda: [[0.738768, 0.874946], [2.42204, 2.65704], [4.30971, 7.04493]]
    )  # released cfg, grid units (w, h)
    object_scale: cfgtypes.NonNegFloat = 5.0  # released cfg
    noobject_scale: cfgtypes.NonNegFloat = 1.0  # released cfg
    coord_scale: cfgtypes.NonNegFloat = 1.0  # darknet default
    ignore_thresh: cfgtypes.Probability = 0.6  # darknet region layer "thresh"
    rescore: bool = True  # darknet: objectness target is the IoU of the responsible prediction
    flip_horizontal: bool = True  # Sec. 2 augmentation
    rot90: bool = True  # Sec. 2 augmentation (+90 rotation)
    brightness: cfgtypes.NonNegFloat = 0.1  # Sec. 2 "slight brightness contrast variation"
    contrast: UnitFloat = 0.1
    # darknet detector default; objectness is trained towards the IoU (rescore)
    score_threshold: cfgtypes.Probability = 0.24
    # fixed (score_threshold) | train_f1 (max F1 on training images); paper: none
    threshold_rule: ThresholdRule = "fixed"
    nms_iou: cfgtypes.Probability = 0.45  # darknet detector default
    max_detections: cfgtypes.PositiveInt = 50
    pretrained: str = "none"  # none | darknet | <path to .weights.h5>
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(optimizer="adam", lr=1e-3, weight_decay=5e-4, batch_size=32, steps=9000)
    )


@dataclass
class FasterRCNNSpinesConfig:
    """Faster R-CNN with an Inception-V2 feature extractor (Sec. 3.1)."""

    enabled: bool = True
    input_size: cfgtypes.PositiveInt = 448  # Sec. 3.1 "448px by 448px"
    keep_aspect_ratio: bool = False  # released: longer side = 448, zero padding
    width_multiplier: cfgtypes.PositiveFloat = 1.0  # 1.0 = BN-Inception depths; short CPU schedule shrinks it
    # px at 448, see README
    anchor_sizes: list[cfgtypes.PositiveFloat] = field(default_factory=lambda: [24.0, 32.0, 48.0, 64.0])
    anchor_reference_size: cfgtypes.PositiveInt = 448  # anchor_sizes are given for this input; scaled with input_size
    anchor_ratios: list[cfgtypes.PositiveFloat] = field(default_factory=lambda: [1.0])  # Sec. 3.1 one 1:1 ratio
    feature_endpoint: InceptionEndpoint = "Mixed_4e"  # OD API first-stage features (stride 16); "Mixed_3c" = stride 8
    rpn_positive_iou: cfgtypes.Probability = 0.7  # OD API first_stage positive IoU
    proposals: cfgtypes.PositiveInt = 300  # Sec. 3.1
    rpn_nms_iou: cfgtypes.Probability = 0.7  # released first-stage NMS
    nms_iou: cfgtypes.Probability = 0.6  # released second-stage NMS
    max_detections: cfgtypes.PositiveInt = 100  # released
    loc_loss_weight: cfgtypes.NonNegFloat = 1.0  # paper: alpha unspecified; released: 2.0 (both stages)
    rpn_conv_channels: cfgtypes.PositiveInt = 512  # TF OD API first-stage box predictor depth
    rpn_batch_size: cfgtypes.PositiveInt = 256  # TF OD API first_stage_minibatch_size
    head_batch_size: cfgtypes.PositiveInt = 64  # TF OD API second_stage_batch_size (faster_rcnn_inception_v2 configs)
    # see README: an FC head, not Mixed_5
    head_fc_units: list[cfgtypes.PositiveInt] = field(default_factory=lambda: [1024, 1024])
    roi_size: cfgtypes.PositiveInt = 7  # OD API: 14x14 crop then 2x2 max-pool = 7x7
    bn_momentum: cfgtypes.FractionOrZero = 0.997  # slim / OD API batch_norm_decay (backbone BatchNormalization)
    flip_horizontal: bool = True  # Sec. 3.1 "Only horizontal flipping"
    score_threshold: cfgtypes.Probability = 0.5
    # fixed (score_threshold) | train_f1 (max F1 on training images); paper: none
    threshold_rule: ThresholdRule = "fixed"
    pretrained: str = "none"  # none | imagenet | coco | <path to .weights.h5>
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(optimizer="adam", lr=2e-5, batch_size=1, steps=9000)
    )


@dataclass
class SpCnnConfig:
    """SP-CNN (Sec. 5, Tofighi et al. ICIP 2018) as the released notebook set it up."""

    enabled: bool = True
    input_size: cfgtypes.PositiveInt = 256  # released notebook: 256x256 grey /255
    filters: cfgtypes.PositiveInt = 64  # Conv64 5x5 -> 4 x Conv64 3x3 -> Conv1 3x3
    target_square: cfgtypes.PositiveInt = 6  # 6x6 square of ones at each centre
    n_priors: cfgtypes.PositiveInt = 64  # eq. 3: i = 1..64
    prior_size: cfgtypes.PositiveInt = 19  # released notebook: 19x19 shape priors
    # kmeans | random (cut from training-set edges at spine centres)
    prior_selection: Literal["kmeans", "random"] = "kmeans"
    pool_window: cfgtypes.PositiveInt = 5  # g_p: max-pool window p (stride 1)
    output_threshold: cfgtypes.Probability = 0.5  # g_p: threshold on the output before pooling
    reg_weight: cfgtypes.NonNegFloat = 1.0  # weight of R in MSE - R (the paper gives none)
    # d, sigmaColor, sigmaSpace of cv2.bilateralFilter; no range: d <= 0 means "from sigmaSpace"
    bilateral: list[float] = field(default_factory=lambda: [11, 150, 150])
    canny: list[cfgtypes.NonNegFloat] = field(default_factory=lambda: [15, 30])  # thresholds, L2 gradient
    peak_threshold: cfgtypes.Probability = 0.5  # local maxima of the output above this are detections
    peak_min_distance: cfgtypes.PositiveInt = 3
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(optimizer="adam", lr=1e-3, batch_size=8, steps=2000)
    )


@cfgtypes.sections
class SpinesConfig:
    """Top-level config; ``name`` names run folders ``{name}_{preset}_{schedule}_s{seed}``."""

    name: str = "frcnn-yolo-spcnn_inceptionv2-tinyyolo_spines"
    data: DataConfig
    matching: MatchConfig
    yolo: YoloConfig
    faster_rcnn: FasterRCNNSpinesConfig
    sp_cnn: SpCnnConfig
    runtime: cfgtypes.RuntimeConfig  # strategy, precision
    timing_repeats: cfgtypes.PositiveInt = 5  # ms/image: median over this many timed passes after a warm-up
    timing_images: cfgtypes.PositiveInt = 8
    n_figure_images: cfgtypes.NonNegInt = 6
