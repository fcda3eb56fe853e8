"""Building and training the three spine detectors (glue between data, models and ``common.training``).

Every ``train_*`` builds, compiles and trains one model with ``common.training.fit`` into
``<run_dir>/train/<name>/`` and returns ``(model, schedule)`` where ``schedule`` is the schedule
actually run (``common.training.schedule_record``: epochs, steps, batch, seconds,
stopped_by_time_budget, loss_first, loss_last, plus ``init`` / ``input_size`` / ``loss``).

Reference: Sec. 3.1 (Faster R-CNN), Sec. 3.2 (tiny-YOLOv2), Sec. 5 (SP-CNN).
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from microrepro.common import training
from microrepro.common.errors import ConfigError
from microrepro.reproductions.spines import data as data_lib


def make_optimizer(train_cfg) -> keras.optimizers.Optimizer:
    """Adam (paper) or SGD with momentum (released), with decoupled weight decay when set.

    Args:
        train_cfg: a ``TrainConfig`` (optimizer, lr, momentum, weight_decay); its ``optimizer`` is
            checked by ``config.Optimizer`` ("adam" | "momentum").

    Reference: Sec. 3.1 / 3.2 ("Adam optimizer"); the released configs use momentum SGD.
    """
    return training.make_optimizer(train_cfg.optimizer, train_cfg.lr, momentum=train_cfg.momentum,
                                   weight_decay=train_cfg.weight_decay or None)


def compile_model(model, train_cfg, **kwargs) -> None:
    """Compile with the schedule's optimizer; ``train_cfg.xla`` forces XLA (else Keras' "auto")."""
    model.compile(optimizer=make_optimizer(train_cfg), jit_compile=True if train_cfg.xla else "auto", **kwargs)


def _fit(model, dataset, train_cfg, run_dir: Path, name: str, verbose, **extra) -> dict:
    """``train_cfg.steps`` steps (in epochs of ``steps_per_epoch``) under its time budget."""
    epochs, steps_per_epoch = training.steps_to_epochs(train_cfg.steps, train_cfg.steps_per_epoch)
    budget = training.TimeBudget(train_cfg.max_minutes)
    schedule = None
    if train_cfg.lr_schedule == "cosine":
        schedule = {"kind": "budget_cosine", "lr": train_cfg.lr, "steps": train_cfg.steps,
                    "minutes": train_cfg.max_minutes}
    result = training.fit(
        model, dataset, None, run_dir=run_dir, name=name, epochs=epochs, steps_per_epoch=steps_per_epoch,
        lr_schedule=schedule, monitor="loss", callbacks=[budget], verbose=verbose, tensorboard=False,
    )
    return training.schedule_record(result, batch=train_cfg.batch_size, steps_per_epoch=steps_per_epoch,
                                    budget=budget, **extra)


# ----------------------------------------------------------------------------------------------
# tiny-YOLOv2 (Sec. 3.2)
# ----------------------------------------------------------------------------------------------
def build_yolo(cfg) -> keras.Model:
    """tiny-YOLOv2 for grey input, any size divisible by 32: ``(B, H, W, 1)`` -> ``(B, H/32, W/32, 18)``."""
    from microrepro.reproductions.spines import tiny_yolo

    return tiny_yolo.build_tiny_yolo(
        num_anchors=len(cfg.yolo.anchors), num_classes=1, in_channels=1, width_multiplier=cfg.yolo.width_multiplier
    )


def yolo_loss(cfg):
    """The YOLOv2 region loss with the config's anchors and scales (Sec. 3.2)."""
    from microrepro.reproductions.spines import tiny_yolo

    y = cfg.yolo
    return tiny_yolo.YoloV2Loss(y.anchors, y.object_scale, y.noobject_scale, y.coord_scale, y.ignore_thresh, y.rescore)


def yolo_dataset(cfg, train: data_lib.Prepared, batch_size: int, seed: int):
    """Augmented multi-scale batches ``(images, boxes normalised to [0, 1])`` (Sec. 2, Sec. 3.2)."""
    from microrepro.reproductions.spines import tiny_yolo

    y = cfg.yolo
    sizes = [s for s in y.multiscale_sizes if s % tiny_yolo.STRIDE == 0]
    if y.multiscale_sizes and len(sizes) != len(y.multiscale_sizes):
        raise ConfigError(f"yolo.multiscale_sizes must be multiples of 32, got {y.multiscale_sizes}")
    return data_lib.detection_dataset(
        train, batch_size, seed, flip_horizontal=y.flip_horizontal, rot90=y.rot90,
        brightness=y.brightness, contrast=y.contrast, multiscale_sizes=sizes or None, normalised=True,
    )


