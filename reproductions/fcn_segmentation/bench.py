"""Benchmark cases of the fcn_segmentation reproduction for ``microrepro bench`` (``common/bench.py``).

FCRN-A (Sec. 7, Fig. 6) at the paper's 128 x 128 x 1 patches (Sec. 7.1) with its own loss and
optimiser (``train.compile_model``: per-pixel softmax cross-entropy, SGD + momentum, Caffe-style
L2 weight decay, XLA as configured), in two cases:

- ``fcrn_a``: the configured pre-training batch (``pretrain.train.batch_size``; the paper does not
  state one);
- ``fcrn_a_b32``: batch :data:`THROUGHPUT_BATCH`, a throughput point (the H100 reference run used
  256; a CPU copes with 32).

The pipeline row is the task's own pre-training pipeline (``data.make_dataset`` of SIMCEP-like
patches from ``splits.synthetic_patches``; pre-training has no augmentation, Sec. 7.1). The full
field is a :data:`FIELD` x :data:`FIELD` grey image segmented in one pass as the task does it
(``data.predict_probability``: reflect-padded to a multiple of 8, no tiling).

The paper gives no timing, so ``published`` is empty.
"""

from __future__ import annotations

import numpy as np

from microrepro.common.bench import BenchCase

PAPER = "fcn_segmentation"
THROUGHPUT_BATCH = 32
FIELD = 1024
PIPELINE_PATCHES = 8  # synthetic patches behind the pipeline measurement (repeated to fill batches)

_PATCHES: dict = {}


def _case(cfg, name: str, batch: int, note: str) -> BenchCase:
    from microrepro.reproductions.fcn_segmentation import data as fdata
    from microrepro.reproductions.fcn_segmentation import splits
    from microrepro.reproductions.fcn_segmentation import train as train_lib

    optim = cfg.pretrain.train
    size = int(cfg.pretrain.patch_size)
    channels = int(cfg.model.input_channels)

    def build():
        model = train_lib.build_model(cfg.model, optim)
        train_lib.compile_model(model, optim)
        return model

    def make_batch(n: int):
        rng = np.random.default_rng(0)
        x = rng.random((n, size, size, channels), dtype=np.float32)
        y = (rng.random((n, size, size)) < 0.2).astype(np.int32)  # class ids: 0 background, 1 cell
        return x, y

    def pipeline():
        key = size
        if key not in _PATCHES:
            n_images = max(1, PIPELINE_PATCHES // 4)
            _PATCHES[key] = fdata.stack_pairs(splits.synthetic_patches(cfg, n_images, PIPELINE_PATCHES, seed=1))
        x, y = _PATCHES[key]
        # data.make_dataset makes one pass per epoch (keras repeats it); repeat the patches up to a
        # whole number of batches and repeat the dataset so the measurement sees full batches.
        reps = int(np.ceil(batch / len(x)))
        x, y = np.concatenate([x] * reps)[:batch], np.concatenate([y] * reps)[:batch]
        return fdata.make_dataset(x, y, batch, shuffle=True, seed=0).repeat()

    def field_predict(model, image):
        return fdata.predict_probability(model, image[..., 0])

    return BenchCase(
        paper=PAPER, name=name, build=build, input_shape=(size, size, channels), batch=batch, make_batch=make_batch,
        pipeline=pipeline, field_shape=(FIELD, FIELD, channels), field_predict=field_predict, published=[], note=note,
    )


def benchmarks(config) -> list[BenchCase]:
    """FCRN-A at the configured batch and at batch 32, 128 px patches, 1024 px whole-image field."""
    batch = int(config.pretrain.train.batch_size)
    jit = "XLA" if config.pretrain.train.jit_compile else "no XLA"
    cases = [_case(config, "fcrn_a", batch,
                   f"fcn_segmentation/fcrn_a: batch {batch} as configured (paper: not stated), {jit}; "
                   f"field = one {FIELD}x{FIELD} image in one pass (data.predict_probability); no published timing")]
    if THROUGHPUT_BATCH != batch:
        cases.append(_case(config, "fcrn_a_b32", THROUGHPUT_BATCH,
                           f"fcn_segmentation/fcrn_a_b32: batch {THROUGHPUT_BATCH} throughput point "
                           "(CPU; the H100 reference used 256)"))
    return cases
