"""cell_counting: c-ResUNet + weight maps + watershed for fluorescent neuron counting.

Morelli et al., "Automatic Cell Counting in Fluorescent Microscopy Using Deep Learning".

The Task wires the paper's modules together:

* ``data``: fields (real FNC set, or the synthetic generator with the real sample as a
  sim-to-real split), whole-field train/val split, overlapping crops, weight maps, tf.data;
* ``train``: the c-ResUNet, its weighted BCE and training;
* ``inference``: tiled heat-maps, watershed / connected components, ``detect`` for predict;
* ``evaluate``: threshold sweeps (``common.thresholds``), Table 1 metrics, timing, figures.

Models (the paper's Table 1 model and the ablation of Sec. 4.2 / 4.3): ``c_resunet``,
``c_resunet_no_weightmap``, ``c_resunet_no_watershed`` (``inference.py``). Each key's operating
threshold is chosen by maximum F1 on training fields and stored in ``thresholds.json``; the
post-processing sizes (not thresholds) are stored in ``cell_counting_state.json``.

Reference: Sec. 4 (method), Sec. 5.1 and Table 1 (evaluation).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from microrepro.common import thresholds
from microrepro.common.data_sources import DataSource
from microrepro.common.errors import UserError
from microrepro.common.predict import Predictor
from microrepro.common.runs import Run
from microrepro.common.task import Task
from microrepro.reproductions.cell_counting import postprocess as post
from microrepro.reproductions.cell_counting.config import CellCountingConfig
from microrepro.reproductions.cell_counting.data import datasets as make_pipelines
from microrepro.reproductions.cell_counting.data import load_data, make_crops, split_fields
from microrepro.reproductions.cell_counting.evaluate import choose_thresholds, evaluate_splits, time_inference
from microrepro.reproductions.cell_counting.inference import FULL, MODELS, NETWORK, NO_WEIGHTMAP, make_detect
from microrepro.reproductions.cell_counting.train import load_trained, train_model

STATE_FILE = "cell_counting_state.json"


def state_path(run_dir: Path) -> Path:
    """``<run_dir>/cell_counting_state.json``: post-processing sizes, mean cell diameter, trained models."""
    return Path(run_dir) / STATE_FILE


def read_state(run_dir: Path) -> dict:
    """The run's state file, or a UserError when the run has not finished training."""
    path = state_path(run_dir)
    if not path.is_file():
        raise UserError(f"{path}: missing; {run_dir} is not a finished cell_counting run (run reproduce first)")
    return json.loads(path.read_text())


def postprocess_sizes(cfg: CellCountingConfig, train_fields) -> tuple[post.PostprocessSizes, float]:
    """Post-processing sizes from the mean training cell diameter (paper) or the released constants.

    Returns:
        ``(sizes, mean cell diameter in px)``.

    Reference: Sec. 4.3 ("parameters set based on the average cell size").
    """
    diameter = cfg.postprocess.mean_cell_diameter
    if diameter is None:
        try:
            diameter = post.mean_cell_diameter([f.labels for f in train_fields])
        except ValueError:  # no cell in any training field (tiny smoke sets): the paper's 50 px
            diameter = post.RELEASED_CELL_DIAMETER
            print(f"[cell_counting] no cell in the training masks: using a {diameter:.0f} px mean cell diameter")
    if cfg.postprocess.sizes == "released":
        sizes = post.PostprocessSizes.released()
    else:
        sizes = post.PostprocessSizes.from_cell_diameter(diameter)
    print(f"[cell_counting] mean cell diameter {diameter:.1f} px -> post-processing sizes {sizes}")
    return sizes, diameter


def model_keys(trained) -> list[str]:
    """The model keys evaluated for the trained networks ``trained`` (in the table's order)."""
    return [key for key in MODELS if NETWORK[key] in trained]


