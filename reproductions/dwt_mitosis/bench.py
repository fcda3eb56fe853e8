"""Benchmark cases of the dwt_mitosis reproduction for ``microrepro bench`` (``common/bench.py``).

The two phase-1 segmentation networks of Table 2, built by ``task.build_seg_model`` and compiled
as ``task.train_seg`` does (Adam with the 1e-3 -> 1e-6 decay, pixel softmax cross-entropy of
eq. (1)-(2)):

- ``dwt_unet``: the Haar-DWT/IWT U-shaped network of Fig. 2 (Sec. 3.1);
- ``unet``: the plain U-Net of the ablation (Sec. 4.5), same widths.

Input: the paper trains on whole fields and states no input size; the config trains on whole
synthetic fields of ``synthetic.field_size`` (512) px, batch ``seg_train.batch_size`` (8, Sec. 4.3).
At the paper's widths (160/256/256, 4 convs per block) one 512 px image costs ~2 TFLOP forward,
so on a CPU the case runs at :data:`CPU_INPUT` px and batch :data:`CPU_BATCH` (the note says
so); with an accelerator it runs at the configured size and batch.

The pipeline row is the task's own ``seg_datasets`` (flips, 90° turns, random crop to the case's
input size) on a few synthetic H&E fields. No full field: ``task.predict_prob`` runs a field in
one pass, which at 512 px is the ``infer`` column itself. The paper gives no timing.
"""

from __future__ import annotations

import math

import numpy as np

from microrepro.common.bench import BenchCase, on_cpu

PAPER = "dwt_mitosis"
CPU_INPUT = 64
CPU_BATCH = 2
PIPELINE_FIELDS = 4  # synthetic H&E fields behind the pipeline measurement (it repeats them)

_FIELDS: dict = {}


def benchmarks(config) -> list[BenchCase]:
    """``dwt_unet`` and ``unet`` at the configured field size and batch (shrunk on a CPU)."""
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
    note += "no full field (task.predict_prob segments a field in one pass); no published timing"
    return [_case(cfg, "dwt", "dwt_unet", size, batch, note), _case(cfg, "unet", "unet", size, batch, note)]


def _case(cfg, kind: str, name: str, size: int, batch: int, note: str) -> BenchCase:
    from microrepro.reproductions.dwt_mitosis import task as task_lib

    t = cfg.seg_train

    def build():
        import keras

        from microrepro.reproductions.dwt_mitosis import rcnn
        from microrepro.reproductions.dwt_mitosis.model import segmentation_loss

        model = task_lib.build_seg_model(cfg, kind)
        steps = t.steps_per_epoch or max(1, math.ceil(cfg.synthetic.seg_train_fields / t.batch_size))
        # as task.train_seg
        model.compile(optimizer=keras.optimizers.Adam(rcnn.lr_decay(t.lr, t.final_lr, t.epochs * steps)),
                      loss=segmentation_loss(t.positive_weight), jit_compile=False)
        return model

    def make_batch(n: int):
        rng = np.random.default_rng(0)
        x = rng.random((n, size, size, 3), dtype=np.float32)
        y = (rng.random((n, size, size, 1)) < 0.05).astype(np.int32)  # class ids, as seg_datasets
        return x, y

    def pipeline():
        key = (cfg.synthetic.field_size, cfg.synthetic.seed)
        if key not in _FIELDS:
            _FIELDS[key] = task_lib.synthetic_set("bench", PIPELINE_FIELDS, cfg.synthetic.seed, cfg)
        fields = _FIELDS[key]
        train, _ = task_lib.seg_datasets(fields, fields, cfg, seed=0)
        return train

    return BenchCase(
        paper=PAPER, name=name, build=build, input_shape=(size, size, 3), batch=batch, make_batch=make_batch,
        pipeline=pipeline, published=[], note=note,
    )
