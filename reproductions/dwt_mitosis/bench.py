"""Benchmark cases of the dwt_mitosis reproduction for ``microrepro bench`` (``common/bench.py``).

The two phase-1 segmentation networks of Table 2, built by ``segmentation.build_seg_model`` and
compiled as ``segmentation.train_seg`` does (``segmentation.compile_seg_model``: Adam with the
1e-3 -> 1e-6 decay, pixel softmax cross-entropy of eq. (1)-(2)):

- ``dwt_unet``: the Haar-DWT/IWT U-shaped network of Fig. 2 (Sec. 3.1);
- ``unet``: the plain U-Net of the ablation (Sec. 4.5), same widths.

Input: the paper trains on whole fields and states no input size; the config trains on whole
synthetic fields of ``synthetic.field_size`` (512) px, batch ``seg_train.batch_size`` (8, Sec. 4.3).
At the paper's widths (160/256/256, 4 convs per block) one 512 px image costs ~2 TFLOP forward,
so on a CPU the case runs at :data:`CPU_INPUT` px and batch :data:`CPU_BATCH` (the note says
so); with an accelerator it runs at the configured size and batch.

The pipeline row is the task's own ``data.seg_datasets`` (flips, 90° turns, random crop to the case's
input size) on a few synthetic H&E fields. The full field is one 2000x2000 TUPAC16 HPF
(:data:`HPF`), segmented as the task does it (``segmentation.predict_prob``: overlapping
``seg.predict_tile`` tiles, linear blending). At the paper's widths that is ~20 TFLOP, minutes
on a 2-core CPU, so on a CPU the paper-width rows have no field and a third case,
``dwt_unet_short``, times the narrow network the short schedule actually trains (widths of
``schedules.short``) on the full HPF. The paper gives no timing.
"""

from __future__ import annotations

import numpy as np

from microrepro.common.bench import BenchCase, on_cpu

PAPER = "dwt_mitosis"
CPU_INPUT = 64
CPU_BATCH = 2
PIPELINE_FIELDS = 4  # synthetic H&E fields behind the pipeline measurement (it repeats them)
HPF = (2000, 2000, 3)  # one TUPAC16 high-power field at 40x (0.25 um/px)

_FIELDS: dict = {}


def benchmarks(config) -> list[BenchCase]:
    """``dwt_unet`` and ``unet`` at the configured field size and batch (shrunk on a CPU, where
    ``dwt_unet_short`` adds the full-HPF time of the short schedule's network)."""
    from microrepro.common import config as config_lib
    from microrepro.common.registry import get_task

    full_field = not on_cpu()
    cfg, size, batch, note = _sized(config)
    if full_field:
        note += f"field = one {HPF[0]}x{HPF[1]} HPF in {cfg.seg.predict_tile} px tiles; no published timing"
    else:
        note += ("no full field at the paper's widths on a CPU (~20 TFLOP per HPF: see dwt_unet_short); "
                 "no published timing")
    cases = [_case(cfg, kind, name, size, batch, note, full_field)
             for kind, name in (("dwt", "dwt_unet"), ("unet", "unet"))]
    if not full_field:
        short = get_task(PAPER).load_config("paper", "short")
        narrow, size, batch, _ = _sized(config_lib.merge(config, {"seg": {"widths": tuple(short.seg.widths)}}, "bench"))
        widths = "/".join(str(w) for w in short.seg.widths)
        note = (f"dwt_mitosis: the short schedule's network (widths {widths}, as `make reproduce` trains it) "
                f"at {size} px, batch {batch}; field = one {HPF[0]}x{HPF[1]} HPF in "
                f"{narrow.seg.predict_tile} px tiles (overlap {narrow.seg.predict_overlap}); no published timing")
        cases.append(_case(narrow, "dwt", "dwt_unet_short", size, batch, note, full_field=True))
    return cases


def _sized(config) -> tuple:
    """``(cfg, size, batch, note)``: the configured input size and batch, capped on a CPU (the note says so)."""
    from microrepro.common import config as config_lib

    t = config.seg_train
    size = int(t.crop_size or config.synthetic.field_size)
    batch = int(t.batch_size)
    note = "dwt_mitosis: "
    if on_cpu() and (size > CPU_INPUT or batch > CPU_BATCH):
        note += (f"CPU run at {min(size, CPU_INPUT)} px, batch {min(batch, CPU_BATCH)} "
                f"(config: {size} px whole fields, batch {batch}, Sec. 4.3); ")
        size, batch = min(size, CPU_INPUT), min(batch, CPU_BATCH)
    # The pipeline crops the fields to the case's input size, so both rows count the same images.
    cfg = config_lib.merge(config, {"seg_train": {"crop_size": size if size < config.synthetic.field_size else None,
                                                  "batch_size": batch}}, "bench")
    return cfg, size, batch, note


def _case(cfg, kind: str, name: str, size: int, batch: int, note: str, full_field: bool) -> BenchCase:
    from microrepro.reproductions.dwt_mitosis import data, segmentation

    def build():
        model = segmentation.build_seg_model(cfg, kind)
        return segmentation.compile_seg_model(model, cfg, cfg.synthetic.seg_train_fields)[0]  # as train_seg

    def make_batch(n: int):
        rng = np.random.default_rng(0)
        x = rng.random((n, size, size, 3), dtype=np.float32)
        y = (rng.random((n, size, size, 1)) < 0.05).astype(np.int32)  # class ids, as seg_datasets
        return x, y

    def pipeline():
        key = (cfg.synthetic.field_size, cfg.synthetic.seed)
        if key not in _FIELDS:
            _FIELDS[key] = data.synthetic_set("bench", PIPELINE_FIELDS, cfg.synthetic.seed, cfg)
        fields = _FIELDS[key]
        train, _ = data.seg_datasets(fields, fields, cfg, seed=0)
        return train

    def field_predict(model, image):
        # predict_prob reads uint8 RGB fields as the task loads them; the bench hands [0, 1] floats.
        return segmentation.predict_prob(model, [np.round(image * 255).astype(np.uint8)], cfg)

    return BenchCase(
        paper=PAPER, name=name, build=build, input_shape=(size, size, 3), batch=batch, make_batch=make_batch,
        pipeline=pipeline, published=[], note=note,
        field_shape=HPF if full_field else None, field_predict=field_predict if full_field else None,
    )
