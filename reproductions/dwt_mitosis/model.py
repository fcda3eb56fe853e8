"""Networks of the dwt_mitosis paper, their loss and learning-rate schedule (keras / keras.ops only).

* :func:`build_dwt_unet`: the U-shaped network of Fig. 2 — CNN blocks of ``convs_per_block`` ×
  (3×3 conv → BN → ReLU) without pooling; down-sampling by the Haar DWT (4 sub-bands stacked
  as channels, lossless), up-sampling by the inverse transform (IWT); skips as in U-Net.
* :func:`build_unet`: a plain U-Net of the same widths for the ablation of Table 2 (max-pool
  down, transposed convolution up).

Both map ``(B, H, W, C)`` float32 images in [0, 1] to ``(B, H, W, num_classes)`` logits; the loss
is the pixel-wise softmax cross-entropy of eq. (1)–(2) (:func:`segmentation_loss`), class 1 =
mitosis.

* :func:`build_feature_cnn`: phase 2's region CNN (R-CNN's feature network, trained here);
* :func:`lr_decay` / :func:`adam`: the optimiser of every network (Sec. 4.3).

Reference: dwt_mitosis Sec. 3.1, Fig. 2, eq. (1)–(2); Liu et al. 2018 (MWCNN);
Ronneberger et al. 2015 (U-Net).
"""

from __future__ import annotations

import keras
from keras import layers

from microrepro.reproductions.dwt_mitosis.wavelets import DWT, IWT


def _check(widths, convs_per_block: int, input_size, num_classes: int) -> tuple[int, ...]:
    widths = tuple(int(w) for w in widths)
    if len(widths) < 2 or min(widths) < 1:
        raise ValueError(f"widths must list at least two positive channel counts (one per level), got {widths}")
    if convs_per_block < 1:
        raise ValueError(f"convs_per_block must be >= 1, got {convs_per_block}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2 (softmax over background and mitosis), got {num_classes}")
    factor = 2 ** (len(widths) - 1)
    if input_size is not None:
        for side in input_size:
            if side is not None and int(side) % factor:
                raise ValueError(
                    f"input size {tuple(input_size)} must be divisible by 2^{len(widths) - 1} = {factor} "
                    f"for {len(widths) - 1} down-sampling levels"
                )
    return widths


def conv_block(x, filters: int, convs: int, name: str, bn_momentum: float = 0.9):
    """``convs`` × (3×3 conv → BN → ReLU), no pooling (the CNN block of Fig. 2).

    Args:
        x: ``(B, H, W, C)`` tensor.
        filters: output channels of every conv.
        convs: number of conv–BN–ReLU layers (4 in the paper).
        name: layer name prefix.
        bn_momentum: moving-average momentum of BN (Keras convention). 0.9 = PyTorch's default
            ``momentum=0.1``, which the authors' PyTorch code would have used; Keras' 0.99 leaves
            the inference statistics far from the batch ones after a short training.

    Returns:
        ``(B, H, W, filters)``.
    """
    for i in range(convs):
        # no bias: the following BN has its own shift
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv{i + 1}")(x)
        x = layers.BatchNormalization(momentum=bn_momentum, name=f"{name}_bn{i + 1}")(x)
        x = layers.ReLU(name=f"{name}_relu{i + 1}")(x)
    return x


