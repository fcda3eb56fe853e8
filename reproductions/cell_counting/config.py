"""Typed configuration of the cell_counting reproduction (defaults = the paper as written).

``config.yaml`` overrides these; see it for the paper section of every value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from microrepro.common import config as cfgtypes  # range types: cfgtypes.PositiveInt, cfgtypes.Probability...

# Keras activation names that make sense between the convolutions (keras.activations.get accepts them all).
Activation = Literal[
    "elu", "relu", "selu", "gelu", "silu", "swish", "leaky_relu", "relu6", "mish", "tanh", "sigmoid", "softplus"
]


@dataclass
class ModelConfig:
    """c-ResUNet (Sec. 4.4, Fig. 5; released widths)."""

    filters: tuple[cfgtypes.PositiveInt, ...] = (16, 32, 64)
    bridge_filters: cfgtypes.PositiveInt = 128
    bridge_blocks: cfgtypes.PositiveInt = 2
    bridge_kernel: cfgtypes.PositiveInt = 5
    activation: Activation = "elu"
    colour_to_grey: bool = True
    bn_momentum: cfgtypes.FractionOrZero = 0.99  # Keras default (as released); short runs need faster moving statistics


@dataclass
class WeightMapConfig:
    """Pixel weights of the loss (Sec. 4.2). ``kind``: paper | released | none (plain BCE)."""

    kind: Literal["paper", "released", "none"] = "paper"
    sigma: cfgtypes.PositiveFloat = 25.0
    cell_weight: cfgtypes.NonNegFloat = 1.0
    background_weight: cfgtypes.NonNegFloat = 1.5
    window_sigmas: cfgtypes.PositiveFloat = 3.0
    released_band: cfgtypes.PositiveInt = 100
    released_cell_factor: cfgtypes.PositiveFloat = 1.5
    released_maximum: cfgtypes.PositiveFloat | None = 3.8177538


@dataclass
class AugmentSettings:
    """Sec. 4.1: rotations, Gaussian noise, brightness, elastic deformation (Simard 2003)."""

    flips: bool = True
    rot90: bool = True
    rotation_degrees: cfgtypes.NonNegFloat = 20.0
    brightness: cfgtypes.NonNegFloat = 0.1
    gaussian_noise_std: cfgtypes.NonNegFloat = 0.02
    elastic_alpha: cfgtypes.NonNegFloat = 30.0
    elastic_sigma: cfgtypes.NonNegFloat = 6.0


@cfgtypes.sections
class DataConfig:
    """Crops, oversampling, synthetic fields and splits (Sec. 4.1)."""

    crop_size: cfgtypes.PositiveInt = 512
    crop_stride: cfgtypes.PositiveInt = 400
    scale: cfgtypes.PositiveFloat = 1.0  # fields are resized by this factor before cropping and prediction
    val_fraction: cfgtypes.Fraction = 0.3
    hard_min_cells: cfgtypes.NonNegInt = 6  # a crop with at least this many cells is "hard"...
    hard_touch_px: cfgtypes.NonNegInt = 3  # ...or one where two cells come within this many px
    hard_repeat: cfgtypes.NonNegInt = 2  # extra copies of each hard crop per epoch (oversampling)
    synthetic_train_fields: Annotated[int, cfgtypes.Range(min=2)] = 20  # >= 2: split_fields carves a validation field
    synthetic_test_fields: cfgtypes.PositiveInt = 10
    synthetic_seed: cfgtypes.NonNegInt = 1234
    augment: AugmentSettings


@dataclass
class TrainConfig:
    """Sec. 4.5: Adam, lr 6e-3, plateau x0.7 after 4 epochs, < 50 epochs."""

    lr: cfgtypes.PositiveFloat = 6.0e-3
    batch_size: cfgtypes.PositiveInt = 4
    epochs: cfgtypes.PositiveInt = 50
    steps_per_epoch: cfgtypes.PositiveInt | None = None
    validation_steps: cfgtypes.PositiveInt | None = None
    plateau_factor: cfgtypes.Fraction = 0.7
    plateau_patience: cfgtypes.NonNegInt = 4
    min_lr: cfgtypes.NonNegFloat = 0.0
    early_stopping_patience: cfgtypes.NonNegInt | None = None
    loss_cell_weight: cfgtypes.NonNegFloat = 1.0
    loss_background_weight: cfgtypes.NonNegFloat = 1.0
    ablation: bool = True  # also train c_resunet_no_weightmap (plain BCE) with the same budget
    run_eagerly: bool = False  # smoke only: skips graph tracing, which dominates a 2-step run on CPU


@dataclass
class PostprocessConfig:
    """Sec. 4.3 / 5.1: threshold by max F1 on training images, cleaning, watershed, matching."""

    sizes: Literal["paper", "released"] = "paper"
    mean_cell_diameter: cfgtypes.PositiveFloat | None = None  # None = measured on the training masks
    threshold: cfgtypes.Probability | None = None  # None = chosen by max F1 on training images
    # start, stop, step
    threshold_grid: tuple[cfgtypes.Probability, cfgtypes.Probability, cfgtypes.PositiveFloat] = (0.5, 0.975, 0.025)
    threshold_fields: cfgtypes.PositiveInt = 8  # training fields used for the threshold sweep
    match_distance: cfgtypes.PositiveFloat = 50.0
    tile: cfgtypes.PositiveInt = 512
    tile_overlap: cfgtypes.NonNegInt = 64


@dataclass
class EvalConfig:
    timing_repeats: cfgtypes.PositiveInt = 3
    timing_field: tuple[cfgtypes.PositiveInt, cfgtypes.PositiveInt] = (1200, 1600)
    timing_crop: cfgtypes.PositiveInt = 512


@cfgtypes.sections
class CellCountingConfig:
    """Top level; ``name`` enters run names ``{model}_{backbone}_{schedule}_{dataset}``."""

    name: str = "c_resunet_fnc"
    model: ModelConfig
    weight_map: WeightMapConfig
    data: DataConfig
    train: TrainConfig
    postprocess: PostprocessConfig
    eval: EvalConfig
    runtime: cfgtypes.RuntimeConfig  # strategy, precision
