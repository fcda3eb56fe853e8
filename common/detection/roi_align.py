"""ROI Align (bilinear) and ROI pooling (quantised max) over one feature map, in ``keras.ops``.

Coordinates. Boxes come in image pixels, xyxy. A feature cell ``j`` of a stride-``s`` map
covers image pixels ``[j s, (j + 1) s)``, so its centre is at continuous feature coordinate
``j + 0.5``. With ``aligned=True`` (detectron2 / torchvision ``aligned=True``) a box edge
``x`` maps to the sampling coordinate ``x * spatial_scale - 0.5``, in which cell ``j`` sits at
the integer ``j``; bilinear interpolation then reads cells ``floor(u)`` and ``floor(u) + 1``.

Sampling. Each of the ``P x P`` output bins takes ``S x S`` regularly spaced samples
(``S = sampling_ratio``) at the bin's sub-cell centres and averages them (``reduce="mean"``,
Mask R-CNN's ROI Align) or takes their maximum (``reduce="max"``: the TF Object Detection API
"crop_and_resize to 2P then 2x2 max-pool" used by its Faster R-CNN).
Along x, with ``u1 = x1 * scale - 0.5`` and ``w = (x2 - x1) * scale``, sample ``q = p S + s``
(``q = 0 .. PS - 1``) lies at ``u_q = u1 + (q + 0.5) w / (P S)``.

Equivalence with ``tf.image.crop_and_resize`` (derivation, tested in the unit tests).
``crop_and_resize(image, [y1n, x1n, y2n, x2n], crop_size=(PS, PS))`` samples pixel coordinate
``u_q = x1n (W - 1) + q (x2n - x1n) (W - 1) / (PS - 1)`` for ``q = 0 .. PS - 1``, reads 0
outside ``[0, W - 1]`` and interpolates bilinearly inside. Matching our ``u_q`` term by term
(first point and step) gives
    ``x1n = (u1 + w / (2 P S)) / (W - 1)`` and ``x2n = (u1 + w - w / (2 P S)) / (W - 1)``
(same for y with H), i.e. the normalised box whose corners are the first and last sample
points. ``reduce="mean"`` then equals ``avg_pool(S x S, stride S)`` of that crop and
``reduce="max"`` equals ``max_pool(S x S, stride S)``, provided ``boundary="zero"`` (which is
crop_and_resize's ``extrapolation_value=0``). The default ``boundary="clamp"`` differs only for
samples outside ``[0, W - 1]``: like torchvision it reads the border cell for samples in
``[-1, W]`` and 0 beyond, which keeps objects at the image border from fading.

Reference:
    He et al., Mask R-CNN, Sec. 3 (RoIAlign); Girshick, Fast R-CNN, Sec. 2.1 (RoI pooling).
"""

from __future__ import annotations

from keras import ops

_BOUNDARIES = ("clamp", "zero")
_REDUCTIONS = ("mean", "max")


def _check_common(features, boxes, output_size, sampling_ratio):
    if len(features.shape) != 4:
        raise ValueError(f"features must be (B, H, W, C), got shape {tuple(features.shape)}")
    if len(boxes.shape) != 3 or boxes.shape[-1] != 4:
        raise ValueError(f"boxes must be (B, R, 4) xyxy, got shape {tuple(boxes.shape)}")
    if int(output_size) <= 0 or int(sampling_ratio) <= 0:
        raise ValueError(f"output_size and sampling_ratio must be positive, got {output_size}, {sampling_ratio}")


def _gather_cells(flat_features, batch_offsets, rows, cols, width):
    """features[b, rows, cols] for a (B, R, Q, Q) grid: rows (B, R, Q, 1), cols (B, R, 1, Q)."""
    index = batch_offsets + rows * width + cols
    return ops.take(flat_features, index, axis=0)  # (B, R, Q, Q, C)


def _flatten(features):
    shape = ops.shape(features)
    height, width, channels = shape[1], shape[2], features.shape[3]
    flat = ops.reshape(features, (-1, channels))
    batch_offsets = ops.reshape(ops.arange(shape[0], dtype="int32") * (height * width), (-1, 1, 1, 1))
    return flat, batch_offsets, height, width