def train_yolo(cfg, train: data_lib.Prepared, run_dir: Path, seed: int, verbose=2):
    """Train tiny-YOLOv2 with multi-scale batches (Sec. 3.2); returns ``(model, schedule)``."""
    from microrepro.reproductions.spines import tiny_yolo

    y = cfg.yolo
    training.set_seed(seed)
    model = build_yolo(cfg)
    init = tiny_yolo.load_pretrained(model, y.pretrained)
    compile_model(model, y.train, loss=yolo_loss(cfg))
    dataset = yolo_dataset(cfg, train, y.train.batch_size, seed)
    return model, _fit(model, dataset, y.train, run_dir, "yolov2", verbose, init=init, input_size=y.input_size)


# ----------------------------------------------------------------------------------------------
# SP-CNN (Sec. 5)
# ----------------------------------------------------------------------------------------------
def build_sp_cnn(cfg) -> keras.Model:
    """The 6-layer FCN of Sec. 5: ``(B, H, W, 1)`` grey /255 -> ``(B, H, W, 1)`` spine map."""
    from microrepro.reproductions.spines import sp_cnn

    return sp_cnn.build_sp_cnn(cfg.sp_cnn.filters)


def sp_cnn_arrays(cfg, prepared: data_lib.Prepared) -> tuple[np.ndarray, np.ndarray, list]:
    """Inputs ``(N, S, S, 1)`` float32, ``y_true`` ``(N, S, S, 2)`` (target, edge map), centres per image."""
    from microrepro.reproductions.spines import sp_cnn

    scfg = cfg.sp_cnn
    size = prepared.size
    targets = np.zeros((len(prepared), size, size, 2), np.float32)
    centres = []
    for i in range(len(prepared)):
        b = prepared.boxes[i]
        b = b[b[:, 2] > b[:, 0]]
        pts = np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2], axis=1) if len(b) else np.zeros((0, 2))
        centres.append(pts)
        targets[i, ..., 0] = sp_cnn.heatmap_target(pts, (size, size), scfg.target_square)
        targets[i, ..., 1] = sp_cnn.edge_map(prepared.images[i], tuple(scfg.bilateral), tuple(scfg.canny))
    images = prepared.images[..., None].astype(np.float32) / 255.0
    return images, targets, centres


def sp_cnn_dataset(images: np.ndarray, targets: np.ndarray, batch_size: int, seed: int):
    """Shuffled, repeated tf.data batches of ``sp_cnn_arrays``' (images, targets) for training."""
    import tensorflow as tf

    return (
        tf.data.Dataset.from_tensor_slices((images, targets))
        .shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
        .repeat()
        .batch(batch_size, drop_remainder=True)
        .prefetch(2)
    )


def train_sp_cnn(cfg, train: data_lib.Prepared, run_dir: Path, seed: int, with_prior: bool = True,
                 name: str = "sp_cnn", gate: str = "soft", verbose=2):
    """Train SP-CNN with ``MSE - R`` (``with_prior``, eq. 3) or plain MSE; returns ``(model, schedule)``.

    ``gate``: how the output is thresholded inside R (``sp_cnn.SpCnnLoss``): ``soft`` (R's
    gradient reaches the network) or ``hard`` (the text's step: R has no gradient).

    The shape priors (Sec. 5.1) are cut from the training edge maps and kept beside the weights
    (``train/<name>/shape_priors.npy``).
    """
    from microrepro.reproductions.spines import sp_cnn

    scfg = cfg.sp_cnn
    training.set_seed(seed)
    images, targets, centres = sp_cnn_arrays(cfg, train)
    patches = sp_cnn.cut_patches([t[..., 1] for t in targets], centres, scfg.prior_size)
    priors = sp_cnn.select_shape_priors(patches, scfg.n_priors, scfg.prior_selection, seed)
    folder = training.train_dir(run_dir, name)
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "shape_priors.npy", priors)
    model = build_sp_cnn(cfg)
    loss = sp_cnn.SpCnnLoss(priors, scfg.pool_window, scfg.output_threshold, scfg.reg_weight if with_prior else 0.0,
                            gate=gate)
    compile_model(model, scfg.train, loss=loss)
    dataset = sp_cnn_dataset(images, targets, scfg.train.batch_size, seed)
    described = f"MSE - R (eq. 3, {gate} threshold)" if with_prior else "MSE"
    return model, _fit(model, dataset, scfg.train, run_dir, name, verbose, loss=described, input_size=train.size)


