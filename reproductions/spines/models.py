"""The spine detectors of the reproduction, one table: model name -> how to build, train and run it.

``SPECS`` is the only place that knows which config section, trainer, detector and threshold
belong to ``yolov2``, ``faster_rcnn``, ``sp_cnn`` (MSE - R, R's gradient kept), ``sp_cnn_hard``
(MSE - R with the text's hard threshold: R has no gradient) and ``sp_cnn_mse`` (plain MSE); the
task, the evaluation and predict look a model up here instead of branching on its name.

Reference: Table 1 (tiny-YOLOv2, Faster R-CNN), Sec. 5 (SP-CNN and its loss).
"""

from __future__ import annotations

import math
import typing
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from microrepro.reproductions.spines import detect, train
from microrepro.reproductions.spines.config import ThresholdRule

THRESHOLD_RULES: tuple[str, ...] = typing.get_args(ThresholdRule)  # ("fixed", "train_f1")


@dataclass(frozen=True)
class ModelSpec:
    """One detector of the reproduction.

    Attributes:
        name: the model's key in metrics, figures, ``train/<name>/`` and ``predict --model``.
        section: its config section (``cfg.<section>``: enabled, input_size, train...).
        build: ``fn(cfg) -> keras.Model`` (untrained).
        train: ``fn(cfg, prepared, run_dir, seed, verbose=2) -> (model, schedule)``.
        detect: ``fn(model, cfg, prepared) -> [(boxes (N, 4) xyxy px of the original image,
            scores (N,))]`` per image, every score above the detector's floor.
        threshold_key: the section's configured threshold (``score_threshold`` / ``peak_threshold``).
        threshold_chosen: whether the section's ``threshold_rule`` may choose the threshold on
            training images (``train_f1``); otherwise it is always the configured one.
        score_range: what the scores are: probabilities ``(0, 1)``, or SP-CNN's linear map value
            (trained towards 1 at a spine, unbounded above).
        nms_key: the section's NMS IoU, used to merge the tiles of a large field (None: no NMS).
    """

    name: str
    section: str
    build: Callable
    train: Callable
    detect: Callable
    threshold_key: str
    threshold_chosen: bool
    score_range: tuple[float, float]
    nms_key: str | None

    def config(self, cfg):
        """The model's config section."""
        return getattr(cfg, self.section)

    def enabled(self, cfg) -> bool:
        return bool(self.config(cfg).enabled)

    def input_size(self, cfg) -> tuple[int, bool]:
        """``(network input side px, keep_aspect_ratio)`` the images are resized with."""
        section = self.config(cfg)
        return int(section.input_size), bool(getattr(section, "keep_aspect_ratio", False))

    def configured_threshold(self, cfg) -> float:
        return float(getattr(self.config(cfg), self.threshold_key))

    def nms_iou(self, cfg) -> float:
        return 1.0 if self.nms_key is None else float(getattr(self.config(cfg), self.nms_key))

    def threshold_rule(self, cfg) -> str:
        """``fixed`` (the configured threshold) or ``train_f1`` (max F1 on training images)."""
        if not self.threshold_chosen:
            return "fixed"  # SP-CNN: peak_threshold, the released notebook's 0.5
        return self.config(cfg).threshold_rule  # one of THRESHOLD_RULES: checked by config.ThresholdRule

    def load_trained(self, cfg, run_dir: Path):
        """The model with the last weights of ``run_dir/train/<name>/`` (UserError when missing)."""
        from microrepro.common import training

        return training.load_weights(self.build(cfg), run_dir, self.name, which="last")


SPECS: dict[str, ModelSpec] = {
    "yolov2": ModelSpec(
        "yolov2", "yolo", train.build_yolo, train.train_yolo, detect.detect_yolo,
        "score_threshold", True, (0.0, 1.0), "nms_iou",
    ),
    "faster_rcnn": ModelSpec(
        "faster_rcnn", "faster_rcnn", train.build_faster_rcnn, train.train_faster_rcnn, detect.detect_faster_rcnn,
        "score_threshold", True, (0.0, 1.0), "nms_iou",
    ),
    "sp_cnn": ModelSpec(
        "sp_cnn", "sp_cnn", train.build_sp_cnn, partial(train.train_sp_cnn, with_prior=True, name="sp_cnn"),
        detect.detect_sp_cnn, "peak_threshold", False, (0.0, math.inf), None,
    ),
    "sp_cnn_hard": ModelSpec(
        "sp_cnn_hard", "sp_cnn", train.build_sp_cnn,
        partial(train.train_sp_cnn, with_prior=True, gate="hard", name="sp_cnn_hard"),
        detect.detect_sp_cnn, "peak_threshold", False, (0.0, math.inf), None,
    ),
    "sp_cnn_mse": ModelSpec(
        "sp_cnn_mse", "sp_cnn", train.build_sp_cnn, partial(train.train_sp_cnn, with_prior=False, name="sp_cnn_mse"),
        detect.detect_sp_cnn, "peak_threshold", False, (0.0, math.inf), None,
    ),
}
MODELS = tuple(SPECS)
