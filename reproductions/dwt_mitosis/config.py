"""Typed configuration of the dwt_mitosis reproduction (defaults = the paper as written).

``config.yaml`` overrides these; see it for the paper section of every value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class SegNetConfig:
    """Phase-1 networks (Sec. 3.1, Fig. 2) and the U-Net of the ablation (Sec. 4.5)."""

    widths: tuple[int, ...] = (160, 256, 256)  # MWCNN's widths: Fig. 2 is not legible in our text
    convs_per_block: int = 4  # Sec. 3.1: "each CNN block is a 4-layered FCN"
    skip: Literal["concat", "add"] = "concat"
    unet_convs_per_block: int = 2  # Ronneberger et al. 2015
    bn_momentum: float = 0.9  # Keras convention; = PyTorch's default momentum 0.1 (authors used PyTorch)
    threshold: float = 0.5  # softmax probability of "mitosis" that makes a pixel foreground
    min_region_px: int = 0  # segmented regions smaller than this give no box (0 = keep all)
    predict_tile: int = 512  # fields larger than this are segmented in overlapping tiles (ours)
    predict_overlap: int = 64  # tile overlap in px, linear blending (common/tiling.py)


@dataclass
class SegTrainConfig:
    """Sec. 4.3: Adam, batch 8, 100 epochs, lr 1e-3 decayed to 1e-6."""

    epochs: int = 100
    batch_size: int = 8
    lr: float = 1.0e-3
    final_lr: float = 1.0e-6
    steps_per_epoch: int | None = None  # None: one pass over the training fields
    positive_weight: float = 1.0  # 1.0 = plain cross-entropy (eq. 1)
    crop_size: int | None = None  # random crops of the fields (None: whole fields)
    augment: bool = True  # flips / 90° turns (mitoses have no orientation)


@dataclass
class SyntheticConfig:
    """Synthetic H&E fields (datasets/synthetic/he_fields.py) with exact mitosis masks."""

    field_size: int = 512
    scanner: str = "aperio"
    mitoses_per_mm2: float = 600.0  # enriched (generator default 100) so every field teaches
    seg_train_fields: int = 200  # phase 1 (stands in for MITOS 2012)
    seg_val_fields: int = 20
    det_train_fields: int = 200  # phase 2, weak labels only (stands in for TUPAC16)
    det_val_fields: int = 40  # score threshold of phase 2
    test_fields: int = 100
    seed: int = 2021


@dataclass
class AmibrConfig:
    """Real-appearance detection set from AMi-Br crops (datasets/amibr.py), split by slide."""

    enabled: bool = True
    grid: tuple[int, int] = (2, 2)  # crops per mosaic: 2x2 crops of 128 px -> 256x256 fields
    test_fraction: float = 0.2
    val_fraction: float = 0.15
    max_train_mosaics: int | None = None  # None: all that the split allows
    max_val_mosaics: int | None = None
    max_test_mosaics: int | None = None
    seed: int = 0


@dataclass
class RCNNConfig:
    """Phase 2 (Sec. 3.2): R-CNN (Girshick et al. 2014) on the generated boxes."""

    # selective search (R-CNN Sec. 2.1 "fast mode")
    ss_mode: Literal["fast", "quality", "single"] = "fast"
    max_proposals: int = 2000  # R-CNN: ~2000 per image
    min_size_um: float = 3.0  # mitoses at x40 are ~4-20 µm; smaller/larger proposals are dropped
    max_size_um: float = 25.0
    max_aspect: float = 4.0
    # region warping (R-CNN Sec. 2.1 / App. A: 227x227 with 16 px context)
    warp_size: int = 64
    warp_padding: int = 4  # context px in the warped frame (16 / 227 of R-CNN, scaled)
    pretrained: Literal["none"] = "none"  # no ImageNet weights reachable: a small CNN trained here
    cnn_widths: tuple[int, ...] = (32, 64, 128)
    feature_dim: int = 256
    # fine-tuning (Sec. 3.2: mini-batches of 32 positives + 96 negatives, R-CNN Sec. 2.3)
    batch_positives: int = 32
    batch_negatives: int = 96
    positive_iou: float = 0.5
    negative_iou: float = 0.3  # R-CNN SVM negatives: IoU < 0.3 with every positive
    cnn_epochs: int = 20
    cnn_steps_per_epoch: int = 100
    cnn_lr: float = 1.0e-3  # Sec. 4.3: Adam, 1e-3 decayed to 1e-6
    cnn_final_lr: float = 1.0e-6
    # linear SVM (R-CNN Sec. 2.3: positives = ground-truth boxes, negatives IoU < 0.3)
    svm_c: float = 1.0e-3
    svm_max_negatives: int = 20000
    svm_positive_iou: float = 1.0  # 1.0 = ground-truth boxes only (R-CNN); lower adds proposals
    # class-specific box regression (R-CNN App. C: ridge, proposals with IoU >= 0.6)
    bbox_regression: bool = True
    bbox_iou: float = 0.6
    ridge_alpha: float = 10.0  # R-CNN: 1000 on 9216-D pool5 features; ours on feature_dim-D
    # detection
    nms_iou: float = 0.3  # R-CNN Sec. 2.2: greedy NMS at IoU 0.3
    score_threshold: float | None = None  # None: best F1 on the validation images


@dataclass
class FasterPhase2Config:
    """The same phase 2 with common/detection's Faster R-CNN (Sec. 3.2: "any detector")."""

    enabled: bool = True
    backbone_widths: tuple[int, ...] = (32, 64, 128)  # three stride-2 blocks: stride 8
    anchor_sizes: tuple[float, ...] = (24.0, 40.0, 64.0)
    epochs: int = 20
    steps_per_epoch: int | None = None
    batch_size: int = 8
    lr: float = 1.0e-3
    final_lr: float = 1.0e-6
    max_boxes: int = 16


@dataclass
class EvalConfig:
    match_um: float = 8.0  # Sec. 4.2: ICPR 2014 criterion, 8 µm from the box centre
    timing_repeats: int = 5
    figure_examples: int = 8


@dataclass
class DwtMitosisConfig:
    name: str = "rcnn_dwtunet_amibr"
    seg: SegNetConfig = field(default_factory=SegNetConfig)
    seg_train: SegTrainConfig = field(default_factory=SegTrainConfig)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    amibr: AmibrConfig = field(default_factory=AmibrConfig)
    rcnn: RCNNConfig = field(default_factory=RCNNConfig)
    faster: FasterPhase2Config = field(default_factory=FasterPhase2Config)
    eval: EvalConfig = field(default_factory=EvalConfig)
    label_sources: tuple[str, ...] = ("dwt", "unet", "manual")  # Table 2 rows (manual: synthetic only)
    square_size_um: float = 10.0  # side of the "square" label source (Sec. 2 baseline)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.label_sources) - {"dwt", "unet", "manual", "square"})
        if unknown:
            from microrepro.common.errors import ConfigError

            raise ConfigError(f"label_sources: unknown source {unknown[0]!r} (use dwt, unet, manual, square)")
