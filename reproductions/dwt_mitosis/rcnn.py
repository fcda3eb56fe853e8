"""Phase 2: R-CNN (Girshick et al. 2014) trained on the boxes generated in phase 1.

The four steps of Sec. 3.2:

1. region proposals by selective search (OpenCV ``ximgproc``, "fast" mode), capped and filtered
   to sizes plausible for mitoses at ×40 (:func:`selective_search`, :func:`filter_proposals`);
2. CNN features on warped regions (:func:`warp_regions`): a small Keras CNN
   (``model.build_feature_cnn``) is trained as a {background, mitosis} classifier on mini-batches
   of 32 positives (IoU >= 0.5 with a generated box) + 96 negatives (IoU < 0.3)
   (:class:`RegionBatches`); its penultimate layer gives the features;
3. a linear SVM (``sklearn.svm.LinearSVC``) on the features, positives = the generated boxes,
   negatives = proposals with IoU < 0.3 (R-CNN Sec. 2.3);
4. class-specific box regression: ridge regression of features → ``(tx, ty, tw, th)`` on
   proposals with IoU >= 0.6 (R-CNN App. C, :func:`regression_targets`); greedy NMS at the end.

Boxes are ``[x1, y1, x2, y2]`` pixels (x2/y2 exclusive edge), ``(N, 4)`` float32. Images are RGB
uint8 ``(H, W, 3)``.

Reference: dwt_mitosis Sec. 3.2; Girshick, Donahue, Darrell, Malik, "Rich feature hierarchies
for accurate object detection and semantic segmentation", CVPR 2014 (Sec. 2, App. A–C).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from microrepro.common.matching import box_iou
from microrepro.common.tiling import nms


# ----------------------------------------------------------------------------------------------
# proposals


def selective_search(image: np.ndarray, mode: str = "fast", max_proposals: int | None = 2000) -> np.ndarray:
    """Selective-search proposals (Uijlings et al. 2013) of an RGB image.

    Args:
        image: ``(H, W, 3)`` uint8 RGB (grey ``(H, W)`` is repeated to 3 channels).
        mode: ``"fast"`` (R-CNN's choice), ``"quality"`` or ``"single"`` (one strategy).
        max_proposals: keep the first ones in OpenCV's ranking (None: all).

    Returns:
        ``(N, 4)`` float32 boxes ``[x1, y1, x2, y2]`` px.

    Reference: R-CNN Sec. 2.1 ("selective search's fast mode").
    """
    import cv2

    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] < 3:
        raise ValueError(f"image must be (H, W, 3) RGB, got shape {image.shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {image.dtype}")
    search = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    search.setBaseImage(np.ascontiguousarray(image[..., 2::-1]))  # OpenCV expects BGR
    if mode == "fast":
        search.switchToSelectiveSearchFast()
    elif mode == "quality":
        search.switchToSelectiveSearchQuality()
    elif mode == "single":
        search.switchToSingleStrategy()
    else:
        raise ValueError(f"mode must be fast, quality or single, got {mode!r}")
    rects = np.asarray(search.process(), np.float32).reshape(-1, 4)  # (x, y, w, h)
    if max_proposals is not None:
        rects = rects[: int(max_proposals)]
    return np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:]], axis=1).astype(np.float32)


def filter_proposals(
    boxes: np.ndarray,
    min_size_px: float,
    max_size_px: float,
    max_aspect: float = 4.0,
    max_proposals: int | None = None,
) -> np.ndarray:
    """Keep proposals whose longer side lies in ``[min_size_px, max_size_px]``, aspect <= max_aspect.

    Duplicates are removed (selective search returns the same rectangle from several
    strategies); order is kept, then capped at ``max_proposals``.

    Args:
        boxes: ``(N, 4)`` xyxy px.
        min_size_px, max_size_px: bounds of the longer side.
        max_aspect: longest / shortest side.
        max_proposals: cap after filtering (None: no cap).

    Returns:
        ``(M, 4)`` float32.
    """
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    if min_size_px > max_size_px:
        raise ValueError(f"min_size_px {min_size_px} exceeds max_size_px {max_size_px}")
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    longer, shorter = np.maximum(w, h), np.minimum(w, h)
    ok = (longer >= min_size_px) & (longer <= max_size_px) & (shorter > 0)
    ok &= longer <= max_aspect * np.maximum(shorter, 1e-6)
    boxes = boxes[ok]
    _, first = np.unique(boxes, axis=0, return_index=True)
    boxes = boxes[np.sort(first)]
    if max_proposals is not None:
        boxes = boxes[: int(max_proposals)]
    return boxes


def overlaps(proposals: np.ndarray, gt_boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Best IoU of each proposal with the ground-truth boxes, and which box it was.

    Returns:
        ``(max_iou (N,) float64, gt_index (N,) int64)``; with no ground truth, IoU 0 and index -1.
    """
    proposals = np.asarray(proposals, np.float64).reshape(-1, 4)
    gt_boxes = np.asarray(gt_boxes, np.float64).reshape(-1, 4)
    if not len(gt_boxes) or not len(proposals):
        return np.zeros(len(proposals)), -np.ones(len(proposals), np.int64)
    iou = box_iou(proposals, gt_boxes)
    return iou.max(axis=1), iou.argmax(axis=1).astype(np.int64)


# ----------------------------------------------------------------------------------------------
# warping and box regression


def context_boxes(boxes: np.ndarray, warp_size: int, padding: int) -> np.ndarray:
    """Grow boxes so that, warped to ``warp_size``, the original box spans ``warp_size - 2·padding``.

    Reference: R-CNN App. A ("dilate the tight bounding box so that at the warped size there are
    exactly p pixels of warped image context", p = 16 at 227).
    """
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    inner = warp_size - 2 * padding
    if inner <= 0:
        raise ValueError(f"warp_padding {padding} leaves nothing of a {warp_size} px region")
    scale = warp_size / inner
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = (boxes[:, 2:] - boxes[:, :2]) * scale / 2
    return np.concatenate([centre - half, centre + half], axis=1)


def warp_regions(image: np.ndarray, boxes: np.ndarray, size: int, padding: int = 0) -> np.ndarray:
    """Anisotropically warp each box (with context) of an image to ``size × size``.

    Pixels outside the image are filled with the image mean (R-CNN App. A).

    Args:
        image: ``(H, W, 3)`` uint8.
        boxes: ``(N, 4)`` xyxy px.
        size: output side.
        padding: context px in the warped frame (:func:`context_boxes`).

    Returns:
        ``(N, size, size, 3)`` uint8.
    """
    import cv2

    image = np.asarray(image)
    boxes = context_boxes(boxes, size, padding)
    out = np.empty((len(boxes), size, size, image.shape[-1]), np.uint8)
    fill = tuple(float(v) for v in image.reshape(-1, image.shape[-1]).mean(axis=0))
    for k, (x1, y1, x2, y2) in enumerate(boxes):
        # affine map of the box corners onto the output square; sub-pixel exact, no integer crop
        sx, sy = size / max(x2 - x1, 1e-3), size / max(y2 - y1, 1e-3)
        matrix = np.array([[sx, 0, -x1 * sx - 0.5 + 0.5 * sx], [0, sy, -y1 * sy - 0.5 + 0.5 * sy]], np.float64)
        out[k] = cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=fill).reshape(size, size, -1)
    return out


