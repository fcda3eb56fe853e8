"""Phase 1: the segmentation networks — built from the config, trained, loaded back, applied to fields.

``dwt`` is the Haar-DWT U-shaped network of Fig. 2 (``model.build_dwt_unet``), ``unet`` the plain
U-Net of Table 2 (``model.build_unet``). Both are trained on the exact masks of synthetic fields
(stand-in for MITOS 2012) with Adam, batch 8 and lr 1e-3 decayed to 1e-6 (Sec. 4.3), and give a
mitosis probability per pixel.

Reference: dwt_mitosis Sec. 3.1, Fig. 2, Sec. 4.3, Sec. 4.5 (Table 2).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from microrepro.common.errors import UserError
from microrepro.common.runs import Run
from microrepro.reproductions.dwt_mitosis.config import DwtMitosisConfig
from microrepro.reproductions.dwt_mitosis.data import ImageSet, seg_datasets

SEG_MODELS = {"dwt": "dwt_unet_seg", "unet": "unet_seg"}


def build_seg_model(cfg: DwtMitosisConfig, kind: str):
    """``kind`` "dwt" (Fig. 2) or "unet" (Table 2 baseline), any input size divisible by 2^levels.

    Returns:
        ``keras.Model``: ``(B, H, W, 3)`` float32 in [0, 1] → ``(B, H, W, 2)`` logits.
    """
    from microrepro.reproductions.dwt_mitosis.model import build_dwt_unet, build_unet

    s = cfg.seg
    if kind == "dwt":
        return build_dwt_unet(s.widths, s.convs_per_block, skip=s.skip, name=SEG_MODELS["dwt"],
                              bn_momentum=s.bn_momentum)
    if kind == "unet":
        return build_unet(s.widths, s.unet_convs_per_block, name=SEG_MODELS["unet"], bn_momentum=s.bn_momentum)
    raise UserError(f"unknown segmentation network {kind!r} (dwt or unet)")


def compile_seg_model(model, cfg: DwtMitosisConfig, n_fields: int):
    """Compile as Sec. 4.3 trains (Adam, lr decay over every step) with the loss of eq. (1)–(2).

    Args:
        model: from :func:`build_seg_model`.
        cfg: the run config.
        n_fields: training fields (one epoch = one pass when ``seg_train.steps_per_epoch`` is None).

    Returns:
        ``(model, steps_per_epoch)``.
    """
    from microrepro.reproductions.dwt_mitosis.model import adam, segmentation_loss

    t = cfg.seg_train
    steps = t.steps_per_epoch or max(1, math.ceil(n_fields / t.batch_size))
    model.compile(optimizer=adam(t.lr, t.final_lr, t.epochs * steps), loss=segmentation_loss(t.positive_weight),
                  jit_compile=False)
    return model, steps


def train_seg(kind: str, run: Run, cfg: DwtMitosisConfig, train: ImageSet, val: ImageSet) -> dict:
    """Train one phase-1 network (Sec. 4.3: Adam, batch 8, lr 1e-3 → 1e-6).

    Weights go to ``<run_dir>/train/<dwt_unet_seg | unet_seg>/`` (``common.training.fit``).

    Returns:
        The ``schedule_run`` entry (``common.training.schedule_record``).
    """
    from microrepro.common import training

    t = cfg.seg_train
    training.set_seed(run.seed)
    model, steps = compile_seg_model(build_seg_model(cfg, kind), cfg, len(train))
    train_ds, val_ds = seg_datasets(train, val, cfg, run.seed)
    name = SEG_MODELS[kind]
    result = training.fit(model, train_ds, val_ds, run_dir=run.run_dir, name=name, epochs=t.epochs,
                          steps_per_epoch=steps, monitor="val_loss", verbose=2, tensorboard=False,
                          early_stopping_patience=t.early_stopping_patience or None)
    training.plot_history(run.run_dir, name, run.figure_path(f"training_{name}"), f"{name}: pixel cross-entropy")
    record = training.schedule_record(result, batch=t.batch_size, steps_per_epoch=steps)
    val_loss = [v for v in result["history"].get("val_loss", []) if v is not None]
    if val_loss:  # which epoch's weights are used, and whether the plateau (not the cap) ended training
        record["best_epoch"] = int(np.argmin(val_loss)) + 1
        record["stopped_at_plateau"] = bool(t.early_stopping_patience) and record["epochs"] < t.epochs
    return record


def load_seg(run_dir: Path, cfg: DwtMitosisConfig, kind: str):
    """The best weights of a trained phase-1 network of ``run_dir``."""
    from microrepro.common import training

    return training.load_weights(build_seg_model(cfg, kind), run_dir, SEG_MODELS[kind], "best")


def predict_prob(model, images: list[np.ndarray], cfg: DwtMitosisConfig) -> list[np.ndarray]:
    """Mitosis probability ``(H, W)`` float32 per RGB uint8 ``(H, W, 3)`` image.

    A field up to ``seg.predict_tile`` px on each side runs in one pass (reflect-padded to a
    multiple of 2^levels); a larger one (a 2000x2000 HPF, a slide region) is segmented in
    overlapping tiles stitched by ``common.tiling.predict_tiled``, so memory stays bounded.

    Raises:
        UserError: ``seg.predict_tile`` is not a multiple of 2^levels.
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


def generate_labels(cfg: DwtMitosisConfig, image_set: ImageSet, seg_models: dict) -> dict[str, list]:
    """Boxes generated by every phase-1 network for every image of ``image_set`` from its points.

    Args:
        cfg: the run config (``seg.threshold``, ``seg.min_region_px``).
        image_set: weakly labelled images (points only are used).
        seg_models: ``{kind: trained network}``.

    Returns:
        ``{kind: [labels.GeneratedLabels per image]}``.

    Reference: dwt_mitosis Sec. 3.1 (the minimum enclosing rectangle of each segmented region,
    kept when a weak label lies inside it).
    """
    from microrepro.reproductions.dwt_mitosis.labels import boxes_from_segmentation

    out = {}
    for kind, model in seg_models.items():
        probs = predict_prob(model, image_set.images, cfg)
        out[kind] = [boxes_from_segmentation(p, pts, cfg.seg.threshold, cfg.seg.min_region_px)
                     for p, pts in zip(probs, image_set.points, strict=True)]
    return out
