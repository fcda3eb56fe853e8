"""The MITOS-RCNN reproduction: Table II (three detectors, one data set and schedule) and Table III.

``TASK.reproduce``:

1. builds the fields (``data.load_fields``): the AMi-Br crops split by slide, each part built into
   512x512 fields of the detection benchmark (``datasets/amibr_benchmark``: windows with and
   without a figure, at random offsets, in random layouts) for training, the threshold and the
   ``real_bench`` test split; synthetic H&E fields of both scanner profiles for the
   ``synthetic_test`` split (and for training when no real data is found);
   the two baselines (``baselines``: best position-only rule, LoG blobs) are fitted on the
   training fields and recorded on ``real_bench`` and, for contrast, on the old ``real_mosaic``
   fields (crops tiled on a 128 px grid, where position alone scores F1 ~0.99);
2. adds Macenko-normalised copies of the training fields and cuts random subsections at the
   paper's scale (``data.training_subsections``);
3. trains ``faster_rcnn_conv5``, ``faster_rcnn_conv4`` and ``mitos_rcnn`` with the same data and
   schedule (``train.train_model``);
4. predicts whole fields by overlapping subsections (``detect.detect_field``), chooses the score
   threshold of best F1 on training-slide fields and stores it in ``thresholds.json``
   (``common.thresholds``), and records precision / recall / F1 (8 um rule) per split, recall per
   size tercile on the synthetic fields (the small-object ablation) and seconds per HPF
   (``evaluation``);
5. records the F1 recomputed from the paper's Fig. 4 confusion matrices (model ``fig4_confusion``).

``TASK.evaluate`` re-evaluates the trained models at their stored thresholds; ``TASK.predict``
(shared, ``common.predict``) detects mitotic figures in whole fields through
:meth:`MitosRCNNTask.load_predictor`.

Reference: Rao, MITOS-RCNN, Sec. IV-V, Tables II-III, Fig. 4.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from microrepro.common import thresholds
from microrepro.common.data_sources import DataSource
from microrepro.common.errors import ConfigError, UserError
from microrepro.common.predict import Objects, Predictor
from microrepro.common.runs import DataInfo, Run
from microrepro.common.task import Task
from microrepro.reproductions.mitos_rcnn import baselines as baselines_lib
from microrepro.reproductions.mitos_rcnn import data as data_lib
from microrepro.reproductions.mitos_rcnn import evaluation, own_data
from microrepro.reproductions.mitos_rcnn.config import MitosRCNNConfig
from microrepro.reproductions.mitos_rcnn.model import MODEL_KEYS

MITOTIC_CLASS = "mitotic_figure"  # the ``class`` written by predict (look-alikes are not reported)


class MitosRCNNTask(Task):
    """Tables II and III of MITOS-RCNN: see the module docstring."""

    name = "mitos_rcnn"
    title = "MITOS-RCNN: mitotic figure detection with a two-stage cascade RPN Faster R-CNN"
    dataset = "mitosis_amibr"
    config_cls = MitosRCNNConfig
    folder = Path(__file__).parent
    models = MODEL_KEYS
    default_model = "mitos_rcnn"

    def record_fig4(self, run: Run) -> None:
        """Record the F1 of the paper's Fig. 4 confusion matrices (model ``fig4_confusion``)."""
        published = yaml.safe_load(self.published_path.read_text()) or {}
        info = DataInfo("real", "published Fig. 4 counts", 200, "", "F1 recomputed from the paper's confusion matrices")
        run.add_metrics(evaluation.FIG4_MODEL, "paper_fig4", evaluation.fig4_metrics(published), info)

    def reproduce(self, run: Run, data: DataSource) -> None:
        from microrepro.common import training
        from microrepro.reproductions.mitos_rcnn import train as train_lib

        cfg: MitosRCNNConfig = run.config
        unknown = sorted(set(cfg.models) - set(MODEL_KEYS))
        if unknown:
            raise ConfigError(f"models: unknown {unknown}; choose from {', '.join(MODEL_KEYS)}")
        fields = own_data.load_fields(cfg, data, run.seed)  # first: a --data-dir of neither layout writes nothing
        self.record_fig4(run)
        per_field: dict = {}  # {split: {model: per-field tp/fp/fn}}, for the paired comparisons
        baselines_lib.evaluate_baselines(run, cfg, fields.baseline_sets, per_field)
        subs, sub_info = data_lib.training_subsections(cfg, fields.train, run.seed)
        run.schedule_run["data"] = sub_info
        run.save()
        print(f"[mitos_rcnn] {len(fields.train)} training fields ({fields.kind}) -> {sub_info}")
        sweeps = {}
        for key in cfg.models:
            print(f"[mitos_rcnn] training {key} ...")
            model, info = train_lib.train_model(key, cfg, subs, run.run_dir, run.seed)
            run.schedule_run[key] = info
            run.save()
            training.plot_history(run.run_dir, key, run.figure_path(f"{key}_loss"), f"{key}: training loss")
            threshold = evaluation.operating_threshold(run, key, model, cfg, fields.tune, choose=True)
            counts: dict = {}
            sweeps[key] = evaluation.evaluate_model(run, key, model, cfg, fields.tests, threshold, counts)
            for split, c in counts.items():
                per_field.setdefault(split, {})[key] = c
            evaluation.time_hpf(run, key, model, cfg, fields.kind, fields.timing_crops)
        evaluation.write_sweeps(run, sweeps)
        self._record_paired(run, cfg, fields, per_field)

    @staticmethod
    def _record_paired(run: Run, cfg: MitosRCNNConfig, fields, per_field: dict) -> None:
        """Paired F1 differences on each test split (``evaluation.record_paired``)."""
        for split, (_, info) in fields.tests.items():
            evaluation.record_paired(run, split, info, per_field.get(split, {}), cfg.models)

    def evaluate(self, run: Run, data: DataSource) -> None:
        """Re-evaluate the baselines, and the run's trained models at their stored thresholds (chosen
        now if none is stored)."""
        from microrepro.reproductions.mitos_rcnn import train as train_lib

        cfg: MitosRCNNConfig = run.config
        self.record_fig4(run)
        fields = own_data.load_fields(cfg, data, run.seed)
        per_field: dict = {}
        baselines_lib.evaluate_baselines(run, cfg, fields.baseline_sets, per_field)
        for key in cfg.models:
            if not train_lib.weights_path(run.run_dir, key).is_file():
                print(f"[mitos_rcnn] {key}: no trained weights in {run.run_dir}, skipped")
                continue
            model = train_lib.load_trained(key, cfg, run.run_dir, run.seed)
            threshold = evaluation.operating_threshold(run, key, model, cfg, fields.tune, choose=False)
            counts: dict = {}
            evaluation.evaluate_model(run, key, model, cfg, fields.tests, threshold, counts)
            for split, c in counts.items():
                per_field.setdefault(split, {})[key] = c
            evaluation.time_hpf(run, key, model, cfg, fields.kind, fields.timing_crops)
        self._record_paired(run, cfg, fields, per_field)

    def load_predictor(self, run_dir: Path, model: str) -> Predictor:
        """Detector ``model`` of the run ``run_dir`` for whole H&E fields (HPFs) at about x40.

        Images are taken at 0.25 um/px (``detect.DEFAULT_PIXEL_SIZE_UM``; it sets the 12 um
        subsection overlap, and the subsection size is ``data.scale`` of the run): grey, RGB or
        RGBA, uint8, uint16 or float in [0, 1] (``detect.as_rgb_uint8``). Fields of any size are
        predicted by overlapping subsections, and a field smaller than one subsection is
        zero-padded to it, so the smallest side is 1 px. Only mitotic-figure detections are
        returned (class ``mitotic_figure``; the "not mitotic figure" look-alikes are not counted),
        scored by their softmax probability, so a threshold lies in [0, 1].

        Raises:
            UserError: ``model`` was not trained in this run, the run stores no threshold for it
                (and none was given), or its weights are missing.

        Reference: MITOS-RCNN Sec. IV-A (subsections), Sec. V-A (mitotic figures counted).
        """
        from microrepro.reproductions.mitos_rcnn import detect as detect_lib
        from microrepro.reproductions.mitos_rcnn import train as train_lib

        run_dir = Path(run_dir)
        cfg: MitosRCNNConfig = self.config_from_run(run_dir)
        if model not in cfg.models:
            raise UserError(f"{run_dir}: model '{model}' was not trained in this run; choose one of "
                            f"{', '.join(cfg.models)}")
        threshold = thresholds.load(run_dir, model).value  # the user's under predict --threshold
        net = train_lib.load_trained(model, cfg, run_dir)
        m, d = cfg.model, cfg.data
        overlap = detect_lib.overlap_px(d.tile_overlap_um, detect_lib.DEFAULT_PIXEL_SIZE_UM)

        def detect(image: np.ndarray, threshold: float) -> Objects:
            field = detect_lib.as_rgb_uint8(image)
            found = detect_lib.detect_field(net, field, m.input_size, d.scale, overlap, nms_iou=m.detection_nms_iou)
            keep = (found.classes == data_lib.MITOTIC) & (found.scores >= threshold)
            return Objects.from_boxes(found.boxes[keep], found.scores[keep], [MITOTIC_CLASS] * int(keep.sum()))

        return Predictor(paper=self.name, model=model, threshold=threshold, detect=detect, noun="mitoses",
                         min_size=1, score_range=(0.0, 1.0))


TASK = MitosRCNNTask()