def regression_targets(proposals: np.ndarray, gt_boxes: np.ndarray) -> np.ndarray:
    """R-CNN targets ``(tx, ty, tw, th)`` from proposals P to boxes G (App. C).

    ``tx = (Gx − Px) / Pw``, ``ty = (Gy − Py) / Ph``, ``tw = log(Gw / Pw)``, ``th = log(Gh / Ph)``
    with centres (x, y) and sizes (w, h).

    Returns:
        ``(N, 4)`` float64.
    """
    p = np.asarray(proposals, np.float64).reshape(-1, 4)
    g = np.asarray(gt_boxes, np.float64).reshape(-1, 4)
    pw, ph = np.maximum(p[:, 2] - p[:, 0], 1e-6), np.maximum(p[:, 3] - p[:, 1], 1e-6)
    gw, gh = np.maximum(g[:, 2] - g[:, 0], 1e-6), np.maximum(g[:, 3] - g[:, 1], 1e-6)
    px, py = p[:, 0] + pw / 2, p[:, 1] + ph / 2
    gx, gy = g[:, 0] + gw / 2, g[:, 1] + gh / 2
    return np.stack([(gx - px) / pw, (gy - py) / ph, np.log(gw / pw), np.log(gh / ph)], axis=1)


def apply_regression(proposals: np.ndarray, deltas: np.ndarray, max_log_scale: float = math.log(4.0)) -> np.ndarray:
    """Inverse of :func:`regression_targets`; log-scales clipped to ±``max_log_scale``."""
    p = np.asarray(proposals, np.float64).reshape(-1, 4)
    d = np.asarray(deltas, np.float64).reshape(-1, 4)
    pw, ph = p[:, 2] - p[:, 0], p[:, 3] - p[:, 1]
    px, py = p[:, 0] + pw / 2, p[:, 1] + ph / 2
    x, y = px + d[:, 0] * pw, py + d[:, 1] * ph
    w = pw * np.exp(np.clip(d[:, 2], -max_log_scale, max_log_scale))
    h = ph * np.exp(np.clip(d[:, 3], -max_log_scale, max_log_scale))
    return np.stack([x - w / 2, y - h / 2, x + w / 2, y + h / 2], axis=1).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# regions of a set of images


