"""Same weights, same numbers: every model of every paper under TensorFlow and under JAX.

For each paper the models are built from its SMOKE config with the paper's own build functions
in this (TensorFlow) process, their weights and a fixed batch are saved to ``tmp_path``, and one
subprocess per paper (``KERAS_BACKEND=jax``, this file run as a script) builds the same models,
loads those weights and computes the same quantities:

* the forward outputs (inference mode; eager under TensorFlow, the jitted predict step under
  JAX): within ``rtol 1e-4, atol 1e-5`` (OUTPUT_TOL);
* the loss on the fixed batch (the paper's compiled loss, ``model.compute_loss``; the detectors
  with their training-mode forward): within ``rtol 1e-4, atol 1e-6`` (LOSS_TOL). The Faster
  R-CNNs sample anchors and ROIs with ``keras.random.uniform``, whose streams differ between the
  backends (TensorFlow's stateless Philox vs JAX's threefry), so while their loss is computed the
  sampling keys are a fixed sequence (``_fixed_sampling_keys``) instead;
* the decoded detections after NMS (tiny-YOLOv2, SP-CNN peaks, the Faster R-CNNs, MITOS-RCNN and
  its baselines, the DWT R-CNN's SVM + NMS on a fixed head): every detection whose score is
  DET_MARGIN above the floor (or above the lowest kept score when the list is full) is found in
  the other backend with the same score (atol 1e-5) and box (atol 1e-3 px), and vice versa.

Dense models (c-ResUNet, FCRN-A, the two U-Nets) have no detection stage: their counting and
segmentation are numpy post-processing of the outputs compared above.

Measured maxima of |TF - JAX| on the 2-core CPU (float32): forward outputs <= 1.6e-5 on boxes up
to 96 px and <= 6.6e-6 on probabilities (at most 7e-6 of the array's largest value); losses 0 for
every detector and FCRN-A, <= 1.5e-6 for tiny-YOLOv2 / SP-CNN / the DWT nets, 7.8e-5 (1.8e-5
relative) for the c-ResUNet's weighted BCE; detections identical. ROI max pooling
(``roi_op: pool``, MITOS-RCNN and its baselines) differed by up to 1.8 before its bin edges became
integer arithmetic (common/detection/roi_align.py). Cost: ~140 s for the five papers (~130 CPU
seconds; spines 47 s, mitos_rcnn 41 s, dwt_mitosis 34 s, cell_counting 11 s, fcn_segmentation
8 s), most of it the JAX subprocesses' start-up and compilation, so nothing is marked slow.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

PAPERS = ("spines", "cell_counting", "mitos_rcnn", "fcn_segmentation", "dwt_mitosis")
OUTPUT_TOL = {"rtol": 1e-4, "atol": 1e-5}
LOSS_TOL = {"rtol": 1e-4, "atol": 1e-6}
DET_MARGIN = 1e-3  # detections this close to the floor may come and go with float round-off
DET_SCORE_ATOL = 1e-5
DET_BOX_ATOL = 1e-3  # px
SEED = 0
MODELS = {
    "spines": ("yolov2", "faster_rcnn", "sp_cnn"),
    "cell_counting": ("c_resunet",),
    "mitos_rcnn": ("mitos_rcnn", "faster_rcnn_conv4", "faster_rcnn_conv5"),
    "fcn_segmentation": ("fcrn_a",),
    "dwt_mitosis": ("dwt_unet_seg", "unet_seg", "rcnn_features", "faster_rcnn_phase2"),
}


# ------------------------------------------------------------------------------ shared helpers
def _np(value) -> np.ndarray:
    import keras

    return np.asarray(keras.ops.convert_to_numpy(value))


def _forward(model, x):
    """Inference outputs as numpy: eager under TensorFlow; under JAX through the jitted predict
    step (``predict_on_batch``), which on the CPU is ~4x faster than JAX's op-by-op dispatch."""
    import keras

    if keras.backend.backend() == "jax":
        out = model.predict_on_batch(x)
    else:
        out = model(x, training=False)
    return {k: _np(v) for k, v in out.items()} if isinstance(out, dict) else _np(out)


