"""A mitosis detection benchmark from AMi-Br crops that cannot be solved by position.

Why: :func:`amibr.mosaics` tiles whole 128 px crops on a fixed 128 px grid, and every crop has its
figure at crop pixel (64, 64); on the 12 test mosaics of mitos_rcnn 192 of 196 figures sit
exactly at tile centres, so "one detection at every tile centre" scores F1 ~0.99.

Construction (:func:`build_fields`), all in crop/field pixels at 0.25 um/px:

- **Layout: strips, no grid.** A field (512x512 by default) is cut into rows of random heights;
  a row of height 32-40 px holds cells of random widths 32-128 px ("horizontal strips"), a taller
  row (41-128 px) holds cells of random widths 32-40 px ("vertical strips"). Every cell has a short
  side of 32-40 px and a long side of 32-128 px, so seams fall at different places in every field
  and every row. Seams are left hard (not blended): cross-fading two unrelated tissues makes ghost
  nuclei, an artefact of its own; and a seam says nothing about where a figure is (next point).
- **Windows of one shape distribution, with or without a figure.** Each cell is filled by a
  window of exactly its size cut from a crop: a *figure window* (share ``figure_fraction``) holds
  the crop's figure at least ``inset_um`` (4 um = 16 px) inside its edges, at a uniformly random
  feasible offset; a *figure-free window* keeps every figure of the slide (the crop's own and
  all neighbours from ``AMI-BR.csv``, also those just outside the crop) at least
  ``negative_margin_um`` (6 um = 24 px) away. Any other figure that a window touches must lie
  wholly inside it (then it is annotated) or that far outside it. Windows never reuse a crop
  pixel, nor contain black slide padding. Figure and figure-free windows have the same shapes, so
  the layout (even if a user traces every seam) does not tell which cells hold figures.
- **Splits**: by slide (``amibr.slide_split``); fields of one split only use crops of that split.
- **Deterministic**: same crops, same ``AMI-BR.csv``, same seed and config -> identical fields
  (:func:`fingerprint`).

Geometry that forces these choices (the crops are 128 px, the matching radius 8 um = 32 px):

- A window inside a 128 px crop that keeps its figure >= r px inside has, per axis, its centre
  within ``min(64 - w/2, w/2 - r) <= 32 - r/2`` px of the figure, so >= 99 % of figures lie within
  8 um of their own window's centre whatever the offsets. Window centres are made useless instead
  by the figure-free windows of the same shapes: the share of window centres with a figure within
  8 um is about ``figure_fraction``, which bounds the precision of "a detection at every window
  centre".
- Figure-free windows: a margin of 8 um + a 4 um figure radius (48 px) from the crop's figure
  leaves no window larger than 31x31 px (a corner) or 17x128 px (an edge strip) in a 128 px crop
  (52 px: 28x28, 13x128), too small for a figure window of the same shape (>= 32 px, the figure
  16 px inside); 24 px (the 4 um figure radius + 2 um for the click position) leaves 48x48 corners
  and 41x128 strips. The matching radius is not needed in the margin: a figure-free window is
  never placed next to its crop's figure, so no detection in it can match that figure.

Measured on the real data (3475 crops, 80/20 slide split with seed 0; all fields: 104 benchmark
fields of 512x512 px with 1291 figures, 216 old 4x4 mosaics with 3546; the 12 test fields of a
``short`` run in brackets):

================================================  =============  =============
fraction                                          old mosaics    benchmark
================================================  =============  =============
figures within 8 um of a 128 px grid-cell centre  0.976 (0.980)  0.185 (0.131)
figures within 8 um of their own window's centre  0.976 (0.980)  1.000 (1.000)
window centres with a figure within 8 um          1.000 (1.000)  0.126 (0.126)
================================================  =============  =============

Chance for the 128 px grid is pi 32^2 / 128^2 = 0.196. The realised share of figure windows
(0.126) is below ``figure_fraction`` (0.15): a cell no crop can hold a figure in within
``max_tries`` gets a figure-free window. About 12 figures per 512 px field (the old mosaics: 16).
The best position-only rule (``common.baselines.fit_position``, chosen on the training fields)
scores F1 0.99 on the old test mosaics and 0.28 on the benchmark's (a 72 px grid; "every window
centre" is worse).

Reference: MITOS-RCNN Sec. V-A (TP within 8 um of a ground-truth centroid); Bertram et al. 2025,
AMi-Br (128 px crops at x40 centred on each figure).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict, deque
from dataclasses import dataclass

import numpy as np

from microrepro.datasets import amibr
from microrepro.datasets.base import Sample


@dataclass(frozen=True)
class BenchmarkConfig:
    """Field construction parameters (px at the crops' 0.25 um/px unless named ``_um``).

    Attributes:
        field_size: ``(height, width)`` of a field.
        short_side: ``(min, max)`` short side of a window.
        long_side: ``(min, max)`` long side of a window (<= the 128 px crop).
        figure_fraction: share of windows that hold a figure.
        inset_um: a figure's centre lies at least this far inside its window.
        negative_margin_um: a figure-free window keeps every figure at least this far away.
        max_tries: crops tried for one figure window before the cell gets a figure-free one.
    """

    field_size: tuple[int, int] = (512, 512)
    short_side: tuple[int, int] = (32, 40)
    long_side: tuple[int, int] = (32, 128)
    figure_fraction: float = 0.15
    inset_um: float = 4.0
    negative_margin_um: float = 6.0
    max_tries: int = 12

    def check(self) -> None:
        (s_lo, s_hi), (l_lo, l_hi) = self.short_side, self.long_side
        if not (0 < s_lo <= s_hi < l_hi <= amibr.CROP and l_lo <= s_hi):
            raise ValueError(f"need 0 < short {self.short_side} < long {self.long_side} <= {amibr.CROP} px")
        if min(self.field_size) < s_lo or not 0 < self.figure_fraction <= 1:
            raise ValueError(f"field_size {self.field_size} or figure_fraction {self.figure_fraction} out of range")


# ------------------------------------------------------------------------------- context
def figure_context(samples: list[Sample], table: list[dict] | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every figure near each crop, in that crop's pixels: the crop's own first, then neighbours.

    Args:
        samples: crops from ``amibr.load`` (``meta["dataset"]``, ``["slide"]``, ``["slide_xy"]``).
        table: rows of ``amibr.read_table`` (all figures, also of crops not on disk); None = only
            the figures ``amibr.load`` put inside each crop.

    Returns:
        ``{crop id: (points (K, 2) float64 [x, y] crop px, labels (K,) int32)}`` with the figures
        within 64 px of the crop (a window must avoid figures just outside the crop too).
    """
    if table is None:
        return {s.id: (np.asarray(s.points, np.float64), np.asarray(s.labels, np.int32)) for s in samples}
    by_slide: dict[tuple, list[dict]] = defaultdict(list)
    for row in table:
        by_slide[(row["dataset"], row["slide"])].append(row)
    out = {}
    for s in samples:
        x, y = s.meta["slide_xy"]
        rows = by_slide[(s.meta["dataset"], s.meta["slide"])]
        pts = np.array([[r["x"] - x + amibr.HALF, r["y"] - y + amibr.HALF] for r in rows], np.float64).reshape(-1, 2)
        labels = np.array([int(r["atypical"]) for r in rows], np.int32)
        own = np.all(pts == amibr.HALF, axis=1)
        near = np.all((pts > -amibr.HALF) & (pts < amibr.CROP + amibr.HALF), axis=1) & ~own
        first = (pts[own][:1], labels[own][:1]) if own.any() else (s.points[:1], s.labels[:1])
        out[s.id] = (np.vstack([first[0], pts[near]]), np.concatenate([first[1], labels[near]]).astype(np.int32))
    return out


# -------------------------------------------------------------------------------- layout
def _representable(total: int, lo: int, hi: int) -> bool:
    """Whether ``total`` is a sum of parts in ``[lo, hi]`` (0 is the empty sum)."""
    return total == 0 or (total > 0 and -(-total // hi) <= total // lo)


def _draw(rng: np.random.Generator, remaining: int, lo: int, hi: int, rest: tuple[int, int]) -> int | None:
    """A size in ``[lo, hi]`` drawn uniformly among those leaving a representable remainder."""
    sizes = np.arange(lo, min(hi, remaining) + 1)
    sizes = sizes[[_representable(remaining - int(v), *rest) for v in sizes]]
    return int(rng.choice(sizes)) if len(sizes) else None


def layout(config: BenchmarkConfig, rng: np.random.Generator) -> list[tuple[int, int, int, int]]:
    """Cells ``(x, y, w, h)`` px tiling the field: rows of random heights, cells of random widths.

    Rows 32-40 px high hold 32-128 px wide cells, taller rows 32-40 px wide cells, so every cell
    has a short side in ``short_side`` and a long side in ``long_side``.
    """
    config.check()
    (s_lo, s_hi), (_, l_hi) = config.short_side, config.long_side
    height, width = config.field_size
    cells, y = [], 0
    while y < height:
        wide_rows = rng.random() < 0.5
        ranges = [(s_lo, s_hi), (s_hi + 1, l_hi)] if wide_rows else [(s_hi + 1, l_hi), (s_lo, s_hi)]
        for lo, hi in ranges:
            row_h = _draw(rng, height - y, lo, hi, (s_lo, l_hi))
            if row_h is not None:
                break
        cell_range = (config.long_side[0], l_hi) if row_h <= s_hi else (s_lo, s_hi)
        x = 0
        while x < width:
            cell_w = _draw(rng, width - x, *cell_range, cell_range)
            if cell_w is None:  # the field width is not a sum of cell widths: cap the last cell
                cell_w = width - x
            cells.append((x, y, cell_w, row_h))
            x += cell_w
        y += row_h
    return cells


# ------------------------------------------------------------------------------- windows
class _Crop:
    """One crop's pixels, the figures near it and the pixels already used (or black padding)."""

    def __init__(self, sample: Sample, figures: tuple[np.ndarray, np.ndarray]):
        image = np.asarray(sample.image)
        image = image[..., :3] if image.ndim == 3 else np.repeat(image[..., None], 3, axis=-1)
        self.sample, self.image = sample, np.ascontiguousarray(image)
        self.points, self.labels = figures
        self.blocked = self.image.max(axis=-1) == 0  # black padding outside the slide

    def origins(self, w: int, h: int, figure: bool, inset: float, margin: float) -> np.ndarray:
        """Valid window origins ``(K, 2)`` ``[x0, y0]`` for a ``w`` x ``h`` window, row-major."""
        size_y, size_x = self.blocked.shape
        x0 = np.arange(size_x - w + 1, dtype=np.float64)
        y0 = np.arange(size_y - h + 1, dtype=np.float64)
        ok = np.ones((len(y0), len(x0)), bool)
        for k, (fx, fy) in enumerate(self.points):
            in_x = (x0 + inset <= fx) & (fx <= x0 + w - 1 - inset)
            in_y = (y0 + inset <= fy) & (fy <= y0 + h - 1 - inset)
            dx = np.maximum(np.maximum(x0 - fx, fx - (x0 + w - 1)), 0)
            dy = np.maximum(np.maximum(y0 - fy, fy - (y0 + h - 1)), 0)
            inside = in_y[:, None] & in_x[None, :]
            far = dy[:, None] ** 2 + dx[None, :] ** 2 >= margin**2
            ok &= inside if (figure and k == 0) else (far if not figure else inside | far)
        table = np.pad(self.blocked.astype(np.int32).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
        clear = (table[h:, w:] - table[:-h, w:] - table[h:, :-w] + table[:-h, :-w]) == 0
        ys, xs = np.nonzero(ok & clear)
        return np.stack([xs, ys], axis=1)

    def take(self, x0: int, y0: int, w: int, h: int, inset: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Cut the window, mark its pixels used; returns ``(pixels, points [x, y] window px, labels)``."""
        self.blocked[y0 : y0 + h, x0 : x0 + w] = True
        local = self.points - np.array([x0, y0], np.float64)
        inside = np.all((local >= inset) & (local <= np.array([w - 1, h - 1]) - inset), axis=1)
        return self.image[y0 : y0 + h, x0 : x0 + w], local[inside], self.labels[inside]


def _fill(queue: deque, crop, w: int, h: int, figure: bool, cfg: BenchmarkConfig, rng, px_um: float):
    """Cut a ``w`` x ``h`` window from the first crop of ``queue`` that can hold one.

    Figure windows: a crop leaves the queue once it has given its figure (one per crop) at a
    uniformly drawn feasible offset, and goes to the back when this shape did not fit. Figure-free
    windows: packed into a corner of the donor, which goes to the back after each try and is
    dropped once no smallest window fits any more.

    Returns:
        ``(crop index, x0, y0, pixels, points, labels)``, or None when ``cfg.max_tries`` crops
        (figure windows) or all donors (figure-free windows) failed.
    """
    inset, margin = cfg.inset_um / px_um, cfg.negative_margin_um / px_um
    smallest = cfg.short_side[0]
    for _ in range(min(cfg.max_tries, len(queue)) if figure else len(queue)):
        i = queue.popleft()
        found = crop(i).origins(w, h, figure, inset, margin)
        if not len(found):
            if figure or len(crop(i).origins(smallest, smallest, False, inset, margin)):
                queue.append(i)
            continue
        if figure:  # the figure anywhere it may be: a uniformly drawn feasible offset
            pick = found[int(rng.integers(len(found)))]
        else:  # figure-free: packed into a corner (the crop's pixels last longer), ties drawn
            queue.append(i)
            size_y, size_x = crop(i).blocked.shape
            corner = (np.minimum(found[:, 0], size_x - w - found[:, 0])
                      + np.minimum(found[:, 1], size_y - h - found[:, 1]))
            ties = found[corner == corner.min()]
            pick = ties[int(rng.integers(len(ties)))]
        x0, y0 = int(pick[0]), int(pick[1])
        return (i, x0, y0) + crop(i).take(x0, y0, w, h, inset)
    return None


def build_fields(samples: list[Sample], context: dict, n_fields: int = 0, seed: int = 0,
                 config: BenchmarkConfig = BenchmarkConfig(), prefix: str = "amibr_bench") -> list[Sample]:
    """Fields of windows cut from ``samples`` (one split's crops): see the module docstring.

    Args:
        samples: AMi-Br crops (``amibr.load``), all of one split.
        context: :func:`figure_context` of (at least) these crops.
        n_fields: fields to build; 0 = as many as the crops allow.
        seed: layout, window and offset seed.
        config: :class:`BenchmarkConfig`.
        prefix: field ids are ``<prefix>_s<seed>_<k>``.

    Returns:
        Samples with ``image_array`` ``(H, W, 3)`` uint8, ``points`` ``(N, 2)`` ``[x, y]`` field px of
        every figure, ``labels`` ``(N,)`` 0 normal / 1 atypical, ``pixel_size_um`` of the crops and
        ``meta`` ``{"windows": [[x, y, w, h], ...] field px, "sources": [[crop id, x0, y0, n figures],
        ...] crop px, "seams": "random strips"}``. Stops early (fewer fields) when the crops run out.
    """
    config.check()
    rng = np.random.default_rng(seed)
    ordered = sorted(samples, key=lambda s: s.id)
    cache: dict[int, _Crop] = {}

    def crop(i: int) -> _Crop:
        if i not in cache:
            cache[i] = _Crop(ordered[i], context[ordered[i].id])
        return cache[i]

    # Figure windows are taken from the front of one permutation, figure-free ones from its back,
    # so that a crop gives its figure window before its margins are cut away.
    positives = deque(int(i) for i in rng.permutation(len(ordered)))
    donors = deque(reversed(positives))
    px_um = float(ordered[0].pixel_size_um or amibr.PIXEL_SIZE_UM) if ordered else amibr.PIXEL_SIZE_UM
    fields = []
    while ordered and (not n_fields or len(fields) < n_fields):
        cells = layout(config, rng)
        n_pos = int(rng.binomial(len(cells), config.figure_fraction))
        chosen = set(rng.choice(len(cells), n_pos, replace=False).tolist())
        image = np.zeros(tuple(config.field_size) + (3,), np.uint8)
        points, labels, sources = [], [], []
        for k, (x, y, w, h) in enumerate(cells):
            placed = _fill(positives, crop, w, h, True, config, rng, px_um) if k in chosen else None
            if placed is None:  # a figure-free cell, or no crop could hold a figure here
                placed = _fill(donors, crop, w, h, False, config, rng, px_um)
            if placed is None:
                return fields  # the crops are used up: the unfinished field is dropped
            i, x0, y0, pixels, local, local_labels = placed
            image[y : y + h, x : x + w] = pixels
            points.append(local + np.array([x, y], np.float64))
            labels.append(local_labels)
            sources.append([ordered[i].id, x0, y0, len(local)])
        fields.append(Sample(
            id=f"{prefix}_s{seed}_{len(fields)}", image_array=image,
            points=np.concatenate(points).astype(np.float32), labels=np.concatenate(labels).astype(np.int32),
            pixel_size_um=px_um,
            meta={"windows": [list(c) for c in cells], "sources": sources, "seams": "random strips"},
        ))
    return fields


# ---------------------------------------------------------------------------- benchmark
@dataclass
class Benchmark:
    """Training and test fields of one slide split (test slides never reach the training fields)."""

    train: list[Sample]
    test: list[Sample]
    train_crops: list[Sample]
    test_crops: list[Sample]


def load_benchmark(root, test_fraction: float = 0.2, seed: int = 0, n_train: int = 0, n_test: int = 0,
                   config: BenchmarkConfig = BenchmarkConfig()) -> Benchmark:
    """Load AMi-Br at ``root``, split it by slide and build the fields of both parts.

    Training fields use seed ``seed``, test fields ``seed + 1`` (as the old mosaics did);
    ``n_train`` / ``n_test`` cap the number of fields (0 = all the crops allow).
    """
    crops = amibr.load(root)
    context = figure_context(crops, amibr.read_table(root))
    train_crops, test_crops = amibr.slide_split(crops, test_fraction, seed)
    return Benchmark(build_fields(train_crops, context, n_train, seed, config, "amibr_bench_train"),
                     build_fields(test_crops, context, n_test, seed + 1, config, "amibr_bench_test"),
                     train_crops, test_crops)


def mosaic_windows(field: Sample, tile: int = amibr.CROP) -> Sample:
    """An old ``amibr.mosaic`` field with ``meta["windows"]`` (its tiles) added, for the baselines."""
    field.meta["windows"] = [[int(x0), int(y0), tile, tile] for x0, y0 in field.meta["origins"]]
    return field


# ---------------------------------------------------------------------------- statistics
def centre_statistics(fields: list[Sample], match_um: float = 8.0, pitch: int = amibr.CROP) -> dict[str, float]:
    """How much a figure's position gives away, over ``fields`` (with ``meta["windows"]``).

    Returns:
        ``{"figures_near_grid_centre", "figures_near_window_centre", "window_centres_near_figure",
        "grid_chance", "n_figures", "n_windows"}``: shares of figures within ``match_um`` of the
        nearest centre of a ``pitch`` px grid anchored at (0, 0), and of their nearest window centre;
        the share of window centres with a figure within ``match_um``; and the grid share for
        figures placed uniformly (``pi r^2 / pitch^2``, r = ``match_um`` in px, capped at 1).
    """
    near_grid, near_window, centres_hit, n_windows, n_figures, px_um = 0, 0, 0, 0, 0, amibr.PIXEL_SIZE_UM
    for field in fields:
        px_um = float(field.pixel_size_um or amibr.PIXEL_SIZE_UM)
        radius = match_um / px_um
        pts = np.asarray(field.points, np.float64).reshape(-1, 2)
        windows = np.asarray(field.meta["windows"], np.float64).reshape(-1, 4)
        centres = windows[:, :2] + (windows[:, 2:] - 1) / 2
        grid = (np.floor(pts / pitch) + 0.5) * pitch - 0.5
        near_grid += int((np.hypot(*(pts - grid).T) <= radius).sum())
        if len(pts) and len(centres):
            dist = np.hypot(pts[:, None, 0] - centres[None, :, 0], pts[:, None, 1] - centres[None, :, 1])
            near_window += int((dist.min(axis=1) <= radius).sum())
            centres_hit += int((dist.min(axis=0) <= radius).sum())
        n_figures, n_windows = n_figures + len(pts), n_windows + len(centres)
    radius = match_um / px_um
    return {"figures_near_grid_centre": near_grid / max(n_figures, 1),
            "figures_near_window_centre": near_window / max(n_figures, 1),
            "window_centres_near_figure": centres_hit / max(n_windows, 1),
            "grid_chance": min(1.0, float(np.pi * radius**2 / pitch**2)),
            "n_figures": float(n_figures), "n_windows": float(n_windows)}


def fingerprint(fields: list[Sample]) -> str:
    """sha256 of every field's id, pixels, points, labels and windows (the regression golden)."""
    digest = hashlib.sha256()
    for field in fields:
        digest.update(field.id.encode())
        digest.update(np.ascontiguousarray(field.image, np.uint8).tobytes())
        digest.update(np.ascontiguousarray(field.points, np.float32).tobytes())
        digest.update(np.ascontiguousarray(field.labels, np.int32).tobytes())
        digest.update(np.asarray(field.meta["windows"], np.int64).tobytes())
    return digest.hexdigest()
