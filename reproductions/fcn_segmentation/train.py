"""Building, compiling, training and timing FCRN-A for the fcn_segmentation reproduction.

Reference: Marzo & La Rosa 2016, Sec. 7 (model), Sec. 7.1 (Caffe SGD, momentum 0.9, weight decay
0.001, lr 0.01 divided by 10 every 20 epochs, Xavier initialisation).
"""

from __future__ import annotations

import numpy as np

from microrepro.common.runs import Run
from microrepro.reproductions.fcn_segmentation.config import ModelConfig, OptimConfig
from microrepro.reproductions.fcn_segmentation.model import build_fcrn_a

DOWNSAMPLING = 8  # 2 ** (three max-poolings): input sides are reflect-padded to a multiple of it


def build_model(cfg: ModelConfig, optim: OptimConfig | None = None, input_size: int | None = None):
    """FCRN-A from the config; the L2 kernel penalty comes from ``optim`` (Caffe weight decay).

    Caffe's ``weight_decay: wd`` adds ``wd * w`` to each gradient, the derivative of
    ``wd / 2 * ||w||²``, hence ``l2 = wd / 2``.

    Returns:
        ``keras.Model`` ``(B, H, W, 1)`` float32 in [0, 1] → ``(B, H, W, 2)`` softmax.

    Reference: Sec. 7, Fig. 6; Sec. 7.1 (weight decay 0.001).
    """
    l2 = optim.weight_decay / 2 if optim is not None and optim.weight_decay_mode == "l2" else 0.0
    return build_fcrn_a(
        cfg.input_channels,
        cfg.num_classes,
        encoder_filters=tuple(cfg.encoder_filters),
        bottleneck_filters=cfg.bottleneck_filters,
        decoder_filters=tuple(cfg.decoder_filters),
        batch_norm=cfg.batch_norm,
        kernel_initializer=cfg.kernel_initializer,
        l2=l2,
        upsampling=cfg.upsampling,
        input_size=input_size,
    )


def make_sgd(optim: OptimConfig):
    """SGD with momentum from ``common.training.make_optimizer``; Nesterov when configured.

    The ``released`` preset (Xie's Keras port) uses Nesterov momentum. Weight decay goes to the
    optimizer only in ``decoupled`` mode (``l2`` mode puts it in the loss, see :func:`build_model`).

    Reference: Sec. 7.1 (SGD, momentum 0.9).
    """
    from microrepro.common.training import make_optimizer

    decay = optim.weight_decay if optim.weight_decay_mode == "decoupled" else None
    return make_optimizer("momentum", optim.lr, momentum=optim.momentum, weight_decay=decay,
                          nesterov=optim.nesterov)


def compile_model(model, optim: OptimConfig) -> None:
    """SGD with momentum (Sec. 7.1) and per-pixel softmax cross-entropy (Caffe SoftmaxWithLoss)."""
    import keras

    model.compile(
        optimizer=make_sgd(optim),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        jit_compile=optim.jit_compile,
    )


def lr_schedule(optim: OptimConfig) -> dict:
    """The step schedule of Sec. 7.1: lr ÷ 10 every 20 epochs (values from the config)."""
    return {"kind": "step", "every_epochs": optim.lr_step_epochs, "factor": optim.lr_step_factor}


def train(run: Run, model, optim: OptimConfig, name: str, train_ds, val_ds, steps: int | None = None,
          n_examples: int | None = None) -> dict:
    """Compile, fit (resumable, best checkpoint on val_loss), reload the best weights, plot the
    loss and record the schedule actually run in ``run.schedule_run[name]``.

    Args:
        run: the run (weights under ``run_dir/train/<name>``).
        model: an FCRN-A from :func:`build_model`.
        optim: its solver.
        name: the model's name in the run.
        train_ds, val_ds: tf.data pipelines of ``(image (B, S, S, 1), label (B, S, S))``.
        steps: steps per epoch of an endless ``train_ds``.
        n_examples: size of a finite ``train_ds`` (to report the steps run).

    Returns:
        What ``common.training.fit`` returned.

    Reference: Sec. 7.1 (the solver), Fig. 7 (training loss).
    """
    from microrepro.common.training import fit, load_weights, plot_history, schedule_record

    compile_model(model, optim)
    result = fit(
        model, train_ds, val_ds, run_dir=run.run_dir, name=name, epochs=optim.epochs,
        steps_per_epoch=steps, lr_schedule=lr_schedule(optim), monitor="val_loss", verbose="auto",
    )
    load_weights(model, run.run_dir, name, "best")
    plot_history(run.run_dir, name, run.figure_path(f"loss_{name}"), f"{name}: training loss")
    per_epoch = steps or (-(-n_examples // optim.batch_size) if n_examples else None)
    run.schedule_run[name] = schedule_record(result, batch=optim.batch_size, steps_per_epoch=per_epoch)
    return result


def time_model(model, size: int, repeats: int, warmup: int = 2) -> float:
    """Median milliseconds to segment one ``size``² grey image (``warmup`` untimed calls first).

    Reference: Sec. 7.2 (the paper reports no timing; this is ours).
    """
    from microrepro.common.training import median_seconds, predict_batch

    x = np.random.default_rng(0).random((1, size, size, 1), dtype=np.float32)
    return 1000.0 * median_seconds(lambda: predict_batch(model, x), repeats, warmup=warmup)