@contextlib.contextmanager
def _no_random_init():
    """JAX side only: random initialisers return zeros while the models are built.

    The TensorFlow weights are loaded right after, so the initial values never matter, and JAX
    compiles one threefry kernel per weight shape (~80 % of the JAX side's build time).
    """
    import keras

    if keras.backend.backend() != "jax":
        yield
        return
    from keras.src.backend.jax import random as jax_random

    names = ("normal", "uniform", "truncated_normal")
    saved = {name: getattr(jax_random, name) for name in names}

    def zeros(shape, *args, dtype=None, **kwargs):
        return np.zeros(tuple(shape), dtype or "float32")

    for name in names:
        setattr(jax_random, name, zeros)
    try:
        yield
    finally:
        for name, fn in saved.items():
            setattr(jax_random, name, fn)


@contextlib.contextmanager
def _fixed_sampling_keys():
    """``keras.random.uniform`` -> a fixed golden-ratio sequence (the same under both backends)."""
    import keras

    original = keras.random.uniform

    def uniform(shape, minval=0.0, maxval=1.0, dtype=None, seed=None):
        shape = tuple(int(s) for s in shape)
        keys = (np.arange(int(np.prod(shape))) * 0.6180339887498949 + 0.1) % 1.0
        return keras.ops.convert_to_tensor((minval + (maxval - minval) * keys).reshape(shape).astype("float32"))

    keras.random.uniform = uniform
    try:
        yield
    finally:
        keras.random.uniform = original


def _boxes(rng, n_images: int, n_boxes: int, size: int, side=(8, 24), pad: int = 1) -> np.ndarray:
    """``(n_images, n_boxes + pad, 4)`` xyxy px boxes inside ``size``, ``pad`` -1 rows last."""
    out = -np.ones((n_images, n_boxes + pad, 4), np.float32)
    for i in range(n_images):
        for j in range(n_boxes):
            w, h = rng.uniform(*side, 2)
            x, y = rng.uniform(0, size - w), rng.uniform(0, size - h)
            out[i, j] = (x, y, x + w, y + h)
    return out


def _targets(boxes: np.ndarray) -> dict:
    return {"boxes": boxes, "classes": np.where(boxes[..., 2] > boxes[..., 0], 0, -1).astype(np.int32)}


def _detections(per_image) -> dict:
    """``[(boxes (K, 4), scores (K,))]`` -> flat ``det_boxes``, ``det_scores``, ``det_image``."""
    boxes = [np.asarray(b, np.float32).reshape(-1, 4) for b, _ in per_image]
    scores = [np.asarray(s, np.float64).reshape(-1) for _, s in per_image]
    return {
        "det_boxes": np.concatenate(boxes) if boxes else np.zeros((0, 4), np.float32),
        "det_scores": np.concatenate(scores) if scores else np.zeros((0,)),
        "det_image": np.concatenate([np.full(len(s), i) for i, s in enumerate(scores)]).astype(np.int32),
    }


def _faster_quantities(model, arrays: dict, floor: float) -> dict:
    """Forward (inference), loss (training forward, fixed sampling keys) and detections of a Faster R-CNN."""
    x, targets = arrays["x"], {"boxes": arrays["boxes"], "classes": arrays["classes"]}
    out = {f"out_{k}": v for k, v in _forward(model, x).items()}
    with _fixed_sampling_keys():
        out["loss"] = _np(model.compute_loss(x=x, y=targets, y_pred=model(x, training=True), training=True))
    n = out["out_num_detections"].astype(int)
    out.update(_detections([(out["out_boxes"][i, : n[i]], out["out_scores"][i, : n[i]]) for i in range(len(x))]))
    out["det_floor"] = np.float64(floor)
    out["det_max"] = np.int32(out["out_boxes"].shape[1])
    return out


def _dense_quantities(model, arrays: dict) -> dict:
    """Inference outputs and the compiled loss of a dense (per-pixel) model."""
    y_pred = _forward(model, arrays["x"])
    loss = model.compute_loss(x=arrays["x"], y=arrays["y"], y_pred=y_pred, training=False)
    return {"out": y_pred, "loss": _np(loss)}


