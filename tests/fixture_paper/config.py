"""Typed configuration of fixture_paper; ``config.yaml`` only overrides these defaults."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from microrepro.common.config import NonNegFloat, PositiveFloat, PositiveInt, Probability, sections


@dataclass
class DataConfig:
    """The synthetic generator: ``discs_per_image`` bright discs on Gaussian noise."""

    image_size: PositiveInt = 32
    n_train: PositiveInt = 8
    n_test: PositiveInt = 4
    discs_per_image: PositiveInt = 4
    radius: PositiveFloat = 3.0
    contrast: Probability = 0.6
    noise: NonNegFloat = 0.05


@dataclass
class ModelConfig:
    filters: PositiveInt = 8


@dataclass
class TrainConfig:
    steps: PositiveInt = 60
    batch_size: PositiveInt = 4
    lr: PositiveFloat = 0.02
    optimizer: Literal["adam", "sgd", "momentum"] = "adam"


@dataclass
class EvalConfig:
    max_dist: PositiveFloat = 3.0  # px: a detection within this distance of a centre matches it
    threshold_step: PositiveFloat = 0.05


@sections  # each section field defaults to a fresh instance of its type
class FixtureConfig:
    name: str = "discs_heatmap"
    data: DataConfig
    model: ModelConfig
    train: TrainConfig
    eval: EvalConfig
