"""Whole-field (HPF) detection with a trained detector: subsections in, field detections out.

The paper splits each HPF into 16 subsections resized to 299x299 px (Sec. IV-A). We keep the
paper's SCALE (``data.scale`` input px per source px) and cut overlapping subsections of
``round(input_size / scale)`` source px, so that no figure is cut by a subsection edge; each
detection is kept by the subsection whose core holds its centre, then a per-class NMS merges
the rest (:func:`detect_field`). Used by evaluation, by ``predict`` (``task.load_predictor``) and
by the benchmark (``bench.py``).

Reference: MITOS-RCNN Sec. IV-A (subsections), Sec. V-B.3 (seconds per HPF).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from microrepro.common.tiling import core_bounds, nms, tile_origins
from microrepro.reproductions.mitos_rcnn.data import MITOTIC, cut_subsection, resize, subsection_px

# um per px assumed for images that carry no pixel size (AMi-Br and x40 HPFs: 0.23-0.25 um/px).
DEFAULT_PIXEL_SIZE_UM = 0.25


@dataclass
class FieldDetections:
    """Detections of one field in field px, highest score first.

    Attributes:
        boxes: ``(N, 4)`` float32 ``[x1, y1, x2, y2]`` px of the field.
        scores: ``(N,)`` float32 softmax probabilities of ``classes``.
        classes: ``(N,)`` int32, 0 mitotic figure, 1 not mitotic figure.
    """

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray

    def mitoses(self, threshold: float = 0.0) -> np.ndarray:
        """Centres ``(K, 2)`` float32 ``[x, y]`` px of the mitotic-figure detections scoring >= threshold."""
        keep = (self.classes == MITOTIC) & (self.scores >= threshold)
        b = self.boxes[keep]
        if not len(b):
            return np.zeros((0, 2), np.float32)
        return np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2], axis=1)

    def mitotic_scores(self) -> np.ndarray:
        """``(K,)`` scores of the mitotic-figure detections, in the order of :meth:`mitoses` (0)."""
        return self.scores[self.classes == MITOTIC]


def overlap_px(tile_overlap_um: float, pixel_size_um: float | None) -> int:
    """Subsection overlap in px: ``tile_overlap_um`` at ``pixel_size_um`` (default 0.25 um/px)."""
    return int(round(tile_overlap_um / float(pixel_size_um or DEFAULT_PIXEL_SIZE_UM)))


def as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Any image as read (grey, RGB, RGBA; uint8, uint16 or float in [0, 1]) as ``(H, W, 3)`` uint8 RGB.

    The detectors were trained on uint8 RGB subsections divided by 255, so every input goes
    through that form: grey is repeated to three channels, alpha dropped, integer images scaled
    by their dtype's range and floats clipped to [0, 1].
    """
    from microrepro.common.imageio import convert_channels, to_float01

    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    image = convert_channels(image, 3)
    if image.dtype == np.uint8:
        return np.ascontiguousarray(image)
    return np.round(np.clip(to_float01(image), 0.0, 1.0) * 255.0).astype(np.uint8)


