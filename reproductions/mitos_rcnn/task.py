"""The MITOS-RCNN reproduction: Table II (three detectors, one data set and schedule) and Table III.

``TASK.reproduce``:

1. builds the fields: real-appearance 512x512 mosaics of AMi-Br crops (``datasets/amibr``),
   split by slide into training and ``real_mosaic`` test fields, and synthetic H&E fields of both
   scanner profiles (``datasets/synthetic/he_fields``) for the ``synthetic_test`` split (and for
   training when no real data is found);
2. adds Macenko-normalised copies of the training fields and cuts random subsections at the
   paper's scale (``data.py``);
3. trains ``faster_rcnn_conv5``, ``faster_rcnn_conv4`` and ``mitos_rcnn`` with the same data and
   schedule (``common.training.fit``);
4. predicts whole fields by overlapping subsections, chooses the score threshold of best F1 on
   training-slide fields, and records precision / recall / F1 (8 um rule) per split, recall per
   size tercile on the synthetic fields (the small-object ablation) and seconds per HPF;
5. records the F1 recomputed from the paper's Fig. 4 confusion matrices (model ``fig4_confusion``).

Reference: Rao, MITOS-RCNN, Sec. IV-V, Tables II-III, Fig. 4.
"""

from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path

import numpy as np
import yaml

from microrepro.common.data_sources import DataSource
from microrepro.common.errors import ConfigError, UserError
from microrepro.common.runs import DataInfo, Run, checksum_files
from microrepro.common.task import Task
from microrepro.reproductions.mitos_rcnn import data as data_lib
from microrepro.reproductions.mitos_rcnn import evaluation
from microrepro.reproductions.mitos_rcnn.config import MitosRCNNConfig
from microrepro.reproductions.mitos_rcnn.model import MODEL_KEYS

FIG4_MODEL = "fig4_confusion"


def fig4_metrics(published: dict) -> dict:
    """F1 of each Fig. 4 confusion matrix (counts read from published.yaml), keyed by position.

    Returns:
        ``{"f1_top": ..., "f1_middle": ..., "f1_bottom": ...}`` (Fig. 4 from top to bottom).

    Raises:
        ConfigError: published.yaml lacks ``fig4_confusion`` or a matrix lacks tp/fp/fn.
    """
    matrices = published.get("fig4_confusion")
    if not matrices:
        raise ConfigError("published.yaml: no 'fig4_confusion' list of confusion matrices")
    out = {}
    for matrix in matrices:
        try:
            out[f"f1_{matrix['position']}"] = evaluation.confusion_f1(int(matrix["tp"]), int(matrix["fp"]), int(matrix["fn"]))
        except KeyError as err:
            raise ConfigError(f"published.yaml: a fig4_confusion entry lacks {err}: {matrix}") from None
    return out


