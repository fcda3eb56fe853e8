"""dwt_mitosis: two-phase mitosis detection — DWT U-shaped net → boxes → R-CNN.

Lu, "A Two-Phase Mitosis Detection Approach Based on U-Shaped Network", BioMed Research
International 2021.

Phase 1 (Sec. 3.1): a segmentation network (Haar-DWT down / IWT up, blocks of 4 × conv–BN–ReLU)
is trained on pixel masks; on a weakly labelled set (points only) the minimum enclosing box of
each segmented region becomes a strong label when a point lies inside it. Phase 2 (Sec. 3.2):
R-CNN (selective search, CNN features on warped regions, linear SVM, box regression) is trained
on those boxes; a detection is correct when its box centre lies within 8 µm of a point (Sec. 4.2).

Data (MITOS 2012 masks and the TUPAC16 / AMIDA13 / ICPR14 fields are not reachable here):

* ``synthetic``: H&E fields of ``datasets/synthetic/he_fields.py`` with exact masks. Phase 1
  trains on one set of fields; phase 2 gets other fields with their POINTS only, generates boxes
  with each phase-1 net, and is tested on held-out fields (split ``synthetic_test``). Exact masks
  also give the "Manual" boxes of Table 2.
* ``amibr`` (when ``/work/shared/data/mitosis_amibr`` is found): mosaics of real AMi-Br crops
  (``datasets/amibr.py``, split by slide) with points of every known figure. Phase 1 — trained on
  SYNTHETIC masks — generates the boxes on these real images (sim-to-real), phase 2 trains and
  is tested on real mosaics (split ``amibr_test``). No manual boxes exist there.

Models (metric keys ``recall``, ``precision``, ``f1``):

* ``dwt_unet_seg`` / ``unet_seg``: phase-1 pixel metrics;
* ``dwt_labels`` / ``unet_labels``: label quality (box IoU with manual boxes, point coverage);
* ``rcnn_dwt_labels`` / ``rcnn_unet_labels`` / ``rcnn_manual_labels``: R-CNN on each label source
  (Tables 1 and 2);
* ``faster_rcnn_phase2``: phase 2 with common/detection's Faster R-CNN on the DWT labels;
* ``rcnn_square_labels`` (only when ``label_sources`` lists ``square``): fixed squares around the
  points, the weak-label workaround of earlier work (Sec. 2).
"""

from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from microrepro.common.data_sources import DataSource
from microrepro.common.errors import DataError, UserError
from microrepro.common.runs import DataInfo, Run, checksum_files
from microrepro.common.task import Task
from microrepro.reproductions.dwt_mitosis import labels as label_lib
from microrepro.reproductions.dwt_mitosis import rcnn
from microrepro.reproductions.dwt_mitosis.config import DwtMitosisConfig

SEG_MODELS = {"dwt": "dwt_unet_seg", "unet": "unet_seg"}
FASTER = "faster_rcnn_phase2"
STATE_FILE = "dwt_mitosis_state.json"
SOURCES = ("dwt", "unet", "manual", "square")


def rcnn_model(source: str) -> str:
    """Metric key of R-CNN trained on ``source`` labels (``rcnn_dwt_labels``...)."""
    return f"rcnn_{source}_labels"


# ----------------------------------------------------------------------------------------------
# data


@dataclass
class ImageSet:
    """Images of one split: RGB uint8 ``(H, W, 3)``, weak labels, exact masks where known."""

    name: str
    images: list[np.ndarray]
    points: list[np.ndarray]
    pixel_sizes: list[float]
    ids: list[str]
    info: DataInfo
    masks: list[np.ndarray] | None = None
    meta: list[dict] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)


def _rgb(image: np.ndarray) -> np.ndarray:
    from microrepro.common.imageio import convert_channels, to_float01

    image = convert_channels(np.asarray(image), 3)
    if image.dtype != np.uint8:
        image = np.round(np.clip(to_float01(image), 0, 1) * 255).astype(np.uint8)
    return image


def synthetic_set(name: str, n: int, seed: int, cfg: DwtMitosisConfig) -> ImageSet:
    """``n`` synthetic H&E fields (exact masks and points) from ``he_fields.generate``."""
    from microrepro.datasets.synthetic import he_fields

    s = cfg.synthetic
    config = he_fields.HEConfig(image_size=(s.field_size, s.field_size), scanner=s.scanner, mitoses_per_mm2=s.mitoses_per_mm2)
    samples = he_fields.generate(int(n), int(seed), config)
    return ImageSet(
        name, [_rgb(x.image) for x in samples], [np.asarray(x.points, np.float32) for x in samples],
        [float(x.pixel_size_um) for x in samples], [x.id for x in samples],
        DataInfo("synthetic", "synthetic H&E (he_fields)", len(samples), note=f"seed {seed}, {s.field_size} px"),
        masks=[np.asarray(x.mask, np.int32) for x in samples], meta=[x.meta for x in samples],
    )


