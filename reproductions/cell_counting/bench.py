"""Benchmark case of the cell_counting reproduction for ``microrepro bench`` (``common/bench.py``).

c-ResUNet at the config's crop size (512 x 512 x 3 at "paper", Sec. 4.1 / 4.5) and batch
(4, as released), trained with its weighted BCE (``y_true`` = mask and weight map stacked);
the full field (1200 x 1600 x 3, Sec. 5) is predicted as the task does it
(``inference.predict_heatmap``: ``common.tiling.predict_tiled`` with the config's tile and overlap).
The pipeline row is the task's own augmented tf.data pipeline (``data.datasets``: flips, 90°
turns, rotation, brightness, noise, elastic deformation) on the crops of one synthetic field.

The paper gives no timing, so ``published`` is empty.
"""

from __future__ import annotations

import numpy as np

from microrepro.common.bench import BenchCase

PAPER = "cell_counting"
PIPELINE_FIELDS = 1  # synthetic fields cut into crops for the pipeline measurement (12 crops at paper size)

_CROPS: dict = {}


def benchmarks(config) -> list[BenchCase]:
    """One case: c-ResUNet training at ``data.crop_size``, batch ``train.batch_size``, tiled full field."""
    from microrepro.reproductions.cell_counting import data as data_lib
    from microrepro.reproductions.cell_counting import inference, train

    cfg = config
    size = int(cfg.data.crop_size)
    batch = int(cfg.train.batch_size)
    weighted = cfg.weight_map.kind != "none"

    def build():
        return train.compile_model(train.build_model(cfg), cfg, weighted=weighted)

    def make_batch(n: int):
        rng = np.random.default_rng(0)
        x = rng.random((n, size, size, 3), dtype=np.float32)
        mask = (rng.random((n, size, size, 1)) < 0.1).astype(np.float32)
        weights = (1.0 + rng.random((n, size, size, 1))).astype(np.float32)
        return x, np.concatenate([mask, weights], axis=-1)  # WeightedBCE: [target, weight map]

    def pipeline():
        key = (size, cfg.data.crop_stride, cfg.data.scale)
        if key not in _CROPS:
            fields = data_lib.synthetic_fields(PIPELINE_FIELDS, cfg.data.synthetic_seed)
            _CROPS[key] = data_lib.make_crops(fields, cfg)
        crops = _CROPS[key]
        train, _ = data_lib.datasets(crops, crops, cfg, seed=0)
        return train

    field_h, field_w = (int(v) for v in cfg.eval.timing_field)

    def field_predict(model, image):
        # image: float32 [0, 1] (H, W, 3); predict_heatmap takes the field as read (uint8 RGB).
        return inference.predict_heatmap(model, np.round(image * 255).astype(np.uint8), cfg)

    note = (f"cell_counting/c_resunet: full field tiled at scale {cfg.data.scale}, tile {cfg.postprocess.tile}, "
            f"overlap {cfg.postprocess.tile_overlap}, batch 4 tiles (inference.predict_heatmap); "
            f"the paper gives no timing")
    return [
        BenchCase(
            paper=PAPER, name="c_resunet", build=build, input_shape=(size, size, 3), batch=batch,
            make_batch=make_batch, pipeline=pipeline, field_shape=(field_h, field_w, 3), field_predict=field_predict,
            published=[], note=note,
        )
    ]
