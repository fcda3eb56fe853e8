"""Synthetic fluorescent neuronal cells (CTb-stained neurons, yellow on dark) for cell_counting.

Modelled on the Fluorescent Neuronal Cells data (Clissa, Morelli et al.): RGB fields of mouse
brain slices at 1200x1600 where stained neurons are yellow/orange spots on a near-black,
slightly orange tissue background. What makes the task hard, and what this generator keeps:

- cells of varied shape (round, oval, elongated, with faint processes), size and brightness
  (a lognormal brightness, so some cells are dim, near the detection threshold), with a
  granular texture and sometimes a darker nucleus;
- a skewed count distribution: most fields hold 0-5 cells, some are crowded (20-40) with
  clumps of touching cells;
- confusers that are NOT cells and are absent from the mask: out-of-focus unstained/haze
  cells (dim, blurred), bright elongated strips and fibres, small bright specks and debris,
  large saturated artifacts at the border, a faint network of processes in the tissue.

Ground truth: ``mask_array`` labels only the in-focus stained cells (body plus the thick
proximal part of its processes); ``meta["confusers"]`` lists every confuser with its kind.

Calibrated on: the paper's description and figures (Sec. 2, Fig. 1, 10, 11: shapes, count
distribution, artifacts) and, for the values whose comments say "real" or "measured" (cell size:
mean mask area ~1100 px, read noise, background level, stain colours), the public ``fnc_sample``
fields, the only real FNC images in reach when it was written (the history records no other
source). Those two fields are also cell_counting's sim-to-real evaluation split ``real_fields``,
so the ``real_fields`` rows are NOT independent of this calibration (the README says so); the
fields the shared copy holds back and the full FNC test set were never looked at. Nothing was
tuned on the synthetic test fields' scores.

Reference: Morelli et al., "Automatic cell counting in fluorescent microscopy using deep
learning" (cell_counting paper), Sec. 2 (data: shapes, brightness, artifacts, clumps,
images with no cells) and Fig. 1, 10, 11.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from microrepro.datasets.base import Sample
from microrepro.datasets.synthetic import noise
from microrepro.datasets.synthetic.preview import stats  # noqa: F401 - part of every generator's API

_SALT = 2


@dataclass
class NeuronsConfig:
    """Parameters of the fluorescent-neuron generator (lengths in px, intensities in [0, 1] of
    the red channel's full scale)."""

    image_size: tuple[int, int] = (1200, 1600)  # (H, W) of the real fields
    reference_size: tuple[int, int] = (1200, 1600)  # counts below are per field of this size and
    # scale with the image area, so a smaller image_size keeps the same density
    pixel_size_um: float | None = None  # not published for the data set
    # --- count distribution: a mixture of sparse, medium and crowded fields ---
    sparse_probability: float = 0.55  # P(field holds 0..sparse_max cells), uniform
    sparse_max: int = 5
    crowded_probability: float = 0.15  # P(field holds crowded_min..crowded_max cells)
    crowded_min: int = 20
    crowded_max: int = 40  # the rest holds sparse_max+1 .. crowded_min-1 cells
    n_clumps_max: int = 3  # cells gather around 1..n_clumps_max centres
    clump_probability: float = 0.7  # P(cell belongs to a clump) when the field is not sparse
    clump_spread: float = 80.0  # std of a clump in px
    touch_probability: float = 0.3  # P(a clumped cell is placed against an existing cell)
    max_overlap: float = 0.15  # max fraction of a cell's area under other cells
    placement_tries: int = 30
    min_visible_px: int = 120  # cells cut by the border to fewer pixels are dropped
    # --- cell shape and appearance ---
    cell_radius: float = 17.0  # median body radius in px (real mean mask area ~1100 px)
    cell_radius_cv: float = 0.25  # lognormal spread of the radius
    max_elongation: float = 2.4  # body axis ratio drawn in [1, this] (skewed to round)
    shape_irregularity: float = 0.12  # boundary perturbation
    process_max: int = 3  # 0..process_max processes per cell
    process_length: tuple[float, float] = (0.6, 2.2)  # in body radii
    brightness_median: float = 0.5  # median peak red intensity of a cell
    brightness_sigma: float = 0.55  # lognormal sigma: some cells are dim
    brightness_min: float = 0.1  # dimmest labelled cell (still above the haze)
    green_ratio: tuple[float, float] = (0.6, 0.9)  # G/R of the stain: yellow to orange
    blue_ratio: float = 0.05  # B/R
    nucleus_probability: float = 0.4  # P(a darker, unstained nucleus is visible)
    cell_texture: float = 0.25  # amplitude of the granular texture
    halo: float = 0.25  # relative brightness of the glow around a cell (out-of-focus light)
    # --- confusers (not in the mask) ---
    haze_base: float = 4.0  # out-of-focus cells per field: Poisson(haze_base + haze_per_cell*n)
    haze_per_cell: float = 1.0
    haze_blur: tuple[float, float] = (3.0, 10.0)  # their blur sigma in px
    haze_brightness: tuple[float, float] = (0.04, 0.25)
    fibre_mean: float = 0.35  # bright elongated strips per field (Poisson)
    fibre_length: tuple[float, float] = (120.0, 500.0)
    fibre_width: tuple[float, float] = (4.0, 12.0)
    fibre_brightness: tuple[float, float] = (0.4, 1.4)
    speck_mean: float = 25.0  # small bright specks/debris per field (Poisson)
    speck_radius: tuple[float, float] = (0.7, 3.0)
    speck_brightness: tuple[float, float] = (0.15, 1.2)
    artifact_probability: float = 0.08  # P(a large saturated artifact at the border)
    network_lines: int = 40  # faint processes in the tissue background
    # --- background and camera ---
    background_level: tuple[float, float] = (0.005, 0.045)  # tissue red level (1..11 DN)
    background_green_ratio: tuple[float, float] = (0.1, 0.35)  # tissue is orange-red, not yellow
    background_texture: float = 0.5  # relative amplitude of the tissue texture
    psf_sigma: float = 1.0  # in-focus blur in px
    photons: float = 600.0  # shot noise: expected photons at full scale
    read_noise_std: float = 0.003  # ~0.8 DN, as measured on flat real background
    jpeg_quality: int | None = None

    def validate(self) -> None:
        """Raise ValueError naming the first parameter out of range."""
        h, w = self.image_size
        if h < 64 or w < 64:
            raise ValueError(f"NeuronsConfig.image_size must be at least 64x64, got {self.image_size}")
        checks = {
            "sparse_probability": 0 <= self.sparse_probability <= 1,
            "crowded_probability": 0 <= self.crowded_probability <= 1 - self.sparse_probability + 1e-9,
            "sparse_max": 0 <= self.sparse_max < self.crowded_min <= self.crowded_max,
            "max_overlap": 0 <= self.max_overlap <= 1,
            "cell_radius": self.cell_radius > 2,
            "max_elongation": self.max_elongation >= 1,
            "brightness_median": self.brightness_median > 0,
            "photons": self.photons >= 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"NeuronsConfig.{name} is out of range: {getattr(self, name)!r}")


def _add(dst: np.ndarray, local: np.ndarray, y0: int, x0: int) -> None:
    """``dst[y0:, x0:] += local``, clipped to ``dst``."""
    h, w = dst.shape[:2]
    ly1, lx1 = max(0, -y0), max(0, -x0)
    ly2, lx2 = min(local.shape[0], h - y0), min(local.shape[1], w - x0)
    if ly2 > ly1 and lx2 > lx1:
        dst[y0 + ly1 : y0 + ly2, x0 + lx1 : x0 + lx2] += local[ly1:ly2, lx1:lx2]


def _crop(src: np.ndarray, y0: int, x0: int, shape: tuple[int, int]) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
    """Matching slices (image, local) of a local window at ``(y0, x0)`` clipped to ``src``."""
    h, w = src.shape[:2]
    ly1, lx1 = max(0, -y0), max(0, -x0)
    ly2, lx2 = min(shape[0], h - y0), min(shape[1], w - x0)
    return (slice(y0 + ly1, y0 + ly2), slice(x0 + lx1, x0 + lx2)), (slice(ly1, ly2), slice(lx1, lx2))


def _curve(rng, start, direction, length, bend, steps=16):
    """A smoothly bending path: ``steps + 1`` points ``[x, y]`` from ``start``."""
    angles = direction + np.cumsum(rng.normal(0.0, bend, steps))
    step = length / steps
    xy = np.cumsum(np.stack([np.cos(angles), np.sin(angles)], 1) * step, axis=0)
    return np.vstack([start, start + xy])


def _tapered(canvas, path, width0, width1, value=255):
    """Draw a polyline whose thickness goes from ``width0`` to ``width1`` px (anti-aliased)."""
    n = len(path) - 1
    for i in range(n):
        t = i / max(n - 1, 1)
        thick = max(1, int(round(width0 + (width1 - width0) * t)))
        p, q = path[i], path[i + 1]
        cv2.line(canvas, (int(round(p[0] * 4)), int(round(p[1] * 4))), (int(round(q[0] * 4)), int(round(q[1] * 4))),
                 value, thick, lineType=cv2.LINE_AA, shift=2)


def _granular(shape, rng, amount):
    """Granular (punctate) texture around 1: CTb fills the cytoplasm in small grains."""
    fine = noise.fractal_noise(shape, rng, base_period=6.0, octaves=2, persistence=0.6, kind="value")
    return np.clip(1.0 + amount * fine, 0.15, None).astype(np.float32)


def _neuron(rng, radius, config, with_processes=True):
    """One neuron in a local window.

    Returns:
        ``(intensity, mask, centre)``: float32 ``(S, S)`` peak-normalised intensity (before
        brightness and colour), bool ``(S, S)`` ground-truth extent, ``(x, y)`` body centre in
        the window.
    """
    elong = 1.0 + (config.max_elongation - 1.0) * rng.beta(1.2, 2.5)
    rx, ry = radius * np.sqrt(elong), radius / np.sqrt(elong)
    angle = rng.uniform(0, np.pi)
    n_proc = int(rng.integers(0, config.process_max + 1)) if with_processes else 0
    lengths = rng.uniform(*config.process_length, n_proc) * radius
    extent = rx * (1.0 + 2.5 * config.shape_irregularity) + (lengths.max() if n_proc else 0.0) + 1.8 * ry + 4
    size = 2 * int(np.ceil(extent)) + 1
    c = size // 2
    centre = np.array([c, c], np.float64) + rng.uniform(-0.5, 0.5, 2)
    poly = noise.blob_polygon(rng, rx, ry, angle, config.shape_irregularity, harmonics=3) + centre
    body = np.zeros((size, size), np.uint8)
    cv2.fillPoly(body, [np.round(poly * 16).astype(np.int32)], 255, lineType=cv2.LINE_8, shift=4)
    proximal = np.zeros_like(body)
    distal = np.zeros_like(body)
    for k in range(n_proc):
        # Processes leave from the poles of the long axis (bipolar/multipolar neurons).
        direction = angle + np.pi * (k % 2) + rng.normal(0, 0.5 if k < 2 else 1.2)
        start = centre + 0.6 * rx * np.array([np.cos(direction), np.sin(direction)])
        path = _curve(rng, start, direction, lengths[k], 0.12)
        w0 = max(2.0, 0.35 * ry * rng.uniform(0.6, 1.0))
        half = len(path) // 2
        _tapered(proximal, path[: half + 1], w0, max(2.0, w0 * 0.6))
        _tapered(distal, path[half:], max(1.5, w0 * 0.5), 1.0)
    mask = (body > 127) | (proximal > 127)
    # Soft body profile: bright in the middle, falling off at the edge (a thick cell seen
    # through a thin focal plane), times a granular texture.
    sharp = body.astype(np.float32) / 255.0
    profile = noise.gaussian(sharp, max(1.0, 0.22 * ry))
    glow = noise.gaussian(sharp, 0.6 * ry)
    profile = np.maximum(profile, 0.55 * sharp) * sharp + config.halo * glow * (1 - sharp)
    intensity = profile * _granular((size, size), rng, config.cell_texture)
    if rng.random() < config.nucleus_probability:
        # CTb stays out of the nucleus: a darker disc, off-centre.
        nr = 0.45 * ry
        off = rng.normal(0, 0.2 * ry, 2)
        yy, xx = np.mgrid[:size, :size]
        d2 = ((xx - centre[0] - off[0]) ** 2 + (yy - centre[1] - off[1]) ** 2) / (nr * nr)
        intensity *= 1.0 - 0.45 * np.exp(-d2 * 2.0).astype(np.float32)
    proc = noise.gaussian(proximal.astype(np.float32) / 255.0 * 0.55 + distal.astype(np.float32) / 255.0 * 0.3, 1.0)
    intensity = np.maximum(intensity, proc * _granular((size, size), rng, 0.6))
    return intensity.astype(np.float32), mask, (float(centre[0]), float(centre[1]))


def sample_count(rng: np.random.Generator, config: NeuronsConfig) -> tuple[int, str]:
    """Stained cells in one reference-size field and its regime (sparse / medium / crowded).

    The mixture mimics the real data: most fields hold 0-5 cells (zero included), some are
    crowded with 20-40 (cell_counting Sec. 2: "pictures with no stained cells and others
    showing dozens of cells clumping together").
    """
    u = rng.random()
    if u < config.sparse_probability:
        return int(rng.integers(0, config.sparse_max + 1)), "sparse"
    if u < config.sparse_probability + config.crowded_probability:
        return int(rng.integers(config.crowded_min, config.crowded_max + 1)), "crowded"
    return int(rng.integers(config.sparse_max + 1, config.crowded_min)), "medium"


def _scaled(rng, count: float, area_ratio: float) -> int:
    """``count`` per reference field -> per image: exact at ratio 1, stochastic rounding else."""
    if area_ratio == 1.0:
        return int(count)
    x = count * area_ratio
    return int(np.floor(x) + (rng.random() < x - np.floor(x)))


def generate_one(index: int, seed: int, config: NeuronsConfig) -> Sample:
    """Image ``index`` of the run ``seed`` (see :func:`generate`)."""
    rng = noise.image_rng(seed, index, _SALT)
    h, w = config.image_size
    shape = (h, w)
    red = np.zeros(shape, np.float32)
    green = np.zeros(shape, np.float32)
    labels, overlap, centres = noise.layout(shape, config.max_overlap)
    confusers: list[dict] = []
    area_ratio = (h * w) / float(config.reference_size[0] * config.reference_size[1])

    # --- background: orange-red tissue with texture, darker/lighter regions ---
    level = rng.uniform(*config.background_level)
    tissue = noise.fractal_noise(shape, rng, base_period=320.0, octaves=6, persistence=0.55)
    tissue = np.clip(1.0 + config.background_texture * tissue, 0.05, None)
    bg_green = rng.uniform(*config.background_green_ratio)
    red += level * tissue
    green += level * bg_green * tissue
    # Faint network of processes in the tissue (unstained or weakly stained fibres).
    net = np.zeros(shape, np.uint8)
    for _ in range(_scaled(rng, config.network_lines, area_ratio)):
        start = rng.uniform([0, 0], [w, h])
        path = _curve(rng, start, rng.uniform(0, 2 * np.pi), rng.uniform(40, 250), 0.15, steps=12)
        cv2.polylines(net, [np.round(path * 4).astype(np.int32)], False, int(rng.integers(40, 255)), 1,
                      lineType=cv2.LINE_AA, shift=2)
    net_f = noise.gaussian(net.astype(np.float32) / 255.0, 1.2) * np.float32(rng.uniform(0.02, 0.08))
    red += net_f
    green += net_f * 0.5

    # --- stained cells (the ground truth) ---
    n_field, regime = sample_count(rng, config)
    n_cells = _scaled(rng, n_field, area_ratio)
    clumps = rng.uniform([0.1 * w, 0.1 * h], [0.9 * w, 0.9 * h], (int(rng.integers(1, config.n_clumps_max + 1)), 2))
    clump_p = 0.0 if regime == "sparse" else config.clump_probability
    for _ in range(n_cells):
        radius = config.cell_radius * float(np.exp(rng.normal(0, config.cell_radius_cv)))
        intensity, cell, (lcx, lcy) = _neuron(rng, radius, config)
        for _attempt in range(config.placement_tries):  # the shape is kept, only its place changes
            if centres and rng.random() < clump_p * config.touch_probability:
                # Against an existing cell: clumps of touching neurons (the paper's hard case).
                other = list(centres.values())[int(rng.integers(len(centres)))]
                theta = rng.uniform(0, 2 * np.pi)
                pos = np.array(other) + (config.cell_radius + radius) * 0.95 * np.array([np.cos(theta), np.sin(theta)])
            elif rng.random() < clump_p:
                pos = clumps[rng.integers(len(clumps))] + rng.normal(0, config.clump_spread, 2)
            else:
                pos = rng.uniform([0, 0], [w, h])
            if not (0 <= pos[0] < w and 0 <= pos[1] < h):
                continue
            y0, x0 = int(round(pos[1] - lcy)), int(round(pos[0] - lcx))
            img_sl, loc_sl = _crop(labels, y0, x0, cell.shape)
            seen = cell[loc_sl]
            fit = overlap.try_fit(labels[img_sl], seen, config.min_visible_px)
            if fit is not None:
                break
        else:
            continue
        covered, area = fit
        label = overlap.place(covered, area)
        labels[img_sl][seen] = label
        centres[label] = (x0 + lcx, y0 + lcy)
        bright = max(config.brightness_min,
                     config.brightness_median * float(np.exp(rng.normal(0, config.brightness_sigma))))
        g_ratio = rng.uniform(*config.green_ratio)
        _add(red, intensity * bright, y0, x0)
        _add(green, intensity * bright * g_ratio, y0, x0)

    # --- confusers: out-of-focus / unstained cells (haze) ---
    n_haze = int(rng.poisson((config.haze_base + config.haze_per_cell * n_field) * area_ratio))
    for _ in range(n_haze):
        if n_cells and rng.random() < 0.6:  # haze gathers where the stained cells are
            pos = clumps[rng.integers(len(clumps))] + rng.normal(0, 2 * config.clump_spread, 2)
        else:
            pos = rng.uniform([0, 0], [w, h])
        radius = config.cell_radius * float(np.exp(rng.normal(0.1, config.cell_radius_cv)))
        intensity, _, (lcx, lcy) = _neuron(rng, radius, config, with_processes=rng.random() < 0.3)
        blur = rng.uniform(*config.haze_blur)
        pad = int(3 * blur)
        intensity = noise.gaussian(np.pad(intensity, pad), blur)
        bright = rng.uniform(*config.haze_brightness)
        g_ratio = rng.uniform(config.green_ratio[0] - 0.1, config.green_ratio[1])
        y0, x0 = int(round(pos[1] - lcy)) - pad, int(round(pos[0] - lcx)) - pad
        _add(red, intensity * bright, y0, x0)
        _add(green, intensity * bright * g_ratio, y0, x0)
        if 0 <= pos[0] < w and 0 <= pos[1] < h:
            confusers.append({"kind": "haze_cell", "x": float(pos[0]), "y": float(pos[1])})

    # --- confusers: bright elongated strips / fibres ---
    for _ in range(int(rng.poisson(config.fibre_mean * area_ratio))):
        length = rng.uniform(*config.fibre_length)
        start = rng.uniform([0, 0], [w, h])
        path = _curve(rng, start, rng.uniform(0, 2 * np.pi), length, 0.08, steps=24)
        width = rng.uniform(*config.fibre_width)
        x1, y1 = np.floor(path.min(0) - width - 8).astype(int)
        x2, y2 = np.ceil(path.max(0) + width + 8).astype(int)
        local = np.zeros((y2 - y1, x2 - x1), np.uint8)
        _tapered(local, path - [x1, y1], width, width * rng.uniform(0.3, 1.0))
        strip = noise.gaussian(local.astype(np.float32) / 255.0, 1.5) * _granular(local.shape, rng, 0.3)
        bright = rng.uniform(*config.fibre_brightness)
        g_ratio = rng.uniform(*config.green_ratio)
        _add(red, strip * bright, y1, x1)
        _add(green, strip * bright * g_ratio, y1, x1)
        mid = path[len(path) // 2]
        if 0 <= mid[0] < w and 0 <= mid[1] < h:
            confusers.append({"kind": "fibre", "x": float(mid[0]), "y": float(mid[1])})

    # --- confusers: small bright specks / debris (drawn as tiny discs, then blurred) ---
    n_specks = int(rng.poisson(config.speck_mean * area_ratio))
    if n_specks:
        specks = np.zeros(shape, np.float32)
        xy = rng.uniform([0, 0], [w, h], (n_specks, 2))
        radii = rng.uniform(*config.speck_radius, n_specks)
        values = rng.uniform(*config.speck_brightness, n_specks)
        for (sx, sy), r, v in zip(xy, radii, values, strict=True):
            cv2.circle(specks, (int(round(sx * 4)), int(round(sy * 4))), int(round(r * 4)), float(v), -1,
                       lineType=cv2.LINE_AA, shift=2)
        specks = noise.gaussian(specks, 0.8)
        g_ratio = rng.uniform(*config.green_ratio)
        red += specks
        green += specks * g_ratio
        confusers.extend({"kind": "speck", "x": float(sx), "y": float(sy)} for sx, sy in xy)

    # --- confusers: a large saturated artifact entering from the border ---
    if rng.random() < config.artifact_probability:
        corner = np.array([rng.choice([0, w]), rng.choice([0, h])], np.float64)
        radius = rng.uniform(0.12, 0.3) * min(h, w)
        poly = noise.blob_polygon(rng, radius, radius * rng.uniform(0.5, 1.0), rng.uniform(0, np.pi), 0.3) + corner
        raster = noise.raster_polygon(poly, shape)
        if raster is not None:
            window, region = raster
            local = noise.gaussian(region.astype(np.float32), 3.0) * _granular(region.shape, rng, 0.3)
            bright = rng.uniform(1.0, 2.5)
            red[window] += local * bright
            green[window] += local * bright * rng.uniform(0.6, 0.85)
            ys, xs = np.nonzero(region)
            if len(xs):
                confusers.append({"kind": "saturated_artifact", "x": float(xs.mean() + window[1].start),
                                  "y": float(ys.mean() + window[0].start)})

    # --- optics and camera ---
    vignette = noise.fractal_noise(shape, rng, base_period=max(h, w), octaves=1)
    gain = np.float32(1.0) + np.float32(0.08) * vignette
    channels = []
    for ch, ratio in ((red, 1.0), (green, 1.0), (red, config.blue_ratio)):
        img = noise.gaussian(ch * gain * np.float32(ratio), config.psf_sigma)
        channels.append(noise.sensor_noise(img, rng, config.photons, config.read_noise_std))
    image = noise.jpeg_roundtrip(noise.to_uint8(np.stack(channels, axis=-1)), config.jpeg_quality)

    mask, points, boxes, _ = noise.instances_to_targets(labels, centres)
    return noise.synthetic_sample("neurons", seed, index, image, points, boxes, mask, config.pixel_size_um, "cell",
                                  regime=regime, confusers=confusers)


def generate(n: int, seed: int, config: NeuronsConfig | None = None) -> list[Sample]:
    """``n`` synthetic fluorescent-neuron fields.

    Args:
        n: number of images (>= 0).
        seed: run seed; image ``i`` depends only on ``(seed, i)``.
        config: generator parameters (defaults: 1200x1600 like the real data).

    Returns:
        list of ``Sample``: ``image_array`` ``(H, W, 3)`` uint8 RGB; ``mask_array`` ``(H, W)``
        int32 instances of stained cells only; ``points`` ``(K, 2)`` ``[x, y]`` cell centres
        (inside the cell); ``boxes`` ``(K, 4)`` ``[x1, y1, x2, y2]`` px (x2 = last column + 1);
        ``labels`` zeros (class "cell"); ``meta["confusers"]`` ``[{kind, x, y}]`` with kinds
        ``haze_cell``, ``fibre``, ``speck``, ``saturated_artifact``; ``meta["regime"]`` the
        count regime (sparse / medium / crowded).

    Reference: cell_counting paper Sec. 2.
    """
    return noise.generate_all(generate_one, n, seed, config or NeuronsConfig())
