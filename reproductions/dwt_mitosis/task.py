"""dwt_mitosis: two-phase mitosis detection — DWT U-shaped net → boxes → R-CNN.

Lu, "A Two-Phase Mitosis Detection Approach Based on U-Shaped Network", BioMed Research
International 2021.

Phase 1 (Sec. 3.1): a segmentation network (Haar-DWT down / IWT up, blocks of 4 × conv–BN–ReLU)
is trained on pixel masks; on a weakly labelled set (points only) the minimum enclosing box of
each segmented region becomes a strong label when a point lies inside it. Phase 2 (Sec. 3.2):
R-CNN (selective search, CNN features on warped regions, linear SVM, box regression) is trained
on those boxes; a detection is correct when its box centre lies within 8 µm of a point (Sec. 4.2).

Modules: ``data.py`` (image sets, splits, tf.data), ``segmentation.py`` (phase 1),
``proposals.py`` + ``rcnn.py`` (phase 2), ``faster.py`` (phase 2 with Faster R-CNN),
``evaluate.py`` (metrics, thresholds, figures); this module wires them into the :class:`Task`.

Data (MITOS 2012 masks and the TUPAC16 / AMIDA13 / ICPR14 fields are not reachable here):

* ``synthetic``: H&E fields of ``datasets/synthetic/he_fields.py`` with exact masks. Phase 1
  trains on one set of fields; phase 2 gets other fields with their POINTS only, generates boxes
  with each phase-1 net, and is tested on held-out fields (split ``synthetic_test``). Exact masks
  also give the "Manual" boxes of Table 2.
* ``amibr`` (when ``/work/shared/data/mitosis_amibr`` is found): fields of the AMi-Br detection
  benchmark (``datasets/amibr_benchmark.py``: windows of real crops with and without a figure, at
  random offsets, in random strip layouts; ``data.amibr_sets``) with points of every known figure,
  the crops split by slide into training, threshold (``det_val``, also training-side slides) and
  held-out test slides. Phase 1 — trained on SYNTHETIC masks — generates the boxes on these real
  images (sim-to-real), phase 2 trains on the training fields and is tested on the held-out
  fields (split ``amibr_bench_test``). No manual boxes exist there (points only: the ``square``
  source, boxes of ``square_size_um`` around the points, is the only point-derived one). The two
  baselines (``baselines.py``: best position-only rule, LoG blobs) are fitted on the training
  fields and recorded on the same test fields, the position one also on the OLD mosaics of whole
  crops (split ``amibr_mosaic_test``, where position alone scores F1 ~0.99) for contrast.

Models (metric keys ``recall``, ``precision``, ``f1``):

* ``dwt_unet_seg`` / ``unet_seg``: phase-1 pixel metrics;
* ``dwt_labels`` / ``unet_labels``: label quality (box IoU with manual boxes, point coverage);
* ``rcnn_dwt_labels`` / ``rcnn_unet_labels`` / ``rcnn_manual_labels``: R-CNN on each label source
  (Tables 1 and 2);
* ``faster_rcnn_phase2``: phase 2 with common/detection's Faster R-CNN on the DWT labels;
* ``rcnn_square_labels`` (only when ``label_sources`` lists ``square``): fixed squares around the
  points, the weak-label workaround of earlier work (Sec. 2);
* ``baseline_position`` / ``baseline_log_blobs`` (AMi-Br only): the baselines above;
* ``paired``: paired bootstrap F1 differences (Table 2's orderings; on AMi-Br also every detector
  against each baseline).

A run folder holds, besides the weights, ``thresholds.json`` (every detector's score threshold,
``common.thresholds``, keyed ``<model>_<domain>``) and ``dwt_mitosis_state.json`` (which phase-1
nets, domains and label sources were trained, and each domain's pixel size).

Reference: dwt_mitosis Sec. 3.1–3.2 (the two phases), Sec. 4.2–4.5 (evaluation, Tables 1 and 2).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np

from microrepro.common import thresholds
from microrepro.common.data_sources import DataSource
from microrepro.common.errors import UserError
from microrepro.common.predict import Objects, Predictor
from microrepro.common.runs import Run
from microrepro.common.task import Task
from microrepro.reproductions.dwt_mitosis import evaluate as ev
from microrepro.reproductions.dwt_mitosis import labels as label_lib
from microrepro.reproductions.dwt_mitosis import rcnn
from microrepro.reproductions.dwt_mitosis.config import DwtMitosisConfig
from microrepro.reproductions.dwt_mitosis.data import ImageSet, amibr_sets, synthetic_sets, to_rgb8
from microrepro.reproductions.dwt_mitosis.faster import FASTER, load_faster, square_size, train_faster
from microrepro.reproductions.dwt_mitosis.proposals import build_regions
from microrepro.reproductions.dwt_mitosis.segmentation import SEG_MODELS, generate_labels, load_seg, train_seg

STATE_FILE = "dwt_mitosis_state.json"
SOURCES = ("dwt", "unet", "manual", "square")
DOMAINS = ("own", "amibr", "synthetic")  # predict's default domain is the first one trained (own: own_data.py)
DEFAULT_PIXEL_SIZE_UM = 0.25  # ×40 (AMi-Br, TUPAC16), for runs that stored none


def rcnn_model(source: str) -> str:
    """Metric key of R-CNN trained on ``source`` labels (``rcnn_dwt_labels``...)."""
    return f"rcnn_{source}_labels"


class DwtMitosisTask(Task):
    name = "dwt_mitosis"
    title = "A Two-Phase Mitosis Detection Approach Based on U-Shaped Network (Lu 2021)"
    dataset = "mitosis_amibr"
    config_cls = DwtMitosisConfig
    # an R-CNN of one label source; "<model>_<domain>" picks the training domain (default: AMi-Br when trained)
    models = tuple(rcnn_model(s) for s in SOURCES) + tuple(f"{rcnn_model(s)}_{d}" for d in DOMAINS for s in SOURCES)
    default_model = rcnn_model("dwt")

    def load_domains(self, data: DataSource, cfg: DwtMitosisConfig, test_only: bool = False
                     ) -> tuple[dict[str, ImageSet], dict[str, dict[str, ImageSet]]]:
        """(synthetic sets incl. phase-1 training, {domain: {det_train, det_val, test}}).

        ``test_only``: only the synthetic test set (``evaluate``: thresholds come from the run).
        Your own data (a generic ``--data-dir``, ``own_data.py``) replaces both: domain ``own``.
        """
        if data.path is not None:  # the AMi-Br layout goes on below; anything else is own_data's
            from microrepro.reproductions.dwt_mitosis import own_data

            own = own_data.load_domains(data.path, cfg)
            if own is not None:
                return own
        s = cfg.synthetic
        print(f"[dwt_mitosis] SYNTHETIC H&E fields ({s.field_size} px, seed {s.seed}): phase 1 on "
              f"{s.seg_train_fields} fields with exact masks (MITOS 2012 masks are not reachable here)")
        synth = synthetic_sets(cfg, ("test",) if test_only else None)
        domains = {"synthetic": {k: synth.get(k) for k in ("det_train", "det_val", "test")}}
        if data.path is not None and cfg.amibr.enabled:
            domains["amibr"] = amibr_sets(data.path, cfg, data.dataset)
            print("[dwt_mitosis] phase 1 (trained on synthetic masks) will label REAL AMi-Br benchmark fields: "
                  "sim-to-real")
        elif data.path is None:
            print("[dwt_mitosis] no AMi-Br data found: synthetic evaluation only")
        return synth, domains

    # ------------------------------------------------------------------------------------------
    def reproduce(self, run: Run, data: DataSource) -> None:
        cfg: DwtMitosisConfig = run.config
        start = time.perf_counter()
        synth, domains = self.load_domains(data, cfg)
        seg_kinds = [k for k in ("dwt", "unet") if k in cfg.label_sources or k == "dwt"]
        for kind in seg_kinds:
            print(f"[dwt_mitosis] phase 1: training {SEG_MODELS[kind]}")
            run.schedule_run[SEG_MODELS[kind]] = train_seg(kind, run, cfg, synth["seg_train"], synth["seg_val"])
            run.save()
        seg_models = {kind: load_seg(run.run_dir, cfg, kind) for kind in seg_kinds}
        state = {"seg_kinds": seg_kinds, "domains": list(domains), "sources": {}, "pixel_size_um": {}}
        ev.evaluate_seg(run, cfg, seg_models, synth["test"])
        for domain, sets in domains.items():
            state["pixel_size_um"][domain] = float(np.median(sets["det_train"].pixel_sizes))
            state["sources"][domain] = self._phase2(run, cfg, domain, sets, seg_models)
            write_state(run.run_dir, state)
        run.extra["total_seconds"] = round(time.perf_counter() - start, 1)
        run.save()
        print(f"[dwt_mitosis] done in {run.extra['total_seconds']:.0f} s; metrics in {run.run_dir / 'metrics.json'}")

    def _phase2(self, run: Run, cfg: DwtMitosisConfig, domain: str, sets: dict[str, ImageSet],
                seg_models: dict) -> list[str]:
        """Label generation and quality, then R-CNN per label source (and Faster R-CNN) on one domain.

        Returns:
            The label sources tried on this domain.
        """
        train, val, test = sets["det_train"], sets["det_val"], sets["test"]
        generated = generate_labels(cfg, train, seg_models)
        manual = None
        if train.masks is not None:
            manual = [label_lib.manual_boxes(m, p) for m, p in zip(train.masks, train.points, strict=True)]
        ev.record_label_quality(run, domain, train, generated, manual)
        ev.labels_figure(run, f"generated_boxes_{domain}", train, generated, manual, cfg.eval.figure_examples)
        split = f"{domain}_{test.name}"
        baseline_counts = {}
        if "mosaic_test" in sets:  # AMi-Br benchmark fields: the baselines on the models' test fields
            from microrepro.reproductions.dwt_mitosis.baselines import evaluate_baselines

            baseline_counts = evaluate_baselines(run, cfg, domain, sets)

        sources = [s for s in cfg.label_sources
                   if s in generated or s == "square" or (s == "manual" and manual is not None)]
        print(f"[dwt_mitosis] {domain}: selective search on {len(train)} + {len(val)} + {len(test)} images")
        regions = {name: build_regions(s.images, s.pixel_sizes, cfg.rcnn) for name, s in
                   (("train", train), ("val", val), ("test", test))}
        print(f"[dwt_mitosis] {domain}: {len(regions['train'].boxes)} training proposals "
              f"({len(regions['train'].boxes) / max(len(train), 1):.0f} per image)")
        per_image = {}  # per-image tp / fp / fn of each R-CNN on the same test images
        for source in sources:
            if source == "manual":
                gt = manual
            elif source == "square":  # Sec. 2: the fixed square around each point of earlier work
                gt = [label_lib.square_boxes(p, cfg.square_size_um / px, *img.shape[:2])
                      for p, px, img in zip(train.points, train.pixel_sizes, train.images, strict=True)]
            else:
                gt = [g.boxes for g in generated[source]]
            counts = self._rcnn(run, cfg, domain, source, gt, sets, regions)
            if counts is not None:
                per_image[rcnn_model(source)] = counts
        ev.record_paired(run, split, test.info, per_image)  # Table 2's orderings, paired
        if cfg.faster.enabled and "dwt" in generated:
            counts = self._faster(run, cfg, domain, sets, [g.boxes for g in generated["dwt"]])
            if counts is not None:
                per_image[FASTER] = counts
        if baseline_counts:  # every detector against each baseline, on the same test fields
            ev.record_paired(run, split, test.info, per_image | baseline_counts, ev.BASELINE_COMPARED)
        return sources

    def _rcnn(self, run: Run, cfg: DwtMitosisConfig, domain: str, source: str, gt: list, sets: dict,
              regions: dict) -> dict | None:
        """Train R-CNN on ``gt`` boxes of ``source``, choose its threshold on det_val, test it.

        Returns:
            The per-image tp / fp / fn on the test images (``evaluate.evaluate_rcnn``); None when
            no box was generated (nothing trained).
        """
        train, test = sets["det_train"], sets["test"]
        model = rcnn_model(source)
        name = f"{model}_{domain}"
        split = f"{domain}_{test.name}"
        n_boxes = sum(len(b) for b in gt)
        if n_boxes == 0:
            print(f"[dwt_mitosis] {domain}: no {source} boxes were generated; {model} cannot be trained")
            run.add_metrics(model, split, {"recall": 0.0, "precision": 0.0, "f1": 0.0}, test.info)
            return None
        print(f"[dwt_mitosis] {domain}: phase 2 R-CNN on {source} labels ({n_boxes} boxes)")
        run.schedule_run[name] = rcnn.train_rcnn(regions["train"], gt, train.images, cfg.rcnn, run_dir=run.run_dir,
                                                 name=name, seed=run.seed)
        run.save()
        detector = rcnn.load_rcnn(run.run_dir, name, cfg.rcnn)
        threshold = ev.rcnn_threshold(run, cfg, detector, name, domain, sets["det_val"], regions["val"])
        return ev.evaluate_rcnn(run, cfg, detector, name, model, split, test, regions["test"], threshold)

    def _faster(self, run: Run, cfg: DwtMitosisConfig, domain: str, sets: dict, boxes: list) -> dict | None:
        """Phase 2 with common/detection's Faster R-CNN on the DWT-net labels (Sec. 3.2, "any detector").

        Returns:
            The per-image tp / fp / fn on the test images; None when skipped (images not one square size).
        """
        train, val, test = sets["det_train"], sets["det_val"], sets["test"]
        size = square_size(train, val, test)
        if size is None:
            print(f"[dwt_mitosis] {domain}: Faster R-CNN needs square images of one size; skipped")
            return None
        name = f"{FASTER}_{domain}"
        print(f"[dwt_mitosis] {domain}: phase 2 Faster R-CNN on dwt labels")
        model, run.schedule_run[name] = train_faster(run, cfg, name, train, boxes, size)
        threshold = ev.faster_threshold(run, cfg, model, name, domain, val)
        return ev.evaluate_faster(run, cfg, model, domain, test, threshold)

    # ------------------------------------------------------------------------------------------
    def evaluate(self, run: Run, data: DataSource) -> None:
        """Re-test every trained model of ``run`` at its stored threshold (``thresholds.json``)."""
        cfg: DwtMitosisConfig = run.config
        state = read_state(run.run_dir)
        stored = thresholds.read_all(run.run_dir)
        synth, domains = self.load_domains(data, cfg, test_only=True)
        seg_models = {kind: load_seg(run.run_dir, cfg, kind) for kind in state["seg_kinds"]}
        ev.evaluate_seg(run, cfg, seg_models, synth["test"])
        for domain in state["domains"]:
            if domain not in domains:
                print(f"[dwt_mitosis] {domain} data not found now: its rows are not re-evaluated")
                continue
            test = domains[domain]["test"]
            split = f"{domain}_{test.name}"
            regions = build_regions(test.images, test.pixel_sizes, cfg.rcnn)
            per_image, baseline_counts = {}, {}
            if "mosaic_test" in domains[domain]:
                from microrepro.reproductions.dwt_mitosis.baselines import evaluate_baselines

                baseline_counts = evaluate_baselines(run, cfg, domain, domains[domain])
            for source in state["sources"].get(domain, []):
                model = rcnn_model(source)
                name = f"{model}_{domain}"
                if name in stored:
                    detector = rcnn.load_rcnn(run.run_dir, name, cfg.rcnn)
                    per_image[model] = ev.evaluate_rcnn(run, cfg, detector, name, model, split, test,
                                                        regions, stored[name].value)
            ev.record_paired(run, split, test.info, per_image)
            name = f"{FASTER}_{domain}"
            if name in stored:
                model = load_faster(run.run_dir, cfg, name, test.images[0].shape[0], run.seed)
                per_image[FASTER] = ev.evaluate_faster(run, cfg, model, domain, test, stored[name].value)
            if baseline_counts:
                ev.record_paired(run, split, test.info, per_image | baseline_counts, ev.BASELINE_COMPARED)
        run.save()

    # ------------------------------------------------------------------------------------------
    def load_predictor(self, run_dir: Path, model: str) -> Predictor:
        """A trained R-CNN of ``run_dir`` on images as users have them (H&E at the training magnification).

        ``model`` is ``rcnn_<source>_labels`` (the AMi-Br detector when the run trained one, else the
        synthetic one) or ``rcnn_<source>_labels_<domain>``. Each image is converted to RGB uint8
        (grey, RGBA, 16-bit and float accepted), proposals are filtered with the training domain's
        pixel size, and the boxes whose SVM score reaches the threshold are returned. SVM scores
        are margins, so the threshold may be negative: ``score_range`` is the whole real line.

        Reference: dwt_mitosis Sec. 3.2 (R-CNN), Sec. 4.2 (box centre = the detected mitosis).
        """
        run_dir = Path(run_dir)
        state = read_state(run_dir)
        stored = thresholds.read_all(run_dir)
        name = _detector_name(model, stored)
        domain = name.rsplit("_", 1)[1]
        cfg: DwtMitosisConfig = self.config_from_run(run_dir)
        extractor, head = rcnn.load_rcnn(run_dir, name, cfg.rcnn)
        pixel_size = float(state.get("pixel_size_um", {}).get(domain, DEFAULT_PIXEL_SIZE_UM))

        def detect(image: np.ndarray, threshold: float) -> Objects:
            boxes, scores = rcnn.detect_image(extractor, head, to_rgb8(image), cfg.rcnn, pixel_size)
            keep = scores >= threshold
            return Objects.from_boxes(boxes[keep], scores[keep], ["mitosis"] * int(keep.sum()))

        return Predictor(self.name, name, stored[name].value, detect, noun="mitoses",
                         min_size=max(1, math.ceil(cfg.rcnn.min_size_um / pixel_size)),
                         score_range=(-math.inf, math.inf))


def _detector_name(model: str, stored: dict) -> str:
    """``rcnn_<source>_labels_<domain>`` of ``model`` among the run's stored thresholds, or a UserError."""
    candidates = [model] if model.endswith(tuple(f"_{d}" for d in DOMAINS)) else [f"{model}_{d}" for d in DOMAINS]
    for name in candidates:
        if name in stored:
            return name
    trained = sorted(k for k in stored if k.startswith("rcnn_"))
    raise UserError(f"model '{model}' is not in this run; it has {', '.join(trained) or 'no trained R-CNN'}")


def _state_path(run_dir: Path) -> Path:
    return Path(run_dir) / STATE_FILE


def write_state(run_dir: Path, state: dict) -> Path:
    """Store which phase-1 nets, domains and label sources a run trained (``dwt_mitosis_state.json``)."""
    path = _state_path(run_dir)
    path.write_text(json.dumps(state, indent=2))
    return path


def read_state(run_dir: Path) -> dict:
    """The run's state; a UserError when ``run_dir`` is not a finished dwt_mitosis run."""
    path = _state_path(run_dir)
    if not path.is_file():
        raise UserError(f"{path}: missing; {run_dir} is not a finished dwt_mitosis run (run reproduce first)")
    state = json.loads(path.read_text())
    if "thresholds" in state:  # a run made before thresholds.json: move its values there once
        stored = thresholds.read_all(run_dir)
        for name, value in state.pop("thresholds").items():
            if name not in stored:
                thresholds.save(run_dir, name, thresholds.Threshold(float(value), rule="max_f1_det_val"))
        write_state(run_dir, state)
    return state


TASK = DwtMitosisTask()