# ---------------------------------------------------------------------------- models per paper
def _spines(cfg, rng):
    from microrepro.reproductions.spines import sp_cnn, tiny_yolo, train

    def yolo_arrays():
        boxes = _boxes(rng, 2, 4, 1.0, side=(0.1, 0.3))
        return {"x64": rng.random((2, 64, 64, 1), np.float32), "x96": rng.random((2, 96, 96, 1), np.float32),
                "boxes": boxes}

    def yolo(model, a):
        loss = train.yolo_loss(cfg)
        model.compile(loss=loss)
        out = {}
        for key in ("x64", "x96"):  # two grid sizes, as multi-scale training gives them
            raw = _forward(model, a[key])
            out[f"out_{key}"] = raw
            for term, value in loss.terms(a["boxes"], raw).items():
                out[f"loss_{term}_{key}"] = _np(value)
            out[f"loss_{key}"] = _np(model.compute_loss(x=a[key], y=a["boxes"], y_pred=raw, training=False))
        size = a["x96"].shape[1:3]
        dets = tiny_yolo.decode_detections(out["out_x96"], cfg.yolo.anchors, size, 0.005, cfg.yolo.nms_iou,
                                           cfg.yolo.max_detections)
        out.update(_detections(dets), det_floor=np.float64(0.005), det_max=np.int32(cfg.yolo.max_detections))
        return out

    def sp_arrays():
        size = cfg.sp_cnn.input_size
        return {"x": rng.random((2, size, size, 1), np.float32), "y": rng.random((2, size, size, 2), np.float32),
                "priors": rng.random((cfg.sp_cnn.n_priors, cfg.sp_cnn.prior_size, cfg.sp_cnn.prior_size),
                                     np.float32)}

    def sp(model, a):
        s = cfg.sp_cnn
        heat = _forward(model, a["x"])
        loss = sp_cnn.SpCnnLoss(a["priors"], s.pool_window, s.output_threshold, s.reg_weight)
        # The untrained map is nearly flat: peaks are taken above its 0.8 quantile over the batch
        # (fixed here, from the TF map, so both backends use one threshold).
        floor = float(a["peak_floor"]) if "peak_floor" in a else float(np.quantile(heat, 0.8))
        a["peak_floor"] = np.float64(floor)
        dets = [sp_cnn.detect_peaks(h[..., 0], floor, s.peak_min_distance) for h in heat]
        out = {"out": heat, "loss": _np(loss(a["y"], heat)), **{f"loss_{k}": _np(v)
               for k, v in loss.terms(a["y"], heat).items()}}
        out.update(_detections([(np.concatenate([p, p], axis=1), sc) for p, sc in dets]))
        return {**out, "det_floor": np.float64(floor), "det_max": np.int32(-1)}

    def faster_arrays():
        size = cfg.faster_rcnn.input_size
        return {"x": rng.random((2, size, size, 1), np.float32), **_targets(_boxes(rng, 2, 3, size))}

    return {
        "yolov2": (lambda: train.build_yolo(cfg), yolo_arrays, yolo),
        "sp_cnn": (lambda: train.build_sp_cnn(cfg), sp_arrays, sp),
        "faster_rcnn": (lambda: train.build_faster_rcnn(cfg, SEED), faster_arrays,
                        lambda m, a: _faster_quantities(m, a, 0.01)),
    }


def _cell_counting(cfg, rng):
    from microrepro.reproductions.cell_counting import train

    def build():
        return train.compile_model(train.build_model(cfg), cfg, weighted=True)

    def arrays():
        size = cfg.data.crop_size
        target = (rng.random((2, size, size, 1)) > 0.8).astype(np.float32)
        return {"x": rng.random((2, size, size, 3), np.float32),
                "y": np.concatenate([target, rng.uniform(0.5, 3.0, (2, size, size, 1))], -1).astype(np.float32)}

    return {"c_resunet": (build, arrays, _dense_quantities)}


def _mitos_rcnn(cfg, rng):
    from microrepro.reproductions.mitos_rcnn.model import MODEL_KEYS, build_model

    def build(key):
        model = build_model(key, cfg.model, SEED)
        model.compile(optimizer="sgd")
        return model

    def arrays():
        size = cfg.model.input_size
        return {"x": rng.random((2, size, size, 3), np.float32), **_targets(_boxes(rng, 2, 3, size, (12, 30)))}

    floor = float(cfg.model.score_threshold)
    return {key: (lambda key=key: build(key), arrays, lambda m, a: _faster_quantities(m, a, floor))
            for key in MODEL_KEYS}


def _fcn_segmentation(cfg, rng):
    from microrepro.reproductions.fcn_segmentation import train

    def build():
        model = train.build_model(cfg.model, cfg.pretrain.train)
        train.compile_model(model, cfg.pretrain.train)
        return model

    def arrays():
        return {"x": rng.random((2, 64, 64, 1), np.float32),
                "y": (rng.random((2, 64, 64, 1)) > 0.7).astype(np.int32)}

    return {"fcrn_a": (build, arrays, _dense_quantities)}


