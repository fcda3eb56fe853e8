"""Region proposal network: the head, and the pieces that turn its outputs into proposals.

The pieces are separate so that a second RPN can refine or extend the proposals of a first
(MITOS-RCNN, Sec. IV-B: RPN_2 takes RPN_1's proposals plus its own sliding-window anchors):

* :class:`RPNHead` -- 3x3 conv + per-anchor objectness logit and box deltas;
* :func:`decode_proposals` -- deltas applied to anchors (shared ``(A, 4)`` anchors, or per-image
  ``(B, A, 4)`` boxes such as a previous stage's proposals), clipped to the image;
* :func:`select_proposals` -- drop tiny boxes, pre-NMS top-k, NMS, post-NMS top-k, fixed size;
* :class:`ProposalLayer` -- decode + select, optionally merged with extra candidate boxes.

A cascade is then e.g.::

    p1 = proposals_1(anchors_1, logits_1, deltas_1)                       # RPN_1
    p2 = proposals_2(anchors_2, logits_2, deltas_2,                       # RPN_2: own anchors
                     extra_boxes=p1["boxes"], extra_scores=p1["scores"],  # + RPN_1's proposals
                     extra_valid=p1["valid"])

and :func:`~microrepro.common.detection.targets.rpn_targets` accepts per-image anchors, so
RPN_1's proposals can also be used as the anchors RPN_2 learns to refine.

Outputs follow the suite's padding rule: unused proposal slots are -1 boxes with score 0 and
``valid`` False. Proposals carry no gradient (approximate joint training, Faster R-CNN Sec. 3.2).
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import ops

from microrepro.common.detection.boxes import RPN_BOX_WEIGHTS, clip_boxes, decode_deltas, gather_rows
from microrepro.common.detection.nms import non_max_suppression
from microrepro.common.serialize import constructor_config

_NEG = -1e30


@keras.saving.register_keras_serializable(package="microrepro")
class RPNHead(keras.layers.Layer):
    """3x3 conv (ReLU) then two sibling 1x1 convs: objectness and box deltas per anchor.

    Args:
        num_anchors: anchors per feature cell, k.
        conv_channels: channels of the 3x3 conv (paper: 512 for VGG-16, 256 for ZF).
        kernel_initializer: defaults to N(0, 0.01) as in the paper (Sec. 3.1.3).

    Call:
        features ``(B, Hf, Wf, C)`` -> ``(logits (B, Hf*Wf*k), deltas (B, Hf*Wf*k, 4))``,
        flattened row, column, anchor -- the order of ``generate_anchors``.

    Reference:
        Ren et al., Faster R-CNN, Sec. 3.1 and Fig. 3.
    """

    def __init__(self, num_anchors: int, conv_channels: int = 512, kernel_initializer=None, **kwargs):
        super().__init__(**kwargs)
        if int(num_anchors) <= 0 or int(conv_channels) <= 0:
            raise ValueError(f"num_anchors and conv_channels must be positive, got {num_anchors}, {conv_channels}")
        self.num_anchors = int(num_anchors)
        self.conv_channels = int(conv_channels)
        init = kernel_initializer or keras.initializers.RandomNormal(stddev=0.01)
        self.conv = keras.layers.Conv2D(
            self.conv_channels, 3, padding="same", activation="relu", kernel_initializer=init, name="conv"
        )
        self.objectness = keras.layers.Conv2D(self.num_anchors, 1, kernel_initializer=init, name="objectness")
        self.box_deltas = keras.layers.Conv2D(4 * self.num_anchors, 1, kernel_initializer=init, name="deltas")

    def build(self, input_shape):
        self.conv.build(input_shape)
        inner = tuple(input_shape[:-1]) + (self.conv_channels,)
        self.objectness.build(inner)
        self.box_deltas.build(inner)
        self.built = True

    def call(self, features):
        x = self.conv(features)
        batch = ops.shape(x)[0]
        logits = ops.reshape(self.objectness(x), (batch, -1))
        deltas = ops.reshape(self.box_deltas(x), (batch, -1, 4))
        return logits, deltas

    def get_config(self):
        return constructor_config(self, ("num_anchors", "conv_channels"), super().get_config())


def decode_proposals(anchors, deltas, image_size: Sequence[int], box_weights: Sequence[float] = RPN_BOX_WEIGHTS):
    """Apply RPN deltas to anchors and clip to the image.

    Args:
        anchors: ``(A, 4)`` or ``(B, A, 4)`` xyxy px.
        deltas: ``(B, A, 4)``.
        image_size: ``(height, width)`` in px.
        box_weights: the RPN coding weights.

    Returns:
        ``(B, A, 4)`` xyxy px, inside the image, no gradient.
    """
    boxes = decode_deltas(ops.stop_gradient(deltas), ops.stop_gradient(ops.cast(anchors, "float32")), box_weights)
    return clip_boxes(boxes, image_size[0], image_size[1])


def _probability_to_logit(p):
    p = ops.clip(ops.cast(p, "float32"), 1e-7, 1.0 - 1e-7)
    return ops.log(p) - ops.log1p(-p)


def select_proposals(
    boxes,
    logits,
    valid=None,
    pre_nms_top_k: int = 6000,
    post_nms_top_k: int = 300,
    nms_iou: float = 0.7,
    min_size: float = 0.0,
):
    """Keep the best non-overlapping candidate boxes, in a fixed number of slots.

    Args:
        boxes: ``(B, N, 4)`` xyxy px (already clipped).
        logits: ``(B, N)`` objectness logits (ranking only).
        valid: optional bool ``(B, N)``.
        pre_nms_top_k: candidates entering NMS (per image).
        post_nms_top_k: K, output slots.
        nms_iou: NMS IoU threshold (paper: 0.7).
        min_size: drop boxes narrower or shorter than this (px); zero-area boxes always go.

    Returns:
        dict ``boxes`` ``(B, K, 4)`` (-1 rows in unused slots), ``scores`` ``(B, K)`` objectness
        probabilities (0 unused), ``valid`` ``(B, K)`` bool.

    Reference:
        Ren et al., Faster R-CNN, Sec. 3.3 (NMS at 0.7, top-N proposals).
    """
    if int(pre_nms_top_k) <= 0 or int(post_nms_top_k) <= 0:
        raise ValueError(f"pre/post NMS top-k must be positive, got {pre_nms_top_k}, {post_nms_top_k}")
    boxes = ops.stop_gradient(ops.cast(boxes, "float32"))
    logits = ops.stop_gradient(ops.cast(logits, "float32"))
    width = boxes[..., 2] - boxes[..., 0]
    height = boxes[..., 3] - boxes[..., 1]
    ok = ops.logical_and(ops.minimum(width, height) >= min_size, ops.minimum(width, height) > 0.0)
    if valid is not None:
        ok = ops.logical_and(ok, ops.cast(valid, "bool"))
    ranked = ops.where(ok, logits, _NEG)
    k = min(int(pre_nms_top_k), int(boxes.shape[1]))
    _, top = ops.top_k(ranked, k=k)
    boxes, logits, ok = gather_rows(boxes, top), gather_rows(logits, top), gather_rows(ok, top)
    keep_index, keep = non_max_suppression(boxes, logits, int(post_nms_top_k), nms_iou, valid=ok)
    out_boxes = ops.where(keep[..., None], gather_rows(boxes, keep_index), -1.0)
    scores = ops.where(keep, ops.sigmoid(gather_rows(logits, keep_index)), 0.0)
    return {"boxes": out_boxes, "scores": scores, "valid": keep}


@keras.saving.register_keras_serializable(package="microrepro")
class ProposalLayer(keras.layers.Layer):
    """Decode RPN outputs into a fixed number of proposals (optionally merged with others).

    Args:
        image_size: ``(height, width)`` px of the (fixed-size) input images.
        pre_nms_top_k: candidates entering NMS per image.
        post_nms_top_k: output slots per image.
        nms_iou: NMS threshold.
        min_size: smallest proposal side in px.
        box_weights: RPN box coding weights.

    Call:
        ``anchors`` ``(A, 4)`` or ``(B, A, 4)`` xyxy px, ``logits`` ``(B, A)``, ``deltas``
        ``(B, A, 4)``; optional ``extra_boxes`` ``(B, E, 4)`` with ``extra_scores`` ``(B, E)``
        probabilities and ``extra_valid`` ``(B, E)`` (e.g. a previous ProposalLayer's output)
        that compete in the same top-k and NMS. Returns the dict of :func:`select_proposals`.
    """

    def __init__(
        self,
        image_size,
        pre_nms_top_k: int = 6000,
        post_nms_top_k: int = 300,
        nms_iou: float = 0.7,
        min_size: float = 0.0,
        box_weights=RPN_BOX_WEIGHTS,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.pre_nms_top_k = int(pre_nms_top_k)
        self.post_nms_top_k = int(post_nms_top_k)
        self.nms_iou = float(nms_iou)
        self.min_size = float(min_size)
        self.box_weights = tuple(float(w) for w in box_weights)
        self.built = True

    def call(self, anchors, logits, deltas, extra_boxes=None, extra_scores=None, extra_valid=None):
        boxes = decode_proposals(anchors, deltas, self.image_size, self.box_weights)
        logits = ops.cast(logits, "float32")
        valid = None
        if extra_boxes is not None:
            if extra_scores is None:
                raise ValueError("extra_boxes need extra_scores (probabilities) to be ranked")
            extra_boxes = ops.cast(extra_boxes, "float32")
            if extra_valid is None:
                extra_valid = ops.greater_equal(ops.max(extra_boxes, axis=-1), 0.0)
            valid = ops.concatenate([ops.ones_like(logits, dtype="bool"), ops.cast(extra_valid, "bool")], axis=1)
            boxes = ops.concatenate([boxes, extra_boxes], axis=1)
            logits = ops.concatenate([logits, _probability_to_logit(extra_scores)], axis=1)
        return select_proposals(
            boxes, logits, valid, self.pre_nms_top_k, self.post_nms_top_k, self.nms_iou, self.min_size
        )

    def get_config(self):
        names = ("image_size", "pre_nms_top_k", "post_nms_top_k", "nms_iou", "min_size", "box_weights")
        return constructor_config(self, names, super().get_config())
