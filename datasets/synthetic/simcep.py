"""SIMCEP-like synthetic fluorescence cell images with exact cell masks (fcn_segmentation).

A re-implementation of the model of Lehmussola et al. (SIMCEP), at the scale of the 128x128
patches the fcn_segmentation paper pre-trained on:

- population: a Poisson number of cells, each either uniform over the image or (with the
  clustering probability) around one of a few cluster centres; a new cell is rejected when it
  would cover, or be covered by, more than ``max_overlap`` of any cell's area;
- cells: a cytoplasm and a nucleus, each a randomly perturbed ellipse with Perlin texture
  (persistence, octaves, bias); fluorescence adds up where cells overlap;
- measurement: per-cell defocus blur plus the PSF, uneven illumination (a 2nd-degree
  polynomial bowl) and autofluorescence (smooth noise), Poisson shot noise and Gaussian CCD
  noise, optional JPEG compression; and, for ``background_noise_fraction`` of the images,
  fractal Perlin ("simplex") noise added to the background.

Ground truth: foreground = cell (cytoplasm and nucleus). The instance mask labels whole cells;
where cells overlap, the later (upper) cell owns the pixels (z-order).

Calibrated on: the SIMCEP paper's model and parameter ranges and the fcn_segmentation paper's
patch size and background-noise fraction (Sec. 7.1) only. The real fluorescence images
(StarDist ``img2d``, DSB 2018 stage-1 test) appear beside it in ``microrepro preview`` for a visual
check, but no parameter was fitted to them; the DSB images fcn_segmentation evaluates on were
never used to set a value.

Reference: Lehmussola et al., "Computational framework for simulating fluorescence microscope
images with cell populations", IEEE TMI 26(7) 2007; fcn_segmentation paper Sec. 7.1 (200
128x128 patches, simplex noise in the background of half of the images).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from microrepro.datasets.base import Sample
from microrepro.datasets.synthetic import noise
from microrepro.datasets.synthetic.preview import stats  # noqa: F401 - part of every generator's API

_SALT = 1


@dataclass
class SimcepConfig:
    """Parameters of the SIMCEP-like generator (lengths in pixels, intensities in [0, 1])."""

    # --- population level (SIMCEP `population.*`) ---
    image_size: tuple[int, int] = (128, 128)  # (H, W): the paper's 128x128 training patches
    n_cells_mean: float = 9.0  # Poisson mean of cells per image (~10-15 % of the area is cell)
    n_cells_max: int = 60  # hard cap on cells per image
    n_clusters: int = 2  # `population.clust`: cluster centres per image
    cluster_probability: float = 0.6  # `population.clustprob`: P(cell belongs to a cluster)
    cluster_spread: float = 0.12  # `population.spatvar`: cluster std as a fraction of the side
    max_overlap: float = 0.25  # `population.overlap`: max fraction of a cell's area covered
    min_visible_px: int = 25  # cells cut by the border to fewer pixels are dropped
    placement_tries: int = 30  # rejection-sampling attempts per cell (SIMCEP's FAIL_LIMIT)
    # --- cell level (SIMCEP `cell_obj.cytoplasm/nucleus.*`) ---
    cytoplasm_radius: float = 8.5  # mean cytoplasm radius in px
    cytoplasm_radius_cv: float = 0.2  # relative spread of the radius between cells
    cytoplasm_max_elongation: float = 1.6  # ratio of the ellipse axes, drawn in [1, this]
    cytoplasm_shape: float = 0.18  # radius perturbation (SIMCEP shape parameter)
    cytoplasm_brightness: float = 0.45  # mean cytoplasm intensity
    cytoplasm_texture_persistence: float = 0.9  # SIMCEP cytoplasm texture: persistence
    cytoplasm_texture_octaves: int = 4  # number of texture octaves
    cytoplasm_texture_bias: float = 0.2  # texture floor: intensity = bias + (1-bias) * noise01
    nucleus_radius_fraction: float = 0.5  # nucleus radius / cytoplasm radius
    nucleus_shape: float = 0.08  # nucleus radius perturbation
    nucleus_brightness: float = 0.85  # mean nucleus intensity
    nucleus_texture_persistence: float = 0.5  # smoother than the cytoplasm
    nucleus_texture_octaves: int = 3
    nucleus_texture_bias: float = 0.35
    brightness_cv: float = 0.3  # per-cell brightness spread (lognormal): some cells are dim
    # --- measurement level (SIMCEP `measurement.*`) ---
    psf_sigma: float = 1.0  # Gaussian PSF std in px
    defocus_sigma: float = 1.0  # per-cell extra blur ~ |N(0, this)| px (SIMCEP focus levels)
    illumination_scale: float = 0.08  # amplitude of the polynomial illumination bowl
    autofluorescence_scale: float = 0.04  # amplitude of smooth background autofluorescence
    background_level: float = 0.04  # dark offset of the camera
    photons: float = 1000.0  # expected photons at intensity 1 (Poisson shot noise)
    ccd_noise_std: float = 0.006  # Gaussian CCD noise std (SIMCEP default `ccd` variance 1e-4 = 0.01^2)
    jpeg_quality: int | None = None  # `measurement.comp`: JPEG quality, None = lossless
    # --- fcn_segmentation Sec. 7.1: simplex noise in the background of half of the images ---
    background_noise_fraction: float = 0.5  # fraction of images that get background noise
    background_noise_scale: float = 0.18  # peak amplitude of that noise (intensity units)
    background_noise_period: float = 48.0  # coarsest period of the fractal noise (px)
    background_noise_octaves: int = 4
    background_noise_persistence: float = 0.5
    pixel_size_um: float | None = None  # SIMCEP images have no physical scale

    def validate(self) -> None:
        """Raise ValueError naming the first parameter out of range."""
        h, w = self.image_size
        if h < 16 or w < 16:
            raise ValueError(f"SimcepConfig.image_size must be at least 16x16, got {self.image_size}")
        checks = {
            "n_cells_mean": self.n_cells_mean >= 0,
            "n_cells_max": self.n_cells_max >= 0,
            "n_clusters": self.n_clusters >= 1,
            "cluster_probability": 0 <= self.cluster_probability <= 1,
            "max_overlap": 0 <= self.max_overlap <= 1,
            "cytoplasm_radius": self.cytoplasm_radius > 1,
            "cytoplasm_max_elongation": self.cytoplasm_max_elongation >= 1,
            "nucleus_radius_fraction": 0 < self.nucleus_radius_fraction < 1,
            "background_noise_fraction": 0 <= self.background_noise_fraction <= 1,
            "photons": self.photons >= 0,
            "ccd_noise_std": self.ccd_noise_std >= 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"SimcepConfig.{name} is out of range: {getattr(self, name)!r}")


def _texture(shape, rng, period, persistence, octaves, bias):
    """SIMCEP texture: fractal Perlin noise rescaled to ``[bias, 1]``.

    One field per image is shared by all cells (each cell sees a different part of it), which
    looks the same as SIMCEP's per-cell textures at a fraction of the cost.
    """
    field = noise.fractal_noise(shape, rng, base_period=period, octaves=octaves, persistence=persistence,
                                 kind="value")
    lo, hi = float(field.min()), float(field.max())
    return (bias + (1.0 - bias) * (field - lo) / (hi - lo + 1e-6)).astype(np.float32)


def _illumination(shape, rng):
    """SIMCEP `illumination.m`: a 2nd-degree polynomial bowl, brightest at a random centre."""
    h, w = shape
    cy, cx = rng.uniform(0.0, 1.0, 2)
    yy = (np.arange(h, dtype=np.float32)[:, None] / h - cy)
    xx = (np.arange(w, dtype=np.float32)[None, :] / w - cx)
    bowl = xx * xx + yy * yy
    return (1.0 - bowl / bowl.max()).astype(np.float32)


def generate_one(index: int, seed: int, config: SimcepConfig) -> Sample:
    """Image ``index`` of the run ``seed`` (see :func:`generate`)."""
    rng = noise.image_rng(seed, index, _SALT)
    h, w = config.image_size
    shape = (h, w)
    signal = np.zeros(shape, np.float32)
    labels, overlap, centres = noise.layout(shape, config.max_overlap)

    n_target = min(int(rng.poisson(config.n_cells_mean)), config.n_cells_max)
    clusters = rng.uniform([0, 0], [w, h], (config.n_clusters, 2))
    spread = config.cluster_spread * np.array([w, h])
    pad = int(np.ceil(3 * (config.psf_sigma + 2 * config.defocus_sigma))) + 2
    tex_cyto = _texture(shape, rng, 2.0 * config.cytoplasm_radius, config.cytoplasm_texture_persistence,
                        config.cytoplasm_texture_octaves, config.cytoplasm_texture_bias)
    tex_nuc = _texture(shape, rng, 1.2 * config.cytoplasm_radius, config.nucleus_texture_persistence,
                       config.nucleus_texture_octaves, config.nucleus_texture_bias)
    for _ in range(n_target):
        for _attempt in range(config.placement_tries):
            if rng.random() < config.cluster_probability:
                centre = clusters[rng.integers(config.n_clusters)] + rng.normal(0, 1, 2) * spread
            else:
                centre = rng.uniform([0, 0], [w, h])
            cx, cy = float(centre[0]), float(centre[1])
            if not (0 <= cx < w and 0 <= cy < h):
                continue
            radius = config.cytoplasm_radius * float(np.exp(rng.normal(0, config.cytoplasm_radius_cv)))
            elong = rng.uniform(1.0, config.cytoplasm_max_elongation)
            angle = rng.uniform(0, np.pi)
            rx, ry = radius * np.sqrt(elong), radius / np.sqrt(elong)
            poly = noise.blob_polygon(rng, rx, ry, angle, config.cytoplasm_shape) + [cx, cy]
            raster = noise.raster_polygon(poly, shape)
            if raster is None:
                continue
            window, cell = raster
            # Overlap rule (SIMCEP `population.overlap`), checked both ways and cumulatively
            # so that z-order never hides more than max_overlap of an earlier cell.
            fit = overlap.try_fit(labels[window], cell, config.min_visible_px)
            if fit is not None:
                break
        else:
            continue  # image too full: SIMCEP also gives up on a cell after FAIL_LIMIT tries
        covered, area = fit
        label = overlap.place(covered, area)
        labels[window][cell] = label
        centres[label] = (cx, cy)

        # Cell appearance in a padded window so the defocus blur can spread past the mask.
        y1, x1 = max(window[0].start - pad, 0), max(window[1].start - pad, 0)
        y2, x2 = min(window[0].stop + pad, h), min(window[1].stop + pad, w)
        local = np.zeros((y2 - y1, x2 - x1), np.float32)
        big = window[0].start - y1, window[1].start - x1
        cyto = np.zeros_like(local, dtype=bool)
        cyto[big[0] : big[0] + cell.shape[0], big[1] : big[1] + cell.shape[1]] = cell
        gain = float(np.exp(rng.normal(0, config.brightness_cv) - config.brightness_cv**2 / 2))
        local += cyto * tex_cyto[y1:y2, x1:x2] * config.cytoplasm_brightness * gain
        nr = radius * config.nucleus_radius_fraction
        # The nucleus sits near, not exactly at, the cell centre (still well inside the cell).
        ncx = cx + rng.normal(0, 0.15 * nr) - x1
        ncy = cy + rng.normal(0, 0.15 * nr) - y1
        npoly = noise.blob_polygon(rng, nr * rng.uniform(1.0, 1.2), nr, rng.uniform(0, np.pi),
                                   config.nucleus_shape) + [ncx, ncy]
        nraster = noise.raster_polygon(npoly, local.shape)
        if nraster is not None:
            nwin, nuc = nraster
            nuc = nuc & cyto[nwin]
            tex_n = tex_nuc[y1:y2, x1:x2][nwin]
            local[nwin] += nuc * tex_n * (config.nucleus_brightness - config.cytoplasm_brightness) * gain
        defocus = abs(rng.normal(0, config.defocus_sigma))
        signal[y1:y2, x1:x2] += noise.gaussian(local, defocus)

    image = noise.gaussian(signal, config.psf_sigma)
    image += config.background_level
    image += config.illumination_scale * _illumination(shape, rng)
    auto = noise.fractal_noise(shape, rng, base_period=max(h, w) / 2, octaves=3, persistence=0.5, kind="value")
    image += config.autofluorescence_scale * (auto - auto.min()) / (auto.max() - auto.min() + 1e-6)
    has_bg_noise = bool(rng.random() < config.background_noise_fraction)
    if has_bg_noise:
        bg = noise.fractal_noise(shape, rng, config.background_noise_period,
                                 config.background_noise_octaves, config.background_noise_persistence)
        bg = (bg - bg.min()) / (bg.max() - bg.min() + 1e-6)
        image += config.background_noise_scale * bg
    image = noise.sensor_noise(image, rng, config.photons, config.ccd_noise_std)
    image = noise.jpeg_roundtrip(noise.to_uint8(image), config.jpeg_quality)

    mask, points, boxes, _ = noise.instances_to_targets(labels, centres)
    return noise.synthetic_sample("simcep", seed, index, image, points, boxes, mask, config.pixel_size_um, "cell",
                                  background_noise=has_bg_noise, confusers=[])


def generate(n: int, seed: int, config: SimcepConfig | None = None) -> list[Sample]:
    """``n`` SIMCEP-like grey images with cell instance masks.

    Args:
        n: number of images (>= 0).
        seed: run seed; image ``i`` depends only on ``(seed, i)``.
        config: generator parameters (defaults: the fcn_segmentation 128x128 patches).

    Returns:
        list of ``Sample``: ``image_array`` ``(H, W)`` uint8; ``mask_array`` ``(H, W)`` int32
        cell instances (z-order resolves overlaps); ``points`` ``(K, 2)`` ``[x, y]`` cell
        centres (inside the visible cell); ``boxes`` ``(K, 4)`` ``[x1, y1, x2, y2]`` px of the
        visible cell (x2 = last column + 1); ``labels`` zeros (class "cell");
        ``meta["background_noise"]`` tells whether the paper's background noise was added.

    Reference: fcn_segmentation Sec. 7.1; Lehmussola et al. 2007.
    """
    return noise.generate_all(generate_one, n, seed, config or SimcepConfig())
