"""Building and training the three detectors of Table II with one data set and schedule.

The optimiser, the time budget, the epoch arithmetic and the "schedule actually run" record are
the shared ones (``common.training``); this module binds them to the paper's config.

Reference: MITOS-RCNN Sec. IV-B.4 (SGD, momentum 0.9, weight decay 5e-4, batch 10, 60k
mini-batches at lr 1e-3 then 20k at 1e-4) and Sec. V-B.1 (the baselines trained the same way).
"""

from __future__ import annotations

from pathlib import Path

from microrepro.common import training
from microrepro.reproductions.mitos_rcnn import data as data_lib


def make_optimizer(train):
    """The optimiser of a ``TrainConfig``: SGD with momentum and weight decay (Sec. IV-B.4), or Adam
    for CPU schedules from scratch, with optional gradient clipping (``common.training.make_optimizer``).

    Raises:
        ConfigError: ``train.optimizer`` is not one ``common.training.make_optimizer`` knows.

    Reference: MITOS-RCNN Sec. IV-B.4.
    """
    return training.make_optimizer(train.optimizer, train.lr, momentum=train.momentum,
                                   weight_decay=train.weight_decay, clipnorm=train.clipnorm)


def train_model(key: str, cfg, subs: data_lib.Subsections, run_dir: Path, seed: int, verbose="auto"):
    """Build, compile and train one detector on the training subsections.

    Args:
        key: one of ``model.MODEL_KEYS``.
        cfg: ``MitosRCNNConfig``.
        subs: training subsections (``data.training_subsections``).
        run_dir: the run folder (weights and logs under ``train/<key>/``).
        seed: initialisation, sampling and shuffling seed.
        verbose: Keras ``fit`` verbosity.

    Returns:
        ``(model, schedule)``: the trained model and ``common.training.schedule_record`` with the
        optimiser, learning rate, input size, backbone width and weights added.

    Reference: MITOS-RCNN Sec. IV-B.4.
    """
    from microrepro.reproductions.mitos_rcnn.model import build_model

    t = cfg.train
    training.set_seed(seed)
    model = build_model(key, cfg.model, seed)
    model.compile(optimizer=make_optimizer(t))
    dataset = data_lib.training_dataset(subs, t.batch_size, seed, cfg.data.rotations)
    epochs, steps_per_epoch = training.steps_to_epochs(t.steps, t.steps_per_epoch)
    schedule = None
    if 0 < t.lr_drop_step < t.steps:
        schedule = {"kind": "step", "every_epochs": max(1, t.lr_drop_step // steps_per_epoch),
                    "factor": t.lr_drop_factor}
    budget = training.TimeBudget(t.max_minutes)
    result = training.fit(model, dataset, None, run_dir=run_dir, name=key, epochs=epochs,
                          steps_per_epoch=steps_per_epoch, lr_schedule=schedule, monitor="loss",
                          callbacks=[budget], verbose=verbose, tensorboard=False)
    record = training.schedule_record(
        result, batch=t.batch_size, steps_per_epoch=steps_per_epoch, budget=budget, optimizer=t.optimizer,
        lr=t.lr, input_size=cfg.model.input_size, width_multiplier=cfg.model.backbone.width_multiplier,
        pretrained=cfg.model.backbone.pretrained,
    )
    return model, record


def weights_path(run_dir: Path, key: str) -> Path:
    """Where ``train_model`` leaves the last weights of ``key`` in ``run_dir``."""
    return training.train_dir(Path(run_dir), key) / "last.weights.h5"


def load_trained(key: str, cfg, run_dir: Path, seed: int = 0):
    """Detector ``key`` built from ``cfg`` (``MitosRCNNConfig``) with the run's last weights.

    Raises:
        UserError: the run has no trained weights of ``key``.
    """
    from microrepro.reproductions.mitos_rcnn.model import build_model

    model = build_model(key, cfg.model, seed)
    return training.load_weights(model, Path(run_dir), key, which="last")