def roi_align(
    features,
    boxes,
    output_size: int = 7,
    spatial_scale: float = 1.0 / 16.0,
    sampling_ratio: int = 2,
    aligned: bool = True,
    boundary: str = "clamp",
    reduce: str = "mean",
):
    """Bilinear ROI Align of per-image boxes on a feature map.

    Args:
        features: ``(B, H, W, C)`` float.
        boxes: ``(B, R, 4)`` xyxy in image pixels (treated as constants: no gradient).
        output_size: P, bins per side.
        spatial_scale: feature cells per image pixel (1 / stride).
        sampling_ratio: S, samples per bin side.
        aligned: shift by half a cell so that cell centres are pixel-exact (see module doc);
            False is the original Mask R-CNN variant (no shift, box size at least one cell).
        boundary: "clamp" (torchvision) or "zero" (``tf.image.crop_and_resize``), see module doc.
        reduce: "mean" (ROI Align) or "max" (TF Object Detection API crop-and-max-pool).

    Returns:
        ``(B, R, P, P, C)``, same dtype as ``features``.
    """
    _check_common(features, boxes, output_size, sampling_ratio)
    if boundary not in _BOUNDARIES:
        raise ValueError(f"boundary must be one of {_BOUNDARIES}, got {boundary!r}")
    if reduce not in _REDUCTIONS:
        raise ValueError(f"reduce must be one of {_REDUCTIONS}, got {reduce!r}")
    p, s = int(output_size), int(sampling_ratio)
    q = p * s
    dtype = features.dtype
    boxes = ops.stop_gradient(ops.cast(boxes, "float32")) * float(spatial_scale)
    flat, batch_offsets, height, width = _flatten(features)
    h_f = ops.cast(height, "float32")
    w_f = ops.cast(width, "float32")

    shift = 0.5 if aligned else 0.0
    x1, y1 = boxes[..., 0] - shift, boxes[..., 1] - shift
    roi_w, roi_h = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
    if not aligned:
        roi_w, roi_h = ops.maximum(roi_w, 1.0), ops.maximum(roi_h, 1.0)
    steps = (ops.arange(q, dtype="float32") + 0.5) / q  # (Q,)
    xs = x1[..., None] + steps * roi_w[..., None]  # (B, R, Q)
    ys = y1[..., None] + steps * roi_h[..., None]

    def axis_terms(u, size_f):
        if boundary == "zero":
            inside = ops.logical_and(u >= 0.0, u <= size_f - 1.0)
        else:
            inside = ops.logical_and(u >= -1.0, u <= size_f)
        u = ops.clip(u, 0.0, size_f - 1.0)
        low = ops.floor(u)
        frac = u - low
        low_i = ops.cast(low, "int32")
        high_i = ops.minimum(low_i + 1, ops.cast(size_f, "int32") - 1)
        return low_i, high_i, frac, ops.cast(inside, "float32")

    y_lo, y_hi, fy, in_y = axis_terms(ys, h_f)
    x_lo, x_hi, fx, in_x = axis_terms(xs, w_f)
    rows_lo, rows_hi = y_lo[..., :, None], y_hi[..., :, None]
    cols_lo, cols_hi = x_lo[..., None, :], x_hi[..., None, :]
    wy = fy[..., :, None, None]
    wx = fx[..., None, :, None]
    value = (
        _gather_cells(flat, batch_offsets, rows_lo, cols_lo, width) * ((1.0 - wy) * (1.0 - wx))
        + _gather_cells(flat, batch_offsets, rows_lo, cols_hi, width) * ((1.0 - wy) * wx)
        + _gather_cells(flat, batch_offsets, rows_hi, cols_lo, width) * (wy * (1.0 - wx))
        + _gather_cells(flat, batch_offsets, rows_hi, cols_hi, width) * (wy * wx)
    )
    value = value * (in_y[..., :, None, None] * in_x[..., None, :, None])
    channels = features.shape[3]
    value = ops.reshape(value, (-1, boxes.shape[1], p, s, p, s, channels))
    pooled = ops.mean(value, axis=(3, 5)) if reduce == "mean" else ops.max(value, axis=(3, 5))
    return ops.cast(pooled, dtype)


