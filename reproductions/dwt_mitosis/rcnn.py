"""Phase 2: the R-CNN detector (Girshick et al. 2014) trained on the boxes generated in phase 1.

The steps of Sec. 3.2 after the proposals (``proposals.py``):

1. CNN features on warped regions: a small Keras CNN (``model.build_feature_cnn``) is trained as a
   {background, mitosis} classifier on mini-batches of 32 positives (IoU >= 0.5 with a generated
   box) + 96 negatives (IoU < 0.3) (:class:`RegionBatches`); its penultimate layer gives the
   features (:func:`cnn_features`);
2. a linear SVM (``sklearn.svm.LinearSVC``) on the features, positives = the generated boxes,
   negatives = proposals with IoU < 0.3 (R-CNN Sec. 2.3);
3. class-specific box regression: ridge regression of features → ``(tx, ty, tw, th)`` on
   proposals with IoU >= 0.6 (R-CNN App. C); greedy NMS at the end (:func:`detect`).

Scores are SVM margins (any real number, 0 = the SVM's boundary), not probabilities. Boxes are
``[x1, y1, x2, y2]`` pixels, ``(N, 4)`` float32.

Reference: dwt_mitosis Sec. 3.2; Girshick, Donahue, Darrell, Malik, "Rich feature hierarchies
for accurate object detection and semantic segmentation", CVPR 2014 (Sec. 2, App. B–C).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from microrepro.common.errors import DataError
from microrepro.common.tiling import nms
from microrepro.reproductions.dwt_mitosis.proposals import (
    RegionSet,
    apply_regression,
    image_proposals,
    overlaps,
    regression_targets,
    warp_regions,
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
            raise DataError(
                f"R-CNN fine-tuning needs positive and negative regions, got {len(positives)} positives "
                f"and {len(negatives)} negatives: were any boxes generated in phase 1, and do the training "
                "images show unannotated tissue as well as the annotated objects?"
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
    def load(cls, path: Path) -> RCNNHead:
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


def train_rcnn(regions: RegionSet, gt_boxes: list[np.ndarray], images: list[np.ndarray], cfg, *,
               run_dir: Path, name: str, seed: int = 0, verbose=2) -> dict:
    """Fine-tune the feature CNN, fit the SVM and the box regressor on one label source.

    Args:
        regions: proposals of the training images (``proposals.build_regions``).
        gt_boxes: per training image, ``(G, 4)`` generated (or manual) boxes = the positives.
        images: the training images, RGB uint8 ``(H, W, 3)`` (to warp the ground-truth boxes).
        cfg: ``RCNNConfig``.
        run_dir, name: checkpoints go to ``run_dir/train/<name>`` (``common.training.fit``);
            the SVM/regressor to ``run_dir/train/<name>/head.npz``.
        seed: sampling seed.

    Returns:
        The ``schedule_run`` entry: ``common.training.schedule_record`` (``seconds`` = CNN, SVM
        and regressor together) plus ``n_positives``, ``n_negatives``, ``n_regression``.

    Raises:
        ValueError: no positive or no negative region.

    Reference: dwt_mitosis Sec. 3.2; R-CNN Sec. 2.3 (fine-tuning, SVM) and App. C (regression).
    """
    from microrepro.common import training
    from microrepro.reproductions.dwt_mitosis.model import adam, build_feature_cnn, feature_extractor

    if len(gt_boxes) != regions.n_images or len(images) != regions.n_images:
        raise ValueError(f"{regions.n_images} images of regions but {len(gt_boxes)} box lists and {len(images)} images")
    start = time.perf_counter()
    max_iou = np.zeros(len(regions.boxes))
    gt_index = -np.ones(len(regions.boxes), np.int64)
    for k in range(regions.n_images):
        idx = regions.of_image(k)
        max_iou[idx], gt_index[idx] = overlaps(regions.boxes[idx], gt_boxes[k])
    gt_warps = [warp_regions(img, np.asarray(b, np.float32).reshape(-1, 4), cfg.warp_size, cfg.warp_padding)
                for img, b in zip(images, gt_boxes, strict=True)]
    gt_warps = np.concatenate(gt_warps) if gt_warps else np.zeros((0, cfg.warp_size, cfg.warp_size, 3), np.uint8)
    positives = np.concatenate([gt_warps, regions.warps[max_iou >= cfg.positive_iou]])
    negative_mask = max_iou < cfg.negative_iou
    negatives = regions.warps[negative_mask]

    # 1. fine-tune the CNN as a region classifier
    training.set_seed(seed)
    classifier = build_feature_cnn(cfg.warp_size, cfg.cnn_widths, cfg.feature_dim)
    classifier.compile(optimizer=adam(cfg.cnn_lr, cfg.cnn_final_lr, cfg.cnn_epochs * cfg.cnn_steps_per_epoch),
                       loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"],
                       jit_compile=False)  # XLA compile time dominates these short CPU runs
    batches = RegionBatches(positives, negatives, cfg.batch_positives, cfg.batch_negatives,
                            cfg.cnn_steps_per_epoch, seed)
    result = training.fit(classifier, batches, None, run_dir=run_dir, name=name, epochs=cfg.cnn_epochs,
                          monitor="loss", verbose=verbose, tensorboard=False)
    training.load_weights(classifier, run_dir, name, "last")
    extractor = feature_extractor(classifier)

    # 2. SVM on the scaled features, 3. box regression
    region_feats = cnn_features(extractor, regions.warps)
    norms = np.linalg.norm(region_feats, axis=1)
    scale = 20.0 / max(float(norms.mean()) if len(norms) else 1.0, 1e-6)
    svm_w, svm_b = _fit_svm(region_feats * scale, cnn_features(extractor, gt_warps) * scale, max_iou, cfg, seed)
    reg_idx = np.flatnonzero(max_iou >= cfg.bbox_iou)
    reg_w = reg_b = None
    if cfg.bbox_regression and len(reg_idx) >= 8:
        targets = np.concatenate([
            regression_targets(regions.boxes[[i]], np.asarray(gt_boxes[regions.image_index[i]])[[gt_index[i]]])
            for i in reg_idx
        ])
        reg_w, reg_b = _fit_regression(region_feats[reg_idx] * scale, targets, cfg.ridge_alpha)
    RCNNHead(svm_w, svm_b, reg_w, reg_b, scale).save(training.train_dir(run_dir, name) / "head.npz")
    return training.schedule_record(
        {**result, "seconds": time.perf_counter() - start}, batch=cfg.batch_positives + cfg.batch_negatives,
        steps_per_epoch=cfg.cnn_steps_per_epoch, n_positives=int(len(positives)), n_negatives=int(len(negatives)),
        n_regression=int(len(reg_idx)) if reg_w is not None else 0,
    )


def _fit_svm(region_feats: np.ndarray, gt_feats: np.ndarray, max_iou: np.ndarray, cfg, seed: int):
    """Linear SVM: positives = the boxes themselves (+ proposals >= ``svm_positive_iou``), negatives IoU < 0.3.

    Args:
        region_feats: ``(N, D)`` scaled features of every proposal.
        gt_feats: ``(G, D)`` scaled features of the ground-truth (generated) boxes.
        max_iou: ``(N,)`` best IoU of each proposal with a ground-truth box.

    Returns:
        ``(w (D,) float64, b float)``.

    Reference: R-CNN Sec. 2.3 (positives = ground-truth boxes, negatives IoU < 0.3).
    """
    from sklearn.svm import LinearSVC

    rng = np.random.default_rng(seed)
    neg_idx = np.flatnonzero(max_iou < cfg.negative_iou)
    if len(neg_idx) > cfg.svm_max_negatives:
        neg_idx = np.sort(rng.choice(neg_idx, cfg.svm_max_negatives, replace=False))
    pos_idx = np.flatnonzero(max_iou >= cfg.svm_positive_iou) if cfg.svm_positive_iou < 1.0 else np.zeros(0, np.int64)
    x = np.concatenate([gt_feats, region_feats[pos_idx], region_feats[neg_idx]])
    y = np.concatenate([np.ones(len(gt_feats) + len(pos_idx)), np.zeros(len(neg_idx))]).astype(np.int32)
    # class_weight balanced: positives are a few hundred against thousands of negatives (R-CNN
    # mined hard negatives instead; with a small set, reweighting does the same job)
    svm = LinearSVC(C=cfg.svm_c, class_weight="balanced", max_iter=5000, random_state=seed)
    svm.fit(x, y)
    return svm.coef_[0].astype(np.float64), float(svm.intercept_[0])


def _fit_regression(feats: np.ndarray, targets: np.ndarray, alpha: float):
    """Ridge regression features → ``(tx, ty, tw, th)`` (R-CNN App. C); ``(w (D, 4), b (4,))`` float64."""
    from sklearn.linear_model import Ridge

    ridge = Ridge(alpha=alpha).fit(feats, targets)
    return ridge.coef_.T.astype(np.float64), ridge.intercept_.astype(np.float64)


def load_rcnn(run_dir: Path, name: str, cfg):
    """``(feature extractor, RCNNHead)`` of the R-CNN trained as ``name`` in ``run_dir`` (``cfg``: ``RCNNConfig``)."""
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
        ``(boxes (K, 4) float32, scores (K,) float64)``, by descending SVM score (a margin, not a
        probability), unthresholded.

    Reference: R-CNN Sec. 2.2 (SVM scores, greedy NMS) and App. C (box regression).
    """
    if not len(proposals):
        return np.zeros((0, 4), np.float32), np.zeros((0,), np.float64)
    feats = cnn_features(extractor, warps).astype(np.float64) * head.feature_scale
    scores = feats @ head.svm_w + head.svm_b
    boxes = np.array(proposals, np.float32)
    if head.reg_w is not None:
        boxes = apply_regression(boxes, feats @ head.reg_w + head.reg_b)
    if width is not None:
        boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, width)
    if height is not None:
        boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, height)
    keep = nms(boxes, scores, nms_iou)
    return boxes[keep], scores[keep]


def detect_image(extractor, head: RCNNHead, image: np.ndarray, cfg, pixel_size_um: float):
    """The whole R-CNN on one RGB uint8 ``(H, W, 3)`` image: proposals, warps, :func:`detect`.

    Args:
        extractor, head: from :func:`load_rcnn`.
        image: ``(H, W, 3)`` uint8.
        cfg: ``RCNNConfig``.
        pixel_size_um: µm per pixel of ``image`` (the proposals' size filter is in µm).

    Returns:
        ``(boxes (K, 4) float32 [x1, y1, x2, y2] px, scores (K,) float64)``, unthresholded.

    Reference: dwt_mitosis Sec. 3.2; R-CNN Sec. 2.
    """
    props = image_proposals(image, cfg, pixel_size_um)
    warps = warp_regions(image, props, cfg.warp_size, cfg.warp_padding)
    return detect(extractor, head, warps, props, cfg.nms_iou, image.shape[0], image.shape[1])