@dataclass
class RegionSet:
    """Warped proposals of several images, computed once and shared by every label source.

    Attributes:
        warps: ``(N, S, S, 3)`` uint8.
        boxes: ``(N, 4)`` float32 proposal boxes (image px).
        image_index: ``(N,)`` int64, which image each region comes from.
        n_images: number of images.
        seconds_proposals: selective-search time summed over images.
    """

    warps: np.ndarray
    boxes: np.ndarray
    image_index: np.ndarray
    n_images: int
    seconds_proposals: float = 0.0

    def of_image(self, k: int) -> np.ndarray:
        return np.flatnonzero(self.image_index == k)


def image_proposals(image: np.ndarray, cfg, pixel_size_um: float) -> np.ndarray:
    """Selective search + size filter of ``cfg`` (an ``RCNNConfig``) for one image."""
    raw = selective_search(image, cfg.ss_mode, None)
    return filter_proposals(raw, cfg.min_size_um / pixel_size_um, cfg.max_size_um / pixel_size_um,
                            cfg.max_aspect, cfg.max_proposals)


def build_regions(images: list[np.ndarray], pixel_sizes: list[float], cfg) -> RegionSet:
    """Proposals and their warps for every image (``cfg``: ``RCNNConfig``)."""
    warps, boxes, index, seconds = [], [], [], 0.0
    for k, (image, px) in enumerate(zip(images, pixel_sizes)):
        start = time.perf_counter()
        props = image_proposals(image, cfg, px)
        seconds += time.perf_counter() - start
        warps.append(warp_regions(image, props, cfg.warp_size, cfg.warp_padding))
        boxes.append(props)
        index.append(np.full(len(props), k, np.int64))
    size = cfg.warp_size
    cat = lambda arrays, shape, dtype: np.concatenate(arrays) if arrays else np.zeros(shape, dtype)  # noqa: E731
    return RegionSet(
        cat(warps, (0, size, size, 3), np.uint8), cat(boxes, (0, 4), np.float32),
        cat(index, (0,), np.int64), len(images), seconds,
    )


# ----------------------------------------------------------------------------------------------
# fine-tuning batches


