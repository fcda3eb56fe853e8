"""The spines reproduction: Faster R-CNN (Inception-V2), tiny-YOLOv2 and SP-CNN on dendritic spines.

``TASK.reproduce`` trains every enabled model of Table 1 (plus SP-CNN and its plain-MSE twin of
Sec. 5), stores each one's operating threshold (``common.thresholds``), evaluates them on the
held-out ``test`` split when the data folder has one, else on the stratified ``val`` split carved
from train, and records precision / recall / F1 (IoU >= 0.4 or 6 px, one-to-one), mAP@0.5, the
released evaluation rule and ms per image. ``TASK.predict`` (shared, ``common.predict``) runs a
trained model on images as users have them (``load_predictor``).

Reference: Aroui, "Deep Learning for Dendritic Spines Detection", Table 1, Sec. 2-5.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from microrepro.common import thresholds
from microrepro.common.data_sources import DataSource
from microrepro.common.predict import Objects, Predictor
from microrepro.common.runs import DataInfo, Run, checksum_files
from microrepro.common.task import Task
from microrepro.reproductions.spines import data as data_lib
from microrepro.reproductions.spines import evaluate as evaluation
from microrepro.reproductions.spines.config import SpinesConfig
from microrepro.reproductions.spines.detect import detect_image
from microrepro.reproductions.spines.models import MODELS, SPECS, ModelSpec


class SpinesTask(Task):
    """Table 1 of the spines paper: see the module docstring."""

    name = "spines"
    title = "Deep Learning for Dendritic Spines Detection (Faster R-CNN, tiny-YOLOv2, SP-CNN)"
    dataset = "spines"
    config_cls = SpinesConfig
    models = MODELS
    default_model = "yolov2"

    def _data_info(self, splits: dict, samples: list) -> DataInfo:
        files = [s.image_path for s in samples if s.image_path is not None]
        return DataInfo(
            kind=splits["kind"],
            dataset=splits.get("dataset", "spines" if splits["kind"] == "real" else "synthetic spines"),
            n_images=len(samples),
            checksum=checksum_files(files) if files else "",
            note=splits["note"],
        )

    def _splits(self, run: Run, data: DataSource) -> tuple[dict, str, DataInfo]:
        cfg: SpinesConfig = run.config
        splits = data_lib.load_splits(data, cfg, run.seed)
        return splits, splits["eval_split"], self._data_info(splits, splits["eval"])

    def reproduce(self, run: Run, data: DataSource) -> None:
        """Train, choose the threshold of, and evaluate every enabled model (Table 1, Sec. 5)."""
        from microrepro.common import training

        cfg: SpinesConfig = run.config
        splits, split, info = self._splits(run, data)
        print(f"[spines] {len(splits['train'])} training images, {len(splits['eval'])} {split} images "
              f"({splits['kind']})")
        prepared: dict = {}
        curves: dict[str, dict] = {}
        per_image: dict[str, dict] = {}
        for spec in SPECS.values():
            if not spec.enabled(cfg):
                continue
            size, keep = spec.input_size(cfg)
            if (size, keep) not in prepared:
                prepared[(size, keep)] = (
                    data_lib.prepare(splits["train"], size, cfg.data.max_boxes, keep),
                    data_lib.prepare(splits["eval"], size, cfg.data.max_boxes, keep),
                )
            train, held_out = prepared[(size, keep)]
            print(f"[spines] training {spec.name} ...")
            model, schedule = spec.train(cfg, train, run.run_dir, run.seed)
            run.schedule_run[spec.name] = schedule
            run.save()
            training.plot_history(run.run_dir, spec.name, run.figure_path(f"{spec.name}_loss"),
                                  f"{spec.name}: training loss")
            threshold = evaluation.operating_threshold(run.run_dir, spec, model, cfg, splits["train"])
            out = evaluation.evaluate_model(run, spec, model, cfg, held_out, split, info, threshold)
            per_image[spec.name] = out["per_image"]
            print(f"[spines] {spec.name} on {split}: "
                  + ", ".join(f"{k}={out['metrics'][k]:.3f}" for k in ("precision", "recall", "f1", "map50",
                                                                       "ms_per_image")))
            curves[spec.name] = evaluation.f1_sweep(out["detections"], held_out.gt_boxes, evaluation.FIGURE_GRID,
                                                    cfg.matching)
            if threshold.curve:
                curves[f"{spec.name} (train)"] = threshold.curve
        evaluation.record_paired(run, split, info, per_image)
        if curves:
            evaluation.threshold_figure(run, curves, split)
            held_out_curves = {k: {m: np.asarray(v).tolist() for m, v in c.items()} for k, c in curves.items()
                               if not k.endswith("(train)")}
            (run.run_dir / "f1_sweep.json").write_text(json.dumps(held_out_curves, indent=1))

    def evaluate(self, run: Run, data: DataSource) -> None:
        """Re-evaluate the trained models of ``run`` (thresholds chosen on training images are kept)."""
        cfg: SpinesConfig = run.config
        splits, split, info = self._splits(run, data)
        per_image: dict[str, dict] = {}
        for spec in SPECS.values():
            if not spec.enabled(cfg):
                continue
            if not (run.run_dir / "train" / spec.name / "last.weights.h5").is_file():
                print(f"[spines] {spec.name}: no trained weights in {run.run_dir}, skipped")
                continue
            size, keep = spec.input_size(cfg)
            held_out = data_lib.prepare(splits["eval"], size, cfg.data.max_boxes, keep)
            model = spec.load_trained(cfg, run.run_dir)
            threshold = evaluation.operating_threshold(run.run_dir, spec, model, cfg, splits["train"], reuse=True)
            out = evaluation.evaluate_model(run, spec, model, cfg, held_out, split, info, threshold)
            per_image[spec.name] = out["per_image"]
        evaluation.record_paired(run, split, info, per_image)

    def load_predictor(self, run_dir: Path, model: str) -> Predictor:
        """``model`` of the run ``run_dir`` with its stored threshold, for ``common.predict``.

        The predictor takes one image as read (grey or colour, 8/16-bit or float), converts it to
        8-bit grey, resizes it (tiles of ``detect.PREDICT_TILE`` px for large fields) and returns
        the spines at or above the threshold as boxes in px of that image (``detect.detect_image``).
        """
        spec: ModelSpec = SPECS[self.check_model(model)]
        run_dir = Path(run_dir)
        cfg: SpinesConfig = self.config_from_run(run_dir)
        stored = thresholds.load(run_dir, spec.name)  # before building: a missing one fails at once
        net = spec.load_trained(cfg, run_dir)
        size, keep = spec.input_size(cfg)
        nms_iou = spec.nms_iou(cfg)

        def detect(image: np.ndarray, threshold: float) -> Objects:
            boxes, scores = detect_image(lambda prepared: spec.detect(net, cfg, prepared), image, size, keep,
                                         nms_iou=nms_iou)
            kept = scores >= threshold
            return Objects.from_boxes(boxes[kept], scores[kept], ["spine"] * int(kept.sum()))

        return Predictor(paper=self.name, model=spec.name, threshold=stored.value, detect=detect, noun="spines",
                         min_size=int(cfg.data.box_size), score_range=spec.score_range)


TASK = SpinesTask()
