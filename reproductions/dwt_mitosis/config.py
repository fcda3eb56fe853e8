"""Typed configuration of the dwt_mitosis reproduction (defaults = the paper as written).

``config.yaml`` overrides these; see it for the paper section of every value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from microrepro.common import config as cfgtypes  # range types: cfgtypes.PositiveInt, cfgtypes.Probability...

# Table 2 rows: boxes generated from the DWT U-Net / the plain U-Net segmentation, the manual boxes (synthetic
# only) and the fixed squares of the Sec. 2 baseline.
LabelSource = Literal["dwt", "unet", "manual", "square"]


@dataclass
class SegNetConfig:
    """Phase-1 networks (Sec. 3.1, Fig. 2) and the U-Net of the ablation (Sec. 4.5)."""

    widths: tuple[cfgtypes.PositiveInt, ...] = (160, 256, 256)  # MWCNN's widths: Fig. 2 is not legible in our text
    convs_per_block: cfgtypes.PositiveInt = 4  # Sec. 3.1: "each CNN block is a 4-layered FCN"
    skip: Literal["concat", "add"] = "concat"
    unet_convs_per_block: cfgtypes.PositiveInt = 2  # Ronneberger et al. 2015
    # Keras convention; = PyTorch's default momentum 0.1 (the authors used PyTorch)
    bn_momentum: cfgtypes.FractionOrZero = 0.9
    threshold: cfgtypes.Probability = 0.5  # softmax probability of "mitosis" that makes a pixel foreground
    min_region_px: cfgtypes.NonNegInt = 0  # segmented regions smaller than this give no box (0 = keep all)
    predict_tile: cfgtypes.PositiveInt = 512  # fields larger than this are segmented in overlapping tiles (ours)
    predict_overlap: cfgtypes.NonNegInt = 64  # tile overlap in px, linear blending (common/tiling.py)


@dataclass
class SegTrainConfig:
    """Sec. 4.3: Adam, batch 8, 100 epochs, lr 1e-3 decayed to 1e-6."""

    epochs: cfgtypes.PositiveInt = 100
    batch_size: cfgtypes.PositiveInt = 8
    lr: cfgtypes.PositiveFloat = 1.0e-3
    final_lr: cfgtypes.PositiveFloat = 1.0e-6
    steps_per_epoch: cfgtypes.PositiveInt | None = None  # None: one pass over the training fields
    positive_weight: cfgtypes.PositiveFloat = 1.0  # 1.0 = plain cross-entropy (eq. 1)
    crop_size: cfgtypes.PositiveInt | None = None  # random crops of the fields (None: whole fields)
    augment: bool = True  # flips / 90° turns (mitoses have no orientation)
    # 0: every epoch is trained (Sec. 4.3: 100 epochs). N > 0: stop once the validation loss has not
    # improved for N epochs; the best-validation weights are the ones used. With `epochs` as a cap
    # shared by both networks, DWT-net and U-Net get equal budgets and each stops at its own plateau.
    early_stopping_patience: cfgtypes.NonNegInt = 0


@dataclass
class SyntheticConfig:
    """Synthetic H&E fields (datasets/synthetic/he_fields.py) with exact mitosis masks."""

    field_size: cfgtypes.PositiveInt = 512
    scanner: Literal["aperio", "hamamatsu"] = "aperio"
    mitoses_per_mm2: cfgtypes.NonNegFloat = 600.0  # enriched (generator default 100) so every field teaches
    seg_train_fields: cfgtypes.PositiveInt = 200  # phase 1 (stands in for MITOS 2012)
    seg_val_fields: cfgtypes.PositiveInt = 20
    det_train_fields: cfgtypes.PositiveInt = 200  # phase 2, weak labels only (stands in for TUPAC16)
    det_val_fields: cfgtypes.PositiveInt = 40  # score threshold of phase 2
    test_fields: cfgtypes.PositiveInt = 100
    seed: cfgtypes.NonNegInt = 2021


@dataclass
class AmibrConfig:
    """Real-appearance detection set from AMi-Br crops (datasets/amibr.py), split by slide."""

    enabled: bool = True
    grid: tuple[cfgtypes.PositiveInt, cfgtypes.PositiveInt] = (2, 2)  # crops per mosaic: 2x2 of 128 px -> 256x256
    test_fraction: cfgtypes.Fraction = 0.2
    val_fraction: cfgtypes.Fraction = 0.15
    max_train_mosaics: cfgtypes.PositiveInt | None = None  # None: all that the split allows
    max_val_mosaics: cfgtypes.PositiveInt | None = None
    max_test_mosaics: cfgtypes.PositiveInt | None = None
    seed: cfgtypes.NonNegInt = 0


@dataclass
class RCNNConfig:
    """Phase 2 (Sec. 3.2): R-CNN (Girshick et al. 2014) on the generated boxes."""

    # selective search (R-CNN Sec. 2.1 "fast mode")
    ss_mode: Literal["fast", "quality", "single"] = "fast"
    max_proposals: cfgtypes.PositiveInt = 2000  # R-CNN: ~2000 per image
    min_size_um: cfgtypes.NonNegFloat = 3.0  # mitoses at x40 are ~4-20 µm; smaller/larger proposals are dropped
    max_size_um: cfgtypes.PositiveFloat = 25.0
    max_aspect: Annotated[float, cfgtypes.Range(min=1)] = 4.0  # longest / shortest side, so >= 1
    # region warping (R-CNN Sec. 2.1 / App. A: 227x227 with 16 px context)
    warp_size: cfgtypes.PositiveInt = 64
    warp_padding: cfgtypes.NonNegInt = 4  # context px in the warped frame (16 / 227 of R-CNN, scaled)
    pretrained: Literal["none"] = "none"  # no ImageNet weights reachable: a small CNN trained here
    cnn_widths: tuple[cfgtypes.PositiveInt, ...] = (32, 64, 128)
    feature_dim: cfgtypes.PositiveInt = 256
    # fine-tuning (Sec. 3.2: mini-batches of 32 positives + 96 negatives, R-CNN Sec. 2.3)
    batch_positives: cfgtypes.PositiveInt = 32
    batch_negatives: cfgtypes.PositiveInt = 96
    positive_iou: cfgtypes.Probability = 0.5
    negative_iou: cfgtypes.Probability = 0.3  # R-CNN SVM negatives: IoU < 0.3 with every positive
    cnn_epochs: cfgtypes.PositiveInt = 20
    cnn_steps_per_epoch: cfgtypes.PositiveInt = 100
    cnn_lr: cfgtypes.PositiveFloat = 1.0e-3  # Sec. 4.3: Adam, 1e-3 decayed to 1e-6
    cnn_final_lr: cfgtypes.PositiveFloat = 1.0e-6
    # linear SVM (R-CNN Sec. 2.3: positives = ground-truth boxes, negatives IoU < 0.3)
    svm_c: cfgtypes.PositiveFloat = 1.0e-3
    svm_max_negatives: cfgtypes.PositiveInt = 20000
    svm_positive_iou: cfgtypes.Probability = 1.0  # 1.0 = ground-truth boxes only (R-CNN); lower adds proposals
    # class-specific box regression (R-CNN App. C: ridge, proposals with IoU >= 0.6)
    bbox_regression: bool = True
    bbox_iou: cfgtypes.Probability = 0.6
    ridge_alpha: cfgtypes.NonNegFloat = 10.0  # R-CNN: 1000 on 9216-D pool5 features; ours on feature_dim-D
    # detection
    nms_iou: cfgtypes.Probability = 0.3  # R-CNN Sec. 2.2: greedy NMS at IoU 0.3
    # a linear-SVM score, not a probability: any real number (None: best F1 on the validation images)
    score_threshold: float | None = None


@dataclass
class FasterPhase2Config:
    """The same phase 2 with common/detection's Faster R-CNN (Sec. 3.2: "any detector")."""

    enabled: bool = True
    backbone_widths: tuple[cfgtypes.PositiveInt, ...] = (32, 64, 128)  # three stride-2 blocks: stride 8
    anchor_sizes: tuple[cfgtypes.PositiveFloat, ...] = (24.0, 40.0, 64.0)
    epochs: cfgtypes.PositiveInt = 20
    steps_per_epoch: cfgtypes.PositiveInt | None = None
    batch_size: cfgtypes.PositiveInt = 8
    lr: cfgtypes.PositiveFloat = 1.0e-3
    final_lr: cfgtypes.PositiveFloat = 1.0e-6
    max_boxes: cfgtypes.PositiveInt = 16


@dataclass
class EvalConfig:
    match_um: cfgtypes.PositiveFloat = 8.0  # Sec. 4.2: ICPR 2014 criterion, 8 µm from the box centre
    timing_repeats: cfgtypes.PositiveInt = 5
    figure_examples: cfgtypes.NonNegInt = 8


@cfgtypes.sections
class DwtMitosisConfig:
    name: str = "rcnn_dwtunet_amibr"
    seg: SegNetConfig
    seg_train: SegTrainConfig
    synthetic: SyntheticConfig
    amibr: AmibrConfig
    rcnn: RCNNConfig
    faster: FasterPhase2Config
    eval: EvalConfig
    runtime: cfgtypes.RuntimeConfig  # strategy, precision
    label_sources: tuple[LabelSource, ...] = ("dwt", "unet", "manual")  # Table 2 rows (manual: synthetic only)
    square_size_um: cfgtypes.PositiveFloat = 10.0  # side of the "square" label source (Sec. 2 baseline)
    pixel_size_um: cfgtypes.PositiveFloat | None = None  # your own data (own_data.py): µm per px without meta.yaml