def roi_pool(features, boxes, output_size: int = 7, spatial_scale: float = 1.0 / 16.0, sampling_ratio: int = 4):
    """Fast R-CNN ROI max pooling (quantised bins), with the bin contents sampled on a grid.

    Follows the Caffe/torchvision ``roi_pool`` arithmetic: the box is rounded to feature cells
    ``[round(x1 s), round(x2 s)]`` (inclusive, at least one cell), split into P bins of
    ``floor(p w / P) .. ceil((p + 1) w / P)`` cells, each bin is max-pooled, empty bins give 0.
    The bin edges are computed in integers, exactly: XLA (JAX, and TensorFlow with
    ``jit_compile``) turns a division by a constant into a multiplication by its rounded
    reciprocal, so in floats ``ceil(7 * (3 / 7))`` became 4 under JAX and 3 under TensorFlow.
    (torchvision's float32 ``bin_size`` overshoots the same way in a few cases, e.g. P = 7 and a
    31-cell ROI, where its last bin reaches one cell past the ROI; the exact edges do not.)
    To stay fixed-shape, each bin reads ``sampling_ratio`` evenly spread cells per side: the
    result is EXACT whenever ``sampling_ratio`` >= the largest bin extent in cells
    (``ceil(roi_cells / P) + 1``), else a sub-sampled max.

    Args:
        features: ``(B, H, W, C)``.
        boxes: ``(B, R, 4)`` xyxy image px (no gradient).
        output_size: P.
        spatial_scale: 1 / stride.
        sampling_ratio: cells read per bin side.

    Returns:
        ``(B, R, P, P, C)``.

    Reference:
        Girshick, Fast R-CNN, ICCV 2015, Sec. 2.1.
    """
    _check_common(features, boxes, output_size, sampling_ratio)
    p, s = int(output_size), int(sampling_ratio)
    boxes = ops.stop_gradient(ops.cast(boxes, "float32")) * float(spatial_scale)
    flat, batch_offsets, height, width = _flatten(features)

    def axis_terms(start, end, size):
        # C round() is half away from zero; floor(x + 0.5) matches it for x >= -0.5 (and ops.round
        # is half-to-even, which would not).
        start = ops.cast(ops.floor(start + 0.5), "int32")
        end = ops.cast(ops.floor(end + 0.5), "int32")
        length = ops.maximum(end - start + 1, 1)[..., None]  # (B, R, 1) cells
        bins = ops.arange(p, dtype="int32")
        lo = ops.floor_divide(bins * length, p) + start[..., None]  # floor(p_i w / P), (B, R, P)
        hi = ops.floor_divide((bins + 1) * length + (p - 1), p) + start[..., None]  # ceil((p_i + 1) w / P)
        lo, hi = ops.clip(lo, 0, size), ops.clip(hi, 0, size)
        extent = hi - lo
        k = ops.arange(s, dtype="int32")
        cells = lo[..., None] + ops.floor_divide(k * ops.maximum(extent, 0)[..., None], s)  # (B, R, P, S)
        cells = ops.clip(cells, 0, size - 1)
        return ops.cast(ops.reshape(cells, (-1, boxes.shape[1], p * s)), "int32"), extent > 0

    rows, rows_ok = axis_terms(boxes[..., 1], boxes[..., 3], height)
    cols, cols_ok = axis_terms(boxes[..., 0], boxes[..., 2], width)
    value = _gather_cells(flat, batch_offsets, rows[..., :, None], cols[..., None, :], width)
    channels = features.shape[3]
    value = ops.reshape(value, (-1, boxes.shape[1], p, s, p, s, channels))
    pooled = ops.max(value, axis=(3, 5))
    non_empty = ops.logical_and(rows_ok[..., :, None], cols_ok[..., None, :])[..., None]
    return ops.where(non_empty, pooled, ops.zeros_like(pooled))
