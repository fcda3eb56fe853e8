"""Benchmark cases of the spines reproduction for ``microrepro bench`` (``common/bench.py``).

Three cases: the two detectors of Table 1 with the paper's own timings beside them, and SP-CNN:

- tiny-YOLOv2 at ``yolo.input_size`` (448) with its region loss, on batches of the released
  darknet cfg's size (32) capped at :data:`CPU_MAX_YOLO_BATCH` (the note says so);
- Faster R-CNN (Inception-V2 to Mixed_4e) at ``faster_rcnn.input_size`` (448), batch 1 (TF OD
  API default), trained through its own ``compute_loss`` on ``{"boxes", "classes"}`` targets;
- SP-CNN (Sec. 5) at ``sp_cnn.input_size`` (256, the released notebook), batch 8, with the
  ``MSE - R`` loss of eq. 3 (64 shape priors: random here, the cost does not depend on them). Its
  pipeline slices precomputed (image, target, edge map) arrays, as ``train.train_sp_cnn`` does
  (the bilateral + Canny edge maps are computed once, before training, and are not timed).

Each case's ``pipeline`` is the real augmented tf.data pipeline of ``data.detection_dataset`` on
a few images of the synthetic spine generator. ``infer ms/img`` is one forward pass of batch 1:
for tiny-YOLOv2 the raw network output (decoding + NMS are numpy, not included), for Faster
R-CNN the whole graph (proposals, ROI head, NMS).

Reference: Aroui, Table 1 (29.016 ms/img tiny-YOLOv2 on a GTX 650, 58 ms/img Faster R-CNN on a
GTX 1080); the numbers are read from ``published.yaml``, never typed here.
"""

from __future__ import annotations

import numpy as np

from microrepro.common.bench import BenchCase, on_cpu, published_timings

PAPER = "spines"
CPU_MAX_YOLO_BATCH = 8  # on a CPU only: batch 32 at 448 px takes tens of seconds per step
PIPELINE_IMAGES = 8  # synthetic images behind the pipeline measurement (it repeats them)


def _boxes(n: int, size: int, box_px: float, max_boxes: int, seed: int = 0) -> np.ndarray:
    """``(n, max_boxes, 4)`` xyxy px: 3 boxes of ``box_px`` per image at random places, rest -1."""
    rng = np.random.default_rng(seed)
    boxes = -np.ones((n, max_boxes, 4), np.float32)
    k = min(3, max_boxes)
    x1 = rng.uniform(0, size - box_px, (n, k))
    y1 = rng.uniform(0, size - box_px, (n, k))
    boxes[:, :k] = np.stack([x1, y1, x1 + box_px, y1 + box_px], axis=-1)
    return boxes


def _prepared(cfg, size: int):
    """A few synthetic images resized to ``size`` (``data.prepare``), built once per process."""
    from microrepro.datasets.synthetic import spines as synthetic_spines
    from microrepro.reproductions.spines import data as data_lib

    key = (size, cfg.data.max_boxes)
    if key not in _PREPARED:
        samples = synthetic_spines.generate(PIPELINE_IMAGES, 0)
        _PREPARED[key] = data_lib.prepare(samples, size, cfg.data.max_boxes)
    return _PREPARED[key]


_PREPARED: dict = {}


def _yolo_case(cfg) -> BenchCase:
    from microrepro.reproductions.spines import train

    y = cfg.yolo
    size = int(y.input_size)
    batch = int(y.train.batch_size)
    if on_cpu():
        batch = min(batch, CPU_MAX_YOLO_BATCH)
    note = "spines/yolov2: "
    if batch < y.train.batch_size:
        note += f"batch {batch} on CPU (config = released darknet cfg: {y.train.batch_size}); "
    note += ("infer = network forward only (box decoding + NMS are numpy); training at the "
             "fixed input size (the paper trains multi-scale, the pipeline row includes the multi-scale resize)")

    def build():
        model = train.build_yolo(cfg)
        train.compile_model(model, y.train, loss=train.yolo_loss(cfg))  # as train.train_yolo
        return model

    def make_batch(n: int):
        x = np.random.default_rng(0).random((n, size, size, 1), dtype=np.float32)
        boxes = _boxes(n, size, cfg.data.box_size * size / 128.0, cfg.data.max_boxes)
        # YoloV2Loss: boxes normalised to [0, 1], padding rows -1.
        return x, np.where(boxes >= 0, boxes / size, -1.0).astype(np.float32)

    def pipeline():
        return train.yolo_dataset(cfg, _prepared(cfg, size), batch, 0)  # as train.train_yolo

    return BenchCase(
        paper=PAPER, name="yolov2", build=build, input_shape=(size, size, 1), batch=batch, make_batch=make_batch,
        pipeline=pipeline, published=published_timings(PAPER, "yolov2"), note=note,
    )


