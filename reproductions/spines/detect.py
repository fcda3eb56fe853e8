"""Inference of the three spine detectors: on a prepared split, and on one image as users have it.

Every ``detect_*`` returns per image ``(boxes (N, 4) [x1, y1, x2, y2] px of the ORIGINAL image,
scores (N,))`` with every score above the detector's floor kept (the operating threshold is
applied by the evaluation, or by :func:`detect_image`).

Reference: Sec. 3.1 (Faster R-CNN), Sec. 3.2 (tiny-YOLOv2), Sec. 5 (SP-CNN local maxima,
15x15 boxes of Sec. 2).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from microrepro.reproductions.spines import data as data_lib
from microrepro.reproductions.spines import postprocess

# predict: fields larger than the data set's images (128-244 px) are cut into tiles of this side,
# so every tile reaches the network at the scale it was trained at; overlap > 4 spine boxes.
PREDICT_TILE = 256
PREDICT_OVERLAP = 64


def detect_yolo(model, cfg, prepared: data_lib.Prepared, batch_size: int = 16) -> list:
    """tiny-YOLOv2 detections (objectness >= 0.005, after NMS) mapped back to original pixels."""
    from microrepro.common import training
    from microrepro.reproductions.spines import tiny_yolo

    y = cfg.yolo
    out = []
    for start, images in data_lib.eval_batches(prepared, batch_size):
        raw = training.predict_batch(model, images)  # predict_on_batch, right under tf.distribute too
        dets = tiny_yolo.decode_detections(
            raw, y.anchors, (prepared.size, prepared.size), score_threshold=0.005, nms_iou=y.nms_iou,
            max_detections=y.max_detections,
        )
        for i, (boxes, scores) in enumerate(dets):
            out.append((postprocess.rescale_boxes(boxes, prepared.scales[start + i]), scores))
    return out


def detect_sp_cnn(model, cfg, prepared: data_lib.Prepared, batch_size: int = 8) -> list:
    """Local maxima of the SP-CNN map -> ``data.box_size`` square boxes in original pixels, score = map value."""
    from microrepro.common import training
    from microrepro.reproductions.spines import sp_cnn

    scfg = cfg.sp_cnn
    # Peaks below the F1 threshold are kept (down to 0.05) so that mAP sees a ranking.
    floor = min(0.05, scfg.peak_threshold)
    out = []
    for start, images in data_lib.eval_batches(prepared, batch_size):
        maps = np.asarray(training.predict_batch(model, images))[..., 0]
        for i, heatmap in enumerate(maps):
            points, scores = sp_cnn.detect_peaks(heatmap, floor, scfg.peak_min_distance)
            sx, sy = prepared.scales[start + i]
            points = points / np.array([sx, sy], np.float32)
            out.append((postprocess.points_to_square_boxes(points, cfg.data.box_size), scores))
    return out


def detect_faster_rcnn(model, cfg, prepared: data_lib.Prepared, batch_size: int = 8) -> list:
    """Faster R-CNN detections (scores >= 0.01) mapped back to original pixels."""
    out = []
    for start, images in data_lib.eval_batches(prepared, batch_size):
        dets = model.predict_on_batch(images)  # the compiled predict step (graph / jit), not eager
        boxes = np.asarray(dets["boxes"])
        scores = np.asarray(dets["scores"])
        count = np.asarray(dets["num_detections"]).astype(int)
        for i in range(len(images)):
            n = int(count[i])
            boxes_i = postprocess.rescale_boxes(boxes[i, :n], prepared.scales[start + i])
            out.append((boxes_i, scores[i, :n].astype(np.float32)))
    return out


def detect_image(
    detect: Callable[[data_lib.Prepared], list],
    image: np.ndarray,
    size: int,
    keep_aspect_ratio: bool = False,
    tile: int = PREDICT_TILE,
    overlap: int = PREDICT_OVERLAP,
    nms_iou: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """One image as read from disk -> every detection of one detector, in px of that image.

    The image becomes 8-bit grey (``data.grey_uint8``: colour, 16-bit and float images too) and
    is resized to the network's ``size`` like a training image. A field larger than ``tile`` on
    either side is cut into ``tile`` x ``tile`` tiles overlapping by at least ``overlap`` px
    (``common.tiling.detect_tiled``: each spine is kept by the tile that sees it farthest from
    its edges, then the detector's own NMS at ``nms_iou``), so spines keep the size they had in
    training.

    Args:
        detect: ``fn(prepared) -> [(boxes, scores)]``, one of the ``detect_*`` above with its
            model and config bound.
        image: ``(H, W)`` or ``(H, W, C)``, any dtype.
        size: the network's input side.
        keep_aspect_ratio: resize keeping the aspect ratio (zero padding) instead of stretching.
        tile, overlap: tiling of large fields, px of the input image.
        nms_iou: IoU above which merged tile detections are duplicates (the detector's own NMS
            threshold; 1.0 = none, for SP-CNN whose peaks are kept ``peak_min_distance`` apart).

    Returns:
        ``(boxes (N, 4) float32 [x1, y1, x2, y2] px of ``image``, scores (N,) float32)``.
    """
    from microrepro.common.tiling import detect_tiled
    from microrepro.datasets.base import Sample

    grey = data_lib.grey_uint8(image)

    def run(field: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        prepared = data_lib.prepare([Sample(id="image", image_array=field)], size, 1, keep_aspect_ratio)
        boxes, scores = detect(prepared)[0]
        return np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(scores, np.float32).reshape(-1)

    if max(grey.shape) <= tile:
        return run(grey)
    return detect_tiled(run, grey, tile, overlap, iou_threshold=nms_iou)
