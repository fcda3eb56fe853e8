"""The spines reproduction: Faster R-CNN (Inception-V2), tiny-YOLOv2 and SP-CNN on dendritic spines.

``TASK.reproduce`` trains every enabled model of Table 1 (plus SP-CNN and its plain-MSE twin of
Sec. 5), evaluates them on the held-out ``test`` split when the data folder has one, else on the
stratified ``val`` split carved from train, and records precision / recall / F1 (IoU >= 0.4 or
6 px, one-to-one), mAP@0.5, the released evaluation rule and ms per image.

Reference: Aroui, "Deep Learning for Dendritic Spines Detection", Table 1, Sec. 2-5.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import numpy as np

from microrepro.common.data_sources import DataSource
from microrepro.common.runs import DataInfo, Run, checksum_files
from microrepro.common.task import Task
from microrepro.reproductions.spines import data as data_lib
from microrepro.reproductions.spines import postprocess, runners
from microrepro.reproductions.spines.config import SpinesConfig

MODELS = ("yolov2", "faster_rcnn", "sp_cnn", "sp_cnn_mse")
_CFG_SECTION = {"yolov2": "yolo", "faster_rcnn": "faster_rcnn", "sp_cnn": "sp_cnn", "sp_cnn_mse": "sp_cnn"}


THRESHOLD_RULES = ("fixed", "train_f1")


def _threshold_rule(cfg: SpinesConfig, key: str) -> str:
    """``fixed`` (the configured score threshold) or ``train_f1`` (chosen on training images)."""
    if key not in ("yolov2", "faster_rcnn"):
        return "fixed"  # SP-CNN: peak_threshold, the released notebook's 0.5
    rule = getattr(cfg, _CFG_SECTION[key]).threshold_rule
    if rule not in THRESHOLD_RULES:
        from microrepro.common.errors import ConfigError

        raise ConfigError(f"{_CFG_SECTION[key]}.threshold_rule must be one of {', '.join(THRESHOLD_RULES)}, got {rule!r}")
    return rule


def _check_threshold_config(cfg: SpinesConfig) -> None:
    """Every model's threshold_rule, and the train_f1 grid, are valid (ConfigError otherwise)."""
    from microrepro.common.errors import ConfigError

    for key in MODELS:
        _threshold_rule(cfg, key)
    if not 0 < cfg.matching.threshold_step <= 0.9:
        raise ConfigError(f"matching.threshold_step must be in (0, 0.9], got {cfg.matching.threshold_step}")
    if cfg.matching.threshold_images < 0:
        raise ConfigError(f"matching.threshold_images must be >= 0 (0 = all), got {cfg.matching.threshold_images}")


def _configured_threshold(cfg: SpinesConfig, key: str) -> float:
    if key == "yolov2":
        return cfg.yolo.score_threshold
    if key == "faster_rcnn":
        return cfg.faster_rcnn.score_threshold
    return cfg.sp_cnn.peak_threshold


def threshold_path(run_dir: Path, key: str) -> Path:
    """Where a run keeps the operating threshold chosen for ``key`` (beside its weights)."""
    return Path(run_dir) / "train" / key / "operating_threshold.json"


def operating_threshold(cfg: SpinesConfig, key: str, run_dir: Path) -> float:
    """The score threshold ``key``'s detections are kept at for P/R/F1, overlays and predict."""
    if _threshold_rule(cfg, key) == "fixed":
        return _configured_threshold(cfg, key)
    path = threshold_path(run_dir, key)
    if not path.is_file():
        from microrepro.common.errors import UserError

        raise UserError(
            f"{key}: threshold_rule is train_f1 but {path} does not exist (the threshold is chosen after "
            f"training); run `microrepro evaluate {run_dir}` to choose it, or pass --threshold"
        )
    return float(json.loads(path.read_text())["threshold"])


def _input_size(cfg: SpinesConfig, key: str) -> tuple[int, bool]:
    if key == "yolov2":
        return cfg.yolo.input_size, False
    if key == "faster_rcnn":
        return cfg.faster_rcnn.input_size, cfg.faster_rcnn.keep_aspect_ratio
    return cfg.sp_cnn.input_size, False


def _enabled(cfg: SpinesConfig, key: str) -> bool:
    return bool(getattr(cfg, _CFG_SECTION[key]).enabled)


