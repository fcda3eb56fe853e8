"""Benchmark case of the mitos_rcnn reproduction for ``microrepro bench`` (``common/bench.py``).

The three detectors of Table II: the single-RPN Faster R-CNN baselines on conv5 and on conv4, and
the MITOS-RCNN cascade (VGG-16 to conv4_3, RPN_1 on conv4, RPN_2 on the fused conv3+4 maps,
Fast R-CNN head; ``model.build_model("mitos_rcnn", ...)``) at the paper's 299 x 299 x 3 HPF
subsections (Sec. IV-A), trained through its own ``compute_loss`` on ``{"boxes", "classes"}``
targets with the paper's optimiser (``train.make_optimizer``: SGD, momentum 0.9, weight decay).
The paper's batch of 10 (Sec. IV-B.4) is capped at :data:`CPU_MAX_BATCH` on a CPU (the note says
so). Backbone weights are left random (``pretrained: none``): ImageNet weights need the network
and do not change the timing.

The full field is one Aperio HPF (``eval.timing_field``, 1376 x 1539 px, Table I) detected as the
task does it (``detect.detect_field``: overlapping subsections at ``data.scale``, batched,
merged by tile cores + NMS), beside the paper's 0.5 s per HPF on one Tesla K80 and Saha et
al.'s 0.3 s (Sec. V-B.3, read from ``published.yaml``).

Reference: MITOS-RCNN Sec. IV-A (subsections), Sec. IV-B.4 (optimiser, batch), Sec. V-B.3 (s per HPF).
"""

from __future__ import annotations

import numpy as np

from microrepro.common.bench import BenchCase, on_cpu, published_timings

PAPER = "mitos_rcnn"
CPU_MAX_BATCH = 2  # on a CPU only: the paper's 10 subsections of 299 px make one step take minutes
PIPELINE_FIELDS = 2  # synthetic H&E fields cut into subsections for the pipeline measurement

_SUBSECTIONS: dict = {}


def benchmarks(config) -> list[BenchCase]:
    """The three detectors of Table II (``MODEL_KEYS``: the conv5 and conv4 Faster R-CNN baselines
    and MITOS-RCNN) at ``model.input_size``, batch min(paper, 2) on a CPU, one tiled HPF each."""
    from microrepro.reproductions.mitos_rcnn.model import MODEL_KEYS

    return [_case(config, key) for key in MODEL_KEYS]


def _case(config, key: str) -> BenchCase:
    from microrepro.common import config as config_lib
    from microrepro.reproductions.mitos_rcnn import data as data_lib
    from microrepro.reproductions.mitos_rcnn import detect as detect_lib
    from microrepro.reproductions.mitos_rcnn.train import make_optimizer

    cfg = config_lib.merge(config, {"model": {"backbone": {"pretrained": "none"}}}, "bench")
    m, d = cfg.model, cfg.data
    size = int(m.input_size)
    batch = int(cfg.train.batch_size)
    if on_cpu():
        batch = min(batch, CPU_MAX_BATCH)
    max_boxes = 16  # data.make_subsections' default padding
    box_px = d.box_um / detect_lib.DEFAULT_PIXEL_SIZE_UM * d.scale

    def build():
        from microrepro.reproductions.mitos_rcnn.model import build_model

        model = build_model(key, m, seed=0)
        model.compile(optimizer=make_optimizer(cfg.train))  # as train.train_model
        return model

    def make_batch(n: int):
        rng = np.random.default_rng(0)
        x = rng.random((n, size, size, 3), dtype=np.float32)
        boxes = -np.ones((n, max_boxes, 4), np.float32)
        classes = -np.ones((n, max_boxes), np.int32)
        x1 = rng.uniform(0, size - box_px, (n, 2))
        y1 = rng.uniform(0, size - box_px, (n, 2))
        boxes[:, :2] = np.stack([x1, y1, x1 + box_px, y1 + box_px], axis=-1)
        classes[:, :2] = [0, 1]  # one mitotic figure, one look-alike per subsection
        return x, {"boxes": boxes, "classes": classes}

    def pipeline():
        key = (size, d.scale, d.box_um, d.tiles_per_field)
        if key not in _SUBSECTIONS:
            from microrepro.datasets.synthetic import he_fields

            side = (d.synthetic_field_size, d.synthetic_field_size)
            fields = he_fields.generate(PIPELINE_FIELDS, d.synthetic_seed, he_fields.HEConfig(image_size=side))
            _SUBSECTIONS[key] = data_lib.make_subsections(fields, size, d.scale, d.box_um, d.tiles_per_field, seed=0)
        return data_lib.training_dataset(_SUBSECTIONS[key], batch, 0, d.rotations)

    # a field without a pixel size (the synthetic fields') is taken at 0.25 um/px, as in the task
    overlap_px = detect_lib.overlap_px(d.tile_overlap_um, None)

    def field_predict(model, image):
        # detect_field reads uint8 RGB fields; the bench hands a float image in [0, 1].
        field = np.round(image * 255).astype(np.uint8)
        return detect_lib.detect_field(model, field, size, d.scale, overlap_px, nms_iou=m.detection_nms_iou)

    field_h, field_w = (int(v) for v in cfg.eval.timing_field)
    capped = ""
    if batch < cfg.train.batch_size:
        capped = f"batch {batch} on CPU (config: {cfg.train.batch_size}, Sec. IV-B.4); "
    if key == "mitos_rcnn":
        whose = "Saha et al.'s 0.3 s is their model, shown for scale"
    else:
        whose = "the paper times MITOS-RCNN only"
    note = (f"mitos_rcnn: {capped}random backbone weights; "
            f"field = {field_h}x{field_w} HPF as {data_lib.subsection_px(size, d.scale)} px subsections "
            f"(overlap {overlap_px} px) resized to {size}, 16 per predict batch (detect.detect_field); {whose}")
    published = published_timings(PAPER, key)
    if key == "mitos_rcnn":
        published += published_timings(PAPER, "saha_2017", "Saha et al. [14]")
    return BenchCase(
        paper=PAPER, name=key, build=build, input_shape=(size, size, 3), batch=batch,
        make_batch=make_batch, pipeline=pipeline, field_shape=(field_h, field_w, 3), field_predict=field_predict,
        published=published, note=note,
    )