def synthetic_sets(cfg: DwtMitosisConfig, names: tuple[str, ...] | None = None) -> dict[str, ImageSet]:
    """Disjoint seeded synthetic sets: phase-1 train/val, phase-2 train/val, test.

    Args:
        cfg: the run config.
        names: which sets to generate (default all); each set's seed does not depend on this.
    """
    s = cfg.synthetic
    plan = [("seg_train", s.seg_train_fields), ("seg_val", s.seg_val_fields), ("det_train", s.det_train_fields),
            ("det_val", s.det_val_fields), ("test", s.test_fields)]
    for name, n in plan:
        if n < 1:
            raise UserError(f"config synthetic.{name}_fields must be >= 1, got {n}")
    return {name: synthetic_set(name, n, s.seed + 101 * k, cfg) for k, (name, n) in enumerate(plan)
            if names is None or name in names}


def _mosaic_set(name: str, samples, cfg: DwtMitosisConfig, limit: int | None, seed: int, dataset: str) -> ImageSet:
    from microrepro.datasets import amibr

    rows, cols = cfg.amibr.grid
    per = rows * cols
    order = np.random.default_rng(seed).permutation(len(samples))
    if limit is not None:
        order = order[: int(limit) * per]
    chosen = [samples[i] for i in sorted(order)]
    tiles = amibr.mosaics(chosen, (rows, cols), seed)
    if not tiles:
        raise DataError(f"AMi-Br split '{name}' has {len(samples)} crops: too few for one {rows}x{cols} mosaic")
    by_id = {x.id: x for x in chosen}
    paths = [by_id[t].image_path for m in tiles for t in m.meta["tiles"]]
    info = DataInfo("real", dataset, len(tiles), checksum_files(paths),
                    note=f"{rows}x{cols} mosaics of {len(paths)} AMi-Br crops, slide split")
    return ImageSet(name, [_rgb(m.image) for m in tiles], [np.asarray(m.points, np.float32) for m in tiles],
                    [float(m.pixel_size_um or 0.25) for m in tiles], [m.id for m in tiles], info, None,
                    [m.meta for m in tiles])


def amibr_sets(root: Path, cfg: DwtMitosisConfig, dataset: str) -> dict[str, ImageSet]:
    """AMi-Br mosaics split by slide into det_train / det_val / test (``datasets/amibr.py``)."""
    from microrepro.datasets import amibr

    a = cfg.amibr
    samples = amibr.load(root)
    trainval, test = amibr.slide_split(samples, a.test_fraction, a.seed)
    train, val = amibr.slide_split(trainval, a.val_fraction, a.seed + 1)
    print(f"[dwt_mitosis] AMi-Br at {root}: {len(samples)} crops -> {len(train)} train / {len(val)} val / "
          f"{len(test)} test crops (split by slide)")
    return {
        "det_train": _mosaic_set("det_train", train, cfg, a.max_train_mosaics, a.seed, dataset),
        "det_val": _mosaic_set("det_val", val, cfg, a.max_val_mosaics, a.seed + 1, dataset),
        "test": _mosaic_set("test", test, cfg, a.max_test_mosaics, a.seed + 2, dataset),
    }


# ----------------------------------------------------------------------------------------------
# phase 1


def build_seg_model(cfg: DwtMitosisConfig, kind: str):
    """``kind`` "dwt" (Fig. 2) or "unet" (Table 2 baseline), any input size divisible by 2^levels."""
    from microrepro.reproductions.dwt_mitosis.model import build_dwt_unet, build_unet

    s = cfg.seg
    if kind == "dwt":
        return build_dwt_unet(s.widths, s.convs_per_block, skip=s.skip, name=SEG_MODELS["dwt"], bn_momentum=s.bn_momentum)
    if kind == "unet":
        return build_unet(s.widths, s.unet_convs_per_block, name=SEG_MODELS["unet"], bn_momentum=s.bn_momentum)
    raise UserError(f"unknown segmentation network {kind!r} (dwt or unet)")


