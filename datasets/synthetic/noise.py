"""Shared random fields, random shapes and camera models for the synthetic generators.

- Perlin gradient noise and value noise (a smoothed random lattice, SIMCEP's own
  ``texture.m``), and their fractal sums (fBm: octaves, persistence): the textures,
  uneven illumination and "simplex" background noise of the generators;
- randomly perturbed ellipses (low-frequency Fourier perturbation of the radius), the SIMCEP
  shape model, rasterised with sub-pixel accuracy into a local window;
- helpers every generator needs: per-image random streams, SIMCEP's overlap rule, exact targets
  from an instance mask (points inside their objects, boxes), touching instances, shot/read
  noise, JPEG, the returned :class:`~microrepro.datasets.base.Sample`.

Everything is numpy/OpenCV and vectorised; no TensorFlow. Pixel ``(r, c)`` is centred at
``[x, y] = [c, r]`` (as ``datasets/base.mask_to_objects``).
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

from microrepro.datasets.base import Sample

# Perlin noise is evaluated with at most this many samples per lattice period and resized up
# bicubically: the noise is band-limited, so nothing visible is lost and a 1200x1600 field
# costs a few tens of milliseconds instead of a few hundred.
_SAMPLES_PER_PERIOD = 4


def image_rng(seed: int, index: int, salt: int) -> np.random.Generator:
    """The random stream of image ``index`` of a generator run.

    Image ``i`` depends only on ``(seed, i)`` so ``generate(5, s)[:3] == generate(3, s)``;
    ``salt`` keeps two generators with the same seed independent.
    """
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be >= 0, got seed={seed}, index={index}")
    return np.random.default_rng([int(seed), int(index), int(salt)])


def perlin(
    shape: tuple[int, int], period: float, rng: np.random.Generator, stretch: float = 1.0
) -> np.ndarray:
    """Perlin gradient noise.

    Args:
        shape: ``(H, W)`` of the output.
        period: size of one lattice cell in pixels (the noise's dominant wavelength).
        rng: random stream for the lattice gradients.
        stretch: > 1 elongates the noise along x (period ``stretch * period`` along x).

    Returns:
        ``(H, W)`` float32, roughly within ``[-0.7, 0.7]``.

    Reference: K. Perlin, "Improving noise", SIGGRAPH 2002 (quintic fade, unit gradients).
    """
    height, width = int(shape[0]), int(shape[1])
    if height < 1 or width < 1:
        raise ValueError(f"noise shape must be positive, got {shape}")
    if period <= 0 or stretch <= 0:
        raise ValueError(f"noise period and stretch must be > 0, got {period}, {stretch}")
    period_x = period * stretch
    samples = int(max(2, min(_SAMPLES_PER_PERIOD, round(min(period, period_x)))))
    cells_h = int(np.ceil(height / period)) + 1
    cells_w = int(np.ceil(width / period_x)) + 1
    angles = rng.uniform(0.0, 2.0 * np.pi, (cells_h + 1, cells_w + 1)).astype(np.float32)
    gx, gy = np.cos(angles), np.sin(angles)
    # All cells are evaluated at once as a (cells_h, cells_w, samples, samples) block:
    # broadcasting instead of per-pixel gathers.
    f = (np.arange(samples, dtype=np.float32) + 0.5) / np.float32(samples)
    fade = f * f * f * (f * (f * 6.0 - 15.0) + 10.0)
    fx, fy = f[None, None, None, :], f[None, None, :, None]
    u, v = fade[None, None, None, :], fade[None, None, :, None]

    def corner(dy: int, dx: int) -> np.ndarray:
        sl = (slice(dy, cells_h + dy), slice(dx, cells_w + dx))
        return gx[sl][..., None, None] * (fx - dx) + gy[sl][..., None, None] * (fy - dy)

    n00 = corner(0, 0)
    top = n00 + u * (corner(0, 1) - n00)
    n10 = corner(1, 0)
    bottom = n10 + u * (corner(1, 1) - n10)
    block = (top + v * (bottom - top)).transpose(0, 2, 1, 3).reshape(cells_h * samples, cells_w * samples)
    full_h = int(np.ceil(cells_h * period))
    full_w = int(np.ceil(cells_w * period_x))
    if block.shape != (full_h, full_w):
        block = cv2.resize(block, (full_w, full_h), interpolation=cv2.INTER_CUBIC)
    # A random offset inside the first cell keeps lattice points from aligning across calls.
    oy = int(rng.integers(0, max(1, full_h - height + 1)))
    ox = int(rng.integers(0, max(1, full_w - width + 1)))
    return np.ascontiguousarray(block[oy : oy + height, ox : ox + width], dtype=np.float32)


def value_noise(
    shape: tuple[int, int], period: float, rng: np.random.Generator, stretch: float = 1.0
) -> np.ndarray:
    """Value noise: uniform random values on a lattice of ``period`` px, 3x3-smoothed and
    resized bicubically (SIMCEP ``texture.m``). Returns ``(H, W)`` float32 around 0.

    Reference: Lehmussola et al., IEEE TMI 2007, Sec. II-B (Perlin-style texture).
    """
    height, width = int(shape[0]), int(shape[1])
    if height < 1 or width < 1:
        raise ValueError(f"noise shape must be positive, got {shape}")
    if period <= 0 or stretch <= 0:
        raise ValueError(f"noise period and stretch must be > 0, got {period}, {stretch}")
    cells_h = int(np.ceil(height / period)) + 3
    cells_w = int(np.ceil(width / (period * stretch))) + 3
    grid = rng.uniform(-0.5, 0.5, (cells_h, cells_w)).astype(np.float32)
    grid = cv2.blur(grid, (3, 3), borderType=cv2.BORDER_REFLECT) * np.float32(3.0)
    full_h = int(np.ceil(cells_h * period))
    full_w = int(np.ceil(cells_w * period * stretch))
    block = cv2.resize(grid, (full_w, full_h), interpolation=cv2.INTER_CUBIC)
    oy = int(rng.integers(0, max(1, full_h - height + 1)))
    ox = int(rng.integers(0, max(1, full_w - width + 1)))
    return np.ascontiguousarray(block[oy : oy + height, ox : ox + width])


def fractal_noise(
    shape: tuple[int, int],
    rng: np.random.Generator,
    base_period: float = 32.0,
    octaves: int = 4,
    persistence: float = 0.5,
    lacunarity: float = 2.0,
    stretch: float = 1.0,
    kind: str = "perlin",
) -> np.ndarray:
    """Fractal (fBm) noise: ``sum_k persistence**k * noise(period / lacunarity**k)``.

    Args:
        shape: ``(H, W)`` of the output.
        rng: random stream.
        base_period: period of the coarsest octave in pixels.
        octaves: number of octaves (>= 1); SIMCEP's texture "octaves".
        persistence: amplitude ratio between successive octaves (SIMCEP's "persistence",
            high = rough texture, low = smooth).
        lacunarity: frequency ratio between successive octaves.
        stretch: > 1 elongates the noise along x (fibrous stroma, tissue streaks); rotate the
            result yourself for other directions.
        kind: ``"perlin"`` (gradient noise) or ``"value"`` (a smoothed random grid resized
            bicubically: SIMCEP's own ``texture.m`` model, ~20x cheaper).

    Returns:
        ``(H, W)`` float32 with zero mean and unit standard deviation (a constant field for
        degenerate sizes is returned as zeros).
    """
    if octaves < 1:
        raise ValueError(f"octaves must be >= 1, got {octaves}")
    if stretch <= 0:
        raise ValueError(f"stretch must be > 0, got {stretch}")
    if kind not in ("perlin", "value"):
        raise ValueError(f"noise kind must be 'perlin' or 'value', got {kind!r}")
    layer_fn = perlin if kind == "perlin" else value_noise
    height, width = int(shape[0]), int(shape[1])
    finest = max(float(base_period) / lacunarity ** (octaves - 1), 1.0)
    # Every octave is evaluated on one reduced grid where the finest period still spans
    # _SAMPLES_PER_PERIOD samples, and the sum is resized once: one full-size resize in all.
    factor = max(1.0, finest / _SAMPLES_PER_PERIOD)
    work_h, work_w = max(2, int(np.ceil(height / factor))), max(2, int(np.ceil(width / factor)))
    out = np.zeros((work_h, work_w), np.float32)
    amplitude, period = 1.0, float(base_period)
    for _ in range(octaves):
        out += np.float32(amplitude) * layer_fn((work_h, work_w), max(period / factor, 1.0), rng, stretch)
        amplitude *= persistence
        period = max(period / lacunarity, 1.0)
    if (work_h, work_w) != (height, width):
        out = cv2.resize(out, (width, height), interpolation=cv2.INTER_CUBIC)
    std = float(out.std())
    if std < 1e-12:
        return np.zeros_like(out)
    return ((out - out.mean()) / std).astype(np.float32)


def blob_polygon(
    rng: np.random.Generator,
    radius_x: float,
    radius_y: float,
    angle: float,
    irregularity: float = 0.15,
    harmonics: int = 4,
    vertices: int = 72,
) -> np.ndarray:
    """Boundary of a randomly perturbed ellipse, relative to its centre.

    The radius is ``1 + sum_k a_k cos(k t + phi_k)`` for ``k = 2..harmonics+1`` with
    ``a_k ~ N(0, irregularity / k)``: low-frequency Fourier perturbation keeps the shape
    star-convex around its centre, so the centre is always inside.

    Args:
        rng: random stream.
        radius_x, radius_y: semi-axes in pixels before rotation.
        angle: rotation in radians (counter-clockwise in image x/y).
        irregularity: shape noise (SIMCEP's shape parameter); 0 gives an exact ellipse.
        harmonics: number of perturbation harmonics.
        vertices: polygon resolution.

    Returns:
        ``(vertices, 2)`` float32 ``[dx, dy]`` offsets from the centre in pixels.

    Reference: Lehmussola et al., IEEE TMI 26(7) 2007, Sec. II-B (random shape model).
    """
    if radius_x <= 0 or radius_y <= 0:
        raise ValueError(f"radii must be > 0, got {radius_x}, {radius_y}")
    t, cos_t, sin_t, k = _polygon_basis(int(vertices), int(harmonics))
    amps = rng.normal(0.0, irregularity, harmonics) / k * 2.0
    phases = rng.uniform(0.0, 2.0 * np.pi, harmonics)
    radius = 1.0 + amps @ np.cos(k[:, None] * t[None, :] + phases[:, None])
    np.clip(radius, 0.35, None, out=radius)
    x = radius_x * radius * cos_t
    y = radius_y * radius * sin_t
    c, s = np.cos(angle), np.sin(angle)
    out = np.empty((len(t), 2), np.float32)
    out[:, 0] = c * x - s * y
    out[:, 1] = s * x + c * y
    return out


@functools.lru_cache(maxsize=32)
def _polygon_basis(vertices: int, harmonics: int):
    t = np.linspace(0.0, 2.0 * np.pi, vertices, endpoint=False)
    return t, np.cos(t), np.sin(t), np.arange(2, harmonics + 2, dtype=np.float64)


_SHIFT = 4  # cv2 sub-pixel bits: vertices are placed to 1/16 px


def raster_polygon(
    polygon_xy: np.ndarray, shape: tuple[int, int]
) -> tuple[tuple[slice, slice], np.ndarray] | None:
    """Rasterise a polygon (absolute ``[x, y]`` px) into its clipped bounding window.

    Coordinates follow the suite (``datasets/base.mask_to_objects``): pixel ``(r, c)`` has its
    centre at ``[x, y] = [c, r]``; it is inside when that centre is inside the polygon.

    Returns:
        ``((row_slice, col_slice), mask_bool)`` for the window, or None when the polygon
        misses the image.
    """
    return raster_polygons([polygon_xy], shape)


def raster_polygons(
    polygons_xy: list[np.ndarray], shape: tuple[int, int]
) -> tuple[tuple[slice, slice], np.ndarray] | None:
    """Union of several polygons (absolute ``[x, y]`` px) in their common clipped window.

    Returns:
        ``((row_slice, col_slice), mask_bool)`` or None when all polygons miss the image.
    """
    allpts = np.concatenate([np.asarray(p, np.float64) for p in polygons_xy])
    x1 = max(int(np.floor(allpts[:, 0].min())) - 1, 0)
    y1 = max(int(np.floor(allpts[:, 1].min())) - 1, 0)
    x2 = min(int(np.ceil(allpts[:, 0].max())) + 2, shape[1])
    y2 = min(int(np.ceil(allpts[:, 1].max())) + 2, shape[0])
    if x2 <= x1 or y2 <= y1:
        return None
    local = np.zeros((y2 - y1, x2 - x1), np.uint8)
    for poly in polygons_xy:  # one call each: a single fillPoly would XOR overlapping parts
        pts = np.round((np.asarray(poly, np.float64) - [x1, y1]) * (1 << _SHIFT)).astype(np.int32)
        cv2.fillPoly(local, [pts], 1, lineType=cv2.LINE_8, shift=_SHIFT)
    return (slice(y1, y2), slice(x1, x2)), local.astype(bool)


def raster_disc(
    cx: float, cy: float, radius: float, shape: tuple[int, int]
) -> tuple[tuple[slice, slice], np.ndarray] | None:
    """Pixels whose centres ``[c, r]`` lie within ``radius`` of ``(cx, cy)``, in the clipped window."""
    x1, y1 = max(int(np.floor(cx - radius)) - 1, 0), max(int(np.floor(cy - radius)) - 1, 0)
    x2 = min(int(np.ceil(cx + radius)) + 2, shape[1])
    y2 = min(int(np.ceil(cy + radius)) + 2, shape[0])
    if x2 <= x1 or y2 <= y1:
        return None
    yy = np.arange(y1, y2)[:, None] - cy
    xx = np.arange(x1, x2)[None, :] - cx
    return (slice(y1, y2), slice(x1, x2)), (xx * xx + yy * yy) <= radius * radius


def touching_labels(mask: np.ndarray) -> np.ndarray:
    """Labels of the instances whose pixels are 8-adjacent to (or overlap) another instance.

    Args:
        mask: ``(H, W)`` int instance labels, 0 = background.

    Returns:
        sorted int array of the touching labels.
    """
    mask = np.asarray(mask)
    if mask.max(initial=0) == 0:
        return np.zeros((0,), np.int64)
    kernel = np.ones((3, 3), np.uint8)
    m = mask.astype(np.float32)  # labels < 2**24 are exact in float32
    big = np.float32(np.iinfo(np.int32).max)
    highest = cv2.dilate(m, kernel)
    lowest = cv2.erode(np.where(mask > 0, m, big).astype(np.float32), kernel)
    fg = mask > 0
    touch = fg & (((highest != m) & (highest > 0)) | ((lowest != m) & (lowest < big)))
    return np.unique(mask[touch]).astype(np.int64)


def visible_centre(region: np.ndarray, preferred: tuple[float, float] | None = None) -> tuple[float, float]:
    """A point ``(x, y)`` inside a boolean region (pixel ``(r, c)`` centred at ``[c, r]``).

    ``preferred`` if its nearest pixel is inside, else the centroid if inside, else the pixel
    farthest from the region's border (always inside).
    """
    ys, xs = np.nonzero(region)
    if len(xs) == 0:
        raise ValueError("empty region has no centre")
    for cand in ([preferred] if preferred is not None else []) + [(float(xs.mean()), float(ys.mean()))]:
        c, r = int(np.round(cand[0])), int(np.round(cand[1]))
        if 0 <= r < region.shape[0] and 0 <= c < region.shape[1] and region[r, c]:
            return float(cand[0]), float(cand[1])
    dist = cv2.distanceTransform(np.pad(region, 1).astype(np.uint8), cv2.DIST_L2, 5)[1:-1, 1:-1]
    r, c = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return float(c), float(r)


def instances_to_targets(
    mask: np.ndarray, preferred_centres: dict[int, tuple[float, float]] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Relabel an instance mask to ``1..K`` (dropping empty labels) and derive its targets.

    Args:
        mask: ``(H, W)`` int instance labels, 0 = background, labels need not be consecutive.
        preferred_centres: optional ``{label: (x, y)}``: the generating centre of an object, used
            as its point when it falls inside the object's visible pixels.

    Returns:
        ``(mask, points, boxes, kept)``: int32 ``(H, W)`` labels ``1..K`` in increasing order of
        the input labels; float32 ``(K, 2)`` ``[x, y]`` points, each inside its object (see
        :func:`visible_centre`); float32 ``(K, 4)`` boxes ``[x1, y1, x2, y2]`` with
        ``x2 = last column + 1`` (as ``datasets.base.mask_to_objects``); the kept input labels.
    """
    from scipy import ndimage

    mask = np.asarray(mask)
    out = np.zeros(mask.shape, np.int32)
    points, boxes, kept = [], [], []
    slices = ndimage.find_objects(mask.astype(np.int32, copy=False))
    for index, window in enumerate(slices):
        if window is None:
            continue
        old = index + 1
        region = mask[window] == old
        if not region.any():
            continue
        new = len(kept) + 1
        out[window][region] = new
        pref = None
        if preferred_centres is not None and old in preferred_centres:
            px, py = preferred_centres[old]
            pref = (px - window[1].start, py - window[0].start)
        cx, cy = visible_centre(region, pref)
        points.append((cx + window[1].start, cy + window[0].start))
        ys, xs = np.nonzero(region)
        boxes.append((xs.min() + window[1].start, ys.min() + window[0].start,
                      xs.max() + 1 + window[1].start, ys.max() + 1 + window[0].start))
        kept.append(old)
    return (
        out,
        np.asarray(points, np.float32).reshape(-1, 2),
        np.asarray(boxes, np.float32).reshape(-1, 4),
        np.asarray(kept, np.int64),
    )


class Overlap:
    """SIMCEP's overlap rule (``population.overlap``), checked both ways and cumulatively.

    A new object may have at most ``max_overlap`` of its area over earlier ones, and every earlier
    object must keep at least ``1 - max_overlap`` of its full area visible, so z-order never hides
    more than ``max_overlap`` of any object. Labels are ``1, 2, ...`` in the order of placement.
    """

    def __init__(self, max_overlap: float):
        self.max_overlap = max_overlap
        self.visible = [0]  # visible area per label (index = label; 0 = background)
        self.full_area = [0]

    def fits(self, under: np.ndarray, area: int) -> tuple[np.ndarray, np.ndarray] | None:
        """``(labels, pixels)`` a candidate of ``area`` px would cover; None when the rule refuses it.

        ``under``: the labels already drawn under the candidate's pixels (0 = background).
        """
        ids, counts = np.unique(under[under > 0], return_counts=True)
        if counts.sum() > self.max_overlap * area:
            return None
        keep = 1 - self.max_overlap
        if any(self.visible[i] - c < keep * self.full_area[i] for i, c in zip(ids, counts, strict=True)):
            return None
        return ids, counts

    def try_fit(self, labels: np.ndarray, mask: np.ndarray, min_visible_px: int):
        """``(covered, area)`` of a candidate drawn at ``mask`` over the ``labels`` window, or None when
        it shows fewer than ``min_visible_px`` pixels or the rule refuses it (:meth:`fits`)."""
        area = int(mask.sum())
        if area < min_visible_px:
            return None
        covered = self.fits(labels[mask], area)
        return None if covered is None else (covered, area)

    def place(self, covered: tuple[np.ndarray, np.ndarray], area: int) -> int:
        """Record an object of ``area`` px covering ``covered`` (from :meth:`fits`); returns its label."""
        label = len(self.visible)
        for i, c in zip(*covered, strict=True):
            self.visible[i] -= int(c)
        self.visible.append(area)
        self.full_area.append(area)
        return label


def layout(shape: tuple[int, int], max_overlap: float) -> tuple[np.ndarray, Overlap, dict]:
    """What a generator places cells into: an empty int32 instance-label image, the overlap rule
    (:class:`Overlap`) and the ``{label: (x, y)}`` centres it fills."""
    return np.zeros(shape, np.int32), Overlap(max_overlap), {}


def generate_all(generate_one, n: int, seed: int, config) -> list[Sample]:
    """``[generate_one(i, seed, config) for i in range(n)]`` once ``n`` and ``config`` are checked."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    config.validate()
    return [generate_one(i, seed, config) for i in range(n)]


def synthetic_sample(generator: str, seed: int, index: int, image: np.ndarray, points: np.ndarray,
                     boxes: np.ndarray, mask: np.ndarray, pixel_size_um: float, class_name: str, *,
                     id_prefix: str | None = None, **meta) -> Sample:
    """The :class:`Sample` a generator returns: one class (label 0 for every object).

    Its id is ``{id_prefix or generator}_s{seed}_{index:05d}``; its ``meta`` holds ``generator``,
    ``seed``, ``index``, the generator's own entries (``**meta``) and ``class_names``.
    """
    return Sample(
        id=f"{id_prefix or generator}_s{seed}_{index:05d}",
        image_array=image,
        points=points,
        boxes=boxes,
        labels=np.zeros(len(points), np.int32),
        mask_array=mask,
        pixel_size_um=pixel_size_um,
        meta={"generator": generator, "seed": seed, "index": index, **meta, "class_names": [class_name]},
    )


def sensor_noise(
    image: np.ndarray, rng: np.random.Generator, photons: float, read_noise_std: float
) -> np.ndarray:
    """Poisson shot noise and Gaussian read (CCD) noise on a float image in [0, 1].

    Args:
        image: float array, any shape, values in ``[0, 1]`` (1 = full well).
        rng: random stream.
        photons: expected photon count at intensity 1 (0 or less disables shot noise; larger
            means cleaner).
        read_noise_std: standard deviation of the additive Gaussian noise, in ``[0, 1]`` units.

    Returns:
        float32 array of the same shape (not clipped).
    """
    out = np.clip(image, 0.0, None).astype(np.float32)
    # Shot noise as a Gaussian of variance mean/photons (the Poisson limit, accurate above a
    # few tens of photons, which every pixel here has) plus the read noise: one normal draw,
    # several times cheaper than rng.poisson on megapixel images.
    var = np.full_like(out, np.float32(read_noise_std**2))
    if photons > 0:
        var += out / np.float32(photons)
    if photons > 0 or read_noise_std > 0:
        out += np.sqrt(var) * rng.standard_normal(out.shape, dtype=np.float32)
    return out


def to_uint8(image01: np.ndarray) -> np.ndarray:
    """Float image in [0, 1] -> uint8 (rounded, clipped: bright objects saturate at 255)."""
    out = np.multiply(image01, np.float32(255.0), dtype=np.float32)
    out += np.float32(0.5)
    np.clip(out, 0.0, 255.0, out=out)
    return out.astype(np.uint8)


def jpeg_roundtrip(image: np.ndarray, quality: int | None) -> np.ndarray:
    """Compress and decompress a uint8 grey or RGB image with JPEG (None: unchanged)."""
    if quality is None:
        return image
    if not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality must be in 1..100, got {quality}")
    bgr = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("OpenCV could not JPEG-encode the image")
    flag = cv2.IMREAD_GRAYSCALE if image.ndim == 2 else cv2.IMREAD_COLOR
    out = cv2.imdecode(buf, flag)
    return out if image.ndim == 2 else cv2.cvtColor(out, cv2.COLOR_BGR2RGB)


def gaussian(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur (float32, reflect borders); sigma <= 0 returns the input."""
    if sigma <= 0:
        return image
    return cv2.GaussianBlur(image, (0, 0), sigmaX=float(sigma), borderType=cv2.BORDER_REFLECT)