def build_dwt_unet(
    widths=(160, 256, 256),
    convs_per_block: int = 4,
    in_channels: int = 3,
    num_classes: int = 2,
    input_size: tuple[int | None, int | None] = (None, None),
    skip: str = "concat",
    name: str = "dwt_unet",
    bn_momentum: float = 0.9,
) -> keras.Model:
    """The DWT/IWT U-shaped segmentation network of Fig. 2.

    Encoder level 0 works on the image; every further level takes the DWT of the previous
    level's output (``(H/2, W/2, 4C)``, no information lost) into its CNN block. The decoder
    maps each level's output to ``4 × C_prev`` channels with a 1×1 conv, applies the IWT
    (``(2h, 2w, C_prev)``) and joins the encoder output of that level (``skip``), then a CNN block.

    Args:
        widths: channels of the CNN block at each level, finest first; ``len(widths) - 1``
            DWT levels. The paper's Fig. 2 is not legible in the text we have: the default is
            MWCNN's 160/256/256.
        convs_per_block: conv–BN–ReLU layers per block (Sec. 3.1: 4).
        in_channels: image channels (3 for H&E RGB).
        num_classes: output classes (2: background, mitosis).
        input_size: ``(H, W)``; each must be divisible by ``2 ** (len(widths) - 1)``; None = any
            such size.
        skip: ``"concat"`` (U-Net) or ``"add"`` (MWCNN's sum).
        name: model name.
        bn_momentum: BN moving-average momentum (:func:`conv_block`).

    Returns:
        ``keras.Model``: ``(B, H, W, in_channels)`` float32 in [0, 1] → ``(B, H, W, num_classes)``
        logits.

    Reference: dwt_mitosis Sec. 3.1, Fig. 2; MWCNN (Liu et al. 2018).
    """
    widths = _check(widths, convs_per_block, input_size, num_classes)
    if skip not in ("concat", "add"):
        raise ValueError(f"skip must be 'concat' or 'add', got {skip!r}")
    inputs = keras.Input((input_size[0], input_size[1], in_channels), name="image")
    x = conv_block(inputs, widths[0], convs_per_block, "enc0", bn_momentum)
    skips = [x]
    for level, filters in enumerate(widths[1:], start=1):
        x = DWT(name=f"dwt{level}")(x)
        x = conv_block(x, filters, convs_per_block, f"enc{level}", bn_momentum)
        skips.append(x)
    for level in range(len(widths) - 2, -1, -1):
        filters = widths[level]
        x = layers.Conv2D(4 * filters, 1, name=f"to_subbands{level}")(x)
        x = IWT(name=f"iwt{level}")(x)
        if skip == "concat":
            x = layers.Concatenate(name=f"skip{level}")([x, skips[level]])
        else:
            x = layers.Add(name=f"skip{level}")([x, skips[level]])
        x = conv_block(x, filters, convs_per_block, f"dec{level}", bn_momentum)
    logits = layers.Conv2D(num_classes, 1, name="logits", dtype="float32")(x)
    return keras.Model(inputs, logits, name=name)


def build_unet(
    widths=(160, 256, 256),
    convs_per_block: int = 2,
    in_channels: int = 3,
    num_classes: int = 2,
    input_size: tuple[int | None, int | None] = (None, None),
    name: str = "unet",
    bn_momentum: float = 0.9,
) -> keras.Model:
    """A plain U-Net (max-pool down, 2×2 transposed conv up, concatenated skips).

    The Table 2 baseline ("the original U-Net network [25]"), with the same widths as the DWT
    network so that only the down/up-sampling differs (and the block depth, which is the
    original U-Net's 2 unless configured). BN after every conv, as in the DWT network.

    Args:
        widths, in_channels, num_classes, input_size, bn_momentum: as :func:`build_dwt_unet`.
        convs_per_block: conv–BN–ReLU layers per block (U-Net: 2).

    Returns:
        ``keras.Model``: ``(B, H, W, in_channels)`` → ``(B, H, W, num_classes)`` logits.

    Reference: dwt_mitosis Sec. 4.5, Table 2; Ronneberger et al. 2015.
    """
    widths = _check(widths, convs_per_block, input_size, num_classes)
    inputs = keras.Input((input_size[0], input_size[1], in_channels), name="image")
    x = conv_block(inputs, widths[0], convs_per_block, "enc0", bn_momentum)
    skips = [x]
    for level, filters in enumerate(widths[1:], start=1):
        x = layers.MaxPooling2D(2, name=f"pool{level}")(x)
        x = conv_block(x, filters, convs_per_block, f"enc{level}", bn_momentum)
        skips.append(x)
    for level in range(len(widths) - 2, -1, -1):
        filters = widths[level]
        x = layers.Conv2DTranspose(filters, 2, strides=2, name=f"up{level}")(x)
        x = layers.Concatenate(name=f"skip{level}")([x, skips[level]])
        x = conv_block(x, filters, convs_per_block, f"dec{level}", bn_momentum)
    logits = layers.Conv2D(num_classes, 1, name="logits", dtype="float32")(x)
    return keras.Model(inputs, logits, name=name)


