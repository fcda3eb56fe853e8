"""Synthetic dendritic-spine images (grey fluorescence crops) for the spines paper.

Modelled on the Smirnov & Garrett "Labeled Dendritic Spines" crops: 8-bit grey images
128-244 px tall and 128-212 px wide, a bright (often saturated) dendrite shaft crossing the
image on a near-black background, with 1-8 labelled spines protruding from it. Kept here:

- a curved shaft of varying thickness and brightness (varicosities), sometimes a branch;
- spines of the three classic shapes: mushroom (thin neck, large head), thin (long neck, small
  head) and stubby (no neck), on both sides, at random angles, dimmer than the shaft;
- look-alikes that are NOT spines: detached puncta (boutons, debris) beside the shaft, an
  out-of-focus neighbouring dendrite, background haze;
- PSF blur, shot noise, and JPEG compression like the real files.

Ground truth: ``points`` are spine HEAD centres (integer pixels, as the real labels); ``boxes``
are the 15x15 squares of the real labels (``x1 = x - 7``, ``x2 = x1 + 14``, which may cross the
border like ~1 % of the real boxes); ``mask_array`` labels each spine's head and neck outside
the shaft. Counts follow the real spines-per-image histogram.

Calibrated on: the real TRAINING split only (``train_labels.csv`` and its crops: image sizes,
spines-per-image histogram, box size, blur, JPEG quality; 1653 images). The 183 held-back test
images were never read; the synthetic data is used only when the real data is absent.

Reference: spines paper Sec. 2 (data: 1-8 spines per image, 15.36 px/µm, 15x15 boxes).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from microrepro.datasets.base import Sample
from microrepro.datasets.synthetic import noise
from microrepro.datasets.synthetic.preview import stats  # noqa: F401 - part of every generator's API

_SALT = 3
BOX_HALF = 7  # real labels: xmin = centre - 7, xmax = xmin + 14
SPINE_TYPES = ("mushroom", "thin", "stubby")


def _real_histogram() -> tuple[float, ...]:
    # Spines per image 1..8 in the real train_labels.csv (1653 images, 6248 spines).
    return (43, 330, 430, 367, 240, 157, 43, 43)


@dataclass
class SpinesConfig:
    """Parameters of the dendritic-spine generator (lengths in px, intensities in [0, 1])."""

    height_range: tuple[int, int] = (128, 244)  # real crops: 128-244 px tall
    width_range: tuple[int, int] = (128, 212)  # real crops: 128-212 px wide
    square_128_probability: float = 0.35  # many real crops are exactly 128x128
    image_size: tuple[int, int] | None = None  # fix (H, W) instead of sampling it
    pixel_size_um: float = 1.0 / 15.36  # 15.36 px per µm
    count_weights: tuple[float, ...] = field(default_factory=_real_histogram)  # P(1..8 spines)
    # --- dendrite shaft ---
    shaft_half_width: tuple[float, float] = (3.5, 8.0)  # px (diameter 7-16 px)
    shaft_brightness: tuple[float, float] = (0.25, 1.05)  # > 1 saturates, as often in the data
    shaft_softness: float = 0.6  # edge blur of the shaft, in half-widths (a rounded tube)
    shaft_variation: float = 0.3  # relative brightness/width variation along the shaft
    branch_probability: float = 0.15  # a second in-focus dendrite (no spines on it)
    # --- spines ---
    type_probabilities: tuple[float, float, float] = (0.45, 0.3, 0.25)  # mushroom, thin, stubby
    # head radius and neck length ranges (px) per spine type
    head_radius: dict = field(
        default_factory=lambda: {"mushroom": (4.0, 6.5), "thin": (3.0, 4.5), "stubby": (4.0, 6.0)})
    neck_length: dict = field(
        default_factory=lambda: {"mushroom": (4.0, 12.0), "thin": (6.0, 16.0), "stubby": (0.0, 0.0)})
    neck_half_width: tuple[float, float] = (1.0, 1.6)
    spine_brightness: tuple[float, float] = (0.45, 1.1)  # relative to the local shaft
    min_head_distance: float = 9.0  # px between two head centres
    angle_spread: float = 0.6  # std (rad) of the spine direction around the shaft normal
    # --- confusers (not in the ground truth) ---
    puncta_mean: float = 0.8  # detached bright puncta per image (Poisson)
    defocused_dendrite_probability: float = 0.3  # an out-of-focus neighbouring dendrite
    haze_level: tuple[float, float] = (0.0, 0.012)  # background haze
    glow: float = 0.15  # out-of-focus light around the shaft, relative to it
    # --- camera ---
    psf_sigma: float = 2.0  # the real crops are soft
    photons: float = 120.0  # shot noise: expected photons at full scale
    resample_sigma: float = 0.6  # blur after the noise: the real crops were resampled (grainy, not speckled)
    read_noise_std: float = 0.005
    jpeg_quality: tuple[int, int] = (75, 95)  # the real files are JPEGs
    placement_tries: int = 60

    def validate(self) -> None:
        """Raise ValueError naming the first parameter out of range."""
        lo_h, hi_h = self.height_range
        lo_w, hi_w = self.width_range
        if not (64 <= lo_h <= hi_h and 64 <= lo_w <= hi_w):
            raise ValueError(f"SpinesConfig height/width ranges must be >= 64 and ordered, got "
                             f"{self.height_range}, {self.width_range}")
        if self.image_size is not None and min(self.image_size) < 64:
            raise ValueError(f"SpinesConfig.image_size must be at least 64x64, got {self.image_size}")
        weights = np.asarray(self.count_weights, np.float64)
        if weights.ndim != 1 or len(weights) == 0 or (weights < 0).any() or weights.sum() <= 0:
            raise ValueError(f"SpinesConfig.count_weights must be non-negative weights of 1..N spines, "
                             f"got {self.count_weights}")
        if abs(sum(self.type_probabilities) - 1.0) > 1e-6:
            raise ValueError(f"SpinesConfig.type_probabilities must sum to 1, got {self.type_probabilities}")


def _path(rng, h, w):
    """A dendrite centreline crossing the image: quadratic Bezier between two borders."""
    def border_point(side):
        t = rng.uniform(0.1, 0.9)
        return {0: (t * w, -10.0), 1: (w + 10.0, t * h), 2: (t * w, h + 10.0), 3: (-10.0, t * h)}[side]

    side_a = int(rng.integers(4))
    side_b = (side_a + int(rng.choice([1, 2, 2, 2, 2, 2, 3]))) % 4  # mostly across, sometimes a corner
    a, b = np.array(border_point(side_a)), np.array(border_point(side_b))
    # The real crops are cut around spines, so the shaft passes near the middle.
    centre = np.array([w / 2, h / 2]) + rng.normal(0, 0.1 * min(h, w), 2)
    mid = 2 * centre - (a + b) / 2  # the Bezier passes through `centre` at t = 0.5
    if side_b == (side_a + 2) % 4:  # across: a gently curved shaft, like most real crops
        mid = (a + b) / 2 + 0.5 * (mid - (a + b) / 2)
    t = np.linspace(0, 1, 80)[:, None]
    return (1 - t) ** 2 * a + 2 * (1 - t) * t * mid + t * t * b


def _profile_along(rng, n, amount):
    """Smooth 1-D variation around 1 (varicosities) of length n."""
    raw = noise.fractal_noise((1, n), rng, base_period=n / 3.0, octaves=3, persistence=0.5, kind="value")[0]
    return np.clip(1.0 + amount * raw / 2.0, 0.4, 1.8)


def _draw_tube(canvas, binary, path, half_widths, values):
    """Tube along ``path`` with per-vertex half-width and value (max-composited)."""
    for i in range(len(path) - 1):
        p, q = path[i], path[i + 1]
        thick = max(1, int(round(2 * half_widths[i])))
        pa = (int(round(p[0] * 4)), int(round(p[1] * 4)))
        qa = (int(round(q[0] * 4)), int(round(q[1] * 4)))
        seg = np.zeros_like(canvas)
        cv2.line(seg, pa, qa, float(values[i]), thick, lineType=cv2.LINE_8, shift=2)
        np.maximum(canvas, seg, out=canvas)
        if binary is not None:
            cv2.line(binary, pa, qa, 1, thick, lineType=cv2.LINE_8, shift=2)


def generate_one(index: int, seed: int, config: SpinesConfig) -> Sample:
    """Image ``index`` of the run ``seed`` (see :func:`generate`)."""
    rng = noise.image_rng(seed, index, _SALT)
    if config.image_size is not None:
        h, w = config.image_size
    elif rng.random() < config.square_128_probability:
        h, w = 128, 128
    else:
        h = int(rng.integers(config.height_range[0], config.height_range[1] + 1))
        w = int(rng.integers(config.width_range[0], config.width_range[1] + 1))
    shape = (h, w)
    signal = np.zeros(shape, np.float32)
    confusers: list[dict] = []

    # --- background haze and an out-of-focus neighbouring dendrite ---
    haze = noise.fractal_noise(shape, rng, base_period=64.0, octaves=3, persistence=0.5, kind="value")
    signal += rng.uniform(*config.haze_level) * np.clip(1.0 + 0.6 * haze, 0, None)
    if rng.random() < config.defocused_dendrite_probability:
        far = np.zeros(shape, np.float32)
        path = _path(rng, h, w)
        hw = rng.uniform(4, 10) * np.ones(len(path))
        _draw_tube(far, None, path, hw, rng.uniform(0.1, 0.3) * _profile_along(rng, len(path), 0.5))
        signal += noise.gaussian(far, rng.uniform(4.0, 8.0))
        confusers.append({"kind": "defocused_dendrite", "x": float(path[40, 0]), "y": float(path[40, 1])})

    # --- the dendrite shaft (and maybe an in-focus branch) ---
    shaft = np.zeros(shape, np.float32)
    shaft_mask = np.zeros(shape, np.uint8)
    path = _path(rng, h, w)
    n = len(path)
    half = rng.uniform(*config.shaft_half_width) * _profile_along(rng, n, config.shaft_variation)
    bright = rng.uniform(*config.shaft_brightness) * _profile_along(rng, n, config.shaft_variation)
    _draw_tube(shaft, shaft_mask, path, half, bright)
    shaft = noise.gaussian(shaft, config.shaft_softness * float(np.mean(half)))
    if rng.random() < config.branch_probability:
        start = path[int(rng.integers(20, 60))]
        bpath = _path(rng, h, w)
        bpath = bpath[len(bpath) // 2 :] - bpath[len(bpath) // 2] + start
        bh = rng.uniform(0.5, 0.9) * half[: len(bpath)]
        _draw_tube(shaft, shaft_mask, bpath, bh, bright[: len(bpath)] * rng.uniform(0.5, 1.0))
    tangents = np.gradient(path, axis=0)
    tangents /= np.linalg.norm(tangents, axis=1, keepdims=True) + 1e-9
    normals = np.stack([-tangents[:, 1], tangents[:, 0]], 1)

    # --- spines ---
    weights = np.asarray(config.count_weights, np.float64)
    n_spines = int(rng.choice(len(weights), p=weights / weights.sum())) + 1
    spine_layer = np.zeros(shape, np.float32)
    labels = np.zeros(shape, np.int32)
    heads: list[tuple[float, float]] = []
    kinds: list[str] = []
    inside = [i for i in range(n) if 2 <= path[i, 0] < w - 2 and 2 <= path[i, 1] < h - 2]
    for _ in range(n_spines if len(inside) > 2 else 0):
        for _attempt in range(config.placement_tries):
            kind = SPINE_TYPES[int(rng.choice(3, p=config.type_probabilities))]
            i = int(rng.choice(inside))
            side = rng.choice([-1.0, 1.0])
            theta = np.arctan2(normals[i, 1] * side, normals[i, 0] * side) + rng.normal(0, config.angle_spread)
            direction = np.array([np.cos(theta), np.sin(theta)])
            r = rng.uniform(*config.head_radius[kind])
            neck = rng.uniform(*config.neck_length[kind])
            base = path[i] + direction * half[i] * 0.8
            raw_head = path[i] + direction * (half[i] + neck + (0.6 if kind == "stubby" else 1.0) * r)
            head = np.round(raw_head)  # labels are integer pixels, like the real annotations
            hx, hy = int(head[0]), int(head[1])
            if not (1 <= hx < w - 1 and 1 <= hy < h - 1):
                continue
            if shaft_mask[hy, hx]:
                continue  # would hide in the shaft (curved or branched dendrite)
            if any((hx - ox) ** 2 + (hy - oy) ** 2 < config.min_head_distance**2 for ox, oy in heads):
                continue
            poly = noise.blob_polygon(rng, r * rng.uniform(1.0, 1.3), r, theta, 0.08, harmonics=2) + head
            raster = noise.raster_polygon(poly, shape)
            if raster is None:
                continue
            window, head_px = raster
            spine = np.zeros(shape, np.uint8)
            spine[window][head_px] = 1
            if neck > 0:
                nw = max(1, int(round(2 * rng.uniform(*config.neck_half_width))))
                cv2.line(spine, (int(round(base[0] * 4)), int(round(base[1] * 4))),
                         (int(round(head[0] * 4)), int(round(head[1] * 4))), 1, nw, lineType=cv2.LINE_8, shift=2)
            region = (spine > 0) & (shaft_mask == 0)
            if not region[hy, hx] or (labels[region] > 0).any():
                continue
            break
        else:
            continue
        label = len(heads) + 1
        labels[region] = label
        heads.append((float(hx), float(hy)))
        kinds.append(kind)
        value = bright[i] * rng.uniform(*config.spine_brightness)
        body = np.zeros(shape, np.float32)
        # The neck is thinner, so dimmer after blurring; keep the head brightest.
        body[spine > 0] = 0.7 * value
        body[window][head_px] = value
        np.maximum(spine_layer, body, out=spine_layer)

    # --- confusers: detached puncta beside the shaft (boutons, debris) ---
    for _ in range(int(rng.poisson(config.puncta_mean))):
        for _attempt in range(20):
            i = int(rng.choice(inside)) if inside else 0
            side = rng.choice([-1.0, 1.0])
            dist = half[i] + rng.uniform(8.0, 25.0)
            c = path[i] + normals[i] * side * dist + rng.normal(0, 3, 2)
            cx, cy = int(round(c[0])), int(round(c[1]))
            near_spine = 0 <= cx < w and 0 <= cy < h and labels[max(cy - 4, 0) : cy + 5, max(cx - 4, 0) : cx + 5].any()
            if 0 <= cx < w and 0 <= cy < h and not shaft_mask[cy, cx] and not near_spine:
                cv2.circle(spine_layer, (cx, cy), int(rng.integers(2, 4)), float(bright[i] * rng.uniform(0.3, 0.9)), -1)
                confusers.append({"kind": "punctum", "x": float(cx), "y": float(cy)})
                break

    signal += shaft + spine_layer
    # A little out-of-focus light around the dendrite, as in the real crops.
    signal += config.glow * noise.gaussian(shaft, 8.0)
    image = noise.gaussian(signal, config.psf_sigma)
    image = noise.sensor_noise(image, rng, config.photons, config.read_noise_std)
    image = noise.gaussian(image, config.resample_sigma)
    quality = int(rng.integers(config.jpeg_quality[0], config.jpeg_quality[1] + 1))
    image = noise.jpeg_roundtrip(noise.to_uint8(image), quality)

    points = np.asarray(heads, np.float32).reshape(-1, 2)
    boxes = np.concatenate([points - BOX_HALF, points + BOX_HALF], axis=1).astype(np.float32)
    return noise.synthetic_sample("spines", seed, index, image, points, boxes, labels, config.pixel_size_um, "spine",
                                  spine_types=kinds, confusers=confusers, jpeg_quality=quality)


def generate(n: int, seed: int, config: SpinesConfig | None = None) -> list[Sample]:
    """``n`` synthetic dendrite crops with labelled spines.

    Args:
        n: number of images (>= 0).
        seed: run seed; image ``i`` depends only on ``(seed, i)``.
        config: generator parameters (defaults: the real data's sizes and count histogram).

    Returns:
        list of ``Sample``: ``image_array`` ``(H, W)`` uint8 grey; ``points`` ``(K, 2)``
        ``[x, y]`` integer spine head centres; ``boxes`` ``(K, 4)`` ``[x - 7, y - 7, x + 7,
        y + 7]`` px (the real labels' 15x15 squares, not clipped); ``mask_array`` ``(H, W)``
        int32 spine instances (head + neck, label k = point k); ``labels`` zeros;
        ``meta["spine_types"]`` per spine; ``meta["confusers"]`` ``[{kind, x, y}]`` with kinds
        ``punctum`` and ``defocused_dendrite``.

    Reference: spines paper Sec. 2.
    """
    return noise.generate_all(generate_one, n, seed, config or SpinesConfig())