def seg_datasets(train: ImageSet, val: ImageSet, cfg: DwtMitosisConfig, seed: int):
    """tf.data of ``(image (B, s, s, 3) float32 [0, 1], classes (B, s, s, 1) int32)``; s = crop or field."""
    import tensorflow as tf

    t = cfg.seg_train

    def arrays(image_set: ImageSet):
        x = np.stack(image_set.images).astype(np.float32) / 255.0
        y = (np.stack(image_set.masks) > 0).astype(np.int32)[..., None]
        return x, y

    x, y = arrays(train)
    crop = t.crop_size

    def augment(image, target):
        both = tf.concat([image, tf.cast(target, tf.float32)], axis=-1)
        if crop:
            both = tf.image.random_crop(both, (crop, crop, 4))
        if t.augment:
            both = tf.image.random_flip_left_right(both)
            both = tf.image.random_flip_up_down(both)
            both = tf.image.rot90(both, tf.random.uniform((), 0, 4, tf.int32))
        return both[..., :3], tf.cast(both[..., 3:], tf.int32)

    train_ds = (tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=seed).repeat()
                .map(augment, num_parallel_calls=1).batch(t.batch_size, drop_remainder=True).prefetch(1))
    vx, vy = arrays(val)
    val_ds = tf.data.Dataset.from_tensor_slices((vx, vy)).batch(min(t.batch_size, len(vx)))
    return train_ds, val_ds


def train_seg(kind: str, run: Run, cfg: DwtMitosisConfig, train: ImageSet, val: ImageSet) -> dict:
    """Train one phase-1 network (Sec. 4.3: Adam, batch 8, lr 1e-3 → 1e-6); ``schedule_run`` entry."""
    import keras

    from microrepro.common import training
    from microrepro.reproductions.dwt_mitosis.model import segmentation_loss

    t = cfg.seg_train
    training.set_seed(run.seed)
    model = build_seg_model(cfg, kind)
    steps = t.steps_per_epoch or max(1, math.ceil(len(train) / t.batch_size))
    model.compile(optimizer=keras.optimizers.Adam(rcnn.lr_decay(t.lr, t.final_lr, t.epochs * steps)),
                  loss=segmentation_loss(t.positive_weight), jit_compile=False)
    train_ds, val_ds = seg_datasets(train, val, cfg, run.seed)
    name = SEG_MODELS[kind]
    result = training.fit(model, train_ds, val_ds, run_dir=run.run_dir, name=name, epochs=t.epochs,
                          steps_per_epoch=steps, monitor="val_loss", verbose=2, tensorboard=False)
    training.plot_history(run.run_dir, name, run.figure_path(f"training_{name}"), f"{name}: pixel cross-entropy")
    loss = result["history"].get("loss", [])
    return {"epochs": result["epochs_run"], "steps": steps * result["epochs_run"], "batch": t.batch_size,
            "seconds": round(result["seconds"], 1), "first_loss": loss[0] if loss else None,
            "last_loss": loss[-1] if loss else None}


def load_seg(run_dir: Path, cfg: DwtMitosisConfig, kind: str):
    from microrepro.common import training

    return training.load_weights(build_seg_model(cfg, kind), run_dir, SEG_MODELS[kind], "best")


def predict_prob(model, images: list[np.ndarray], cfg: DwtMitosisConfig) -> list[np.ndarray]:
    """Mitosis probability ``(H, W)`` float32 per image.

    A field up to ``seg.predict_tile`` px on each side runs in one pass (reflect-padded to a
    multiple of 2^levels); a larger one (a 2000x2000 HPF, a slide region) is segmented in
    overlapping tiles stitched by ``common.tiling.predict_tiled``, so memory stays bounded.
    """
    import keras

    from microrepro.common.tiling import predict_tiled

    factor = 2 ** (len(cfg.seg.widths) - 1)
    tile = int(cfg.seg.predict_tile)
    if tile % factor:
        raise UserError(f"seg.predict_tile ({tile}) must be a multiple of {factor} (2^levels)")

    def predict_fn(batch):
        logits = model(np.asarray(batch, np.float32), training=False)
        return keras.ops.convert_to_numpy(keras.ops.softmax(logits, axis=-1))[..., 1:2]

    out = []
    for image in images:
        h, w = image.shape[:2]
        x = image.astype(np.float32) / 255.0
        if max(h, w) > tile:
            prob = predict_tiled(predict_fn, x, tile, int(cfg.seg.predict_overlap), batch_size=2)[..., 0]
        else:
            ph, pw = (-h) % factor, (-w) % factor
            prob = predict_fn(np.pad(x, ((0, ph), (0, pw), (0, 0)), mode="reflect")[None])[0, :h, :w, 0]
        out.append(np.asarray(prob, np.float32))
    return out


# ----------------------------------------------------------------------------------------------
# phase 2 helpers


def match_detections(boxes_per_image, scores_per_image, image_set: ImageSet, threshold: float, match_um: float):
    """Aggregated MatchResult of box centres (score >= threshold) against the points."""
    from microrepro.common.matching import aggregate, match_points
    from microrepro.datasets.base import boxes_to_points

    results = []
    for boxes, scores, points, px in zip(boxes_per_image, scores_per_image, image_set.points, image_set.pixel_sizes):
        kept = boxes[scores >= threshold]
        results.append(match_points(boxes_to_points(kept), points, match_um, pixel_size_um=px))
    return aggregate(results), results