class RegionBatches(keras.utils.PyDataset):
    """Mini-batches of ``positives`` + ``negatives`` warped regions (R-CNN Sec. 2.3 sampling).

    Each batch draws (with replacement when a pool is small) from the positive and the negative
    pool, applies a random flip / 90° turn (mitoses have no orientation) and returns
    ``(regions (B, S, S, 3) float32 in [0, 1], labels (B,) int32)``. Seeded per epoch and step.

    Reference: dwt_mitosis Sec. 3.2 ("32 positive samples and 96 negative samples ... as a
    mini-batch"); R-CNN Sec. 2.3.
    """

    def __init__(self, positives: np.ndarray, negatives: np.ndarray, n_pos: int = 32, n_neg: int = 96,
                 steps: int = 100, seed: int = 0, augment: bool = True):
        super().__init__()
        if not len(positives) or not len(negatives):
            raise ValueError(
                f"R-CNN fine-tuning needs positive and negative regions, got {len(positives)} positives "
                f"and {len(negatives)} negatives (were any boxes generated in phase 1?)"
            )
        self.positives, self.negatives = positives, negatives
        self.n_pos, self.n_neg, self.steps, self.seed, self.augment = n_pos, n_neg, int(steps), seed, augment
        self.epoch = 0

    def __len__(self) -> int:
        return self.steps

    def on_epoch_end(self):
        self.epoch += 1

    def __getitem__(self, index):
        rng = np.random.default_rng((self.seed, self.epoch, int(index)))
        pos = self.positives[rng.integers(0, len(self.positives), self.n_pos)]
        neg = self.negatives[rng.integers(0, len(self.negatives), self.n_neg)]
        x = np.concatenate([pos, neg]).astype(np.float32) / 255.0
        y = np.concatenate([np.ones(self.n_pos, np.int32), np.zeros(self.n_neg, np.int32)])
        if self.augment:
            for k in range(len(x)):
                turn, flip = int(rng.integers(4)), bool(rng.integers(2))
                x[k] = np.rot90(x[k], turn)
                if flip:
                    x[k] = x[k][:, ::-1]
        order = rng.permutation(len(x))
        return x[order], y[order]


# ----------------------------------------------------------------------------------------------
# the detector


@dataclass
class RCNNHead:
    """The trained SVM, box regressor and feature scale (the CNN is stored by training.fit)."""

    svm_w: np.ndarray  # (D,)
    svm_b: float
    reg_w: np.ndarray | None  # (D, 4) or None
    reg_b: np.ndarray | None  # (4,)
    feature_scale: float  # R-CNN scales features to a mean L2 norm of 20

    def save(self, path: Path) -> None:
        np.savez(path, svm_w=self.svm_w, svm_b=self.svm_b, feature_scale=self.feature_scale,
                 reg_w=self.reg_w if self.reg_w is not None else np.zeros((0, 4)),
                 reg_b=self.reg_b if self.reg_b is not None else np.zeros((0,)))

    @classmethod
    def load(cls, path: Path) -> "RCNNHead":
        data = np.load(path)
        reg_w = data["reg_w"] if data["reg_w"].size else None
        reg_b = data["reg_b"] if data["reg_b"].size else None
        return cls(data["svm_w"], float(data["svm_b"]), reg_w, reg_b, float(data["feature_scale"]))