class SpinesTask(Task):
    """Table 1 of the spines paper: see the module docstring."""

    name = "spines"
    title = "Deep Learning for Dendritic Spines Detection (Faster R-CNN, tiny-YOLOv2, SP-CNN)"
    dataset = "spines"
    config_cls = SpinesConfig
    folder = Path(__file__).parent

    # ------------------------------------------------------------------------------------------
    def _data_info(self, splits: dict, samples: list) -> DataInfo:
        files = [s.image_path for s in samples if s.image_path is not None]
        return DataInfo(
            kind=splits["kind"],
            dataset="spines" if splits["kind"] == "real" else "synthetic spines",
            n_images=len(samples),
            checksum=checksum_files(files) if files else "",
            note=splits["note"],
        )

    def _train(self, key: str, cfg: SpinesConfig, train: data_lib.Prepared, run_dir: Path, seed: int):
        if key == "yolov2":
            return runners.train_yolo(cfg, train, run_dir, seed)
        if key == "faster_rcnn":
            return runners.train_faster_rcnn(cfg, train, run_dir, seed)
        return runners.train_sp_cnn(cfg, train, run_dir, seed, with_prior=(key == "sp_cnn"), key=key)

    def _build_trained(self, key: str, cfg: SpinesConfig, run_dir: Path):
        from microrepro.common import training

        if key == "yolov2":
            model = runners.build_yolo(cfg)
        elif key == "faster_rcnn":
            model = runners.build_faster_rcnn(cfg)
        else:
            model = runners.build_sp_cnn(cfg)
        return training.load_weights(model, run_dir, key, which="last")

    def _detect(self, key: str, model, cfg: SpinesConfig, prepared: data_lib.Prepared) -> list:
        if key == "yolov2":
            return runners.detect_yolo(model, cfg, prepared)
        if key == "faster_rcnn":
            return runners.detect_faster_rcnn(model, cfg, prepared)
        return runners.detect_sp_cnn(model, cfg, prepared)

    def _choose_threshold(self, run: Run, key: str, model, cfg: SpinesConfig, train_samples: list) -> dict | None:
        """Rule ``train_f1``: choose ``key``'s score threshold by maximum F1 on training images.

        Uses ``matching.threshold_images`` training images spread evenly over the split (never the
        evaluation split) and writes ``train/<key>/operating_threshold.json``; a run that already
        has one keeps it (the weights it was chosen for are the ones stored). ``None`` for ``fixed``.
        """
        if _threshold_rule(cfg, key) != "train_f1":
            return None
        path = threshold_path(run.run_dir, key)
        if path.is_file():
            return json.loads(path.read_text())
        m = cfg.matching
        samples = spread(train_samples, m.threshold_images)
        size, keep = _input_size(cfg, key)
        prepared = data_lib.prepare(samples, size, cfg.data.max_boxes, keep)
        detections = self._detect(key, model, cfg, prepared)
        threshold, f1, sweep = postprocess.choose_threshold(
            detections, prepared.gt_boxes, m.threshold_step, m.iou_threshold, m.max_dist
        )
        chosen = {
            "rule": "train_f1", "threshold": threshold, "train_f1": f1, "n_images": len(samples),
            "sweep": {k: v.tolist() for k, v in sweep.items()},
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(chosen, indent=1))
        print(f"[spines] {key}: score threshold {threshold:.3f} (max F1 {f1:.3f} on {len(samples)} training images)")
        return chosen

    def _evaluate_model(self, run: Run, key: str, model, cfg, prepared, split: str, info: DataInfo,
                        chosen: dict | None = None) -> dict:
        detections = self._detect(key, model, cfg, prepared)
        m = cfg.matching
        threshold = operating_threshold(cfg, key, run.run_dir)
        metrics = postprocess.evaluate_detections(
            detections, prepared.gt_boxes, threshold, m.iou_threshold, m.max_dist,
            m.map_iou_threshold, m.released_max_dist, m.released_score_threshold,
        )
        n_time = min(cfg.timing_images, len(prepared))
        sample = prepared.images[:n_time, ..., None].astype(np.float32) / 255.0
        one = data_lib.Prepared(prepared.images[:1], prepared.boxes[:1], prepared.scales[:1], prepared.gt_boxes[:1],
                                prepared.ids[:1], prepared.shapes[:1], prepared.size)

        def predict_one(batch):  # network + decoding + NMS, the whole inference of one image
            one.images = (batch[..., 0] * 255).astype(np.uint8)
            return self._detect(key, model, cfg, one)

        metrics["ms_per_image"] = runners.time_per_image(predict_one, sample, cfg.timing_repeats)
        metrics["score_threshold"] = threshold
        if chosen is not None:
            metrics["train_f1_at_threshold"] = chosen["train_f1"]
        run.add_metrics(key, split, metrics, info)
        self._figures(run, key, detections, prepared, cfg, threshold)
        return {"detections": detections, "metrics": metrics}

    def _figures(self, run: Run, key: str, detections, prepared, cfg, threshold: float) -> None:
        from microrepro.common import matching
        from microrepro.common.figures import montage

        tiles, titles = [], []
        for i in range(min(cfg.n_figure_images, len(prepared))):
            boxes, scores = detections[i]
            kept = boxes[scores >= threshold]
            result = matching.match_spines(kept, prepared.gt_boxes[i], cfg.matching.iou_threshold, cfg.matching.max_dist)
            tiles.append(_overlay(prepared, i, kept, result))
            titles.append(f"{prepared.ids[i]}: TP {result.tp} FP {result.fp} FN {result.fn}")
        if tiles:
            montage(tiles, titles, run.figure_path(f"{key}_predictions"), ncols=3)

    # ------------------------------------------------------------------------------------------
    def reproduce(self, run: Run, data: DataSource) -> None:
        cfg: SpinesConfig = run.config
        splits = data_lib.load_splits(data, cfg, run.seed)
        split = splits["eval_split"]
        info = self._data_info(splits, splits["eval"])
        _check_threshold_config(cfg)  # a ConfigError now, not after an hour of training
        print(f"[spines] {len(splits['train'])} training images, {len(splits['eval'])} {split} images ({splits['kind']})")
        prepared: dict = {}
        sweeps = {}
        for key in MODELS:
            if not _enabled(cfg, key):
                continue
            size, keep = _input_size(cfg, key)
            if (size, keep) not in prepared:
                prepared[(size, keep)] = (
                    data_lib.prepare(splits["train"], size, cfg.data.max_boxes, keep),
                    data_lib.prepare(splits["eval"], size, cfg.data.max_boxes, keep),
                )
            train, evaluation = prepared[(size, keep)]
            print(f"[spines] training {key} ...")
            try:
                model, schedule = self._train(key, cfg, train, run.run_dir, run.seed)
            except runners.NotAvailable as err:
                print(f"[spines] {key} skipped: {err}")
                run.extra.setdefault("skipped", {})[key] = str(err)
                run.save()
                continue
            run.schedule_run[key] = schedule
            run.save()
            from microrepro.common import training

            training.plot_history(run.run_dir, key, run.figure_path(f"{key}_loss"), f"{key}: training loss")
            chosen = self._choose_threshold(run, key, model, cfg, splits["train"])
            out = self._evaluate_model(run, key, model, cfg, evaluation, split, info, chosen)
            print(f"[spines] {key} on {split}: " + ", ".join(f"{k}={out['metrics'][k]:.3f}" for k in ("precision", "recall", "f1", "map50", "ms_per_image")))
            sweeps[key] = postprocess.f1_sweep(
                out["detections"], evaluation.gt_boxes, np.linspace(0.05, 0.95, 19),
                cfg.matching.iou_threshold, cfg.matching.max_dist,
            )
            if chosen is not None:
                sweeps[f"{key} (train)"] = {k: np.asarray(v) for k, v in chosen["sweep"].items()}
        if sweeps:
            from microrepro.common.figures import plot_curves

            plot_curves(
                {k: (v["threshold"], v["f1"]) for k, v in sweeps.items()}, "score threshold", "F1 (IoU>=0.4 or 6 px)",
                f"F1 vs score threshold ({split}; '(train)': training images)",
                run.figure_path("f1_vs_threshold"),
            )
            (run.run_dir / "f1_sweep.json").write_text(
                json.dumps({k: {m: v.tolist() for m, v in s.items()} for k, s in sweeps.items()}, indent=1)
            )

    def evaluate(self, run: Run, data: DataSource) -> None:
        cfg: SpinesConfig = run.config
        _check_threshold_config(cfg)
        splits = data_lib.load_splits(data, cfg, run.seed)
        split = splits["eval_split"]
        info = self._data_info(splits, splits["eval"])
        for key in MODELS:
            if not _enabled(cfg, key):
                continue
            weights = run.run_dir / "train" / key / "last.weights.h5"
            if not weights.is_file():
                print(f"[spines] {key}: no trained weights in {run.run_dir}, skipped")
                continue
            size, keep = _input_size(cfg, key)
            evaluation = data_lib.prepare(splits["eval"], size, cfg.data.max_boxes, keep)
            model = self._build_trained(key, cfg, run.run_dir)
            chosen = self._choose_threshold(run, key, model, cfg, splits["train"])
            self._evaluate_model(run, key, model, cfg, evaluation, split, info, chosen)

    def predict(self, run_dir: Path, images: list[Path], out_dir: Path, model: str = "yolov2",
                threshold: float | None = None, **options) -> list[Path]:
        """Detect spines in ``images`` with a trained model of ``run_dir``.

        Writes per image ``<stem>.csv`` (x, y, x1, y1, x2, y2, score; boxes px of the original
        image, x/y the box centre) and ``<stem>_overlay.png``, plus ``counts.csv`` (image, count).

        Args:
            run_dir: a finished run folder.
            images: image files.
            out_dir: output folder (created).
            model: one of "yolov2", "faster_rcnn", "sp_cnn", "sp_cnn_mse".
            threshold: keep detections whose score is at or above this (default: the run's operating
                threshold: the configured one, or the one chosen on training images (train_f1)).

        Returns:
            The written paths.
        """
        from microrepro.common.errors import UserError
        from microrepro.common.figures import draw_detections
        from microrepro.common.imageio import read_image
        from microrepro.datasets.base import Sample

        if model not in MODELS:
            raise UserError(f"unknown spines model {model!r}; choose one of {', '.join(MODELS)}")
        if options:
            raise UserError(f"unknown predict option(s) {sorted(options)} for spines (model, threshold)")
        run_dir, out_dir = Path(run_dir), Path(out_dir)
        cfg: SpinesConfig = self.config_from_run(run_dir)
        threshold = operating_threshold(cfg, model, run_dir) if threshold is None else float(threshold)
        net = self._build_trained(model, cfg, run_dir)
        size, keep = _input_size(cfg, model)
        out_dir.mkdir(parents=True, exist_ok=True)
        written, counts = [], []
        for path in images:
            path = Path(path)
            sample = Sample(id=path.stem, image_array=read_image(path))
            prepared = data_lib.prepare([sample], size, cfg.data.max_boxes, keep)
            boxes, scores = self._detect(model, net, cfg, prepared)[0]
            keep_mask = scores >= threshold
            boxes, scores = boxes[keep_mask], scores[keep_mask]
            csv_path = out_dir / f"{path.stem}.csv"
            with open(csv_path, "w", newline="") as fh:
                writer = csv.writer(fh)
                writer.writerow(["x", "y", "x1", "y1", "x2", "y2", "score"])
                for (x1, y1, x2, y2), s in zip(boxes, scores):
                    writer.writerow([f"{(x1 + x2) / 2:.2f}", f"{(y1 + y2) / 2:.2f}", f"{x1:.2f}", f"{y1:.2f}",
                                     f"{x2:.2f}", f"{y2:.2f}", f"{s:.4f}"])
            png = draw_detections(sample.image, boxes, np.zeros((0, 4), np.float32), out_dir / f"{path.stem}_overlay.png",
                                  title=f"{model}: {len(boxes)} spines")
            written += [csv_path, png]
            counts.append((path.name, len(boxes)))
        counts_path = out_dir / "counts.csv"
        with open(counts_path, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["image", "count"])
            writer.writerows(counts)
        written.append(counts_path)
        return written