def _dwt_mitosis(cfg, rng):
    import keras

    from microrepro.reproductions.dwt_mitosis import faster, model, rcnn, segmentation

    def seg(kind):
        return segmentation.compile_seg_model(segmentation.build_seg_model(cfg, kind), cfg, 2)[0]

    def seg_arrays():
        return {"x": rng.random((2, 64, 64, 3), np.float32),
                "y": (rng.random((2, 64, 64, 1)) > 0.8).astype(np.int32)}

    r = cfg.rcnn

    def cnn():
        classifier = model.build_feature_cnn(r.warp_size, r.cnn_widths, r.feature_dim)
        classifier.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        return classifier

    def cnn_arrays():
        n = 24
        return {"warps": rng.integers(0, 256, (n, r.warp_size, r.warp_size, 3)).astype(np.uint8),
                "y": rng.integers(0, 2, n).astype(np.int32), "proposals": _boxes(rng, 1, n, 64, pad=0)[0],
                "svm_w": rng.normal(size=r.feature_dim), "reg_w": 0.01 * rng.normal(size=(r.feature_dim, 4))}

    def cnn_quantities(classifier, a):
        x = a["warps"].astype(np.float32) / 255.0
        logits = _forward(classifier, x)
        extractor = model.feature_extractor(classifier)
        head = rcnn.RCNNHead(a["svm_w"], 0.1, a["reg_w"], np.zeros(4), 1.0)
        boxes, scores = rcnn.detect(extractor, head, a["warps"], a["proposals"], r.nms_iou, 64, 64)
        return {"out": logits, "features": _forward(extractor, x),
                "loss": _np(classifier.compute_loss(x=x, y=a["y"], y_pred=logits, training=False)),
                **_detections([(boxes, scores)]), "det_floor": np.float64(-np.inf), "det_max": np.int32(-1)}

    size = cfg.synthetic.field_size

    def faster_model():
        detector = faster.build_faster(cfg, size, SEED)
        detector.compile(optimizer="sgd")
        return detector

    def faster_arrays():
        return {"x": rng.random((2, size, size, 3), np.float32), **_targets(_boxes(rng, 2, 3, size, (10, 24)))}

    return {
        "dwt_unet_seg": (lambda: seg("dwt"), seg_arrays, _dense_quantities),
        "unet_seg": (lambda: seg("unet"), seg_arrays, _dense_quantities),
        "rcnn_features": (cnn, cnn_arrays, cnn_quantities),
        "faster_rcnn_phase2": (faster_model, faster_arrays, lambda m, a: _faster_quantities(m, a, 0.0)),
    }


CASES = {"spines": _spines, "cell_counting": _cell_counting, "mitos_rcnn": _mitos_rcnn,
         "fcn_segmentation": _fcn_segmentation, "dwt_mitosis": _dwt_mitosis}


def compute(paper: str, folder: Path, save: bool) -> Path:
    """Build ``paper``'s models (smoke config), save (``save``) or load their weights and inputs,
    and write every quantity of every model to ``folder/<backend>.npz``."""
    import keras

    from microrepro.common.registry import get_task

    cfg = get_task(paper).load_config("paper", "smoke")
    rng = np.random.default_rng(SEED)
    results = {}
    for name, (build, make_arrays, quantities) in CASES[paper](cfg, rng).items():
        keras.utils.set_random_seed(SEED)
        with contextlib.nullcontext() if save else _no_random_init():
            model = build()
        weights, inputs = folder / f"{name}.weights.h5", folder / f"{name}.inputs.npz"
        if save:
            model.save_weights(weights)
            arrays = make_arrays()
        else:
            model.load_weights(weights)
            arrays = dict(np.load(inputs))
        values = quantities(model, arrays)  # may add derived fixed inputs to ``arrays``
        if save:
            np.savez(inputs, **arrays)
        results.update({f"{name}/{key}": np.asarray(value) for key, value in values.items()})
    out = folder / f"{keras.backend.backend()}.npz"
    np.savez(out, **results)
    return out


