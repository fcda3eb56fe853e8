"""Training and inference loops of the three spine detectors (glue between data, models, fit).

Every ``train_*`` builds, compiles and trains one model with ``common.training.fit`` into
``<run_dir>/train/<key>/`` and returns ``(model, info)`` where ``info`` is the schedule actually
run. Every ``detect_*`` returns per image ``(boxes (N, 4) [x1, y1, x2, y2] px of the ORIGINAL
image, scores (N,))`` with all scores kept (thresholds are applied by the evaluation).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import keras
import numpy as np

from microrepro.common import training
from microrepro.common.errors import ConfigError
from microrepro.reproductions.spines import data as data_lib
from microrepro.reproductions.spines import postprocess


class TimeBudget(keras.callbacks.Callback):
    """Stop training after ``minutes`` of wall clock (0 = never): keeps CPU schedules bounded."""

    def __init__(self, minutes: float):
        super().__init__()
        self.seconds = float(minutes) * 60.0
        self.start = None
        self.stopped_early = False
        self.steps = 0  # optimisation steps actually run in this session

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        if self.seconds > 0 and time.perf_counter() - self.start > self.seconds:
            self.model.stop_training = True
            self.stopped_early = True


def make_optimizer(train_cfg) -> keras.optimizers.Optimizer:
    """Adam (paper) or SGD with momentum (released), with decoupled weight decay when set."""
    decay = train_cfg.weight_decay or None
    if train_cfg.optimizer == "adam":
        return keras.optimizers.Adam(train_cfg.lr, weight_decay=decay)
    if train_cfg.optimizer == "momentum":
        return keras.optimizers.SGD(train_cfg.lr, momentum=train_cfg.momentum, weight_decay=decay)
    raise ConfigError(f"train.optimizer must be 'adam' or 'momentum', got {train_cfg.optimizer!r}")


def _fit(model, dataset, train_cfg, run_dir: Path, key: str, verbose) -> dict:
    steps_per_epoch = max(1, min(train_cfg.steps_per_epoch, train_cfg.steps))
    epochs = max(1, math.ceil(train_cfg.steps / steps_per_epoch))
    budget = TimeBudget(train_cfg.max_minutes)
    result = training.fit(
        model, dataset, None, run_dir=run_dir, name=key, epochs=epochs, steps_per_epoch=steps_per_epoch,
        monitor="loss", callbacks=[budget], verbose=verbose, tensorboard=False,
    )
    epochs_run = result["epochs_run"]
    return {
        "epochs": epochs_run,
        # A time budget can end an epoch early, so count the steps that ran in this session; a
        # resumed run (no step ran here) falls back to whole epochs.
        "steps": budget.steps or epochs_run * steps_per_epoch,
        "batch": train_cfg.batch_size,
        "seconds": round(result["seconds"], 1),
        "stopped_by_time_budget": budget.stopped_early,
        "loss_first": result["history"].get("loss", [float("nan")])[0],
        "loss_last": result["history"].get("loss", [float("nan")])[-1],
    }


# ----------------------------------------------------------------------------------------------
# tiny-YOLOv2
# ----------------------------------------------------------------------------------------------
def build_yolo(cfg) -> keras.Model:
    from microrepro.reproductions.spines import tiny_yolo

    return tiny_yolo.build_tiny_yolo(
        num_anchors=len(cfg.yolo.anchors), num_classes=1, in_channels=1, width_multiplier=cfg.yolo.width_multiplier
    )


def train_yolo(cfg, train: data_lib.Prepared, run_dir: Path, seed: int, verbose=2):
    """Train tiny-YOLOv2 with multi-scale batches (Sec. 3.2); returns ``(model, info)``."""
    from microrepro.reproductions.spines import tiny_yolo

    ycfg = cfg.yolo
    training.set_seed(seed)
    model = build_yolo(cfg)
    init = tiny_yolo.load_pretrained(model, ycfg.pretrained)
    loss = tiny_yolo.YoloV2Loss(
        ycfg.anchors, ycfg.object_scale, ycfg.noobject_scale, ycfg.coord_scale, ycfg.ignore_thresh, ycfg.rescore
    )
    model.compile(optimizer=make_optimizer(ycfg.train), loss=loss)
    sizes = [s for s in ycfg.multiscale_sizes if s % tiny_yolo.STRIDE == 0]
    if ycfg.multiscale_sizes and len(sizes) != len(ycfg.multiscale_sizes):
        raise ConfigError(f"yolo.multiscale_sizes must be multiples of 32, got {ycfg.multiscale_sizes}")
    dataset = data_lib.detection_dataset(
        train, ycfg.train.batch_size, seed, flip_horizontal=ycfg.flip_horizontal, rot90=ycfg.rot90,
        brightness=ycfg.brightness, contrast=ycfg.contrast, multiscale_sizes=sizes or None, normalised=True,
    )
    info = _fit(model, dataset, ycfg.train, run_dir, "yolov2", verbose)
    info["init"] = init
    info["input_size"] = ycfg.input_size
    return model, info


def detect_yolo(model, cfg, prepared: data_lib.Prepared, batch_size: int = 16) -> list:
    """tiny-YOLOv2 detections on a prepared split, mapped back to original pixels."""
    from microrepro.reproductions.spines import tiny_yolo

    ycfg = cfg.yolo
    out = []
    for start, images in data_lib.eval_batches(prepared, batch_size):
        raw = model.predict_on_batch(images)
        dets = tiny_yolo.decode_detections(
            raw, ycfg.anchors, (prepared.size, prepared.size), score_threshold=0.005, nms_iou=ycfg.nms_iou,
            max_detections=ycfg.max_detections,
        )
        for i, (boxes, scores) in enumerate(dets):
            out.append((postprocess.rescale_boxes(boxes, prepared.scales[start + i]), scores))
    return out


def time_per_image(predict_fn, images: np.ndarray, repeats: int = 5) -> float:
    """Median ms per image of ``predict_fn(one_image_batch)`` after one warm-up pass.

    Images are fed one at a time (batch 1), as the paper's per-image timing implies.
    """
    images = np.asarray(images, np.float32)
    predict_fn(images[:1])  # warm-up: graph tracing / compilation
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        for i in range(len(images)):
            predict_fn(images[i : i + 1])
        times.append((time.perf_counter() - start) * 1000.0 / len(images))
    return float(np.median(times))


class NotAvailable(RuntimeError):
    """A model cannot be built in this checkout (a shared module it needs is missing)."""


# ----------------------------------------------------------------------------------------------
# SP-CNN (Sec. 5)
# ----------------------------------------------------------------------------------------------
def build_sp_cnn(cfg) -> keras.Model:
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
                 key: str = "sp_cnn", verbose=2):
    """Train SP-CNN with ``MSE - R`` (``with_prior``) or plain MSE; returns ``(model, info)``."""
    from microrepro.reproductions.spines import sp_cnn

    scfg = cfg.sp_cnn
    training.set_seed(seed)
    images, targets, centres = sp_cnn_arrays(cfg, train)
    patches = sp_cnn.cut_patches([t[..., 1] for t in targets], centres, scfg.prior_size)
    priors = sp_cnn.select_shape_priors(patches, scfg.n_priors, scfg.prior_selection, seed)
    folder = training.train_dir(run_dir, key)
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "shape_priors.npy", priors)
    model = build_sp_cnn(cfg)
    loss = sp_cnn.SpCnnLoss(priors, scfg.pool_window, scfg.output_threshold, scfg.reg_weight if with_prior else 0.0)
    model.compile(optimizer=make_optimizer(scfg.train), loss=loss)
    dataset = sp_cnn_dataset(images, targets, scfg.train.batch_size, seed)
    info = _fit(model, dataset, scfg.train, run_dir, key, verbose)
    info["loss"] = "MSE - R (eq. 3)" if with_prior else "MSE"
    info["input_size"] = train.size
    return model, info


def detect_sp_cnn(model, cfg, prepared: data_lib.Prepared, batch_size: int = 8) -> list:
    """Local maxima of the SP-CNN map -> 15x15 boxes in original pixels, score = map value."""
    from microrepro.reproductions.spines import sp_cnn

    scfg = cfg.sp_cnn
    # Peaks below the F1 threshold are kept (down to 0.05) so that mAP sees a ranking.
    floor = min(0.05, scfg.peak_threshold)
    out = []
    for start, images in data_lib.eval_batches(prepared, batch_size):
        maps = np.asarray(model.predict_on_batch(images))[..., 0]
        for i, heatmap in enumerate(maps):
            points, scores = sp_cnn.detect_peaks(heatmap, floor, scfg.peak_min_distance)
            sx, sy = prepared.scales[start + i]
            points = points / np.array([sx, sy], np.float32)
            out.append((postprocess.points_to_square_boxes(points, cfg.data.box_size), scores))
    return out


# ----------------------------------------------------------------------------------------------
# Faster R-CNN with an Inception-V2 backbone (Sec. 3.1)
# ----------------------------------------------------------------------------------------------
def faster_rcnn_config(cfg, seed: int | None = None):
    """The shared ``FasterRCNNConfig`` filled from the spines config (TF OD API names in comments)."""
    try:
        from microrepro.common.detection.faster_rcnn import FasterRCNNConfig
        from microrepro.reproductions.spines import inception_v2
    except ImportError as err:  # the shared detection package is written in parallel
        raise NotAvailable(f"common.detection.faster_rcnn is not available ({err})") from None
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
        score_threshold=0.01,  # keep low scores for mAP; F1 uses faster_rcnn.score_threshold
        detection_nms_iou=float(f.nms_iou),
        max_detections=int(f.max_detections),
        seed=seed,
    )


def build_faster_rcnn(cfg, seed: int | None = None) -> keras.Model:
    from microrepro.reproductions.spines import inception_v2

    f = cfg.faster_rcnn
    config = faster_rcnn_config(cfg, seed)
    from microrepro.common.detection.faster_rcnn import FasterRCNN

    try:
        backbone = inception_v2.build_inception_v2(
            in_channels=1, width_multiplier=f.width_multiplier, input_size=f.input_size,
            final_endpoint=f.feature_endpoint, bn_momentum=f.bn_momentum,
        )
    except ValueError as err:  # width_multiplier / bn_momentum out of range: a config value
        raise ConfigError(f"faster_rcnn: {err}") from None
    return FasterRCNN(backbone, config, name="faster_rcnn_inception_v2")


def train_faster_rcnn(cfg, train: data_lib.Prepared, run_dir: Path, seed: int, verbose=2):
    """Train Faster R-CNN (Inception-V2) on the prepared split; returns ``(model, info)``."""
    import tensorflow as tf

    from microrepro.reproductions.spines import inception_v2

    f = cfg.faster_rcnn
    if train.size != f.input_size:
        raise ConfigError(f"faster_rcnn: data prepared at {train.size} px but input_size is {f.input_size}")
    training.set_seed(seed)
    model = build_faster_rcnn(cfg, seed)
    init = inception_v2.load_pretrained(model.backbone, f.pretrained)
    model.compile(optimizer=make_optimizer(f.train))
    dataset = data_lib.detection_dataset(
        train, f.train.batch_size, seed, flip_horizontal=f.flip_horizontal, normalised=False,
    ).map(lambda im, b: (im, {"boxes": b, "classes": tf.where(b[..., 2] > b[..., 0], 0, -1)}))
    info = _fit(model, dataset, f.train, run_dir, "faster_rcnn", verbose)
    info["init"] = init
    info["input_size"] = f.input_size
    return model, info


def detect_faster_rcnn(model, cfg, prepared: data_lib.Prepared, batch_size: int = 8) -> list:
    """Faster R-CNN detections mapped back to original pixels (all scores above 0.01)."""
    out = []
    for start, images in data_lib.eval_batches(prepared, batch_size):
        dets = model.predict_on_batch(images)  # the compiled predict step (graph / jit), not eager
        boxes = np.asarray(dets["boxes"])
        scores = np.asarray(dets["scores"])
        count = np.asarray(dets["num_detections"]).astype(int)
        for i in range(len(images)):
            n = int(count[i])
            out.append((postprocess.rescale_boxes(boxes[i, :n], prepared.scales[start + i]), scores[i, :n].astype(np.float32)))
    return out