def choose_threshold(boxes_per_image, scores_per_image, image_set: ImageSet, match_um: float) -> tuple[float, float]:
    """Score threshold with the best F1 on ``image_set`` (ties: the lower threshold)."""
    from microrepro.common.matching import match_points
    from microrepro.common.metrics import best_f1_threshold, detection_sweep
    from microrepro.datasets.base import boxes_to_points

    scores = np.concatenate([np.asarray(s, np.float64) for s in scores_per_image]) if scores_per_image else np.zeros(0)
    if not len(scores):
        return 0.0, 0.0
    grid = np.unique(np.quantile(scores, np.linspace(0, 1, 101)))
    px = image_set.pixel_sizes[0]
    sweep = detection_sweep(lambda p, g: match_points(p, g, match_um, pixel_size_um=px),
                            [boxes_to_points(b) for b in boxes_per_image], scores_per_image, image_set.points, grid)
    return best_f1_threshold(sweep)


def faster_backbone(size: int, widths):
    import keras

    inputs = keras.Input((size, size, 3))
    x = inputs
    for k, filters in enumerate(widths):
        x = keras.layers.Conv2D(filters, 3, strides=2, padding="same", activation="relu", name=f"down{k}")(x)
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"conv{k}")(x)
    return keras.Model(inputs, x, name="faster_backbone")


def build_faster(cfg: DwtMitosisConfig, size: int, seed: int):
    """Faster R-CNN of common/detection sized for mitoses (stride 2^len(widths), small anchors)."""
    from microrepro.common.detection.faster_rcnn import FasterRCNN, FasterRCNNConfig

    f = cfg.faster
    config = FasterRCNNConfig(
        num_classes=1, feature_stride=2 ** len(f.backbone_widths), anchor_sizes=f.anchor_sizes,
        rpn_conv_channels=128, rpn_pre_nms_top_k_train=2000, rpn_post_nms_top_k_train=256,
        rpn_pre_nms_top_k_test=1000, rpn_post_nms_top_k_test=128, head_fc_units=(256, 256),
        head_batch_size_per_image=64, score_threshold=0.0, detection_nms_iou=cfg.rcnn.nms_iou,
        max_detections=50, seed=seed,
    )
    return FasterRCNN(faster_backbone(size, f.backbone_widths), config)


def _pad_boxes(boxes_list, max_boxes: int):
    out = -np.ones((len(boxes_list), max_boxes, 4), np.float32)
    classes = -np.ones((len(boxes_list), max_boxes), np.int32)
    for k, boxes in enumerate(boxes_list):
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)[:max_boxes]
        out[k, : len(boxes)] = boxes
        classes[k, : len(boxes)] = 0
    return out, classes


# ----------------------------------------------------------------------------------------------
# figures


def _draw_boxes(image: np.ndarray, box_sets: list[tuple[np.ndarray, tuple]], points: np.ndarray) -> np.ndarray:
    import cv2

    canvas = image.copy()
    for boxes, colour in box_sets:
        for x1, y1, x2, y2 in np.asarray(boxes).reshape(-1, 4):
            cv2.rectangle(canvas, (int(x1), int(y1)), (int(x2) - 1, int(y2) - 1), colour, 1)
    for x, y in np.asarray(points).reshape(-1, 2):
        cv2.drawMarker(canvas, (int(round(x)), int(round(y))), (255, 255, 0), cv2.MARKER_CROSS, 8, 1)
    return canvas


def labels_figure(run: Run, name: str, image_set: ImageSet, generated: dict, manual: list | None, n: int) -> Path:
    """Montage of generated boxes: DWT green, U-Net blue, manual white; weak labels yellow crosses."""
    from microrepro.common.figures import montage

    colours = {"dwt": (0, 200, 0), "unet": (40, 90, 255)}
    tiles, titles = [], []
    for k in range(min(n, len(image_set))):
        sets = [(generated[s][k].boxes, colours[s]) for s in generated]
        if manual is not None:
            sets.append((manual[k], (255, 255, 255)))
        tiles.append(_draw_boxes(image_set.images[k], sets, image_set.points[k]))
        titles.append(f"{image_set.ids[k]}")
    legend = "green DWT net, blue U-Net" + (", white manual" if manual is not None else "") + "; + weak label"
    return montage(tiles, [f"{t}\n{legend}" if i == 0 else t for i, t in enumerate(titles)], run.figure_path(name), ncols=4)


# ----------------------------------------------------------------------------------------------
# the task


