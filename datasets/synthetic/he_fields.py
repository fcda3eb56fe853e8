"""Synthetic H&E high-power fields at x40 with mitotic figures (mitos_rcnn, dwt_mitosis).

Rendered physically, in optical density (Beer-Lambert): each pixel holds a haematoxylin and an
eosin concentration, ``OD = C_H * h + C_E * e`` with the scanner's unit stain vectors ``h`` and
``e``, and ``I = 255 * exp(-OD)``. Two scanner profiles (Aperio 0.2455 µm/px and Hamamatsu
0.2273 µm/px, as in MITOS 2012 / MITOS-ATYPIA-14) have different stain vectors and stain
strengths, so Macenko normalisation (``datasets/stain.py``) has something real to correct.

Content, sized in µm and converted with the scanner's pixel size:
- eosin-pink stroma with fibrous texture, cellular (tumour) regions where nuclei crowd, pale
  cytoplasm, white spaces (lumina, tears);
- normal nuclei: round/oval, 6-10 µm, vesicular (fine chromatin, darker rim, a nucleolus);
- MITOTIC FIGURES (the ground truth), 6-12 µm, dark and hyperchromatic with ragged,
  "hairy" edges inside a pale halo: clumped chromatin (prophase/prometaphase), metaphase
  plates (a dense bar), anaphase/telophase (two parallel bars);
- look-alikes that are NOT mitoses: apoptotic bodies (dark round dense fragments with an
  eosinophilic halo), hyperchromatic normal nuclei (dark, smooth), lymphocytes (small dark
  round nuclei).

Ground truth: ``mask_array`` labels the chromatin of each mitotic figure (pixel level, for
dwt_mitosis phase 1); ``points`` its centre (for anaphase pairs: between the two bars);
``boxes`` the mask's bounding box; ``labels`` 0 = mitosis. ``meta["confusers"]`` lists the
look-alikes, ``meta["stain_matrix"]`` the true ``(2, 3)`` [H; E] unit OD vectors.

Calibrated on: published values only (scanner pixel sizes of MITOS 2012 / MITOS-ATYPIA-14,
figure and nucleus sizes from the histology literature, Macenko's stain-vector model); no AMi-Br
crop (the real data of mitos_rcnn and dwt_mitosis) was used to set a parameter.

Reference: mitos_rcnn Sec. III (MITOS 2012 scanners, pixel sizes); dwt_mitosis Sec. 3.1
(pixel-level masks); Macenko et al., ISBI 2009 (OD / stain-vector model).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from microrepro.datasets.base import Sample
from microrepro.datasets.synthetic import noise
from microrepro.datasets.synthetic.preview import stats  # noqa: F401 - part of every generator's API

_SALT = 4

# Unit OD vectors [R, G, B] per scanner, and a stain-strength factor. The Aperio pair is the
# Macenko reference H&E; the Hamamatsu pair has a bluer haematoxylin and a more magenta
# eosin (closer to the Ruifrok vectors), and a stronger stain, as the two MITOS scanners differ.
SCANNERS = {
    "aperio": {
        "pixel_size_um": 0.2455,
        "h": (0.5626, 0.7201, 0.4062),
        "e": (0.2159, 0.8012, 0.5581),
        "strength": 1.0,
    },
    "hamamatsu": {
        "pixel_size_um": 0.2273,
        "h": (0.6800, 0.6800, 0.2700),
        "e": (0.0700, 0.9000, 0.4300),
        "strength": 1.1,
    },
}
MITOSIS_PHASES = ("clumped", "metaphase", "anaphase")
CONFUSER_KINDS = ("apoptotic_body", "hyperchromatic_nucleus", "lymphocyte")


def stain_matrix(scanner: str) -> np.ndarray:
    """The true ``(2, 3)`` [H; E] unit OD stain vectors of a scanner profile."""
    if scanner not in SCANNERS:
        raise ValueError(f"unknown scanner {scanner!r}; choose one of {sorted(SCANNERS)}")
    m = np.array([SCANNERS[scanner]["h"], SCANNERS[scanner]["e"]], np.float64)
    return m / np.linalg.norm(m, axis=1, keepdims=True)


@dataclass
class HEConfig:
    """Parameters of the H&E field generator (sizes in µm, densities per mm^2, concentrations
    in OD units of the unit stain vectors)."""

    image_size: tuple[int, int] = (512, 512)  # (H, W) px; MITOS HPFs are 1376x1539 (Aperio)
    scanner: str = "aperio"  # "aperio" (0.2455 µm/px) or "hamamatsu" (0.2273 µm/px)
    # --- tissue ---
    nuclei_per_mm2: float = 6500.0  # normal nuclei per mm^2 of tissue (breast carcinoma)
    cellular_fraction: float = 0.6  # share of the tissue that is cellular (tumour nests)
    nucleus_diameter_um: tuple[float, float] = (6.5, 10.5)
    nucleus_elongation: float = 1.5  # max axis ratio
    nucleus_h: tuple[float, float] = (0.85, 1.3)  # haematoxylin of a normal nucleus
    stroma_e: tuple[float, float] = (0.6, 1.0)  # eosin of stroma
    cytoplasm_e: tuple[float, float] = (0.45, 0.75)  # eosin of tumour cytoplasm
    cytoplasm_h: float = 0.38  # haematoxylin counterstain of cytoplasm (purple-pink)
    white_space_fraction: float = 0.08  # lumina, fat, tears
    membrane_e: float = 0.25  # extra eosin on cell borders between neighbouring nuclei
    # --- mitotic figures (the ground truth) ---
    mitoses_per_mm2: float = 100.0  # Poisson; ~1.6 per 512x512 Aperio field (zero is possible)
    mitosis_size_um: tuple[float, float] = (6.0, 12.0)
    mitosis_h: tuple[float, float] = (1.7, 2.6)
    phase_probabilities: tuple[float, float, float] = (0.45, 0.35, 0.2)  # clumped, metaphase, anaphase
    # --- look-alikes (not in the ground truth) ---
    confusers_per_mm2: float = 250.0  # Poisson
    confuser_probabilities: tuple[float, float, float] = (0.35, 0.35, 0.3)  # apoptotic, hyperchromatic, lymphocyte
    # --- scanner ---
    psf_sigma: float = 0.7  # px
    photons: float = 3000.0  # bright-field: little shot noise
    read_noise_std: float = 0.004
    jpeg_quality: int | None = None

    @property
    def pixel_size_um(self) -> float:
        return SCANNERS[self.scanner]["pixel_size_um"]

    def validate(self) -> None:
        """Raise ValueError naming the first parameter out of range."""
        if self.scanner not in SCANNERS:
            raise ValueError(f"HEConfig.scanner must be one of {sorted(SCANNERS)}, got {self.scanner!r}")
        h, w = self.image_size
        if h < 64 or w < 64:
            raise ValueError(f"HEConfig.image_size must be at least 64x64, got {self.image_size}")
        for name in ("phase_probabilities", "confuser_probabilities"):
            probs = getattr(self, name)
            if len(probs) != 3 or min(probs) < 0 or abs(sum(probs) - 1) > 1e-6:
                raise ValueError(f"HEConfig.{name} must be 3 probabilities summing to 1, got {probs}")
        for name in ("nuclei_per_mm2", "mitoses_per_mm2", "confusers_per_mm2"):
            if getattr(self, name) < 0:
                raise ValueError(f"HEConfig.{name} must be >= 0, got {getattr(self, name)}")


class _Canvas:
    """Stain concentration maps plus an occupancy map for placing objects."""

    def __init__(self, shape):
        self.shape = shape
        self.hem = np.zeros(shape, np.float32)
        self.eos = np.zeros(shape, np.float32)
        self.occupied = np.zeros(shape, np.int32)  # 0 free, -1 look-alike/nucleus, k mitosis k

    def free(self, window, region) -> bool:
        return not (self.occupied[window][region] != 0).any()


def _ragged(rng, rx, ry, angle, irregularity, harmonics):
    return noise.blob_polygon(rng, rx, ry, angle, irregularity, harmonics=harmonics, vertices=120)


def _mitosis_parts(rng, size_px, phase):
    """Polygons (relative to the figure centre) of the chromatin of one mitotic figure."""
    angle = rng.uniform(0, np.pi)
    if phase == "clumped":
        # Prophase/prometaphase: an irregular knot of chromatin, sometimes with satellites.
        parts = [_ragged(rng, size_px / 2 * rng.uniform(0.8, 1.0), size_px / 2 * rng.uniform(0.6, 0.9),
                         angle, 0.3, 9)]
        for _ in range(int(rng.integers(0, 3))):
            t = rng.uniform(0, 2 * np.pi)
            off = size_px / 2 * 0.75 * np.array([np.cos(t), np.sin(t)])
            parts.append(_ragged(rng, size_px * 0.15, size_px * 0.12, t, 0.2, 4) + off)
        return parts, angle
    length = size_px / 2
    width = size_px * rng.uniform(0.13, 0.2)
    if phase == "metaphase":
        # A dense plate seen edge-on: a bar with ragged, hairy edges.
        return [_ragged(rng, length, width, angle, 0.18, 12)], angle
    # Anaphase/telophase: two parallel bars moving apart along the spindle axis.
    gap = size_px * rng.uniform(0.25, 0.45)
    normal = np.array([-np.sin(angle), np.cos(angle)])
    return [_ragged(rng, length * rng.uniform(0.75, 0.95), width, angle, 0.18, 10) + s * gap * normal
            for s in (-1.0, 1.0)], angle


def _stamp(canvas_map, window, local, mode="max"):
    if mode == "max":
        np.maximum(canvas_map[window], local, out=canvas_map[window])
    else:
        canvas_map[window] += local


def _poisson_count(rng, per_mm2, shape, px_um):
    area_mm2 = shape[0] * shape[1] * (px_um * 1e-3) ** 2
    return int(rng.poisson(per_mm2 * area_mm2))


def generate_one(index: int, seed: int, config: HEConfig) -> Sample:
    """Image ``index`` of the run ``seed`` (see :func:`generate`)."""
    rng = noise.image_rng(seed, index, _SALT)
    h, w = config.image_size
    shape = (h, w)
    px = config.pixel_size_um
    um = 1.0 / px  # pixels per µm
    cv = _Canvas(shape)

    # --- tissue layout: cellular nests vs stroma, and white spaces ---
    layout = noise.fractal_noise(shape, rng, base_period=60 * um, octaves=3, persistence=0.5, kind="value")
    cellular = layout > np.quantile(layout, 1.0 - config.cellular_fraction) if config.cellular_fraction > 0 \
        else np.zeros(shape, bool)
    soft_cell = noise.gaussian(cellular.astype(np.float32), 3 * um)
    holes_field = noise.fractal_noise(shape, rng, base_period=14 * um, octaves=3, persistence=0.6, kind="value")
    white = holes_field > np.quantile(holes_field, 1.0 - config.white_space_fraction) \
        if config.white_space_fraction > 0 else np.zeros(shape, bool)
    tissue = 1.0 - noise.gaussian(white.astype(np.float32), 1.0 * um)

    # Stroma: fibrous eosin, oriented along a random direction (collagen bundles).
    fib = noise.fractal_noise(shape, rng, base_period=10 * um, octaves=4, persistence=0.6, stretch=3.0)
    theta = rng.uniform(0, 180)
    rot = cv2.getRotationMatrix2D((w / 2, h / 2), theta, 1.0)
    fib = cv2.warpAffine(fib, rot, (w, h), borderMode=cv2.BORDER_REFLECT)
    stroma_e = rng.uniform(*config.stroma_e) * np.clip(1.0 + 0.3 * fib, 0.2, None)
    cyto_e = rng.uniform(*config.cytoplasm_e) * np.clip(
        1.0 + 0.35 * noise.fractal_noise(shape, rng, base_period=4 * um, octaves=3, persistence=0.6, kind="value"),
        0.3, None)
    cv.eos += ((1 - soft_cell) * stroma_e + soft_cell * cyto_e) * tissue
    # A trace of haematoxylin everywhere (counterstain of cytoplasm/stroma): purple-pink.
    cv.hem += (0.02 + (config.cytoplasm_h - 0.02) * soft_cell) * tissue
    chromatin = noise.fractal_noise(shape, rng, base_period=1.4 * um, octaves=3, persistence=0.7, kind="value")

    def tissue_at(x, y):
        return tissue[min(max(int(y), 0), h - 1), min(max(int(x), 0), w - 1)] > 0.5

    # --- mitotic figures first, so they never sit under another object ---
    labels = np.zeros(shape, np.int32)
    centres, phases = {}, []
    n_mit = _poisson_count(rng, config.mitoses_per_mm2, shape, px)
    for _ in range(n_mit):
        for _attempt in range(40):
            cx, cy = rng.uniform([0, 0], [w, h])
            if not tissue_at(cx, cy):
                continue
            phase = MITOSIS_PHASES[int(rng.choice(3, p=config.phase_probabilities))]
            size = rng.uniform(*config.mitosis_size_um) * um
            parts, _ = _mitosis_parts(rng, size, phase)
            halo = noise.raster_disc(cx, cy, 0.6 * size + 1.5 * um, shape)
            figure = noise.raster_polygons([part + [cx, cy] for part in parts], shape)
            if figure is None or figure[1].sum() < 10 or not cv.free(*halo):
                continue
            break
        else:
            continue
        label = len(phases) + 1
        phases.append(phase)
        win, region = figure
        labels[win][region] = label
        centres[label] = (float(cx), float(cy))
        cv.occupied[halo[0]][halo[1]] = label
        # Paler, clearer cytoplasm around the dividing cell (irregular and soft, so the halo is
        # a hint, not a give-away); chromatin dense and dark.
        clear = noise.raster_polygon(
            noise.blob_polygon(rng, 0.8 * size + 2 * um, 0.65 * size + 2 * um, rng.uniform(0, np.pi), 0.2) + [cx, cy],
            shape)
        if clear is not None:
            cw, cm = clear
            fade = 1.0 - rng.uniform(0.1, 0.45) * noise.gaussian(cm.astype(np.float32), 1.5 * um)
            cv.eos[cw] *= fade
            cv.hem[cw] *= fade
        dense = region.astype(np.float32)
        conc = rng.uniform(*config.mitosis_h) * dense * np.clip(1.0 + 0.25 * chromatin[win], 0.5, None)
        _stamp(cv.hem, win, conc)

    # --- look-alikes ---
    confusers = []
    n_conf = _poisson_count(rng, config.confusers_per_mm2, shape, px)
    for _ in range(n_conf):
        kind = CONFUSER_KINDS[int(rng.choice(3, p=config.confuser_probabilities))]
        for _attempt in range(20):
            cx, cy = rng.uniform([0, 0], [w, h])
            if not tissue_at(cx, cy):
                continue
            if kind == "apoptotic_body":
                r = rng.uniform(1.5, 3.0) * um
                halo_r = r * rng.uniform(1.8, 2.4)
            elif kind == "lymphocyte":
                r = rng.uniform(2.5, 3.5) * um
                halo_r = r + 1.0 * um
            else:
                r = rng.uniform(*config.nucleus_diameter_um) / 2 * um
                halo_r = r + 1.0 * um
            halo = noise.raster_disc(cx, cy, halo_r, shape)
            if halo is not None and cv.free(*halo):
                break
        else:
            continue
        hw, hm = halo
        cv.occupied[hw][hm] = -1
        if kind == "apoptotic_body":
            # Shrunken cell: hypereosinophilic cytoplasm around dense round fragments.
            outline = noise.blob_polygon(rng, halo_r, halo_r * rng.uniform(0.75, 1.0), rng.uniform(0, np.pi), 0.12)
            shell = noise.raster_polygon(outline + [cx, cy], shape)
            if shell is not None:
                pink = noise.gaussian(shell[1].astype(np.float32), 1.5) * rng.uniform(0.15, 0.5)
                _stamp(cv.eos, shell[0], pink, "add")
            frags = [(0.0, 0.0, r)] + [
                (*(rng.uniform(-1, 1, 2) * r * 1.2), r * rng.uniform(0.3, 0.55))
                for _ in range(int(rng.integers(0, 3)))
            ]
            for fx, fy, fr in frags:
                d = noise.raster_disc(cx + fx, cy + fy, fr, shape)
                if d is not None:
                    _stamp(cv.hem, d[0], noise.gaussian(d[1].astype(np.float32), 0.6) * rng.uniform(1.8, 2.4))
        else:
            elong = rng.uniform(1.0, 1.15 if kind == "lymphocyte" else config.nucleus_elongation)
            poly = noise.blob_polygon(rng, r * np.sqrt(elong), r / np.sqrt(elong), rng.uniform(0, np.pi), 0.05,
                                      harmonics=3) + [cx, cy]
            raster = noise.raster_polygon(poly, shape)
            if raster is None:
                continue
            nw, nm = raster
            level = rng.uniform(1.3, 1.8) if kind == "lymphocyte" else rng.uniform(1.1, 1.5)
            conc = noise.gaussian(nm.astype(np.float32), 0.6) * level * np.clip(1 + 0.12 * chromatin[nw], 0.5, None)
            _stamp(cv.hem, nw, conc)
            cv.eos[nw] *= np.where(nm, 0.3, 1.0).astype(np.float32)
        confusers.append({"kind": kind, "x": float(cx), "y": float(cy)})

    # --- normal nuclei, crowded in the cellular regions ---
    # Candidate centres drawn from the density map: nuclei crowd in the cellular nests and are
    # sparse in the stroma (x6 fewer); placement rejects overlaps with what is already there.
    density = ((0.15 + 0.85 * soft_cell) * (tissue > 0.5)).ravel().astype(np.float64)
    n_nuc = _poisson_count(rng, config.nuclei_per_mm2, shape, px) if density.sum() > 0 else 0
    weights = density / max(density.sum(), 1e-12)
    candidates = rng.choice(density.size, size=4 * n_nuc, p=weights) if n_nuc else np.zeros(0, np.int64)
    jitter = rng.uniform(0, 1, (len(candidates), 2))
    placed = 0
    for k, flat in enumerate(candidates):
        if placed >= n_nuc:
            break
        iy, ix = divmod(int(flat), w)
        cx, cy = ix + jitter[k, 0], iy + jitter[k, 1]
        r = rng.uniform(*config.nucleus_diameter_um) / 2 * um
        in_stroma = soft_cell[iy, ix] < 0.5
        elong = rng.uniform(1.0, config.nucleus_elongation) * (rng.uniform(1.5, 2.5) if in_stroma else 1.0)
        poly = noise.blob_polygon(rng, r * np.sqrt(elong), r / np.sqrt(elong), rng.uniform(0, np.pi), 0.07,
                                  harmonics=3) + [cx, cy]
        raster = noise.raster_polygon(poly, shape)
        if raster is None or not cv.free(*raster):
            continue
        placed += 1
        nw, nm = raster
        cv.occupied[nw][nm] = -1
        base = rng.uniform(*config.nucleus_h) * (1.3 if in_stroma else 1.0)
        m = nm.astype(np.uint8)
        rim = (m - cv2.erode(m, np.ones((3, 3), np.uint8), iterations=max(1, int(0.4 * um)))).astype(np.float32)
        # Vesicular chromatin: a coarse, patchy texture, a darker membrane rim.
        conc = m * base * np.clip(0.75 + 0.35 * chromatin[nw], 0.3, None) + rim * 0.3 * base
        if not in_stroma and rng.random() < 0.8:
            ox, oy = rng.normal(0, 0.25 * r, 2)
            nuc = noise.raster_disc(cx + ox - nw[1].start, cy + oy - nw[0].start, rng.uniform(0.5, 0.9) * um, m.shape)
            if nuc is not None:
                conc[nuc[0]] += nuc[1] * m[nuc[0]] * base * 0.9
        conc = noise.gaussian(conc, 0.5)
        _stamp(cv.hem, nw, conc)
        # Nucleoplasm keeps some eosin: nuclei look purple rather than blue.
        cv.eos[nw] *= np.where(nm, 0.6, 1.0).astype(np.float32)

    # --- cell borders: the Voronoi boundaries between neighbouring nuclei, in the nests ---
    if config.membrane_e > 0 and (cv.occupied != 0).any():
        seeds = (cv.occupied == 0).astype(np.uint8)
        _, nearest = cv2.distanceTransformWithLabels(seeds, cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_CCOMP)
        border = np.zeros(shape, np.float32)
        border[:, 1:] += nearest[:, 1:] != nearest[:, :-1]
        border[1:, :] += nearest[1:, :] != nearest[:-1, :]
        border = noise.gaussian(np.minimum(border, 1.0) * (cv.occupied == 0), 0.7) * soft_cell * tissue
        cv.eos += config.membrane_e * border
        cv.hem += 0.3 * config.membrane_e * border

    # --- optics: Beer-Lambert with the scanner's stain vectors ---
    prof = SCANNERS[config.scanner]
    matrix = stain_matrix(config.scanner)
    strength = np.float32(prof["strength"])
    hem = noise.gaussian(cv.hem, config.psf_sigma) * strength
    eos = noise.gaussian(cv.eos, config.psf_sigma) * strength
    od = hem[..., None] * matrix[0].astype(np.float32) + eos[..., None] * matrix[1].astype(np.float32)
    rgb = np.exp(-od)
    rgb = noise.sensor_noise(rgb, rng, config.photons, config.read_noise_std)
    image = noise.jpeg_roundtrip(noise.to_uint8(rgb), config.jpeg_quality)

    mask, points, boxes, kept = noise.instances_to_targets(labels, centres)
    # Anaphase pairs: the point is the figure centre (between the bars), not a chromatin pixel.
    points = np.asarray([centres[k] for k in kept], np.float32).reshape(-1, 2)
    return noise.synthetic_sample("he", seed, index, image, points, boxes, mask, px, "mitotic figure",
                                  id_prefix=f"he_{config.scanner}", scanner=config.scanner,
                                  stain_matrix=matrix.tolist(), phases=[phases[k - 1] for k in kept],
                                  confusers=confusers)


def generate(n: int, seed: int, config: HEConfig | None = None) -> list[Sample]:
    """``n`` synthetic H&E fields at x40.

    Args:
        n: number of images (>= 0).
        seed: run seed; image ``i`` depends only on ``(seed, i)`` (and the config).
        config: generator parameters (default 512x512, Aperio).

    Returns:
        list of ``Sample``: ``image_array`` ``(H, W, 3)`` uint8 RGB; ``mask_array`` ``(H, W)``
        int32 mitotic-figure instances (chromatin pixels); ``points`` ``(K, 2)`` ``[x, y]``
        figure centres; ``boxes`` ``(K, 4)`` ``[x1, y1, x2, y2]`` px of each mask (x2 = last
        column + 1); ``labels`` zeros (0 = mitotic figure); ``pixel_size_um`` of the scanner;
        ``meta["confusers"]`` ``[{kind, x, y}]`` (``apoptotic_body``,
        ``hyperchromatic_nucleus``, ``lymphocyte``), ``meta["phases"]``,
        ``meta["stain_matrix"]`` (true [H; E] unit OD vectors), ``meta["scanner"]``.

    Reference: mitos_rcnn Sec. III; dwt_mitosis Sec. 3.1.
    """
    return noise.generate_all(generate_one, n, seed, config or HEConfig())
