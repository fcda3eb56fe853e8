"""cell_counting training: build, compile and fit the c-ResUNet, and load a run's trained weights.

Reference: Sec. 4.4 (c-ResUNet), Sec. 4.5 (weighted BCE, Adam, lr x0.7 on plateau).
"""

from __future__ import annotations

import math
from pathlib import Path

from microrepro.common import training
from microrepro.common.runs import Run
from microrepro.reproductions.cell_counting.config import CellCountingConfig


def build_model(cfg: CellCountingConfig):
    """The configured c-ResUNet: ``(B, H, W, 3)`` float32 in [0, 1] -> ``(B, H, W, 1)`` sigmoid heat-map.

    Reference: Sec. 4.4, Fig. 5.
    """
    from microrepro.reproductions.cell_counting.model import build_c_resunet

    m = cfg.model
    return build_c_resunet(m.filters, m.bridge_filters, m.bridge_blocks, m.bridge_kernel, m.activation,
                           m.colour_to_grey, bn_momentum=m.bn_momentum)


def compile_model(model, cfg: CellCountingConfig, weighted: bool):
    """Compile with Adam and the weighted BCE (``weighted=False``: plain BCE, weight map ignored).

    Reference: Sec. 4.5 ("weighted binary cross-entropy", Adam).
    """
    from microrepro.reproductions.cell_counting.model import WeightedBCE, binary_iou

    t = cfg.train
    if weighted:
        loss = WeightedBCE(t.loss_cell_weight, t.loss_background_weight)
    else:
        loss = WeightedBCE(1.0, 1.0, use_map=False)
    model.compile(optimizer=training.make_optimizer("adam", t.lr), loss=loss, metrics=[binary_iou(0.5)],
                  run_eagerly=t.run_eagerly)
    return model


def train_model(name: str, run: Run, cfg: CellCountingConfig, train_crops, val_crops, pipelines, weighted: bool):
    """Build, compile and fit one model on the shared pipelines.

    Args:
        name: the model's name in the run (``c_resunet`` or ``c_resunet_no_weightmap``).
        run: the run; training state goes to ``run_dir/train/<name>``.
        train_crops, val_crops: ``data.make_crops`` dicts (counted for steps per epoch).
        pipelines: ``(train, val)`` from ``data.datasets``.
        weighted: weight-map BCE (True) or plain BCE (False).

    Returns:
        ``(model with its best weights loaded, schedule_run entry)``; the entry is
        ``common.training.schedule_record`` plus ``crop``, ``scale`` and ``train_crops``.

    Reference: Sec. 4.5 (lr x0.7 after 4 epochs without val-loss improvement, < 50 epochs).
    """
    training.set_seed(run.seed)
    model = compile_model(build_model(cfg), cfg, weighted)
    train_ds, val_ds = pipelines
    t = cfg.train
    n_train = len(train_crops["image"]) + int(train_crops["hard"].sum()) * cfg.data.hard_repeat
    steps = t.steps_per_epoch or max(1, math.ceil(n_train / t.batch_size))
    # The validation pipeline drops a last partial batch (static shapes), hence floor.
    n_val_batches = len(val_crops["image"]) // min(t.batch_size, len(val_crops["image"]))
    val_steps = min(t.validation_steps or n_val_batches, n_val_batches)
    result = training.fit(
        model, train_ds, val_ds, run_dir=run.run_dir, name=name, epochs=t.epochs, steps_per_epoch=steps,
        validation_steps=val_steps,
        lr_schedule={"kind": "plateau", "factor": t.plateau_factor, "patience": t.plateau_patience,
                     "min_lr": t.min_lr},
        monitor="val_loss", early_stopping_patience=t.early_stopping_patience, verbose=2,
    )
    training.plot_history(run.run_dir, name, run.figure_path(f"training_{name}"), f"{name}: weighted BCE per epoch")
    training.load_weights(model, run.run_dir, name, "best")
    record = training.schedule_record(result, batch=t.batch_size, steps_per_epoch=steps, crop=cfg.data.crop_size,
                                      scale=cfg.data.scale, train_crops=n_train)
    return model, record


def load_trained(run_dir: Path, cfg: CellCountingConfig, name: str):
    """The c-ResUNet ``name`` of a run with its best weights."""
    model = build_model(cfg)
    return training.load_weights(model, run_dir, name, "best")