def segmentation_loss(positive_weight: float = 1.0):
    """Pixel-wise softmax cross-entropy of eq. (1)–(2), averaged over pixels.

    Args:
        positive_weight: weight of mitosis pixels (1.0 = the paper's plain cross-entropy).

    Returns:
        A loss ``(y_true (B, H, W) or (B, H, W, 1) int class ids, y_pred (B, H, W, K) logits)``.

    Reference: dwt_mitosis Sec. 3.1, eq. (1)–(2).
    """
    if positive_weight <= 0:
        raise ValueError(f"positive_weight must be > 0, got {positive_weight}")
    cross_entropy = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)

    def loss(y_true, y_pred):
        y_true = keras.ops.cast(y_true, "int32")
        if len(y_true.shape) == 4:
            y_true = y_true[..., 0]
        per_pixel = cross_entropy(y_true, y_pred)
        if positive_weight != 1.0:
            weights = 1.0 + (positive_weight - 1.0) * keras.ops.cast(y_true > 0, per_pixel.dtype)
            per_pixel = per_pixel * weights
        return keras.ops.mean(per_pixel, axis=(1, 2))  # per image; all are one size

    class PixelSoftmaxCrossEntropy(keras.losses.Loss):
        # A Loss averages the per-image means over the batch (= over every pixel) and, under tf.distribute,
        # divides by the replicas, whose gradients are summed (a plain function's scalar would not be).
        def call(self, y_true, y_pred):
            return loss(y_true, y_pred)

    return PixelSoftmaxCrossEntropy(name="pixel_softmax_cross_entropy")


def build_feature_cnn(
    warp_size: int = 64,
    widths=(32, 64, 128),
    feature_dim: int = 256,
    in_channels: int = 3,
    num_classes: int = 2,
    dropout: float = 0.5,
    name: str = "rcnn_features",
    bn_momentum: float = 0.9,
) -> keras.Model:
    """The small CNN of phase 2 that classifies warped regions; its ``features`` layer feeds the SVM.

    Stands in for R-CNN's ImageNet-pretrained AlexNet (``pretrained: none``: no weights can be
    downloaded here): conv blocks (2 × conv–BN–ReLU + 2×2 max-pool) → global average pool →
    dense ``features`` (ReLU, the "penultimate layer") → dropout → softmax logits over
    {background, mitosis}.

    Args:
        warp_size: side of the warped region (R-CNN: 227; ours smaller).
        widths: channels per conv block.
        feature_dim: size of the feature vector.
        in_channels, num_classes: input channels and classes.
        dropout: dropout before the classifier (R-CNN's fc layers use 0.5).
        bn_momentum: BN moving-average momentum (:func:`conv_block`).

    Returns:
        ``keras.Model``: ``(B, warp_size, warp_size, in_channels)`` → ``(B, num_classes)`` logits;
        ``model.get_layer("features")`` gives ``(B, feature_dim)``.

    Reference: dwt_mitosis Sec. 3.2; Girshick et al. 2014 (R-CNN) Sec. 2.1–2.3.
    """
    widths = tuple(int(w) for w in widths)
    if warp_size < 2 ** len(widths):
        raise ValueError(f"warp_size {warp_size} is too small for {len(widths)} pooling steps")
    inputs = keras.Input((warp_size, warp_size, in_channels), name="region")
    x = inputs
    for level, filters in enumerate(widths):
        x = conv_block(x, filters, 2, f"block{level}", bn_momentum)
        x = layers.MaxPooling2D(2, name=f"pool{level}")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    features = layers.Dense(feature_dim, activation="relu", name="features")(x)
    x = layers.Dropout(dropout, name="dropout")(features)
    logits = layers.Dense(num_classes, name="logits", dtype="float32")(x)
    return keras.Model(inputs, logits, name=name)


def feature_extractor(classifier: keras.Model) -> keras.Model:
    """The penultimate (``features``) layer of :func:`build_feature_cnn` as its own model."""
    return keras.Model(classifier.input, classifier.get_layer("features").output, name="feature_extractor")


def lr_decay(lr: float, final_lr: float, total_steps: int) -> keras.optimizers.schedules.LearningRateSchedule:
    """Exponential decay from ``lr`` to ``final_lr`` over ``total_steps`` optimisation steps.

    The shape of the decay is ours (the paper gives only its ends); every network of both phases
    uses it through :func:`adam`.

    Reference: dwt_mitosis Sec. 4.3 ("initialized as 10^-3 ... decreased to 10^-6").
    """
    if lr <= 0 or final_lr <= 0:
        raise ValueError(f"learning rates must be > 0, got {lr} and {final_lr}")
    return keras.optimizers.schedules.ExponentialDecay(lr, max(1, int(total_steps)), final_lr / lr)


def adam(lr: float, final_lr: float, total_steps: int) -> keras.optimizers.Optimizer:
    """Adam with the :func:`lr_decay` schedule (``common.training.make_optimizer``).

    Reference: dwt_mitosis Sec. 4.3 ("Adam optimizer").
    """
    from microrepro.common.training import make_optimizer

    return make_optimizer("adam", lr_decay(lr, final_lr, total_steps))