# ---------------------------------------------------------------------------------- comparison
def _same_detections(tf: dict, jx: dict) -> str | None:
    """None when both detection lists agree above the floor (see the module docstring), else why not."""
    floor, max_det = float(tf["det_floor"]), int(tf["det_max"])
    for src in (tf, jx):  # a full list is cut at its lowest score, which round-off can reorder
        if max_det > 0 and np.bincount(src["det_image"], minlength=1).max(initial=0) >= max_det:
            floor = max(floor, float(src["det_scores"].min()))
    for a, b, label in ((tf, jx, "TF->JAX"), (jx, tf, "JAX->TF")):
        for k in np.flatnonzero(a["det_scores"] > floor + DET_MARGIN):
            same_image = np.flatnonzero(b["det_image"] == a["det_image"][k])
            if not len(same_image):
                return f"{label}: detection {k} (score {a['det_scores'][k]:.6f}) has no counterpart"
            dist = np.abs(b["det_boxes"][same_image] - a["det_boxes"][k]).max(axis=1)
            j = same_image[np.argmin(dist)]
            if dist.min() > DET_BOX_ATOL or abs(b["det_scores"][j] - a["det_scores"][k]) > DET_SCORE_ATOL:
                return (f"{label}: detection {k} box {a['det_boxes'][k]} score {a['det_scores'][k]:.6f} vs "
                        f"{b['det_boxes'][j]} score {b['det_scores'][j]:.6f}")
    return None


def _compare(tf_npz: Path, jax_npz: Path) -> dict:
    """Assert every quantity agrees.

    Returns:
        ``{model: {"output" / "loss": max |TF - JAX|, "output_rel" / "loss_rel": that over the
        largest |TF| value of the same array, "detections": count compared}}``.
    """
    tf, jx = dict(np.load(tf_npz)), dict(np.load(jax_npz))
    assert sorted(tf) == sorted(jx)
    report, problems = {}, []
    for model in sorted({key.split("/")[0] for key in tf}):
        keys = [key for key in tf if key.startswith(f"{model}/")]
        row = report.setdefault(model, {"output": 0.0, "loss": 0.0})
        for key in keys:
            field = key.split("/", 1)[1]
            if field.startswith("det_"):
                continue
            a, b = tf[key], jx[key]
            if a.dtype.kind in "iub":
                if not np.array_equal(a, b):
                    problems.append(f"{key}: integers differ ({a} vs {b})")
                continue
            kind = "loss" if field.startswith("loss") else "output"
            tol = LOSS_TOL if kind == "loss" else OUTPUT_TOL
            row[kind] = max(row[kind], float(np.max(np.abs(a - b), initial=0.0)))
            scale = float(np.max(np.abs(a), initial=0.0)) or 1.0
            row[f"{kind}_rel"] = max(row.get(f"{kind}_rel", 0.0), float(np.max(np.abs(a - b), initial=0.0)) / scale)
            if not np.allclose(b, a, **tol):
                worst = np.max(np.abs(a - b) - tol["rtol"] * np.abs(a))
                problems.append(f"{key}: max |TF - JAX| {np.max(np.abs(a - b)):.3g} exceeds {tol} (by {worst:.3g})")
        if f"{model}/det_boxes" in tf:
            det = {m: {k.split("/", 1)[1]: v[k] for k in keys if k.split("/", 1)[1].startswith("det_")}
                   for m, v in (("tf", tf), ("jax", jx))}
            why = _same_detections(det["tf"], det["jax"])
            if why:
                problems.append(f"{model} detections: {why}")
            row["detections"] = int(np.sum(det["tf"]["det_scores"] > float(det["tf"]["det_floor"]) + DET_MARGIN))
    assert not problems, "\n".join(problems)
    return report


@pytest.mark.parametrize("paper", PAPERS)
def test_same_weights_same_outputs_loss_and_detections_under_tf_and_jax(paper, tmp_path):
    pytest.importorskip("jax")
    import keras

    assert keras.backend.backend() == "tensorflow"
    tf_npz = compute(paper, tmp_path, save=True)
    env = {k: v for k, v in os.environ.items() if k != "MICROREPRO_DATA"}
    env.update(KERAS_BACKEND="jax", JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, __file__, paper, str(tmp_path)], env=env, capture_output=True, text=True,
                          timeout=600, cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    report = _compare(tf_npz, tmp_path / "jax.npz")
    assert set(report) == set(MODELS[paper])
    print(json.dumps({paper: report}))


if __name__ == "__main__":  # the JAX side: python test_backend_equivalence.py <paper> <folder>
    compute(sys.argv[1], Path(sys.argv[2]), save=False)