class DwtMitosisTask(Task):
    name = "dwt_mitosis"
    title = "A Two-Phase Mitosis Detection Approach Based on U-Shaped Network (Lu 2021)"
    dataset = "mitosis_amibr"
    config_cls = DwtMitosisConfig
    folder = Path(__file__).parent

    # ------------------------------------------------------------------------------------------
    def load_domains(self, data: DataSource, cfg: DwtMitosisConfig, test_only: bool = False
                     ) -> tuple[dict[str, ImageSet], dict[str, dict[str, ImageSet]]]:
        """(synthetic sets incl. phase-1 training, {domain: {det_train, det_val, test}}).

        ``test_only``: only the test sets (``evaluate``: thresholds come from the run).
        """
        s = cfg.synthetic
        print(f"[dwt_mitosis] SYNTHETIC H&E fields ({s.field_size} px, seed {s.seed}): phase 1 on "
              f"{s.seg_train_fields} fields with exact masks (MITOS 2012 masks are not reachable here)")
        synth = synthetic_sets(cfg, ("test",) if test_only else None)
        domains = {"synthetic": {k: synth.get(k) for k in ("det_train", "det_val", "test")}}
        if data.path is not None and cfg.amibr.enabled:
            domains["amibr"] = amibr_sets(data.path, cfg, data.dataset)
            print("[dwt_mitosis] phase 1 (trained on synthetic masks) will label REAL AMi-Br mosaics: sim-to-real")
        elif data.path is None:
            print("[dwt_mitosis] no AMi-Br data found: synthetic evaluation only")
        return synth, domains

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
        state = {"thresholds": {}, "seg_kinds": seg_kinds, "domains": list(domains), "sources": {}}
        self._evaluate_seg(run, cfg, seg_models, synth["test"])
        for domain, sets in domains.items():
            state["sources"][domain] = self._phase2(run, cfg, domain, sets, seg_models, state["thresholds"])
        _state_path(run.run_dir).write_text(json.dumps(state, indent=2))
        run.extra["total_seconds"] = round(time.perf_counter() - start, 1)
        run.save()
        print(f"[dwt_mitosis] done in {run.extra['total_seconds']:.0f} s; metrics in {run.run_dir / 'metrics.json'}")

    # ------------------------------------------------------------------------------------------
    def _evaluate_seg(self, run: Run, cfg: DwtMitosisConfig, seg_models: dict, test: ImageSet) -> None:
        from microrepro.common.metrics import pixel_metrics

        for kind, model in seg_models.items():
            probs = predict_prob(model, test.images, cfg)
            metrics = pixel_metrics([p >= cfg.seg.threshold for p in probs], [m > 0 for m in test.masks])
            keep = ("precision", "recall", "f1", "iou", "mcc")
            run.add_metrics(SEG_MODELS[kind], "synthetic_test", {k: metrics[k] for k in keep}, test.info)
            print(f"[dwt_mitosis] {SEG_MODELS[kind]} on synthetic_test: pixel F1 {metrics['f1']:.3f}, IoU {metrics['iou']:.3f}")

    def _labels(self, cfg: DwtMitosisConfig, image_set: ImageSet, seg_models: dict) -> dict[str, list]:
        """Generated labels per phase-1 net for every image of ``image_set``."""
        out = {}
        for kind, model in seg_models.items():
            probs = predict_prob(model, image_set.images, cfg)
            out[kind] = [label_lib.boxes_from_segmentation(p, pts, cfg.seg.threshold, cfg.seg.min_region_px)
                         for p, pts in zip(probs, image_set.points)]
        return out

    def _phase2(self, run: Run, cfg: DwtMitosisConfig, domain: str, sets: dict[str, ImageSet], seg_models: dict,
                thresholds: dict) -> list[str]:
        train, val, test = sets["det_train"], sets["det_val"], sets["test"]
        split = f"{domain}_test"
        generated = self._labels(cfg, train, seg_models)
        manual = None
        if train.masks is not None:
            manual = [label_lib.manual_boxes(m, p) for m, p in zip(train.masks, train.points)]
        for kind, labels in generated.items():
            boxes = [g.boxes for g in labels]
            if manual is not None:
                quality = label_lib.label_quality(boxes, manual, train.points)
            else:
                quality = label_lib.label_quality(boxes, [np.zeros((0, 4))] * len(boxes), train.points)
                quality = {k: quality[k] for k in ("n_generated", "point_coverage")}
            run.add_metrics(f"{kind}_labels", f"{domain}_det_train", quality, train.info)
            print(f"[dwt_mitosis] {domain}: {kind} labels on {len(train)} training images: " +
                  ", ".join(f"{k} {v:.3f}" for k, v in quality.items()))
        labels_figure(run, f"generated_boxes_{domain}", train, generated, manual, cfg.eval.figure_examples)

        sources = [s for s in cfg.label_sources
                   if s in generated or s == "square" or (s == "manual" and manual is not None)]
        print(f"[dwt_mitosis] {domain}: selective search on {len(train)} + {len(val)} + {len(test)} images")
        regions = {name: rcnn.build_regions(s.images, s.pixel_sizes, cfg.rcnn) for name, s in
                   (("train", train), ("val", val), ("test", test))}
        print(f"[dwt_mitosis] {domain}: {len(regions['train'].boxes)} training proposals "
              f"({len(regions['train'].boxes) / max(len(train), 1):.0f} per image)")
        for source in sources:
            if source == "manual":
                gt = manual
            elif source == "square":  # Sec. 2: the fixed square around each point of earlier work
                gt = [label_lib.square_boxes(p, cfg.square_size_um / px, *img.shape[:2])
                      for p, px, img in zip(train.points, train.pixel_sizes, train.images)]
            else:
                gt = [g.boxes for g in generated[source]]
            model = rcnn_model(source)
            name = f"{model}_{domain}"
            if sum(len(b) for b in gt) == 0:
                print(f"[dwt_mitosis] {domain}: no {source} boxes were generated; {model} cannot be trained")
                run.add_metrics(model, split, {"recall": 0.0, "precision": 0.0, "f1": 0.0}, test.info)
                continue
            print(f"[dwt_mitosis] {domain}: phase 2 R-CNN on {source} labels ({sum(len(b) for b in gt)} boxes)")
            run.schedule_run[name] = rcnn.train_rcnn(regions["train"], gt, train.images, cfg.rcnn, run_dir=run.run_dir,
                                                     name=name, seed=run.seed)
            run.save()
            thresholds[name] = self._evaluate_rcnn(run, cfg, name, model, split, val, test, regions, None)
        if cfg.faster.enabled and "dwt" in generated:
            self._faster(run, cfg, domain, train, val, test, [g.boxes for g in generated["dwt"]], thresholds)
        return sources

    def _detect_set(self, extractor, head, image_set: ImageSet, regions: rcnn.RegionSet, cfg: DwtMitosisConfig):
        boxes, scores, seconds = [], [], []
        for k, image in enumerate(image_set.images):
            idx = regions.of_image(k)
            tic = time.perf_counter()
            b, s = rcnn.detect(extractor, head, regions.warps[idx], regions.boxes[idx], cfg.rcnn.nms_iou,
                               image.shape[0], image.shape[1])
            seconds.append(time.perf_counter() - tic)
            boxes.append(b)
            scores.append(s)
        return boxes, scores, seconds

    def _evaluate_rcnn(self, run, cfg, name, model, split, val, test, regions, threshold) -> float:
        extractor, head = rcnn.load_rcnn(run.run_dir, name, cfg.rcnn)
        if threshold is None:
            if cfg.rcnn.score_threshold is not None:
                threshold = float(cfg.rcnn.score_threshold)
            else:
                vb, vs, _ = self._detect_set(extractor, head, val, regions["val"], cfg)
                threshold, val_f1 = choose_threshold(vb, vs, val, cfg.eval.match_um)
                print(f"[dwt_mitosis] {name}: score threshold {threshold:.3f} (F1 {val_f1:.3f} on {len(val)} validation images)")
        boxes, scores, seconds = self._detect_set(extractor, head, test, regions["test"], cfg)
        total, per_image = match_detections(boxes, scores, test, threshold, cfg.eval.match_um)
        # per image: selective search share (measured when the regions were built) + scoring
        ss = regions["test"].seconds_proposals / max(len(test), 1)
        timing = 1000.0 * (ss + float(np.median(seconds[1:] if len(seconds) > 1 else seconds)))
        metrics = {"recall": total.recall, "precision": total.precision, "f1": total.f1, "tp": total.tp, "fp": total.fp,
                   "fn": total.fn, "threshold": threshold, "ms_per_image": timing}
        run.add_metrics(model, split, metrics, test.info)
        print(f"[dwt_mitosis] {model} on {split}: recall {total.recall:.3f}, precision {total.precision:.3f}, F1 {total.f1:.3f}")
        self._detections_figure(run, f"detections_{name}", test, boxes, scores, threshold, cfg)
        return float(threshold)

    def _detections_figure(self, run, name, test: ImageSet, boxes, scores, threshold, cfg) -> None:
        from microrepro.common.figures import draw_detections
        from microrepro.common.matching import match_points
        from microrepro.datasets.base import boxes_to_points

        k = int(np.argmax([len(p) for p in test.points]))
        kept = boxes[k][scores[k] >= threshold]
        matched = match_points(boxes_to_points(kept), test.points[k], cfg.eval.match_um, pixel_size_um=test.pixel_sizes[k])
        draw_detections(test.images[k], kept, test.points[k], run.figure_path(name), matched,
                        title=f"{name}: {test.ids[k]}")

    # ------------------------------------------------------------------------------------------
    def _faster(self, run, cfg, domain, train: ImageSet, val: ImageSet, test: ImageSet, boxes, thresholds) -> None:
        """Phase 2 with common/detection's Faster R-CNN on the DWT-net labels (Sec. 3.2, "any detector")."""
        import keras

        from microrepro.common import training

        f = cfg.faster
        size = train.images[0].shape[0]
        if any(img.shape[:2] != (size, size) for img in train.images + val.images + test.images):
            print(f"[dwt_mitosis] {domain}: Faster R-CNN needs square images of one size; skipped")
            return
        name = f"{FASTER}_{domain}"
        training.set_seed(run.seed)
        model = build_faster(cfg, size, run.seed)
        x = np.stack(train.images).astype(np.float32) / 255.0
        gt_boxes, gt_classes = _pad_boxes(boxes, f.max_boxes)
        steps = f.steps_per_epoch or max(1, math.ceil(len(x) / f.batch_size))
        model.compile(optimizer=keras.optimizers.Adam(rcnn.lr_decay(f.lr, f.final_lr, f.epochs * steps)), jit_compile=False)
        import tensorflow as tf

        ds = (tf.data.Dataset.from_tensor_slices((x, {"boxes": gt_boxes, "classes": gt_classes}))
              .shuffle(len(x), seed=run.seed).repeat().batch(f.batch_size, drop_remainder=False))
        print(f"[dwt_mitosis] {domain}: phase 2 Faster R-CNN on dwt labels")
        result = training.fit(model, ds, None, run_dir=run.run_dir, name=name, epochs=f.epochs, steps_per_epoch=steps,
                              monitor="loss", verbose=2, tensorboard=False)
        loss = result["history"].get("loss", [])
        run.schedule_run[name] = {"epochs": result["epochs_run"], "steps": steps * result["epochs_run"], "batch": f.batch_size,
                                  "seconds": round(result["seconds"], 1), "first_loss": loss[0] if loss else None,
                                  "last_loss": loss[-1] if loss else None}
        training.load_weights(model, run.run_dir, name, "last")
        thresholds[name] = self._evaluate_faster(run, cfg, model, domain, val, test, None)

    def _faster_detect(self, model, image_set: ImageSet):
        x = np.stack(image_set.images).astype(np.float32) / 255.0
        tic = time.perf_counter()
        out = model.predict_detections(x)
        seconds = (time.perf_counter() - tic) / max(len(x), 1)
        n = out["num_detections"].astype(int)
        return [out["boxes"][i, : n[i]] for i in range(len(x))], [out["scores"][i, : n[i]].astype(np.float64) for i in range(len(x))], seconds

    def _evaluate_faster(self, run, cfg, model, domain, val, test, threshold) -> float:
        if threshold is None:
            vb, vs, _ = self._faster_detect(model, val)
            threshold, _ = choose_threshold(vb, vs, val, cfg.eval.match_um)
        boxes, scores, seconds = self._faster_detect(model, test)
        total, _ = match_detections(boxes, scores, test, threshold, cfg.eval.match_um)
        run.add_metrics(FASTER, f"{domain}_test", {"recall": total.recall, "precision": total.precision, "f1": total.f1,
                                                   "tp": total.tp, "fp": total.fp, "fn": total.fn, "threshold": threshold,
                                                   "ms_per_image": 1000 * seconds}, test.info)
        print(f"[dwt_mitosis] {FASTER} on {domain}_test: recall {total.recall:.3f}, precision {total.precision:.3f}, F1 {total.f1:.3f}")
        self._detections_figure(run, f"detections_{FASTER}_{domain}", test, boxes, scores, threshold, cfg)
        return float(threshold)

    # ------------------------------------------------------------------------------------------
    def evaluate(self, run: Run, data: DataSource) -> None:
        cfg: DwtMitosisConfig = run.config
        state = _read_state(run.run_dir)
        synth, domains = self.load_domains(data, cfg, test_only=True)
        seg_models = {kind: load_seg(run.run_dir, cfg, kind) for kind in state["seg_kinds"]}
        self._evaluate_seg(run, cfg, seg_models, synth["test"])
        for domain in state["domains"]:
            if domain not in domains:
                print(f"[dwt_mitosis] {domain} data not found now: its rows are not re-evaluated")
                continue
            sets = domains[domain]
            regions = {"test": rcnn.build_regions(sets["test"].images, sets["test"].pixel_sizes, cfg.rcnn)}
            for source in state["sources"].get(domain, []):
                name = f"{rcnn_model(source)}_{domain}"
                if name in state["thresholds"]:
                    self._evaluate_rcnn(run, cfg, name, rcnn_model(source), f"{domain}_test", sets["det_val"], sets["test"],
                                        regions, state["thresholds"][name])
            name = f"{FASTER}_{domain}"
            if name in state["thresholds"]:
                from microrepro.common import training

                size = sets["test"].images[0].shape[0]
                model = training.load_weights(build_faster(cfg, size, run.seed), run.run_dir, name, "last")
                self._evaluate_faster(run, cfg, model, domain, sets["det_val"], sets["test"], state["thresholds"][name])
        run.save()

    # ------------------------------------------------------------------------------------------
    def predict(self, run_dir: Path, images: list[Path], out_dir: Path, model: str = "rcnn_dwt_labels",
                domain: str | None = None, threshold: float | None = None, pixel_size_um: float = 0.25,
                **options) -> list[Path]:
        """Detect mitoses in ``images`` with a trained R-CNN of a run.

        Writes, per image, ``<stem>_mitoses.csv`` (x1, y1, x2, y2, score, x, y: box px and its
        centre) and ``<stem>_overlay.png``, plus ``counts.csv`` (image, count).

        Args:
            run_dir: a finished run folder.
            images: RGB image files (H&E at ×40).
            out_dir: output folder (created).
            model: ``rcnn_dwt_labels`` (default), ``rcnn_unet_labels`` or ``rcnn_manual_labels``.
            domain: which training domain's detector: ``amibr`` (default when trained) or ``synthetic``.
            threshold: SVM score cut-off; default = the one chosen on the validation images.
            pixel_size_um: µm per pixel of the images (size filter of the proposals).
        """
        from microrepro.common.figures import draw_detections
        from microrepro.common.imageio import read_image
        from microrepro.datasets.base import boxes_to_points

        if options:
            raise UserError(f"unknown predict options for dwt_mitosis: {sorted(options)} "
                            "(known: model, domain, threshold, pixel_size_um)")
        run_dir, out_dir = Path(run_dir), Path(out_dir)
        state = _read_state(run_dir)
        domain = domain or ("amibr" if "amibr" in state["domains"] else "synthetic")
        name = f"{model}_{domain}"
        if name not in state["thresholds"] or not model.startswith("rcnn_"):
            known = sorted({k.rsplit("_", 1)[0] for k in state["thresholds"] if k.startswith("rcnn_")})
            raise UserError(f"model '{model}' for domain '{domain}' is not in this run; choose one of {known} "
                            f"and a domain of {state['domains']}")
        cfg = self.config_from_run(run_dir)
        extractor, head = rcnn.load_rcnn(run_dir, name, cfg.rcnn)
        cut = float(state["thresholds"][name] if threshold is None else threshold)
        out_dir.mkdir(parents=True, exist_ok=True)
        written, counts = [], []
        for path in images:
            image = _rgb(read_image(path))
            props = rcnn.image_proposals(image, cfg.rcnn, pixel_size_um)
            warps = rcnn.warp_regions(image, props, cfg.rcnn.warp_size, cfg.rcnn.warp_padding)
            boxes, scores = rcnn.detect(extractor, head, warps, props, cfg.rcnn.nms_iou, image.shape[0], image.shape[1])
            keep = scores >= cut
            boxes, scores = boxes[keep], scores[keep]
            centres = boxes_to_points(boxes)
            stem = Path(path).stem
            table = out_dir / f"{stem}_mitoses.csv"
            with open(table, "w", newline="") as fh:
                writer = csv.writer(fh)
                writer.writerow(["x1", "y1", "x2", "y2", "score", "x", "y"])
                for b, s, c in zip(boxes, scores, centres):
                    writer.writerow([*(f"{v:.1f}" for v in b), f"{s:.4f}", f"{c[0]:.1f}", f"{c[1]:.1f}"])
            overlay = draw_detections(image, boxes, np.zeros((0, 2), np.float32), out_dir / f"{stem}_overlay.png",
                                      title=f"{stem}: {len(boxes)} mitoses")
            written += [table, Path(overlay)]
            counts.append((Path(path).name, len(boxes)))
        summary = out_dir / "counts.csv"
        with open(summary, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["image", "count"])
            writer.writerows(counts)
        return written + [summary]


def _state_path(run_dir: Path) -> Path:
    return Path(run_dir) / STATE_FILE


def _read_state(run_dir: Path) -> dict:
    path = _state_path(run_dir)
    if not path.is_file():
        raise UserError(f"{path}: missing; {run_dir} is not a finished dwt_mitosis run (run reproduce first)")
    return json.loads(path.read_text())


TASK = DwtMitosisTask()