class _TimeBudget:
    """A keras callback (built lazily, keras is heavy to import) that stops after ``minutes``."""

    @staticmethod
    def make(minutes: float):
        import keras

        class TimeBudget(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.seconds, self.start, self.stopped = float(minutes) * 60.0, None, False
                self.epoch_steps = 0  # steps run in the current (last) epoch

            def on_train_begin(self, logs=None):
                self.start = time.perf_counter()

            def on_epoch_begin(self, epoch, logs=None):
                self.epoch_steps = 0

            def on_train_batch_end(self, batch, logs=None):
                self.epoch_steps += 1
                if self.seconds > 0 and time.perf_counter() - self.start > self.seconds:
                    self.model.stop_training, self.stopped = True, True

        return TimeBudget()


def make_optimizer(train):
    """SGD with momentum and weight decay (Sec. IV-B.4), or Adam for CPU schedules from scratch.

    Keras' ``weight_decay`` is decoupled (``w -= lr * wd * w`` each step); for SGD that is the
    Caffe L2 weight decay of the paper up to its interaction with momentum.
    """
    import keras

    kwargs = {"weight_decay": train.weight_decay or None}
    if train.clipnorm:
        kwargs["clipnorm"] = float(train.clipnorm)
    if train.optimizer == "sgd":
        return keras.optimizers.SGD(train.lr, momentum=train.momentum, **kwargs)
    if train.optimizer == "adam":
        return keras.optimizers.Adam(train.lr, **kwargs)
    raise ConfigError(f"train.optimizer must be 'sgd' or 'adam', got {train.optimizer!r}")


class MitosRCNNTask(Task):
    """Tables II and III of MITOS-RCNN: see the module docstring."""

    name = "mitos_rcnn"
    title = "MITOS-RCNN: mitotic figure detection with a two-stage cascade RPN Faster R-CNN"
    dataset = "mitosis_amibr"
    config_cls = MitosRCNNConfig
    folder = Path(__file__).parent

    # ------------------------------------------------------------------------------- data
    def load_fields(self, cfg: MitosRCNNConfig, data: DataSource, seed: int) -> dict:
        """Training, tuning and test fields with their DataInfo.

        Returns:
            dict ``train`` (list of Sample), ``tune`` (training-slide fields for the threshold),
            ``tests`` ``{split: (fields, DataInfo)}``, ``kind`` "real" / "synthetic", ``note``.
        """
        from microrepro.datasets.synthetic import he_fields

        d = cfg.data
        size = (d.synthetic_field_size, d.synthetic_field_size)
        synth_test = []
        for k, scanner in enumerate(("aperio", "hamamatsu")):
            test_config = he_fields.HEConfig(image_size=size, scanner=scanner, mitoses_per_mm2=d.synthetic_test_mitoses_per_mm2)
            synth_test += he_fields.generate(d.synthetic_test_fields, d.synthetic_seed + 1 + k, test_config)
        tests = {
            "synthetic_test": (
                synth_test,
                DataInfo("synthetic", "he_fields (aperio + hamamatsu)", len(synth_test), "",
                         f"{size[0]}x{size[1]} fields, {d.synthetic_test_mitoses_per_mm2:g} mitoses/mm2, seed {d.synthetic_seed}"),
            )
        }  # fmt: skip

        def synthetic_train(n: int) -> list:
            half = n // 2
            return he_fields.generate(half, d.synthetic_seed, he_fields.HEConfig(image_size=size, scanner="aperio")) + he_fields.generate(
                n - half, d.synthetic_seed + 100, he_fields.HEConfig(image_size=size, scanner="hamamatsu")
            )

        if data.path is None:
            print("[mitos_rcnn] no real data found: training on SYNTHETIC H&E fields (datasets/synthetic/he_fields)")
            train = synthetic_train(d.synthetic_train_fields)
            return {"train": train, "tune": train[: d.tune_fields], "tests": tests, "kind": "synthetic",
                    "note": "synthetic he_fields"}  # fmt: skip
        from microrepro.datasets import amibr

        crops = amibr.load(data.path)
        train_crops, test_crops = amibr.slide_split(crops, d.test_fraction, seed)
        grid = tuple(int(v) for v in d.mosaic_grid)
        train = amibr.mosaics(train_crops, grid, seed)
        test = amibr.mosaics(test_crops, grid, seed + 1)
        if d.max_train_fields:
            train = train[: d.max_train_fields]
        if d.max_test_fields:
            test = test[: d.max_test_fields]
        if not train or not test:
            raise UserError(f"{data.path}: too few AMi-Br crops for {grid[0]}x{grid[1]} mosaics on both sides of the slide split")
        checksum = checksum_files([Path(c.image_path) for c in test_crops])
        tests["real_mosaic"] = (
            test,
            DataInfo("real", "mitosis_amibr", len(test), checksum,
                     f"{grid[0]}x{grid[1]} mosaics of 128 px AMi-Br crops, held-out slides; mitoses only"),
        )  # fmt: skip
        self._timing_crops = test_crops
        if d.train_on_synthetic_too:
            train = train + synthetic_train(d.synthetic_train_fields)
        return {"train": train, "tune": train[-d.tune_fields :] if d.tune_fields else train, "tests": tests,
                "kind": "real", "note": "AMi-Br mosaics"}  # fmt: skip

    def subsections(self, cfg: MitosRCNNConfig, fields: list, seed: int) -> tuple:
        """Training subsections of ``fields`` plus their Macenko copies; returns (Subsections, info)."""
        d = cfg.data
        used, info = list(fields), {"fields": len(fields)}
        if d.macenko:
            try:
                copies, skipped = data_lib.macenko_copies(fields, fields[0].image)
            except ImportError as err:
                raise ConfigError(f"data.macenko=true needs datasets/stain.py ({err}); set data.macenko=false") from None
            used += copies
            info.update(macenko_copies=len(copies), macenko_skipped=skipped)
        subs = data_lib.make_subsections(used, cfg.model.input_size, d.scale, d.box_um, d.tiles_per_field, seed)
        info["subsections"] = len(subs)
        info["objects"] = int((subs.classes >= 0).sum())
        return subs, info

    # ------------------------------------------------------------------------------ train
    def train_model(self, key: str, cfg: MitosRCNNConfig, subs, run_dir: Path, seed: int, verbose="auto"):
        """Build, compile and train one detector; returns ``(model, schedule_info)``."""
        from microrepro.common import training
        from microrepro.reproductions.mitos_rcnn.model import build_model

        t = cfg.train
        training.set_seed(seed)
        model = build_model(key, cfg.model, seed)
        model.compile(optimizer=make_optimizer(t))
        dataset = data_lib.training_dataset(subs, t.batch_size, seed, cfg.data.rotations)
        steps_per_epoch = max(1, min(t.steps_per_epoch, t.steps))
        epochs = max(1, math.ceil(t.steps / steps_per_epoch))
        schedule = None
        if 0 < t.lr_drop_step < t.steps:
            schedule = {"kind": "step", "every_epochs": max(1, t.lr_drop_step // steps_per_epoch), "factor": t.lr_drop_factor}
        budget = _TimeBudget.make(t.max_minutes)
        result = training.fit(
            model, dataset, None, run_dir=run_dir, name=key, epochs=epochs, steps_per_epoch=steps_per_epoch,
            lr_schedule=schedule, monitor="loss", callbacks=[budget], verbose=verbose, tensorboard=False,
        )  # fmt: skip
        history = result["history"]
        epochs_run = result["epochs_run"]
        steps_run = epochs_run * steps_per_epoch
        if budget.stopped:  # the budget ended the last (logged) epoch early
            steps_run = (epochs_run - 1) * steps_per_epoch + budget.epoch_steps
        info = {
            "epochs": epochs_run,
            "steps": steps_run,
            "batch": t.batch_size,
            "optimizer": t.optimizer,
            "lr": t.lr,
            "seconds": round(result["seconds"], 1),
            "stopped_by_time_budget": bool(budget.stopped),
            "loss_first": history.get("loss", [float("nan")])[0],
            "loss_last": history.get("loss", [float("nan")])[-1],
            "input_size": cfg.model.input_size,
            "width_multiplier": cfg.model.backbone.width_multiplier,
            "pretrained": cfg.model.backbone.pretrained,
        }
        return model, info

    def load_trained(self, key: str, cfg: MitosRCNNConfig, run_dir: Path, seed: int = 0):
        from microrepro.common import training
        from microrepro.reproductions.mitos_rcnn.model import build_model

        model = build_model(key, cfg.model, seed)
        return training.load_weights(model, run_dir, key, which="last")

    # --------------------------------------------------------------------------- evaluate
    def _overlap_px(self, cfg: MitosRCNNConfig, field) -> int:
        return int(round(cfg.data.tile_overlap_um / float(field.pixel_size_um or 0.25)))

    def detect(self, model, cfg: MitosRCNNConfig, fields: list) -> list:
        m = cfg.model
        return [
            evaluation.detect_field(model, f.image, m.input_size, cfg.data.scale, self._overlap_px(cfg, f), nms_iou=m.detection_nms_iou)
            for f in fields
        ]

    def evaluate_model(self, run: Run, key: str, model, cfg: MitosRCNNConfig, fields: dict) -> dict:
        """Threshold on the tuning fields, then metrics on every test split; returns the sweeps."""
        e = cfg.eval
        tune = fields["tune"]
        tune_sweep = evaluation.f1_sweep(self.detect(model, cfg, tune), tune, e.thresholds, e.match_um)
        threshold = evaluation.best_threshold(tune_sweep)
        sweeps = {}
        for split, (test_fields, info) in fields["tests"].items():
            detections = self.detect(model, cfg, test_fields)
            total = evaluation.aggregate_matches(detections, test_fields, threshold, e.match_um)
            values = {"precision": total.precision, "recall": total.recall, "f1": total.f1, "tp": total.tp,
                      "fp": total.fp, "fn": total.fn, "threshold": threshold}  # fmt: skip
            sweep = evaluation.f1_sweep(detections, test_fields, e.thresholds, e.match_um)
            values["f1_oracle"] = float(np.max(sweep["f1"]))  # best threshold chosen on the test fields themselves
            values.update(evaluation.size_tercile_recall(detections, test_fields, threshold, e.match_um))
            run.add_metrics(key, split, values, info)
            sweeps[split] = sweep
            print(f"[mitos_rcnn] {key} on {split}: P {total.precision:.3f} R {total.recall:.3f} F1 {total.f1:.3f} (threshold {threshold})")
            if split == "real_mosaic" or (split == "synthetic_test" and "real_mosaic" not in fields["tests"]):
                self._overlays(run, key, detections, test_fields, threshold, cfg)
        return sweeps

    def time_hpf(self, run: Run, key: str, model, cfg: MitosRCNNConfig, data_kind: str) -> None:
        """Seconds per full HPF (Aperio 1376x1539 by default), tiled, on this machine."""
        from microrepro.common.runs import device_name

        h, w = (int(v) for v in cfg.eval.timing_field)
        field, what = self._timing_field(h, w, data_kind)
        seconds = evaluation.seconds_per_field(
            model, field.image, cfg.model.input_size, cfg.data.scale, self._overlap_px(cfg, field), cfg.eval.timing_repeats
        )
        info = DataInfo(data_kind, what, 1, "", f"{h}x{w} px field, {device_name()}")
        run.add_metrics(key, "timing", {"s_per_hpf": seconds}, info)
        print(f"[mitos_rcnn] {key}: {seconds:.2f} s per {h}x{w} field")

    def _timing_field(self, h: int, w: int, data_kind: str):
        crops = getattr(self, "_timing_crops", None)
        if data_kind == "real" and crops:
            from microrepro.datasets import amibr

            rows, cols = math.ceil(h / amibr.CROP), math.ceil(w / amibr.CROP)
            if rows * cols <= len(crops):
                m = amibr.mosaic(crops, (rows, cols), seed=0)
                m.image_array = np.ascontiguousarray(m.image_array[:h, :w])
                return m, "mitosis_amibr mosaic"
        from microrepro.datasets.synthetic import he_fields

        return he_fields.generate(1, 7, he_fields.HEConfig(image_size=(h, w)))[0], "he_fields"

    def _overlays(self, run: Run, key: str, detections, fields, threshold: float, cfg: MitosRCNNConfig) -> None:
        from microrepro.common.figures import draw_detections, montage
        from microrepro.common.imageio import read_image

        tiles, titles = [], []
        for i in range(min(cfg.eval.n_figure_fields, len(fields))):
            d, f = detections[i], fields[i]
            result = evaluation.match_field(d, f, threshold, cfg.eval.match_um)
            path = run.run_dir / "overlays" / f"{key}_{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            draw_detections(f.image, d.mitoses(threshold), f.points, path, result, title=f"{key}: {f.id}")
            tiles.append(read_image(path))
            titles.append(f"TP {result.tp} FP {result.fp} FN {result.fn}")
        if tiles:
            montage(tiles, titles, run.figure_path(f"{key}_detections"), ncols=min(4, len(tiles)))

    def record_fig4(self, run: Run) -> None:
        published = yaml.safe_load(self.published_path.read_text()) or {}
        info = DataInfo("real", "published Fig. 4 counts", 200, "", "F1 recomputed from the paper's confusion matrices")
        run.add_metrics(FIG4_MODEL, "paper_fig4", fig4_metrics(published), info)

    # ----------------------------------------------------------------------------- driver
    def reproduce(self, run: Run, data: DataSource) -> None:
        from microrepro.common import training
        from microrepro.common.figures import plot_curves

        cfg: MitosRCNNConfig = run.config
        unknown = sorted(set(cfg.models) - set(MODEL_KEYS))
        if unknown:
            raise ConfigError(f"models: unknown {unknown}; choose from {', '.join(MODEL_KEYS)}")
        self.record_fig4(run)
        fields = self.load_fields(cfg, data, run.seed)
        subs, sub_info = self.subsections(cfg, fields["train"], run.seed)
        run.schedule_run["data"] = sub_info
        run.save()
        print(f"[mitos_rcnn] {len(fields['train'])} training fields ({fields['kind']}) -> {sub_info}")
        all_sweeps = {}
        for key in cfg.models:
            print(f"[mitos_rcnn] training {key} ...")
            model, info = self.train_model(key, cfg, subs, run.run_dir, run.seed)
            run.schedule_run[key] = info
            run.save()
            training.plot_history(run.run_dir, key, run.figure_path(f"{key}_loss"), f"{key}: training loss")
            all_sweeps[key] = self.evaluate_model(run, key, model, cfg, fields)
            self.time_hpf(run, key, model, cfg, fields["kind"])
        for split in next(iter(all_sweeps.values()), {}):
            plot_curves(
                {k: (s[split]["threshold"], s[split]["f1"]) for k, s in all_sweeps.items()}, "score threshold",
                "F1 (8 um rule)", f"F1 vs score threshold ({split})", run.figure_path(f"f1_vs_threshold_{split}"),
            )  # fmt: skip
        (run.run_dir / "f1_sweeps.json").write_text(
            json.dumps({k: {s: {m: v.tolist() for m, v in d.items()} for s, d in sw.items()} for k, sw in all_sweeps.items()}, indent=1)
        )

    def evaluate(self, run: Run, data: DataSource) -> None:
        cfg: MitosRCNNConfig = run.config
        self.record_fig4(run)
        fields = self.load_fields(cfg, data, run.seed)
        for key in cfg.models:
            if not (run.run_dir / "train" / key / "last.weights.h5").is_file():
                print(f"[mitos_rcnn] {key}: no trained weights in {run.run_dir}, skipped")
                continue
            model = self.load_trained(key, cfg, run.run_dir, run.seed)
            self.evaluate_model(run, key, model, cfg, fields)
            self.time_hpf(run, key, model, cfg, fields["kind"])

    def predict(self, run_dir: Path, images: list[Path], out_dir: Path, model: str = "mitos_rcnn",
                threshold: float | None = None, pixel_size_um: float = 0.25, **options) -> list[Path]:
        """Detect mitotic figures in whole fields (HPFs) with a trained model of ``run_dir``.

        Writes per image ``<stem>.csv`` (x, y, x1, y1, x2, y2, score, class; px of the image, x/y
        the box centre; class "mitotic" or "not_mitotic") and ``<stem>_overlay.png`` (mitoses
        only), plus ``counts.csv`` (image, mitoses).

        Args:
            run_dir: a finished run folder.
            images: image files (RGB H&E fields at about x40).
            out_dir: output folder (created).
            model: "mitos_rcnn", "faster_rcnn_conv4" or "faster_rcnn_conv5".
            threshold: keep detections scoring at or above this (default: the threshold the run
                chose for ``model``, else 0.5).
            pixel_size_um: um per pixel of the images (sets the subsection overlap).

        Returns:
            The written paths.
        """
        from microrepro.common.figures import draw_detections
        from microrepro.common.imageio import read_image
        from microrepro.common.runs import load_run

        if model not in MODEL_KEYS:
            raise UserError(f"unknown mitos_rcnn model {model!r}; choose one of {', '.join(MODEL_KEYS)}")
        if options:
            raise UserError(f"unknown predict option(s) {sorted(options)} for mitos_rcnn (model, threshold, pixel_size_um)")
        run_dir, out_dir = Path(run_dir), Path(out_dir)
        cfg: MitosRCNNConfig = self.config_from_run(run_dir)
        if threshold is None:
            _, _, metrics = load_run(run_dir)
            found = [v.get("threshold") for v in metrics.get(model, {}).values() if v.get("threshold") is not None]
            threshold = float(found[0]) if found else 0.5
        score_threshold = float(threshold)
        net = self.load_trained(model, cfg, run_dir)
        overlap = int(round(cfg.data.tile_overlap_um / float(pixel_size_um)))
        out_dir.mkdir(parents=True, exist_ok=True)
        written, counts = [], []
        for path in images:
            path = Path(path)
            image = read_image(path)
            if image.ndim != 3 or image.shape[-1] < 3:
                raise UserError(f"{path}: expected an RGB H&E image, got shape {image.shape}")
            image = np.asarray(image[..., :3])
            if image.dtype != np.uint8:
                image = np.clip(image, 0, 255).astype(np.uint8)
            det = evaluation.detect_field(net, image, cfg.model.input_size, cfg.data.scale, overlap, nms_iou=cfg.model.detection_nms_iou)
            keep = det.scores >= score_threshold
            csv_path = out_dir / f"{path.stem}.csv"
            with open(csv_path, "w", newline="") as fh:
                writer = csv.writer(fh)
                writer.writerow(["x", "y", "x1", "y1", "x2", "y2", "score", "class"])
                for (x1, y1, x2, y2), s, c in zip(det.boxes[keep], det.scores[keep], det.classes[keep]):
                    writer.writerow([f"{(x1 + x2) / 2:.2f}", f"{(y1 + y2) / 2:.2f}", f"{x1:.2f}", f"{y1:.2f}", f"{x2:.2f}",
                                     f"{y2:.2f}", f"{s:.4f}", "mitotic" if c == data_lib.MITOTIC else "not_mitotic"])  # fmt: skip
            centres = det.mitoses(score_threshold)
            png = draw_detections(image, centres, np.zeros((0, 2), np.float32), out_dir / f"{path.stem}_overlay.png",
                                  title=f"{model}: {len(centres)} mitoses")  # fmt: skip
            written += [csv_path, png]
            counts.append((path.name, len(centres)))
        counts_path = out_dir / "counts.csv"
        with open(counts_path, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["image", "mitoses"])
            writer.writerows(counts)
        written.append(counts_path)
        return written


TASK = MitosRCNNTask()
