"""Seeded, annotation-aware augmentations for ``tf.data`` pipelines.

Every transform is written once, on TensorFlow tensors, and moves all keys of an example
together, so an image, its masks, weight maps, boxes and points never drift apart.

An *example* is a dict of tensors:

- ``image``: ``(H, W, C)`` float32 in [0, 1] (required; the only key photometric changes touch);
- ``mask``: ``(H, W, K)`` float32 targets (binary masks, labels, density maps), nearest
  interpolation by default;
- ``weights``: ``(H, W, 1)`` float32 loss-weight maps, bilinear by default;
- any other dense map named in ``AugmentConfig.interpolation`` (e.g. ``{"density": "bilinear"}``);
- ``boxes``: ``(N, 4)`` float32 ``[x1, y1, x2, y2]`` pixels; ``points``: ``(N, 2)`` float32
  ``[x, y]`` pixels; ``labels``: ``(N,)`` int32 paired with ``boxes`` (else ``points``).
  ``N`` may be 0. Rows that are all -1 are padding: they are ignored and stay -1. A row whose
  object leaves the image is turned into padding (all -1, label -1).
- other keys (ids, counts...) pass through unchanged.

Coordinate conventions (the suite's, see ``datasets/base.py``): box edges are continuous
coordinates where pixel column ``j`` spans ``[j, j + 1)`` (so ``x2`` is exclusive), while a
point is a pixel *index*: a point ``[j, i]`` sits on the centre of pixel row ``i``, column ``j``.
Hence a horizontal flip maps box edges ``x -> W - x`` but points ``x -> W - 1 - x``, and a point
that sits on a bright pixel still sits on it after any flip or 90° rotation.

Randomness is stateless: ``augment(example, config, seed)`` with a ``(2,)`` integer seed always
gives the same result, and each transform draws from its own sub-seed, so switching one
transform on or off does not change what the others do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import tensorflow as tf

# Interpolation used for dense keys unless AugmentConfig.interpolation says otherwise.
# Masks are labels, so blending two labels would invent a third: nearest.
DEFAULT_INTERPOLATION = {"image": "bilinear", "mask": "nearest", "weights": "bilinear"}
INTERPOLATIONS = ("nearest", "bilinear")
FILL_MODES = ("constant", "reflect", "nearest")
ANNOTATION_KEYS = ("boxes", "points")

# One sub-seed slot per random draw; fixed positions keep draws independent of which
# transforms are switched on.
_SEED_SLOTS = {
    "flip_horizontal": 0,
    "flip_vertical": 1,
    "rot90": 2,
    "rotation": 3,
    "scale": 4,
    "elastic": 5,
    "brightness": 6,
    "contrast": 7,
    "noise": 8,
}
_N_SEEDS = 12


@dataclass
class AugmentConfig:
    """Which augmentations to apply; the defaults apply none (``augment`` is then the identity).

    Attributes:
        flip_horizontal: mirror left-right with probability 1/2.
        flip_vertical: mirror up-down with probability 1/2.
        rot90: rotate by a uniformly drawn multiple of 90° (k in {0, 1, 2, 3}); exact, no
            interpolation. Non-square images swap height and width for odd k.
        rotation_degrees: rotate by an angle drawn uniformly in
            ``[-rotation_degrees, rotation_degrees]`` about the image centre (positive =
            counter-clockwise on screen), keeping the image size; corners are filled per
            ``fill_mode``. Points rotate exactly; boxes per ``box_rotation``.
        scale_range: ``(low, high)``: zoom by a factor drawn uniformly in that range about the
            image centre, keeping the image size (> 1 enlarges objects). This is the per-image
            form of multi-scale training; changing the network input size per batch (YOLO)
            is a batch-level resize outside this module.
        elastic_alpha: Simard et al. 2003 elastic deformation strength (pixels per unit of the
            smoothed field); 0 disables it.
        elastic_sigma: standard deviation (pixels) of the Gaussian that smooths the random
            displacement field.
        brightness: add a delta drawn uniformly in ``[-brightness, brightness]`` to the image.
        contrast: ``(low, high)``: scale each channel's deviation from its mean by a factor
            drawn in that range.
        gaussian_noise_std: add N(0, std²) noise to every image pixel.
        box_rotation: how boxes follow an arbitrary rotation/zoom. ``"centre"`` (default)
            rotates the box centre exactly and keeps the box size (scaled by the zoom): right
            for roughly round objects such as cells, spines and mitoses, whose box does not grow
            when they turn. ``"corners"`` takes the axis-aligned box around the four rotated
            corners (always contains the object, but inflates it by up to √2).
        fill_mode: how pixels that come from outside the image are filled by rotation, zoom and
            elastic warps: ``"constant"`` (0 in every dense key, default: never shows an object
            that carries no annotation), ``"reflect"`` or ``"nearest"`` (edge value).
        interpolation: per dense key, ``"nearest"`` or ``"bilinear"``, overriding
            ``DEFAULT_INTERPOLATION`` and registering extra dense keys.

    Elastic deformation and annotations: image, masks and weights are resampled with the same
    field; a point moves to where the inverse field sends it (found by a few Newton
    iterations); a box keeps its size and its centre moves like a point.

    Reference:
        P. Y. Simard, D. Steinkraus, J. C. Platt, "Best practices for convolutional neural
        networks applied to visual document analysis", ICDAR 2003, Sec. 2 (elastic distortion);
        cell_counting paper Sec. 4.1 (rotations, Gaussian noise, brightness, elastic).
    """

    flip_horizontal: bool = False
    flip_vertical: bool = False
    rot90: bool = False
    rotation_degrees: float = 0.0
    scale_range: tuple[float, float] | None = None
    elastic_alpha: float = 0.0
    elastic_sigma: float = 0.0
    brightness: float = 0.0
    contrast: tuple[float, float] | None = None
    gaussian_noise_std: float = 0.0
    box_rotation: Literal["centre", "corners"] = "centre"
    fill_mode: Literal["constant", "reflect", "nearest"] = "constant"
    interpolation: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("rotation_degrees", "elastic_alpha", "elastic_sigma", "brightness", "gaussian_noise_std"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0 or not math.isfinite(value):
                raise ValueError(f"AugmentConfig.{name} must be a finite number >= 0, got {value!r}")
        if self.scale_range is not None:
            low, high = _pair(self.scale_range, "scale_range")
            if not 0 < low <= high:
                raise ValueError(f"AugmentConfig.scale_range must satisfy 0 < low <= high, got {self.scale_range!r}")
            self.scale_range = (low, high)
        if self.contrast is not None:
            low, high = _pair(self.contrast, "contrast")
            if not 0 <= low <= high:
                raise ValueError(f"AugmentConfig.contrast must satisfy 0 <= low <= high, got {self.contrast!r}")
            self.contrast = (low, high)
        if self.elastic_alpha > 0 and self.elastic_sigma <= 0:
            raise ValueError(
                "AugmentConfig.elastic_sigma must be > 0 when elastic_alpha > 0 (Simard smooths the field)"
            )
        if self.box_rotation not in ("centre", "corners"):
            raise ValueError(f"AugmentConfig.box_rotation must be 'centre' or 'corners', got {self.box_rotation!r}")
        if self.fill_mode not in FILL_MODES:
            raise ValueError(f"AugmentConfig.fill_mode must be one of {FILL_MODES}, got {self.fill_mode!r}")
        for key, value in dict(self.interpolation).items():
            if value not in INTERPOLATIONS:
                raise ValueError(f"AugmentConfig.interpolation[{key!r}] must be one of {INTERPOLATIONS}, got {value!r}")
            if key in ANNOTATION_KEYS or key == "labels":
                raise ValueError(f"AugmentConfig.interpolation: {key!r} is an annotation key, not a dense map")

    @property
    def geometric(self) -> bool:
        """True when some transform moves pixels (so annotations must follow)."""
        return bool(
            self.flip_horizontal
            or self.flip_vertical
            or self.rot90
            or self.rotation_degrees
            or self.scale_range
            or self.elastic_alpha
        )

    @property
    def warps(self) -> bool:
        """True when an interpolating warp (rotation, zoom, elastic) is enabled."""
        return bool(self.rotation_degrees or self.scale_range or self.elastic_alpha)


def _pair(value, name: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"AugmentConfig.{name} must be a pair (low, high), got {value!r}") from None
    return low, high


# ----------------------------------------------------------------------------------------------
# example bookkeeping


def dense_keys(example: dict, interpolation: dict | None = None) -> dict[str, str]:
    """The dense keys of ``example`` and their interpolation (``image`` always first).

    Raises:
        ValueError: ``image`` is missing, or a rank-3 tensor has no registered interpolation
            (it would otherwise silently not follow the geometry).
    """
    if "image" not in example:
        raise ValueError(f"an example needs an 'image' key, got keys {sorted(example)}")
    table = {**DEFAULT_INTERPOLATION, **dict(interpolation or {})}
    out = {}
    for key, value in example.items():
        if key in table:
            out[key] = table[key]
        elif key not in ANNOTATION_KEYS and key != "labels" and getattr(value, "shape", None) is not None:
            if tf.TensorShape(value.shape).rank == 3:
                raise ValueError(
                    f"example key {key!r} looks like a dense (H, W, K) map but has no interpolation; "
                    "add it to AugmentConfig.interpolation as 'nearest' or 'bilinear'"
                )
    return out


def height_width(tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """int32 height and width of an ``(H, W, C)`` tensor (one op, not two slices)."""
    height, width, _ = tf.unstack(tf.shape(tensor), num=3)
    return height, width


def _valid_rows(rows: tf.Tensor) -> tf.Tensor:
    """``(N,)`` bool: rows that are not padding (padding = every value -1)."""
    return tf.logical_not(tf.reduce_all(tf.equal(rows, -1.0), axis=-1))


def _label_owner(example: dict) -> str | None:
    for key in ANNOTATION_KEYS:
        if key in example:
            return key
    return None


def apply_geometric(example: dict, dense_fn, points_fn, boxes_fn, interpolation: dict | None = None) -> dict:
    """Apply one geometric transform to every key; re-mark padding and dropped rows with -1.

    The building block of every transform here (and of ``pipeline.random_crop``), so padding,
    dropping and label bookkeeping live in one place.

    Args:
        example: dict as in the module docstring.
        dense_fn: ``(tensor (H, W, K), interpolation) -> (h, w, K)`` for every dense key.
        points_fn: ``(points (N, 2), H, W) -> (points (N, 2), keep (N,) bool or None)``.
        boxes_fn: ``(boxes (N, 4), H, W) -> (boxes (N, 4), keep (N,) bool or None)``;
            ``H, W`` are the input image's int32 height and width.
        interpolation: per-key overrides of ``DEFAULT_INTERPOLATION`` (extra dense keys).

    Returns:
        A new dict: rows that were padding, or that ``keep`` rejects, are all -1 (and their
        ``labels`` -1).
    """
    out = dict(example)
    height, width = height_width(example["image"])
    for key, mode in dense_keys(example, interpolation).items():
        tensor = tf.convert_to_tensor(example[key])
        channels = tensor.shape[-1]
        out[key] = dense_fn(tensor, mode)
        out[key] = tf.ensure_shape(out[key], [None, None, channels])
    valid = {}
    for key, fn in (("points", points_fn), ("boxes", boxes_fn)):
        if key not in example:
            continue
        rows = tf.cast(example[key], tf.float32)
        ok = _valid_rows(rows)
        moved, keep = fn(rows, height, width)
        if keep is not None:
            ok = tf.logical_and(ok, keep)
        out[key] = tf.where(ok[:, None], moved, tf.constant(-1.0, tf.float32))
        valid[key] = ok
    owner = _label_owner(example)
    if "labels" in example and owner is not None:
        labels = tf.convert_to_tensor(example["labels"])
        out["labels"] = tf.where(valid[owner], labels, tf.constant(-1, labels.dtype))
    return out


# ----------------------------------------------------------------------------------------------
# exact transforms: flips and 90° rotations


def flip_horizontal(example: dict, interpolation: dict | None = None) -> dict:
    """Mirror left-right: box edges ``x -> W - x``, points ``x -> W - 1 - x``.

    Args:
        example: dict as in the module docstring (``image`` ``(H, W, C)``, boxes xyxy px...).

    Returns:
        A new dict; e.g. box ``[2, 3, 5, 7]`` on a width-10 image becomes ``[5, 3, 8, 7]``.
    """

    def points(p, height, width):
        w = tf.cast(width, tf.float32)
        x, y = tf.unstack(p, axis=1)
        return tf.stack([w - 1.0 - x, y], axis=1), None

    def boxes(b, height, width):
        w = tf.cast(width, tf.float32)
        x1, y1, x2, y2 = tf.unstack(b, axis=1)
        return tf.stack([w - x2, y1, w - x1, y2], axis=1), None

    return apply_geometric(example, lambda t, mode: tf.reverse(t, axis=[1]), points, boxes, interpolation)


def flip_vertical(example: dict, interpolation: dict | None = None) -> dict:
    """Mirror up-down: box edges ``y -> H - y``, points ``y -> H - 1 - y`` (see ``flip_horizontal``)."""

    def points(p, height, width):
        h = tf.cast(height, tf.float32)
        x, y = tf.unstack(p, axis=1)
        return tf.stack([x, h - 1.0 - y], axis=1), None

    def boxes(b, height, width):
        h = tf.cast(height, tf.float32)
        x1, y1, x2, y2 = tf.unstack(b, axis=1)
        return tf.stack([x1, h - y2, x2, h - y1], axis=1), None

    return apply_geometric(example, lambda t, mode: tf.reverse(t, axis=[0]), points, boxes, interpolation)


def transpose(example: dict, interpolation: dict | None = None) -> dict:
    """Swap rows and columns (``(H, W, C) -> (W, H, C)``; ``[x, y] -> [y, x]``)."""

    def points(p, height, width):
        return tf.reverse(p, axis=[1]), None

    def boxes(b, height, width):
        return tf.gather(b, [1, 0, 3, 2], axis=1), None

    return apply_geometric(example, lambda t, mode: tf.transpose(t, [1, 0, 2]), points, boxes, interpolation)


def rot90(example: dict, k, interpolation: dict | None = None) -> dict:
    """Rotate by ``k`` × 90° counter-clockwise on screen, like ``tf.image.rot90``; exact.

    For ``k = 1`` pixel ``(row r, col c)`` of a width-``W`` image goes to ``(row W - 1 - c, col r)``,
    so point ``[x, y]`` becomes ``[y, W - 1 - x]`` and box ``[x1, y1, x2, y2]`` becomes
    ``[y1, W - x2, y2, W - x1]``.

    Args:
        example: dict as in the module docstring.
        k: python int or int32 scalar tensor (taken modulo 4).
        interpolation: extra dense keys to move (as in ``AugmentConfig.interpolation``).
    """
    branches = [
        lambda: {key: tf.convert_to_tensor(value) for key, value in example.items()},
        lambda: flip_vertical(transpose(example, interpolation), interpolation),
        lambda: flip_vertical(flip_horizontal(example, interpolation), interpolation),
        lambda: flip_horizontal(transpose(example, interpolation), interpolation),
    ]
    if isinstance(k, int):
        return branches[k % 4]()
    k = tf.math.floormod(tf.cast(k, tf.int32), 4)
    return tf.switch_case(k, branches)


# ----------------------------------------------------------------------------------------------
# interpolating warps: rotation, zoom, elastic


def _reflect(coord: tf.Tensor, size: tf.Tensor) -> tf.Tensor:
    """Half-sample symmetric reflection of a pixel-index coordinate into ``[-0.5, size - 0.5)``."""
    period = 2.0 * size
    t = tf.math.floormod(coord + 0.5, period)
    t = tf.where(t >= size, period - t, t)
    return t - 0.5


def sample(
    image: tf.Tensor, xs: tf.Tensor, ys: tf.Tensor, interpolation: str = "bilinear", fill_mode: str = "constant"
) -> tf.Tensor:
    """Read ``image`` at fractional pixel-index positions (a dense remap).

    Args:
        image: ``(H, W, C)`` tensor.
        xs, ys: ``(h, w)`` float32 source column/row (pixel-index convention) for each output pixel.
        interpolation: ``"nearest"`` or ``"bilinear"``. Integer positions give the source values
            exactly with either.
        fill_mode: positions outside the image read 0 (``"constant"``), the mirrored pixel
            (``"reflect"``) or the edge pixel (``"nearest"``).

    Returns:
        ``(h, w, C)`` tensor of ``image``'s dtype.
    """
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
    if fill_mode not in FILL_MODES:
        raise ValueError(f"fill_mode must be one of {FILL_MODES}, got {fill_mode!r}")
    dtype = image.dtype
    height, width = height_width(image)
    fh, fw = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    flat = tf.reshape(tf.cast(image, tf.float32), [height * width, -1])
    if fill_mode == "reflect":
        xs, ys = _reflect(xs, fw), _reflect(ys, fh)
    elif fill_mode == "nearest":
        xs, ys = tf.clip_by_value(xs, 0.0, fw - 1.0), tf.clip_by_value(ys, 0.0, fh - 1.0)

    if interpolation == "nearest":
        # floor(x + 0.5), not tf.round: banker's rounding would send 0.5 and 1.5 both to even.
        ix = tf.cast(tf.floor(xs + 0.5), tf.int32)[None]
        iy = tf.cast(tf.floor(ys + 0.5), tf.int32)[None]
        weights = tf.ones_like(xs)[None]
    else:
        # The four neighbours in one gather: (4, h, w) indices and weights. At integer positions
        # the weights are exactly (1, 0, 0, 0), so the source value comes back unchanged.
        x0, y0 = tf.floor(xs), tf.floor(ys)
        fx, fy = xs - x0, ys - y0
        x0, y0 = tf.cast(x0, tf.int32), tf.cast(y0, tf.int32)
        ix = tf.stack([x0, x0 + 1, x0, x0 + 1])
        iy = tf.stack([y0, y0, y0 + 1, y0 + 1])
        weights = tf.stack([(1.0 - fx) * (1.0 - fy), fx * (1.0 - fy), (1.0 - fx) * fy, fx * fy])
    inside = (ix >= 0) & (ix < width) & (iy >= 0) & (iy < height)
    weights = weights * tf.cast(inside, tf.float32)
    index = tf.clip_by_value(iy, 0, height - 1) * width + tf.clip_by_value(ix, 0, width - 1)
    out = tf.reduce_sum(tf.gather(flat, index) * weights[..., None], axis=0)
    return tf.cast(out, dtype)


def elastic_displacement(height, width, alpha: float, sigma: float, seed) -> tf.Tensor:
    """Simard's elastic field: uniform(-1, 1) noise, Gaussian-smoothed, times ``alpha``.

    The smoothing is a circular Gaussian convolution done with FFTs, so its cost does not grow
    with ``sigma`` (a direct 6σ-wide kernel took seconds per 512² crop at σ = 20) and the field
    has the same statistics everywhere, borders included.

    Args:
        height, width: field size (ints or int32 scalars).
        alpha: strength in pixels (0 gives an all-zero field).
        sigma: Gaussian standard deviation in pixels (> 0).
        seed: ``(2,)`` int seed.

    Returns:
        ``(H, W, 2)`` float32 displacement ``[dx, dy]``: output pixel ``q`` reads the input at
        ``q + d(q)``.

    Reference:
        Simard et al., ICDAR 2003, Sec. 2.
    """
    if sigma <= 0:
        raise ValueError(f"elastic sigma must be > 0, got {sigma!r}")
    height = tf.cast(height, tf.int32)
    width = tf.cast(width, tf.int32)
    noise = tf.random.stateless_uniform(tf.stack([2, height, width]), seed, minval=-1.0, maxval=1.0)
    # Transfer function of a Gaussian of std sigma: exp(-2 π² σ² f²), f in cycles per pixel.
    rows = tf.range(height)
    freq_y = tf.cast(tf.where(rows <= height // 2, rows, rows - height), tf.float32) / tf.cast(height, tf.float32)
    freq_x = tf.cast(tf.range(width // 2 + 1), tf.float32) / tf.cast(width, tf.float32)
    squared = tf.square(freq_y)[:, None] + tf.square(freq_x)[None, :]
    transfer = tf.exp(-2.0 * math.pi**2 * float(sigma) ** 2 * squared)
    spectrum = tf.signal.rfft2d(noise) * tf.cast(transfer, tf.complex64)[None]
    smoothed = tf.signal.irfft2d(spectrum, fft_length=tf.stack([height, width]))
    return float(alpha) * tf.transpose(smoothed, [1, 2, 0])


def _field_at(field_: tf.Tensor, points: tf.Tensor) -> tf.Tensor:
    """Bilinear read of a ``(H, W, K)`` field at ``(N, 2)`` points, clamped at the border -> ``(N, K)``."""
    xs, ys = tf.unstack(points[None], axis=2)
    return sample(field_, xs, ys, "bilinear", "nearest")[0]


def warp(
    example: dict,
    *,
    angle_degrees=0.0,
    scale=1.0,
    displacement: tf.Tensor | None = None,
    interpolation: dict | None = None,
    fill_mode: str = "constant",
    box_rotation: str = "centre",
    inverse_iterations: int = 3,
) -> dict:
    """Rotate and zoom about the image centre, then deform elastically, in ONE resampling.

    Output pixel ``q`` reads the input at ``A⁻¹(q + d(q))`` where ``A`` rotates by
    ``angle_degrees`` (counter-clockwise on screen) and scales by ``scale`` about the centre and
    ``d`` is ``displacement``. A point ``p`` goes to the ``q`` solving ``q + d(q) = A(p)``
    (Newton iterations; exact when ``d`` = 0, sub-pixel wherever the field does not fold,
    i.e. ``|∇d| < 1``, which holds for the usual Simard settings). Boxes follow
    ``box_rotation`` (see ``AugmentConfig``); under ``d`` their centre moves like a point and
    their size is kept. Points whose new position is off the image, and boxes whose centre is,
    become padding (-1); remaining boxes are clipped to the image.

    Args:
        example: dict as in the module docstring.
        angle_degrees: float or scalar tensor.
        scale: float or scalar tensor (> 1 enlarges the content).
        displacement: ``(H, W, 2)`` field ``[dx, dy]`` in pixels, e.g. ``elastic_displacement``.
        interpolation: per-key overrides of ``DEFAULT_INTERPOLATION``.
        fill_mode: ``"constant"``, ``"reflect"`` or ``"nearest"``.
        box_rotation: ``"centre"`` or ``"corners"``.
        inverse_iterations: Newton iterations for moving points through ``d``.

    Returns:
        A new dict with the same keys and image size.
    """
    if box_rotation not in ("centre", "corners"):
        raise ValueError(f"box_rotation must be 'centre' or 'corners', got {box_rotation!r}")
    image = example["image"]
    height, width = height_width(image)
    fh, fw = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    # The rotation centre in pixel-index coordinates (continuous centre W/2 minus half a pixel).
    cx, cy = (fw - 1.0) / 2.0, (fh - 1.0) / 2.0
    theta = tf.cast(angle_degrees, tf.float32) * (math.pi / 180.0)
    cos, sin = tf.cos(theta), tf.sin(theta)
    scale = tf.cast(scale, tf.float32)

    def forward(x, y):
        # Counter-clockwise on screen with y pointing down.
        dx, dy = x - cx, y - cy
        return cx + scale * (cos * dx + sin * dy), cy + scale * (-sin * dx + cos * dy)

    def inverse(x, y):
        dx, dy = x - cx, y - cy
        return cx + (cos * dx - sin * dy) / scale, cy + (sin * dx + cos * dy) / scale

    jacobian_field = []  # [d, ∂d/∂x, ∂d/∂y] on the grid, built once when points need it

    def through_field(points):
        """Solve q + d(q) = r for each row r of ``points`` (N, 2) by Newton's method.

        The Jacobian I + ∇d uses forward differences of the field, read at q bilinearly along
        with d itself (one read per iteration). Where it is ill-conditioned (the field folds)
        the step falls back to the fixed-point update q <- r - d(q).
        """
        if displacement is None:
            return points
        if not jacobian_field:
            d = displacement
            along_x = tf.concat([d[:, 1:] - d[:, :-1], d[:, -1:] - d[:, -2:-1]], axis=1)
            along_y = tf.concat([d[1:] - d[:-1], d[-1:] - d[-2:-1]], axis=0)
            jacobian_field.append(tf.concat([d, along_x, along_y], axis=-1))
        q = points - _field_at(displacement, points)
        for _ in range(inverse_iterations):
            d_x, d_y, dxx, dyx, dxy, dyy = tf.unstack(_field_at(jacobian_field[0], q), axis=1)
            # J = [[1 + ∂dx/∂x, ∂dx/∂y], [∂dy/∂x, 1 + ∂dy/∂y]]
            a, b, c, e = 1.0 + dxx, dxy, dyx, 1.0 + dyy
            (qx, qy), (px, py) = tf.unstack(q, axis=1), tf.unstack(points, axis=1)
            rx, ry = qx + d_x - px, qy + d_y - py
            det = a * e - b * c
            ok = det > 0.1
            safe = tf.where(ok, det, 1.0)
            newton = q - tf.stack([(e * rx - b * ry) / safe, (a * ry - c * rx) / safe], axis=1)
            q = tf.where(ok[:, None], newton, points - tf.stack([d_x, d_y], axis=1))
        return q

    grid = []  # the source positions, computed once and shared by every dense key

    def dense(tensor, mode):
        if not grid:
            ys, xs = tf.meshgrid(tf.range(fh), tf.range(fw), indexing="ij")
            if displacement is not None:
                dx, dy = tf.unstack(displacement, axis=-1)
                xs, ys = xs + dx, ys + dy
            grid.extend(inverse(xs, ys))
        return sample(tensor, grid[0], grid[1], mode, fill_mode)

    def points_fn(p, h, w):
        x, y = forward(*tf.unstack(p, axis=1))
        q = through_field(tf.stack([x, y], axis=1))
        qx, qy = tf.unstack(q, axis=1)
        keep = (qx >= -0.5) & (qx < fw - 0.5) & (qy >= -0.5) & (qy < fh - 0.5)
        return q, keep

    def boxes_fn(b, h, w):
        # Box edges are continuous coordinates; the centre as a pixel index is edge-centre - 0.5.
        x1, y1, x2, y2 = tf.unstack(b, axis=1)
        centre_x = (x1 + x2) / 2.0 - 0.5
        centre_y = (y1 + y2) / 2.0 - 0.5
        if box_rotation == "centre":
            half_w = (x2 - x1) / 2.0 * scale
            half_h = (y2 - y1) / 2.0 * scale
            nx, ny = forward(centre_x, centre_y)
        else:
            corners_x = tf.stack([x1, x2, x2, x1], axis=1) - 0.5
            corners_y = tf.stack([y1, y1, y2, y2], axis=1) - 0.5
            rx, ry = forward(corners_x, corners_y)
            left, right = tf.reduce_min(rx, axis=1), tf.reduce_max(rx, axis=1)
            top, bottom = tf.reduce_min(ry, axis=1), tf.reduce_max(ry, axis=1)
            half_w, half_h = (right - left) / 2.0, (bottom - top) / 2.0
            nx, ny = (left + right) / 2.0, (top + bottom) / 2.0
        qx, qy = tf.unstack(through_field(tf.stack([nx, ny], axis=1)) + 0.5, axis=1)
        keep = (qx >= 0.0) & (qx < fw) & (qy >= 0.0) & (qy < fh)
        boxes = tf.stack([qx - half_w, qy - half_h, qx + half_w, qy + half_h], axis=1)
        return tf.clip_by_value(boxes, 0.0, tf.stack([fw, fh, fw, fh])), keep

    return apply_geometric(example, dense, points_fn, boxes_fn, interpolation)


# ----------------------------------------------------------------------------------------------
# the composed augmentation


def _coin(seed) -> tf.Tensor:
    return tf.random.stateless_uniform([], seed) < 0.5


def augment(example: dict, config: AugmentConfig, seed) -> dict:
    """Apply the enabled augmentations of ``config`` in a fixed order, seeded statelessly.

    Order: horizontal flip, vertical flip, 90° rotation (exact), then rotation + zoom + elastic
    deformation in a single resampling (one interpolation, not three), then brightness,
    contrast and Gaussian noise on ``image`` only, clipped back to [0, 1]. Geometric steps move
    every key consistently (see the module docstring).

    Args:
        example: dict of tensors (``image`` ``(H, W, C)`` float32 in [0, 1], optional ``mask``,
            ``weights``, ``boxes`` ``(N, 4)`` xyxy px, ``points`` ``(N, 2)`` [x, y] px, ``labels``).
        config: which transforms to apply; ``AugmentConfig()`` returns the example unchanged.
        seed: ``(2,)`` int32/int64 tensor or pair; the same seed gives the same output.

    Returns:
        A new dict with the same keys. The image size is kept except that an odd 90° rotation
        swaps height and width of a non-square image.
    """
    if not isinstance(config, AugmentConfig):
        raise ValueError(f"config must be an AugmentConfig, got {type(config).__name__}")
    dense_keys(example, config.interpolation)  # fail early on unregistered dense maps
    seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)
    seed = tf.ensure_shape(tf.reshape(seed, [-1]), [2])
    seeds = tf.random.experimental.stateless_split(seed, num=_N_SEEDS)

    def sub(name):
        return seeds[_SEED_SLOTS[name]]

    extra = config.interpolation

    # One dtype per key, so the branches of tf.cond below agree.
    out = {key: tf.convert_to_tensor(value) for key, value in example.items()}
    for key in list(dense_keys(example, config.interpolation)) + [k for k in ANNOTATION_KEYS if k in out]:
        out[key] = tf.cast(out[key], tf.float32)
    if config.flip_horizontal:
        out = tf.cond(_coin(sub("flip_horizontal")), lambda: flip_horizontal(out, extra), lambda: dict(out))
    if config.flip_vertical:
        out = tf.cond(_coin(sub("flip_vertical")), lambda: flip_vertical(out, extra), lambda: dict(out))
    if config.rot90:
        k = tf.random.stateless_uniform([], sub("rot90"), minval=0, maxval=4, dtype=tf.int32)
        out = rot90(out, k, extra)
    if config.warps:
        angle = 0.0
        if config.rotation_degrees:
            limit = float(config.rotation_degrees)
            angle = tf.random.stateless_uniform([], sub("rotation"), minval=-limit, maxval=limit)
        scale = 1.0
        if config.scale_range:
            low, high = config.scale_range
            scale = tf.random.stateless_uniform([], sub("scale"), minval=low, maxval=high)
        displacement = None
        if config.elastic_alpha:
            height, width = height_width(out["image"])
            displacement = elastic_displacement(
                height, width, config.elastic_alpha, config.elastic_sigma, sub("elastic")
            )
        out = warp(
            out,
            angle_degrees=angle,
            scale=scale,
            displacement=displacement,
            interpolation=config.interpolation,
            fill_mode=config.fill_mode,
            box_rotation=config.box_rotation,
        )
    photometric = False
    image = out["image"]
    if config.brightness:
        image = tf.image.stateless_random_brightness(image, float(config.brightness), sub("brightness"))
        photometric = True
    if config.contrast:
        low, high = config.contrast
        if high > low:
            image = tf.image.stateless_random_contrast(image, low, high, sub("contrast"))
        else:
            image = tf.image.adjust_contrast(image, low)
        photometric = True
    if config.gaussian_noise_std:
        image = image + float(config.gaussian_noise_std) * tf.random.stateless_normal(tf.shape(image), sub("noise"))
        photometric = True
    if photometric:
        image = tf.clip_by_value(image, 0.0, 1.0)
    out["image"] = image
    return out
