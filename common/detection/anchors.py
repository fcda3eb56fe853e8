"""Anchors for ONE feature map of a given stride (the single-level Faster R-CNN RPN).

Why not ``keras_hub.layers.AnchorGenerator``: it is built for feature pyramids. Its sizes are
``int(2**level * anchor_size * 2**(i / num_scales))`` (geometric, truncated to integers, tied to
a power-of-two stride), its half-sizes are rounded to integers and its centres sit on the cell
corners ``i * stride``. The papers here need arbitrary size lists on one map (spines: 16-32 px
at stride 16; mitos_rcnn: one 64 px anchor at stride 4 or 8) and centred cells, so anchors are
generated here with ``keras.ops``. For the cases it can express (offset 0, integer half sizes)
the unit tests check that both give the same boxes, in the same order.
"""

from __future__ import annotations

from collections.abc import Sequence

from keras import ops


def _as_positive_list(values, name: str) -> list[float]:
    values = [float(v) for v in (values if isinstance(values, Sequence) else [values])]
    if not values or min(values) <= 0:
        raise ValueError(f"anchor {name} must be a non-empty list of positive numbers, got {values}")
    return values


def num_anchors_per_location(sizes: Sequence[float], ratios: Sequence[float]) -> int:
    """``len(sizes) * len(ratios)``: the anchors at each feature-map cell."""
    return len(_as_positive_list(sizes, "sizes")) * len(_as_positive_list(ratios, "ratios"))


def base_anchors(sizes: Sequence[float], ratios: Sequence[float]):
    """The ``k = len(ratios) * len(sizes)`` anchors centred on (0, 0).

    Args:
        sizes: square roots of the anchor areas, in pixels.
        ratios: aspect ratios height / width (1.0 = square; 2.0 = twice as tall as wide).

    Returns:
        ``(k, 4)`` float32 xyxy px, ordered ratio-major (for each ratio, every size) like
        ``keras_hub.layers.AnchorGenerator``.
    """
    sizes_t = ops.convert_to_tensor(_as_positive_list(sizes, "sizes"), "float32")
    ratios_t = ops.convert_to_tensor(_as_positive_list(ratios, "ratios"), "float32")
    # Area kept at size**2: h = size * sqrt(r), w = size / sqrt(r).
    heights = ops.reshape(ops.sqrt(ratios_t)[:, None] * sizes_t[None, :], (-1,))
    widths = ops.reshape((1.0 / ops.sqrt(ratios_t))[:, None] * sizes_t[None, :], (-1,))
    return ops.stack([-widths, -heights, widths, heights], axis=1) / 2.0


def generate_anchors(
    feature_height: int,
    feature_width: int,
    stride: float,
    sizes: Sequence[float],
    ratios: Sequence[float] = (1.0,),
    offset: float = 0.5,
):
    """Anchors of every cell of one ``feature_height x feature_width`` map.

    Cell (i, j) is centred on image pixel coordinates ``((j + offset) * stride, (i + offset) *
    stride)``; ``offset=0.5`` puts it in the middle of the ``stride x stride`` patch the cell
    covers (detectron2 uses 0.0, the Caffe/py-faster-rcnn anchors about 0.5).

    Args:
        feature_height: rows of the feature map.
        feature_width: columns of the feature map.
        stride: image pixels per feature cell.
        sizes: anchor sizes in px (sqrt of the area).
        ratios: aspect ratios height / width.
        offset: centre offset in cells.

    Returns:
        ``(feature_height * feature_width * k, 4)`` float32 xyxy px (not clipped), ordered
        row, column, then the ``k`` anchors of :func:`base_anchors` -- the order in which
        :class:`~microrepro.common.detection.rpn.RPNHead` flattens its outputs.

    Reference:
        Ren et al., Faster R-CNN, Sec. 3.1.1 (anchors).
    """
    if int(feature_height) <= 0 or int(feature_width) <= 0:
        raise ValueError(f"feature map size must be positive, got {feature_height}x{feature_width}")
    if stride <= 0:
        raise ValueError(f"stride must be positive, got {stride}")
    base = base_anchors(sizes, ratios)
    cy = (ops.arange(int(feature_height), dtype="float32") + offset) * float(stride)
    cx = (ops.arange(int(feature_width), dtype="float32") + offset) * float(stride)
    cy_grid, cx_grid = ops.meshgrid(cy, cx, indexing="ij")
    centres = ops.stack([cx_grid, cy_grid, cx_grid, cy_grid], axis=-1)
    anchors = ops.reshape(centres, (-1, 1, 4)) + ops.reshape(base, (1, -1, 4))
    return ops.reshape(anchors, (-1, 4))
