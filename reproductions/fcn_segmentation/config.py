"""Typed configuration of the fcn_segmentation reproduction; ``config.yaml`` only overrides it.

Reference: Marzo & La Rosa 2016, Sec. 7 (model), Sec. 7.1 (training), Sec. 7.2 (evaluation).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal

from microrepro.common import config as cfgtypes  # range types: cfgtypes.PositiveInt, cfgtypes.Probability...

# Keras initializer names (keras.initializers.get accepts them all); Caffe's "xavier" is glorot_uniform.
KernelInitializer = Literal[
    "glorot_uniform", "glorot_normal", "he_uniform", "he_normal", "lecun_uniform", "lecun_normal", "orthogonal",
    "random_normal", "random_uniform", "truncated_normal", "variance_scaling",
]
# The metrics of common.metrics.threshold_sweep that eval.select_metric may maximise.
SweepMetric = Literal["mcc", "f1", "iou", "accuracy", "precision", "recall", "specificity"]
UnitFloat = Annotated[float, cfgtypes.Range(0, 1)]  # [0, 1] for what is not a probability (momentum)
Percentile = Annotated[float, cfgtypes.Range(0, 100)]


@dataclass
class ModelConfig:
    """FCRN-A with a 2-class softmax head (Sec. 7, Fig. 6); see ``model.build_fcrn_a``."""

    input_channels: cfgtypes.PositiveInt = 1
    num_classes: Annotated[int, cfgtypes.Range(min=2)] = 2
    encoder_filters: tuple[cfgtypes.PositiveInt, ...] = (32, 64, 128)
    bottleneck_filters: cfgtypes.PositiveInt = 512
    decoder_filters: tuple[cfgtypes.PositiveInt, ...] = (128, 64, 32)
    batch_norm: bool = False
    kernel_initializer: KernelInitializer = "glorot_uniform"
    upsampling: Literal["nearest", "bilinear"] = "nearest"


@dataclass
class OptimConfig:
    """SGD with momentum and a step learning-rate schedule (Sec. 7.1).

    ``weight_decay_mode``: "l2" adds ``weight_decay / 2 * sum(w**2)`` over conv kernels to the loss,
    which is what Caffe's ``weight_decay`` does (gradient + wd * w, passed through momentum);
    "decoupled" uses Keras' ``SGD(weight_decay=...)`` (w -= lr * wd * w, outside momentum).
    """

    epochs: cfgtypes.PositiveInt = 60
    batch_size: cfgtypes.PositiveInt = 4
    lr: cfgtypes.PositiveFloat = 0.01
    momentum: UnitFloat = 0.9
    nesterov: bool = False
    weight_decay: cfgtypes.NonNegFloat = 1e-3
    weight_decay_mode: Literal["l2", "decoupled"] = "l2"
    lr_step_epochs: cfgtypes.PositiveInt = 20
    lr_step_factor: Annotated[float, cfgtypes.Range(0, 1, min_open=True)] = 0.1
    jit_compile: bool = True


@cfgtypes.sections
class PretrainConfig:
    """Pre-training on SIMCEP-like synthetic images (Sec. 7.1)."""

    train: OptimConfig
    n_images: cfgtypes.PositiveInt = 50  # synthetic full images the patches are sampled from
    n_patches: cfgtypes.PositiveInt = 200  # random 128×128 training patches (Sec. 7.1)
    n_val_patches: cfgtypes.PositiveInt = 40  # synthetic validation patches: checkpoint + MCC threshold
    n_test_patches: cfgtypes.PositiveInt = 100  # synthetic test patches (split "synthetic_test")
    patch_size: cfgtypes.PositiveInt = 128
    noise_fraction: cfgtypes.Probability = 0.5  # share of images with simplex/Perlin background (Sec. 7.1: half)
    generator: dict = field(default_factory=dict)  # overrides of datasets.synthetic.simcep config


@dataclass
class FinetuneConfig:
    """Fine-tuning on real fluorescence images with manual masks (Sec. 7.1)."""

    train: OptimConfig = field(default_factory=lambda: OptimConfig(epochs=20))
    n_crops: cfgtypes.PositiveInt = 55  # real 128×128 training crops (Sec. 7.1: 55 images)
    crop_size: cfgtypes.PositiveInt = 128
    dihedral: bool = True  # ×8: rotations 0/90/180/270 and their mirror images (Sec. 7.1)
    eval_fraction: cfgtypes.Fraction = 0.4  # share of real images held out for evaluation (by image)
    # share of the fine-tune images kept for validation/threshold; 0: threshold on the fine-tune images
    val_fraction: cfgtypes.FractionOrZero = 0.2
    split_seed: cfgtypes.NonNegInt = 0
    use_stardist: bool = True  # also use nuclei_stardist (tiles as images) when it sits beside
    stardist_dataset: str = "nuclei_stardist"
    max_eval_images: cfgtypes.NonNegInt = 0  # 0: every evaluation image; >0 caps it (smoke schedule only)


@dataclass
class VggConfig:
    """The same FCN trained on the VGG synthetic cells (a known benchmark beside the paper's)."""

    enabled: bool = True
    dataset: str = "vgg_cells"
    train: OptimConfig = field(default_factory=lambda: OptimConfig(epochs=30))
    n_train: cfgtypes.PositiveInt = 100  # first n_train images train (the last n_val of them validate), rest test
    n_val: cfgtypes.PositiveInt = 10
    n_test: cfgtypes.NonNegInt = 100  # the last n_test images (0 = all after the first n_train)
    crops_per_epoch: cfgtypes.PositiveInt = 90  # random 128×128 training crops per epoch
    crop_size: cfgtypes.PositiveInt = 128
    target: Literal["otsu", "discs"] = "otsu"
    smooth_sigma: cfgtypes.NonNegFloat = 1.0  # Gaussian smoothing before Otsu (removes pixel noise)
    disc_radius: cfgtypes.NonNegInt = 5  # for target "discs"


@dataclass
class EvalConfig:
    """Pixel metrics at the MCC-maximising threshold (Sec. 7.2)."""

    n_thresholds: Annotated[int, cfgtypes.Range(min=2)] = 101  # 0, 0.01, ..., 1
    select_metric: SweepMetric = "mcc"
    n_examples: cfgtypes.NonNegInt = 4  # rows of the example-segmentation figure
    timing_repeats: cfgtypes.PositiveInt = 5
    timing_size: cfgtypes.PositiveInt = 256


@cfgtypes.sections
class FcnSegmentationConfig:
    """Top-level config; ``name`` enters run names ``{name}_{preset}_{schedule}_s{seed}``."""

    name: str = "fcrn_a_simcep_dsb2018"
    model: ModelConfig
    pretrain: PretrainConfig
    finetune: FinetuneConfig
    vgg: VggConfig
    eval: EvalConfig
    runtime: cfgtypes.RuntimeConfig  # strategy, precision
    # Per-image percentile normalisation to [0, 1]; the paper does not say how it scaled inputs.
    normalize_low: Percentile = 1.0
    normalize_high: Percentile = 99.8