def spread(samples: list, n: int) -> list:
    """``n`` of ``samples`` spread evenly over the list (all of them when ``n`` is 0 or larger)."""
    if n <= 0 or n >= len(samples):
        return list(samples)
    return [samples[i] for i in np.unique(np.linspace(0, len(samples) - 1, n).round().astype(int))]


def _overlay(prepared: data_lib.Prepared, i: int, boxes: np.ndarray, result) -> np.ndarray:
    """An RGB picture of image ``i`` (original size) with TP green, FP red, missed spines blue."""
    import cv2

    h, w = prepared.shapes[i]
    grey = cv2.resize(prepared.images[i], (int(w), int(h)), interpolation=cv2.INTER_LINEAR)
    scale = 2
    canvas = cv2.cvtColor(cv2.resize(grey, (int(w) * scale, int(h) * scale), interpolation=cv2.INTER_NEAREST), cv2.COLOR_GRAY2RGB)
    tp_pred = set(result.pairs[:, 0].tolist()) if len(result.pairs) else set()
    tp_gt = set(result.pairs[:, 1].tolist()) if len(result.pairs) else set()
    for j, b in enumerate(prepared.gt_boxes[i]):
        colour = (0, 160, 0) if j in tp_gt else (40, 90, 255)
        cv2.rectangle(canvas, tuple(int(v * scale) for v in b[:2]), tuple(int(v * scale) for v in b[2:]), colour, 1)
    for j, b in enumerate(boxes):
        colour = (0, 255, 0) if j in tp_pred else (255, 0, 0)
        cv2.rectangle(canvas, tuple(int(v * scale) for v in b[:2]), tuple(int(v * scale) for v in b[2:]), colour, 2)
    return canvas


TASK = SpinesTask()