def detect_field(
    model,
    image: np.ndarray,
    input_size: int,
    scale: float,
    overlap_px: int,
    batch_size: int = 16,
    nms_iou: float = 0.3,
) -> FieldDetections:
    """Detect in a whole field: overlapping subsections, resized, batched, merged back.

    Subsections of ``round(input_size / scale)`` source px start every ``tile - overlap`` px
    (``common.tiling.tile_origins``); each is resized to the network input and all of a field's
    subsections run in batches. A detection is kept only by the subsection whose core
    (``common.tiling.core_bounds``: overlaps split in their middle) holds its centre, then a
    per-class NMS removes what is left of duplicates -- the rule of ``common.tiling.detect_tiled``,
    batched here because one forward pass per subsection is several times slower on CPU. A field
    smaller than one subsection is zero-padded.

    Args:
        model: FasterRCNN or MitosRCNN (``predict_on_batch`` -> boxes/scores/classes/num_detections).
        image: ``(H, W, 3)`` uint8 RGB field (see :func:`as_rgb_uint8`).
        input_size: S of the model.
        scale: input px per source px.
        overlap_px: overlap of neighbouring subsections in source px.
        batch_size: subsections per forward pass.
        nms_iou: per-class NMS of the merged detections.

    Returns:
        :class:`FieldDetections` in field px.

    Reference: MITOS-RCNN Sec. IV-A (16 subsections per HPF, each resized to 299x299 px).
    """
    image = np.asarray(image)[..., :3]
    height, width = image.shape[:2]
    tile = subsection_px(input_size, scale)
    overlap = int(min(max(overlap_px, 0), tile - 1))
    full_h, full_w = max(height, tile), max(width, tile)
    ys, xs = tile_origins(full_h, tile, overlap), tile_origins(full_w, tile, overlap)
    cores_y, cores_x = core_bounds(ys, tile, full_h), core_bounds(xs, tile, full_w)
    cells = [(i, j) for i in range(len(ys)) for j in range(len(xs))]
    factor = tile / float(input_size)
    boxes_all, scores_all, classes_all = [], [], []
    for start in range(0, len(cells), batch_size):
        chunk = cells[start : start + batch_size]
        batch = np.zeros((batch_size, input_size, input_size, 3), np.float32)
        for k, (i, j) in enumerate(chunk):
            batch[k] = resize(cut_subsection(image, xs[j], ys[i], tile), input_size) / np.float32(255.0)
        # Always a full batch (zero padding): one traced shape, no retracing for the last chunk.
        out = model.predict_on_batch(batch)
        for k, (i, j) in enumerate(chunk):
            n = int(np.asarray(out["num_detections"])[k])
            boxes = np.asarray(out["boxes"])[k, :n] * factor + np.float32([xs[j], ys[i], xs[j], ys[i]])
            cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
            (y_lo, y_hi), (x_lo, x_hi) = cores_y[i], cores_x[j]
            own = (cx >= x_lo) & (cx < min(x_hi, width)) & (cy >= y_lo) & (cy < min(y_hi, height))
            boxes_all.append(boxes[own])
            scores_all.append(np.asarray(out["scores"])[k, :n][own])
            classes_all.append(np.asarray(out["classes"])[k, :n][own])
    boxes = np.concatenate(boxes_all).astype(np.float32) if boxes_all else np.zeros((0, 4), np.float32)
    scores = np.concatenate(scores_all).astype(np.float32) if scores_all else np.zeros((0,), np.float32)
    classes = np.concatenate(classes_all).astype(np.int32) if classes_all else np.zeros((0,), np.int32)
    boxes = np.clip(boxes, 0, np.float32([width, height, width, height]))
    keep = []
    for c in np.unique(classes):
        idx = np.flatnonzero(classes == c)
        keep.extend(idx[nms(boxes[idx], scores[idx], nms_iou)].tolist())
    keep = np.asarray(sorted(keep, key=lambda k: -scores[k]), np.int64)
    return FieldDetections(boxes[keep], scores[keep], classes[keep])


def detect_fields(model, cfg, fields: list) -> list[FieldDetections]:
    """:func:`detect_field` on every field (Samples) with a run's ``MitosRCNNConfig``.

    The subsection overlap is ``data.tile_overlap_um`` at each field's pixel size.

    Reference: MITOS-RCNN Sec. IV-A.
    """
    m, d = cfg.model, cfg.data
    return [detect_field(model, f.image, m.input_size, d.scale, overlap_px(d.tile_overlap_um, f.pixel_size_um),
                         nms_iou=m.detection_nms_iou) for f in fields]


def seconds_per_field(model, image: np.ndarray, input_size: int, scale: float, overlap_px: int, repeats: int = 1,
                      batch_size: int = 16) -> float:
    """Median wall seconds of :func:`detect_field` on ``image`` (``common.training.median_seconds``).

    The warm-up (graph tracing) is one subsection-sized crop of the field rather than a whole
    field: the same traced batch shape for a fraction of the time.

    Reference: MITOS-RCNN Sec. V-B.3 (0.5 s per HPF on one Tesla K80).
    """
    from microrepro.common.training import median_seconds

    tile = subsection_px(input_size, scale)
    detect_field(model, image[:tile, :tile], input_size, scale, overlap_px, batch_size)
    return median_seconds(lambda: detect_field(model, image, input_size, scale, overlap_px, batch_size),
                          repeats=repeats, warmup=0)