class CellCountingTask(Task):
    name = "cell_counting"
    title = "Automatic Cell Counting in Fluorescent Microscopy Using Deep Learning (Morelli et al.)"
    dataset = "fnc_sample"
    config_cls = CellCountingConfig
    models = MODELS
    default_model = FULL

    def reproduce(self, run: Run, data: DataSource) -> None:
        """Train c_resunet (and the plain-BCE ablation), choose thresholds, evaluate, time.

        Reference: Sec. 4.1-4.5 (training), Sec. 5.1 (threshold, metrics).
        """
        cfg: CellCountingConfig = run.config
        start = time.perf_counter()
        train_set, eval_sets = load_data(data, cfg, run.seed)
        train_fields, val_fields = ((train_set.fields, train_set.val) if train_set.val  # your own val/ folder
                                    else split_fields(train_set.fields, cfg.data.val_fraction, run.seed))
        print(f"[cell_counting] {len(train_fields)} training / {len(val_fields)} validation fields; cutting crops")
        train_crops = make_crops(train_fields, cfg)
        val_crops = make_crops(val_fields, cfg)
        print(f"[cell_counting] {len(train_crops['image'])} training crops ({int(train_crops['hard'].sum())} hard, "
              f"x{1 + cfg.data.hard_repeat}), {len(val_crops['image'])} validation crops of {cfg.data.crop_size} px")

        names = [FULL] + ([NO_WEIGHTMAP] if cfg.train.ablation else [])
        weighted = {FULL: cfg.weight_map.kind != "none", NO_WEIGHTMAP: False}
        pipelines = make_pipelines(train_crops, val_crops, cfg, run.seed)
        networks = {}
        for name in names:
            print(f"[cell_counting] training {name}")
            networks[name], run.schedule_run[name] = train_model(name, run, cfg, train_crops, val_crops, pipelines,
                                                                 weighted[name])
            run.save()

        sizes, diameter = postprocess_sizes(cfg, train_fields)
        cuts = choose_thresholds(run, cfg, networks, train_fields, sizes, model_keys(networks))
        state_path(run.run_dir).write_text(json.dumps({
            "sizes": dataclasses.asdict(sizes), "mean_cell_diameter": diameter,
            "models": names, "train_fields": [f.id for f in train_fields],
        }, indent=2))
        evaluate_splits(run, cfg, networks, eval_sets, cuts, sizes)
        timing = time_inference(networks[FULL], cfg)
        main_split = next(iter(eval_sets))
        run.add_metrics(FULL, main_split, timing, eval_sets[main_split].info)
        run.extra["timing"] = {"field": list(cfg.eval.timing_field), "crop": cfg.eval.timing_crop,
                               "note": "median after warm-up, scale 1"}
        run.extra["total_seconds"] = round(time.perf_counter() - start, 1)
        run.save()
        print(f"[cell_counting] done in {run.extra['total_seconds']:.0f} s; metrics in {run.run_dir / 'metrics.json'}")

    def evaluate(self, run: Run, data: DataSource) -> None:
        """Re-evaluate the run's networks at the thresholds stored in ``thresholds.json``.

        A key without a stored threshold (a run written before ``thresholds.json``) gets one
        chosen as ``reproduce`` does, on the run's training fields.

        Reference: Sec. 5.1, Table 1.
        """
        cfg: CellCountingConfig = run.config
        state = read_state(run.run_dir)
        train_set, eval_sets = load_data(data, cfg, run.seed)
        networks = {name: load_trained(run.run_dir, cfg, name) for name in state["models"]}
        sizes = post.PostprocessSizes(**state["sizes"])
        keys = model_keys(networks)
        stored = thresholds.read_all(run.run_dir)
        missing = [key for key in keys if key not in stored]
        if missing:
            print(f"[cell_counting] no stored threshold for {', '.join(missing)}: choosing it on the training fields")
            train_fields = train_set.fields if train_set.val else split_fields(
                train_set.fields, cfg.data.val_fraction, run.seed)[0]
            choose_thresholds(run, cfg, networks, train_fields, sizes, missing)
        cuts = {key: thresholds.load(run.run_dir, key).value for key in keys}
        evaluate_splits(run, cfg, networks, eval_sets, cuts, sizes)
        run.save()

    def load_predictor(self, run_dir: Path, model: str) -> Predictor:
        """``model`` of the run: tiled heat-map, post-processing, at the run's stored threshold.

        Any image users have works (grey / RGB / RGBA, 8 / 16 bit or float: ``data.rgb_uint8``);
        fields of any size are predicted tile by tile, a field smaller than one tile is padded to
        it, so the smallest side is 1 px. Scores are heat-map probabilities, so a threshold lies
        in [0, 1]. Objects come from instance labels, which ``predict`` writes as a label TIFF.

        Reference: Sec. 4.3 (post-processing), Sec. 5 (whole-field prediction).
        """
        run_dir = Path(run_dir)
        state = read_state(run_dir)
        if NETWORK[model] not in state["models"]:
            raise UserError(f"{run_dir}: model '{model}' was not trained in this run; "
                            f"choose one of {', '.join(model_keys(state['models']))}")
        cut = thresholds.load(run_dir, model).value
        cfg = self.config_from_run(run_dir)
        network = load_trained(run_dir, cfg, NETWORK[model])
        detect = make_detect(network, cfg, model, post.PostprocessSizes(**state["sizes"]))
        return Predictor(paper=self.name, model=model, threshold=cut, detect=detect, noun="cells", min_size=1,
                         score_range=(0.0, 1.0))


TASK = CellCountingTask()