# ----------------------------------------------------------------------------------------------
# Faster R-CNN with an Inception-V2 backbone (Sec. 3.1)
# ----------------------------------------------------------------------------------------------
def faster_rcnn_config(cfg, seed: int | None = None):
    """The shared ``FasterRCNNConfig`` filled from the spines config (TF OD API names in comments).

    Anchor sizes are given for ``anchor_reference_size`` and scaled to ``input_size``.
    """
    from microrepro.common.detection.faster_rcnn import FasterRCNNConfig
    from microrepro.reproductions.spines import inception_v2

    f = cfg.faster_rcnn
    try:
        stride = inception_v2.endpoint_stride(f.feature_endpoint)
    except ValueError as err:
        raise ConfigError(f"faster_rcnn.feature_endpoint: {err}") from None
    return FasterRCNNConfig(
        num_classes=1,
        feature_stride=stride,
        anchor_sizes=tuple(float(a) * f.input_size / f.anchor_reference_size for a in f.anchor_sizes),
        anchor_ratios=tuple(float(r) for r in f.anchor_ratios),
        rpn_positive_iou=float(f.rpn_positive_iou),
        rpn_conv_channels=int(f.rpn_conv_channels),
        rpn_batch_size_per_image=int(f.rpn_batch_size),
        rpn_post_nms_top_k_train=int(f.proposals),  # first_stage_max_proposals (train and test)
        rpn_post_nms_top_k_test=int(f.proposals),
        rpn_nms_iou=float(f.rpn_nms_iou),
        head_fc_units=tuple(int(u) for u in f.head_fc_units),
        head_batch_size_per_image=int(f.head_batch_size),
        roi_size=int(f.roi_size),
        rpn_box_loss_weight=float(f.loc_loss_weight),
        head_box_loss_weight=float(f.loc_loss_weight),
        score_threshold=0.01,  # keep low scores for mAP; P/R/F1 use the run's operating threshold
        detection_nms_iou=float(f.nms_iou),
        max_detections=int(f.max_detections),
        seed=seed,
    )


def build_faster_rcnn(cfg, seed: int | None = None) -> keras.Model:
    """Faster R-CNN on a grey Inception-V2 backbone; outputs boxes in network-input px."""
    from microrepro.common.detection.faster_rcnn import FasterRCNN
    from microrepro.reproductions.spines import inception_v2

    f = cfg.faster_rcnn
    config = faster_rcnn_config(cfg, seed)
    try:
        backbone = inception_v2.build_inception_v2(
            in_channels=1, width_multiplier=f.width_multiplier, input_size=f.input_size,
            final_endpoint=f.feature_endpoint, bn_momentum=f.bn_momentum,
        )
    except ValueError as err:  # width_multiplier / bn_momentum out of range: a config value
        raise ConfigError(f"faster_rcnn: {err}") from None
    return FasterRCNN(backbone, config, name="faster_rcnn_inception_v2")


def faster_rcnn_dataset(cfg, train: data_lib.Prepared, batch_size: int, seed: int):
    """Flipped batches ``(images, {"boxes": px, "classes": 0 or -1 for padding})`` (Sec. 3.1)."""
    import tensorflow as tf

    dataset = data_lib.detection_dataset(
        train, batch_size, seed, flip_horizontal=cfg.faster_rcnn.flip_horizontal, normalised=False,
    )
    return dataset.map(lambda im, b: (im, {"boxes": b, "classes": tf.where(b[..., 2] > b[..., 0], 0, -1)}))


def train_faster_rcnn(cfg, train: data_lib.Prepared, run_dir: Path, seed: int, verbose=2):
    """Train Faster R-CNN (Inception-V2) on the prepared split; returns ``(model, schedule)``."""
    from microrepro.reproductions.spines import inception_v2

    f = cfg.faster_rcnn
    if train.size != f.input_size:
        raise ConfigError(f"faster_rcnn: data prepared at {train.size} px but input_size is {f.input_size}")
    training.set_seed(seed)
    model = build_faster_rcnn(cfg, seed)
    init = inception_v2.load_pretrained(model.backbone, f.pretrained)
    compile_model(model, f.train)  # the loss is the model's compute_loss
    dataset = faster_rcnn_dataset(cfg, train, f.train.batch_size, seed)
    return model, _fit(model, dataset, f.train, run_dir, "faster_rcnn", verbose, init=init, input_size=f.input_size)