def _faster_rcnn_case(cfg) -> BenchCase:
    from microrepro.reproductions.spines import train

    f = cfg.faster_rcnn
    size = int(f.input_size)
    batch = int(f.train.batch_size)

    def build():
        model = train.build_faster_rcnn(cfg, seed=0)
        train.compile_model(model, f.train)  # the loss is the model's compute_loss
        return model

    def make_batch(n: int):
        x = np.random.default_rng(0).random((n, size, size, 1), dtype=np.float32)
        boxes = _boxes(n, size, cfg.data.box_size * size / 128.0, cfg.data.max_boxes)
        classes = np.where(boxes[..., 2] > boxes[..., 0], 0, -1).astype(np.int32)
        return x, {"boxes": boxes, "classes": classes}

    def pipeline():
        return train.faster_rcnn_dataset(cfg, _prepared(cfg, size), batch, 0)  # as train.train_faster_rcnn

    return BenchCase(
        paper=PAPER, name="faster_rcnn", build=build, input_shape=(size, size, 1), batch=batch,
        make_batch=make_batch, pipeline=pipeline, published=published_timings(PAPER, "faster_rcnn"),
        note=(f"spines/faster_rcnn: Inception-V2 to {f.feature_endpoint}, {f.proposals} proposals; "
              "infer = the whole detection graph"),
    )


def _sp_cnn_case(cfg) -> BenchCase:
    from microrepro.reproductions.spines import sp_cnn, train

    scfg = cfg.sp_cnn
    size, batch = int(scfg.input_size), int(scfg.train.batch_size)

    def build():
        priors = np.random.default_rng(0).random((scfg.n_priors, scfg.prior_size, scfg.prior_size)).astype(np.float32)
        model = train.build_sp_cnn(cfg)
        loss = sp_cnn.SpCnnLoss(priors, scfg.pool_window, scfg.output_threshold, scfg.reg_weight)
        train.compile_model(model, scfg.train, loss=loss)  # as train.train_sp_cnn
        return model

    def make_batch(n: int):
        rng = np.random.default_rng(0)
        x = rng.random((n, size, size, 1), dtype=np.float32)
        y = np.stack([rng.random((n, size, size)) < 0.01, rng.random((n, size, size)) < 0.05], -1)
        return x, y.astype(np.float32)  # (target squares, edge map)

    def pipeline():
        images, targets, _ = train.sp_cnn_arrays(cfg, _prepared(cfg, size))
        return train.sp_cnn_dataset(images, targets, batch, seed=0)  # as train.train_sp_cnn

    return BenchCase(
        paper=PAPER, name="sp_cnn", build=build, input_shape=(size, size, 1), batch=batch, make_batch=make_batch,
        pipeline=pipeline, published=[],
        note=(f"spines/sp_cnn: MSE - R loss with {scfg.n_priors} shape priors of {scfg.prior_size} px; infer = network "
              "forward only (peak finding is numpy); pipeline slices precomputed edge maps; no published timing"),
    )


def benchmarks(config) -> list[BenchCase]:
    """tiny-YOLOv2 and Faster R-CNN (Inception-V2) at the config's input sizes (448 at "paper"), and SP-CNN."""
    cases = []
    if config.yolo.enabled:
        cases.append(_yolo_case(config))
    if config.faster_rcnn.enabled:
        cases.append(_faster_rcnn_case(config))
    if config.sp_cnn.enabled:
        cases.append(_sp_cnn_case(config))
    return cases