def cnn_features(extractor, warps: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """``(N, D)`` float32 features of ``(N, S, S, 3)`` uint8 regions."""
    if not len(warps):
        return np.zeros((0, int(extractor.output_shape[-1])), np.float32)
    out = []
    for start in range(0, len(warps), batch_size):
        chunk = warps[start : start + batch_size].astype(np.float32) / 255.0
        out.append(np.asarray(extractor(chunk, training=False)))
    return np.concatenate(out).astype(np.float32)


def lr_decay(lr: float, final_lr: float, total_steps: int):
    """Exponential decay from ``lr`` to ``final_lr`` over ``total_steps`` (Sec. 4.3: 1e-3 → 1e-6)."""
    import keras

    if lr <= 0 or final_lr <= 0:
        raise ValueError(f"learning rates must be > 0, got {lr} and {final_lr}")
    return keras.optimizers.schedules.ExponentialDecay(lr, max(1, int(total_steps)), final_lr / lr)


def train_rcnn(regions: RegionSet, gt_boxes: list[np.ndarray], images: list[np.ndarray], cfg, *,
               run_dir: Path, name: str, seed: int = 0, verbose=2) -> dict:
    """Fine-tune the feature CNN, fit the SVM and the box regressor on one label source.

    Args:
        regions: proposals of the training images (:func:`build_regions`).
        gt_boxes: per training image, ``(G, 4)`` generated (or manual) boxes = the positives.
        images: the training images (to warp the ground-truth boxes).
        cfg: ``RCNNConfig``.
        run_dir, name: checkpoints go to ``run_dir/train/<name>`` (``common.training.fit``);
            the SVM/regressor to ``run_dir/train/<name>/head.npz``.
        seed: sampling seed.

    Returns:
        ``{"epochs", "steps", "batch", "seconds", "n_positives", "n_negatives", "first_loss",
        "last_loss"}`` (the ``schedule_run`` entry).

    Raises:
        ValueError: no positive or no negative region.
    """
    from sklearn.linear_model import Ridge
    from sklearn.svm import LinearSVC

    from microrepro.common import training
    from microrepro.reproductions.dwt_mitosis.model import build_feature_cnn, feature_extractor

    if len(gt_boxes) != regions.n_images or len(images) != regions.n_images:
        raise ValueError(f"{regions.n_images} images of regions but {len(gt_boxes)} box lists and {len(images)} images")
    start = time.perf_counter()
    max_iou = np.zeros(len(regions.boxes))
    gt_index = -np.ones(len(regions.boxes), np.int64)
    for k in range(regions.n_images):
        idx = regions.of_image(k)
        max_iou[idx], gt_index[idx] = overlaps(regions.boxes[idx], gt_boxes[k])
    gt_warps = [warp_regions(img, np.asarray(b, np.float32).reshape(-1, 4), cfg.warp_size, cfg.warp_padding)
                for img, b in zip(images, gt_boxes)]
    gt_warps = np.concatenate(gt_warps) if gt_warps else np.zeros((0, cfg.warp_size, cfg.warp_size, 3), np.uint8)
    positives = np.concatenate([gt_warps, regions.warps[max_iou >= cfg.positive_iou]])
    negative_mask = max_iou < cfg.negative_iou
    negatives = regions.warps[negative_mask]

    # 1. fine-tune the CNN as a region classifier
    training.set_seed(seed)
    classifier = build_feature_cnn(cfg.warp_size, cfg.cnn_widths, cfg.feature_dim)
    total = cfg.cnn_epochs * cfg.cnn_steps_per_epoch
    classifier.compile(optimizer=keras.optimizers.Adam(lr_decay(cfg.cnn_lr, cfg.cnn_final_lr, total)),
                       loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"],
                       jit_compile=False)  # XLA compile time dominates these short CPU runs
    batches = RegionBatches(positives, negatives, cfg.batch_positives, cfg.batch_negatives, cfg.cnn_steps_per_epoch, seed)
    result = training.fit(classifier, batches, None, run_dir=run_dir, name=name, epochs=cfg.cnn_epochs,
                          monitor="loss", verbose=verbose, tensorboard=False)
    training.load_weights(classifier, run_dir, name, "last")
    extractor = feature_extractor(classifier)

    # 2. SVM: positives = the boxes themselves (+ proposals above svm_positive_iou), negatives IoU < 0.3
    rng = np.random.default_rng(seed)
    neg_idx = np.flatnonzero(negative_mask)
    if len(neg_idx) > cfg.svm_max_negatives:
        neg_idx = np.sort(rng.choice(neg_idx, cfg.svm_max_negatives, replace=False))
    pos_prop_idx = np.flatnonzero(max_iou >= cfg.svm_positive_iou) if cfg.svm_positive_iou < 1.0 else np.zeros(0, np.int64)
    region_feats = cnn_features(extractor, regions.warps)
    gt_feats = cnn_features(extractor, gt_warps)
    norms = np.linalg.norm(region_feats, axis=1)
    scale = 20.0 / max(float(norms.mean()) if len(norms) else 1.0, 1e-6)
    x_svm = np.concatenate([gt_feats, region_feats[pos_prop_idx], region_feats[neg_idx]]) * scale
    y_svm = np.concatenate([np.ones(len(gt_feats) + len(pos_prop_idx)), np.zeros(len(neg_idx))]).astype(np.int32)
    # class_weight balanced: positives are a few hundred against thousands of negatives (R-CNN
    # mined hard negatives instead; with a small set, reweighting does the same job)
    svm = LinearSVC(C=cfg.svm_c, class_weight="balanced", max_iter=5000, random_state=seed)
    svm.fit(x_svm, y_svm)

    # 3. box regression on proposals with IoU >= bbox_iou to their generated box
    reg_w = reg_b = None
    reg_idx = np.flatnonzero(max_iou >= cfg.bbox_iou)
    if cfg.bbox_regression and len(reg_idx) >= 8:
        targets = np.concatenate([
            regression_targets(regions.boxes[[i]], np.asarray(gt_boxes[regions.image_index[i]])[[gt_index[i]]])
            for i in reg_idx
        ])
        ridge = Ridge(alpha=cfg.ridge_alpha).fit(region_feats[reg_idx] * scale, targets)
        reg_w, reg_b = ridge.coef_.T.astype(np.float64), ridge.intercept_.astype(np.float64)
    head = RCNNHead(svm.coef_[0].astype(np.float64), float(svm.intercept_[0]), reg_w, reg_b, scale)
    head.save(training.train_dir(run_dir, name) / "head.npz")
    loss = result["history"].get("loss", [])
    return {
        "epochs": result["epochs_run"], "steps": result["epochs_run"] * cfg.cnn_steps_per_epoch,
        "batch": cfg.batch_positives + cfg.batch_negatives, "seconds": round(time.perf_counter() - start, 1),
        "n_positives": int(len(positives)), "n_negatives": int(len(negatives)),
        "n_regression": int(len(reg_idx)) if reg_w is not None else 0,
        "first_loss": loss[0] if loss else None, "last_loss": loss[-1] if loss else None,
    }


def load_rcnn(run_dir: Path, name: str, cfg):
    """(feature extractor, :class:`RCNNHead`) of a trained label source."""
    from microrepro.common import training
    from microrepro.reproductions.dwt_mitosis.model import build_feature_cnn, feature_extractor

    classifier = build_feature_cnn(cfg.warp_size, cfg.cnn_widths, cfg.feature_dim)
    training.load_weights(classifier, run_dir, name, "last")
    head = RCNNHead.load(training.train_dir(run_dir, name) / "head.npz")
    return feature_extractor(classifier), head


def detect(extractor, head: RCNNHead, warps: np.ndarray, proposals: np.ndarray, nms_iou: float = 0.3,
           height: int | None = None, width: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Score, regress and suppress the proposals of one image.

    Args:
        extractor: the feature model.
        head: SVM / regressor.
        warps: ``(N, S, S, 3)`` uint8 warped proposals.
        proposals: ``(N, 4)`` their boxes.
        nms_iou: greedy NMS threshold (R-CNN: 0.3).
        height, width: clip boxes to the image when given.

    Returns:
        ``(boxes (K, 4) float32, scores (K,) float64)``, by descending SVM score, unthresholded.
    """
    if not len(proposals):
        return np.zeros((0, 4), np.float32), np.zeros((0,), np.float64)
    feats = cnn_features(extractor, warps).astype(np.float64) * head.feature_scale
    scores = feats @ head.svm_w + head.svm_b
    boxes = np.asarray(proposals, np.float32)
    if head.reg_w is not None:
        boxes = apply_regression(boxes, feats @ head.reg_w + head.reg_b)
    if width is not None:
        boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, width)
    if height is not None:
        boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, height)
    keep = nms(boxes, scores, nms_iou)
    return boxes[keep], scores[keep]


def write_state(path: Path, state: dict) -> None:
    Path(path).write_text(json.dumps(state, indent=2, default=float))
