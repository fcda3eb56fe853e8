"""tiny-YOLOv2 (darknet ``tiny-yolo-voc`` layout) with the YOLOv2 region loss and decoding.

All model, loss and decoding code uses ``keras`` / ``keras.ops`` only, so it runs under the
TensorFlow and JAX backends.

Box conventions: ground truth enters the loss as ``(B, G, 4)`` boxes ``[x1, y1, x2, y2]``
normalised to [0, 1] by the input width/height, padded with -1 rows; the network output is
``(B, S_h, S_w, A * (5 + C))`` with per anchor ``(t_x, t_y, t_w, t_h, t_o, class logits)``.

Reference: paper Sec. 3.2 and Fig. 6; Redmon & Farhadi, "YOLO9000" (2016), Sec. 2
(direct location prediction, eq. for b_x, b_y, b_w, b_h); darknet ``region_layer.c``.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

from microrepro.common.serialize import constructor_config

# Filters of darknet's tiny-yolo-voc.cfg: six conv+max-pool pairs (the 6th pool has stride 1),
# then two 3x3 convs; a 1x1 linear conv makes the output.
TINY_YOLO_FILTERS = (16, 32, 64, 128, 256, 512)
TINY_YOLO_HEAD_FILTERS = (1024, 1024)
STRIDE = 32
# darknet updates BN statistics with 0.99; 0.9 lets them settle within the few hundred steps of
# the CPU schedules (with 0.99 the inference-mode statistics lag far behind the weights).
BN_MOMENTUM = 0.9


def scaled(filters: int, width_multiplier: float) -> int:
    """Channel count after a width multiplier, never below 8."""
    if width_multiplier <= 0:
        raise ValueError(f"width_multiplier must be > 0, got {width_multiplier}")
    return max(8, int(round(filters * width_multiplier)))


def _conv_bn_leaky(x, filters: int, name: str):
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=1e-5, name=f"{name}_bn")(x)
    return layers.LeakyReLU(negative_slope=0.1, name=f"{name}_leaky")(x)


def build_tiny_yolo(
    num_anchors: int = 3,
    num_classes: int = 1,
    in_channels: int = 1,
    width_multiplier: float = 1.0,
    input_size: int | None = None,
    name: str = "tiny_yolov2",
) -> keras.Model:
    """Build tiny-YOLOv2: 9 conv layers (8 conv+BN+leaky ReLU, 1 linear), stride 32.

    Args:
        num_anchors: anchors per grid cell (3 in the paper, Fig. 6).
        num_classes: object classes (1: spine).
        in_channels: 1 for the grey spine images (3 when loading RGB-pretrained weights).
        width_multiplier: scales every filter count (1.0 = darknet tiny-yolo-voc).
        input_size: fixed square input size, or None for any size divisible by 32
            (needed for multi-scale training).

    Returns:
        A functional model mapping ``(B, H, W, in_channels)`` float32 in [0, 1] to
        ``(B, H/32, W/32, num_anchors * (5 + num_classes))`` raw outputs.

    Reference: paper Fig. 6 ("down-sampling the input by 32 using 5 max-pooling layers"); the
    released darknet cfg has a 6th max-pool of size 2 and stride 1 that keeps the resolution.
    """
    if num_anchors < 1 or num_classes < 1:
        raise ValueError(f"need at least one anchor and one class, got {num_anchors}, {num_classes}")
    if input_size is not None and input_size % STRIDE:
        raise ValueError(f"tiny-YOLO input size must be a multiple of {STRIDE}, got {input_size}")
    inputs = keras.Input((input_size, input_size, in_channels), name="image")
    x = inputs
    for i, filters in enumerate(TINY_YOLO_FILTERS):
        x = _conv_bn_leaky(x, scaled(filters, width_multiplier), f"block{i + 1}")
        stride = 2 if i < len(TINY_YOLO_FILTERS) - 1 else 1
        x = layers.MaxPooling2D(2, strides=stride, padding="same", name=f"block{i + 1}_pool")(x)
    for j, filters in enumerate(TINY_YOLO_HEAD_FILTERS):
        x = _conv_bn_leaky(x, scaled(filters, width_multiplier), f"block{len(TINY_YOLO_FILTERS) + j + 1}")
    outputs = layers.Conv2D(num_anchors * (5 + num_classes), 1, padding="same", name="detection")(x)
    return keras.Model(inputs, outputs, name=name)


def _grid_size(y_pred):
    """``(S_h, S_w)`` of a ``(B, S_h, S_w, ...)`` output: Python ints where the shape is static.

    Under JAX (jit) shapes are always static, so these are ints and every multi-scale input size
    is its own trace; under TensorFlow a ``None`` side (multi-scale batches) is a scalar tensor.
    """
    static = tuple(y_pred.shape[1:3])
    dynamic = ops.shape(y_pred)
    return tuple(int(s) if s is not None else dynamic[1 + k] for k, s in enumerate(static))


def _one_hot_last(indices, depth):
    """``one_hot(indices, depth)`` as float32, by comparison with ``arange(depth)``.

    ``depth`` is an int under JAX (``jax.nn.one_hot`` refuses a traced size) or a scalar tensor
    under TensorFlow when the grid size is unknown in the graph.
    """
    return ops.cast(ops.equal(indices[..., None], ops.cast(ops.arange(depth), indices.dtype)), "float32")


def _split_output(y_pred, num_anchors: int):
    """(B, S_h, S_w, A*(5+C)) -> (B, S_h, S_w, A, 5+C) plus grid offsets and sizes (float)."""
    grid_h, grid_w = _grid_size(y_pred)
    pred = ops.reshape(y_pred, (-1, grid_h, grid_w, num_anchors, y_pred.shape[-1] // num_anchors))
    cx = ops.reshape(ops.cast(ops.arange(grid_w), "float32"), (1, 1, -1, 1))
    cy = ops.reshape(ops.cast(ops.arange(grid_h), "float32"), (1, -1, 1, 1))
    return pred, cx, cy, ops.cast(grid_h, "float32"), ops.cast(grid_w, "float32")


def decode_boxes(y_pred, anchors):
    """Decode raw outputs to normalised boxes and objectness.

    Args:
        y_pred: ``(B, S_h, S_w, A*(5+C))`` raw network output.
        anchors: ``(A, 2)`` anchor (w, h) in grid units.

    Returns:
        boxes ``(B, S_h, S_w, A, 4)`` as ``[cx, cy, w, h]`` normalised to [0, 1], and
        objectness ``(B, S_h, S_w, A)`` in (0, 1).

    Reference: YOLO9000 Sec. 2, b_x = sigma(t_x) + c_x, b_w = p_w exp(t_w).
    """
    anchors = np.asarray(anchors, np.float32).reshape(-1, 2)
    pred, cx, cy, grid_h, grid_w = _split_output(y_pred, len(anchors))
    bx = (ops.sigmoid(pred[..., 0]) + cx) / grid_w
    by = (ops.sigmoid(pred[..., 1]) + cy) / grid_h
    bw = ops.exp(ops.clip(pred[..., 2], -10.0, 10.0)) * anchors[:, 0] / grid_w
    bh = ops.exp(ops.clip(pred[..., 3], -10.0, 10.0)) * anchors[:, 1] / grid_h
    return ops.stack([bx, by, bw, bh], axis=-1), ops.sigmoid(pred[..., 4])


def _iou_cxcywh(a, b):
    """IoU of broadcastable ``[..., 4]`` boxes given as ``[cx, cy, w, h]``."""
    a_min, a_max = a[..., :2] - a[..., 2:] / 2, a[..., :2] + a[..., 2:] / 2
    b_min, b_max = b[..., :2] - b[..., 2:] / 2, b[..., :2] + b[..., 2:] / 2
    wh = ops.maximum(ops.minimum(a_max, b_max) - ops.maximum(a_min, b_min), 0.0)
    inter = wh[..., 0] * wh[..., 1]
    union = a[..., 2] * a[..., 3] + b[..., 2] * b[..., 3] - inter
    return inter / ops.maximum(union, 1e-9)


class YoloV2Loss(keras.losses.Loss):
    """YOLOv2 region loss for one class, written in ``keras.ops``.

    Terms, summed over grid cells and anchors and averaged over the batch:

    * coordinates (responsible anchor only): ``coord_scale * (2 - w*h) *
      [(sigma(t_x) - t*_x)^2 + (sigma(t_y) - t*_y)^2 + (t_w - t*_w)^2 + (t_h - t*_h)^2]`` with
      ``t*_x = x*S - floor(x*S)``, ``t*_w = log(w*S / anchor_w)``;
    * objectness (responsible): ``object_scale * (target - sigma(t_o))^2``, target = IoU of the
      decoded prediction with its ground truth when ``rescore`` (darknet), else 1;
    * no-object (all other anchors whose best IoU with any ground truth is below
      ``ignore_thresh``): ``noobject_scale * sigma(t_o)^2``;
    * class: with one class the softmax probability is 1 whatever the logits, so the term is 0
      and is left out.

    The responsible anchor of a ground-truth box is the one of its cell whose shape (centred)
    has the highest IoU with the box; when two boxes claim the same cell and anchor, the first
    one keeps it (darknet lets the last one overwrite: either way one of them is lost).
    darknet's extra "prior" term for the first 12 800 images is not used.

    ``y_true``: ``(B, G, 4)`` normalised ``[x1, y1, x2, y2]``, rows with ``x2 <= x1`` are padding.
    ``y_pred``: ``(B, S_h, S_w, A*(5+C))``.

    Reference: YOLO9000 Sec. 2; darknet ``region_layer.c`` (delta_region_box, object/noobject
    scales, thresh); released tiny-yolo-voc cfg (object_scale 5, noobject_scale 1, thresh 0.6).
    """

    def __init__(
        self,
        anchors,
        object_scale: float = 5.0,
        noobject_scale: float = 1.0,
        coord_scale: float = 1.0,
        ignore_thresh: float = 0.6,
        rescore: bool = True,
        name: str = "yolov2_loss",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        self.anchors = np.asarray(anchors, np.float32).reshape(-1, 2)
        self.object_scale = float(object_scale)
        self.noobject_scale = float(noobject_scale)
        self.coord_scale = float(coord_scale)
        self.ignore_thresh = float(ignore_thresh)
        self.rescore = bool(rescore)

    def get_config(self):
        names = ("anchors", "object_scale", "noobject_scale", "coord_scale", "ignore_thresh", "rescore", "name")
        return constructor_config(self, names)

    def terms(self, y_true, y_pred) -> dict:
        """The loss terms per image, ``{"coord", "obj", "noobj"}`` each of shape ``(B,)``."""
        y_true = ops.cast(y_true, "float32")
        y_pred = ops.cast(y_pred, "float32")
        num_anchors = len(self.anchors)
        pred, cx, cy, grid_h, grid_w = _split_output(y_pred, num_anchors)
        boxes, objectness = decode_boxes(y_pred, self.anchors)  # (B,Sh,Sw,A,4), (B,Sh,Sw,A)

        valid = ops.cast(y_true[..., 2] > y_true[..., 0], "float32")  # (B, G)
        gx = (y_true[..., 0] + y_true[..., 2]) / 2
        gy = (y_true[..., 1] + y_true[..., 3]) / 2
        gw = ops.maximum(y_true[..., 2] - y_true[..., 0], 1e-6)
        gh = ops.maximum(y_true[..., 3] - y_true[..., 1], 1e-6)
        gt = ops.stack([gx, gy, gw, gh], axis=-1)  # (B, G, 4)

        # Ignore mask: best IoU of every prediction with any real ground truth.
        iou_all = _iou_cxcywh(boxes[:, :, :, :, None, :], gt[:, None, None, None, :, :])  # (B,Sh,Sw,A,G)
        iou_all = iou_all * valid[:, None, None, None, :]
        best_iou = ops.max(iou_all, axis=-1)

        # Responsible cell and anchor of each ground truth, as one-hot masks with G last.
        n_h, n_w = _grid_size(y_pred)  # ints under JAX: a static one-hot depth
        gi = ops.clip(ops.cast(ops.floor(gx * grid_w), "int32"), 0, n_w - 1)
        gj = ops.clip(ops.cast(ops.floor(gy * grid_h), "int32"), 0, n_h - 1)
        gw_grid = (gw * grid_w)[..., None]  # (B, G, 1)
        gh_grid = (gh * grid_h)[..., None]
        inter = ops.minimum(gw_grid, self.anchors[:, 0]) * ops.minimum(gh_grid, self.anchors[:, 1])
        union = gw_grid * gh_grid + self.anchors[:, 0] * self.anchors[:, 1] - inter
        best_anchor = ops.argmax(inter / union, axis=-1)  # (B, G)
        one_j = ops.transpose(_one_hot_last(gj, n_h), (0, 2, 1))[:, :, None, None, :]  # (B,Sh,1,1,G)
        one_i = ops.transpose(_one_hot_last(gi, n_w), (0, 2, 1))[:, None, :, None, :]  # (B,1,Sw,1,G)
        one_a = ops.transpose(_one_hot_last(ops.cast(best_anchor, "int32"), num_anchors), (0, 2, 1))
        one_a = one_a[:, None, None, :, :]  # (B,1,1,A,G)
        resp = one_j * one_i * one_a * valid[:, None, None, None, :]  # (B,Sh,Sw,A,G)
        resp = resp * ops.cast(ops.cumsum(resp, axis=-1) <= 1.0, "float32")  # first claim wins
        obj_mask = ops.sum(resp, axis=-1)  # (B,Sh,Sw,A) in {0, 1}

        def gather(values):  # values broadcastable to (B,Sh,Sw,A,G): pick the responsible gt's
            return ops.sum(resp * values, axis=-1)

        gx_e, gy_e = gx[:, None, None, None, :], gy[:, None, None, None, :]
        gw_e, gh_e = gw[:, None, None, None, :], gh[:, None, None, None, :]
        t_x = gather(gx_e * grid_w - ops.floor(gx_e * grid_w))
        t_y = gather(gy_e * grid_h - ops.floor(gy_e * grid_h))
        anchor_w = self.anchors[:, 0][None, None, None, :, None]
        anchor_h = self.anchors[:, 1][None, None, None, :, None]
        t_w = gather(ops.log(gw_e * grid_w / anchor_w))
        t_h = gather(ops.log(gh_e * grid_h / anchor_h))
        box_scale = self.coord_scale * gather(2.0 - gw_e * gh_e)

        coord = box_scale * (
            (ops.sigmoid(pred[..., 0]) - t_x) ** 2
            + (ops.sigmoid(pred[..., 1]) - t_y) ** 2
            + (pred[..., 2] - t_w) ** 2
            + (pred[..., 3] - t_h) ** 2
        )
        if self.rescore:
            obj_target = ops.stop_gradient(gather(iou_all))
        else:
            obj_target = ops.ones_like(objectness)
        obj = self.object_scale * obj_mask * (obj_target - objectness) ** 2
        ignore = ops.cast(best_iou < self.ignore_thresh, "float32")
        noobj = self.noobject_scale * (1.0 - obj_mask) * ignore * objectness**2
        axes = (1, 2, 3)  # (B, Sh, Sw, A) -> (B,)
        return {"coord": ops.sum(obj_mask * coord, axis=axes), "obj": ops.sum(obj, axis=axes),
                "noobj": ops.sum(noobj, axis=axes)}

    def call(self, y_true, y_pred):
        terms = self.terms(y_true, y_pred)
        return terms["coord"] + terms["obj"] + terms["noobj"]


def decode_detections(
    y_pred: np.ndarray,
    anchors,
    image_size: tuple[int, int],
    score_threshold: float = 0.005,
    nms_iou: float = 0.45,
    max_detections: int = 50,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Turn raw outputs into per-image boxes in the network's input pixels, after NMS.

    Args:
        y_pred: ``(B, S_h, S_w, A*(5+C))`` raw outputs (numpy or tensor).
        anchors: ``(A, 2)`` in grid units.
        image_size: ``(height, width)`` of the network input in pixels.
        score_threshold: drop boxes with objectness below this before NMS.
        nms_iou: greedy NMS IoU threshold.
        max_detections: keep at most this many per image (highest scores).

    Returns:
        One ``(boxes (N, 4) [x1, y1, x2, y2] px, scores (N,))`` pair per image, sorted by score.
    """
    from microrepro.reproductions.spines.postprocess import nms

    boxes, objectness = decode_boxes(ops.convert_to_tensor(np.asarray(y_pred, np.float32)), anchors)
    boxes = ops.convert_to_numpy(boxes)
    objectness = ops.convert_to_numpy(objectness)
    height, width = image_size
    out = []
    for b in range(boxes.shape[0]):
        flat = boxes[b].reshape(-1, 4)
        scores = objectness[b].reshape(-1)
        keep = scores >= score_threshold
        flat, scores = flat[keep], scores[keep]
        xyxy = np.stack(
            [
                (flat[:, 0] - flat[:, 2] / 2) * width,
                (flat[:, 1] - flat[:, 3] / 2) * height,
                (flat[:, 0] + flat[:, 2] / 2) * width,
                (flat[:, 1] + flat[:, 3] / 2) * height,
            ],
            axis=1,
        ).astype(np.float32)
        kept = nms(xyxy, scores, nms_iou, max_detections)
        out.append((xyxy[kept], scores[kept].astype(np.float32)))
    return out


