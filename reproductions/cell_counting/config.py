"""Typed configuration of the cell_counting reproduction (defaults = the paper as written).

``config.yaml`` overrides these; see it for the paper section of every value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class ModelConfig:
    """c-ResUNet (Sec. 4.4, Fig. 5; released widths)."""

    filters: tuple[int, ...] = (16, 32, 64)
    bridge_filters: int = 128
    bridge_blocks: int = 2
    bridge_kernel: int = 5
    activation: str = "elu"
    colour_to_grey: bool = True
    bn_momentum: float = 0.99  # Keras default (as released); short runs need faster moving statistics


@dataclass
class WeightMapConfig:
    """Pixel weights of the loss (Sec. 4.2). ``kind``: paper | released | none (plain BCE)."""

    kind: Literal["paper", "released", "none"] = "paper"
    sigma: float = 25.0
    cell_weight: float = 1.0
    background_weight: float = 1.5
    window_sigmas: float = 3.0
    released_band: int = 100
    released_cell_factor: float = 1.5
    released_maximum: float | None = 3.8177538


@dataclass
class AugmentSettings:
    """Sec. 4.1: rotations, Gaussian noise, brightness, elastic deformation (Simard 2003)."""

    flips: bool = True
    rot90: bool = True
    rotation_degrees: float = 20.0
    brightness: float = 0.1
    gaussian_noise_std: float = 0.02
    elastic_alpha: float = 30.0
    elastic_sigma: float = 6.0


@dataclass
class DataConfig:
    """Crops, oversampling, synthetic fields and splits (Sec. 4.1)."""

    crop_size: int = 512
    crop_stride: int = 400
    scale: float = 1.0  # fields are resized by this factor before cropping and prediction
    val_fraction: float = 0.3
    hard_min_cells: int = 6  # a crop with at least this many cells is "hard"...
    hard_touch_px: int = 3  # ...or one where two cells come within this many px
    hard_repeat: int = 2  # extra copies of each hard crop per epoch (oversampling)
    synthetic_train_fields: int = 20
    synthetic_test_fields: int = 10
    synthetic_seed: int = 1234
    augment: AugmentSettings = field(default_factory=AugmentSettings)


@dataclass
class TrainConfig:
    """Sec. 4.5: Adam, lr 6e-3, plateau x0.7 after 4 epochs, < 50 epochs."""

    lr: float = 6.0e-3
    batch_size: int = 4
    epochs: int = 50
    steps_per_epoch: int | None = None
    validation_steps: int | None = None
    plateau_factor: float = 0.7
    plateau_patience: int = 4
    min_lr: float = 0.0
    early_stopping_patience: int | None = None
    loss_cell_weight: float = 1.0
    loss_background_weight: float = 1.0
    ablation: bool = True  # also train c_resunet_no_weightmap (plain BCE) with the same budget
    run_eagerly: bool = False  # smoke only: skips graph tracing, which dominates a 2-step run on CPU


@dataclass
class PostprocessConfig:
    """Sec. 4.3 / 5.1: threshold by max F1 on training images, cleaning, watershed, matching."""

    sizes: Literal["paper", "released"] = "paper"
    mean_cell_diameter: float | None = None  # None = measured on the training masks
    threshold: float | None = None  # None = chosen by max F1 on training images
    threshold_grid: tuple[float, float, float] = (0.5, 0.975, 0.025)
    threshold_fields: int = 8  # training fields used for the threshold sweep
    match_distance: float = 50.0
    tile: int = 512
    tile_overlap: int = 64


@dataclass
class EvalConfig:
    timing_repeats: int = 3
    timing_field: tuple[int, int] = (1200, 1600)
    timing_crop: int = 512


@dataclass
class CellCountingConfig:
    """Top level; ``name`` enters run names ``{model}_{backbone}_{schedule}_{dataset}``."""

    name: str = "c_resunet_fnc"
    model: ModelConfig = field(default_factory=ModelConfig)
    weight_map: WeightMapConfig = field(default_factory=WeightMapConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