def load_pretrained(model: keras.Model, pretrained: str) -> str:
    """Initialise ``model`` from ``pretrained``: "none", "darknet" or a ``.weights.h5`` path.

    Returns:
        A one-line description of what was loaded (for provenance).

    Raises:
        ConfigError: "darknet" (the ImageNet darknet weights need a download this suite does not
            make offline) or a missing/incompatible weights file.
    """
    from pathlib import Path

    from microrepro.common.errors import ConfigError

    if pretrained in ("", "none", None):
        return "random initialisation (no pretrained weights)"
    if pretrained in ("darknet", "imagenet"):
        raise ConfigError(
            "yolo.pretrained=darknet: the ImageNet darknet weights (darknet.org tiny-yolo-voc.weights) are not "
            "bundled and cannot be downloaded here; convert them to a Keras .weights.h5 for this layout and pass "
            "its path, or use yolo.pretrained=none"
        )
    path = Path(pretrained).expanduser()
    if not path.is_file():
        raise ConfigError(f"yolo.pretrained={pretrained}: no such weights file")
    try:
        model.load_weights(str(path))
    except Exception as err:  # noqa: BLE001 - any mismatch becomes one clear line
        raise ConfigError(f"yolo.pretrained={path}: weights do not fit tiny-YOLOv2 ({err})") from None
    return f"weights from {path}"
