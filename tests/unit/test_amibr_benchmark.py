"""datasets.amibr_benchmark: layout, window geometry, figure context, field invariants, real-data statistics."""

from __future__ import annotations

import numpy as np
import pytest

from microrepro.datasets import amibr
from microrepro.datasets import amibr_benchmark as bench
from microrepro.datasets.base import Sample

CFG = bench.BenchmarkConfig()


@pytest.mark.parametrize("size,seed", [((512, 512), 0), ((512, 512), 1), ((96, 200), 2), ((1376, 1539), 3)])
def test_layout_tiles_the_field_with_strips_and_no_grid(size, seed):
    config = bench.BenchmarkConfig(field_size=size)
    cells = bench.layout(config, np.random.default_rng(seed))
    cover = np.zeros(size, int)
    for x, y, w, h in cells:
        cover[y : y + h, x : x + w] += 1
        assert 32 <= min(w, h) <= 40 and max(w, h) <= 128
    assert np.all(cover == 1)  # every pixel in exactly one window
    if size == (512, 512):  # seams at other places in every row: no fixed grid
        rows = {y: sorted(x for x, yy, _, _ in cells if yy == y) for _, y, _, _ in cells}
        assert len({tuple(xs) for xs in rows.values()}) == len(rows) > 5


def test_representable_sizes():
    assert bench._representable(0, 32, 40) and bench._representable(64, 32, 40) and bench._representable(512, 32, 40)
    assert not bench._representable(50, 32, 40) and not bench._representable(20, 32, 40)


def _crop(points, black=None) -> bench._Crop:
    image = np.full((128, 128, 3), 120, np.uint8)
    if black is not None:
        image[black] = 0
    sample = Sample(id="c", image_array=image)
    return bench._Crop(sample, (np.asarray(points, np.float64), np.zeros(len(points), np.int32)))


def _brute_force(crop: bench._Crop, w, h, figure, inset, margin):
    found = []
    for y0 in range(129 - h):
        for x0 in range(129 - w):
            if crop.blocked[y0 : y0 + h, x0 : x0 + w].any():
                continue
            ok = True
            for k, (fx, fy) in enumerate(crop.points):
                inside = x0 + inset <= fx <= x0 + w - 1 - inset and y0 + inset <= fy <= y0 + h - 1 - inset
                dx, dy = max(x0 - fx, 0, fx - (x0 + w - 1)), max(y0 - fy, 0, fy - (y0 + h - 1))
                far = dx * dx + dy * dy >= margin * margin
                ok &= inside if (figure and k == 0) else (inside or far) if figure else far
            if ok:
                found.append((x0, y0))
    return np.array(found).reshape(-1, 2)


def test_window_origins_exact_for_a_centred_figure():
    crop = _crop([[64, 64]])
    found = crop.origins(40, 40, True, 16, 24)
    # the figure >= 16 px inside a 40 px window: x0 + 16 <= 64 <= x0 + 23  ->  x0, y0 in 41..48
    assert sorted(set(found[:, 0])) == list(range(41, 49)) and len(found) == 64
    np.testing.assert_array_equal(crop.origins(128, 40, True, 16, 24), [[0, y] for y in range(41, 49)])
    # figure-free full-height strips: the left one (x <= 39) is 25 px from the figure, the right one (x >= 88) 24 px
    np.testing.assert_array_equal(crop.origins(40, 128, False, 16, 24), [[0, 0], [1, 0], [88, 0]])
    np.testing.assert_array_equal(crop.origins(40, 128, False, 16, 25), [[0, 0]])
    assert len(crop.origins(40, 128, False, 16, 26)) == 0


def test_window_origins_match_a_brute_force_search():
    crop = _crop([[64, 64], [100, 30], [-20, 90]], black=(slice(110, 128), slice(0, 30)))
    def rows(a):
        return a[np.lexsort(a.T[::-1])]

    counts = []
    for w, h, figure in [(40, 36, True), (96, 32, True), (32, 100, False), (40, 40, False), (128, 33, False)]:
        expected = rows(_brute_force(crop, w, h, figure, 16.0, 24.0))
        np.testing.assert_array_equal(rows(crop.origins(w, h, figure, 16.0, 24.0)), expected)
        counts.append(len(expected))
    # 96x32: the neighbour at (100, 30) is 18 px above any such window around (64, 64); 128x33: the top strip
    # holds that neighbour, the bottom one black padding
    assert counts == [14, 0, 66, 453, 0]


def _sample(uid, slide, x, y, label=0) -> Sample:
    return Sample(id=f"MIDOG21_{uid}", image_array=np.full((128, 128, 3), 100 + uid, np.uint8),
                  points=[[64, 64]], labels=[label], pixel_size_um=0.25,
                  meta={"dataset": "MIDOG21", "slide": slide, "uid": str(uid), "slide_xy": (float(x), float(y))})


def test_figure_context_includes_neighbours_just_outside_the_crop():
    table = [{"dataset": "MIDOG21", "slide": s, "x": float(x), "y": float(y), "atypical": a}
             for s, x, y, a in [("s1", 1000, 1000, False), ("s1", 1100, 1000, True), ("s1", 1300, 1000, False),
                                ("s2", 1000, 1000, True)]]
    context = bench.figure_context([_sample(1, "s1", 1000, 1000)], table)
    points, labels = context["MIDOG21_1"]
    np.testing.assert_array_equal(points, [[64, 64], [164, 64]])  # 100 px right: outside the crop, still near
    np.testing.assert_array_equal(labels, [0, 1])
    only = bench.figure_context([_sample(1, "s1", 1000, 1000)])["MIDOG21_1"]  # no table: the crop's own points
    np.testing.assert_array_equal(only[0], [[64, 64]])


def test_fields_keep_figures_inside_and_figure_free_windows_clear():
    rng = np.random.default_rng(0)
    crops = []
    for k in range(40):
        s = _sample(k, f"s{k % 5}", 1000 + 500 * k, 1000)
        s.image_array = rng.integers(1, 255, (128, 128, 3), dtype=np.uint8)
        crops.append(s)
    context = bench.figure_context(crops)
    config = bench.BenchmarkConfig(field_size=(160, 192), figure_fraction=0.3)
    fields = bench.build_fields(crops, context, 3, seed=5, config=config)
    assert len(fields) == 3 and all(f.image.shape == (160, 192, 3) for f in fields)
    by_id, used = {c.id: c for c in crops}, {}
    for field in fields:
        assert len(field.points) == sum(src[3] for src in field.meta["sources"]) > 0
        for (x, y, w, h), (crop_id, x0, y0, n) in zip(field.meta["windows"], field.meta["sources"], strict=True):
            source = by_id[crop_id].image[y0 : y0 + h, x0 : x0 + w]
            np.testing.assert_array_equal(field.image[y : y + h, x : x + w], source)
            mask = used.setdefault(crop_id, np.zeros((128, 128), bool))
            assert not mask[y0 : y0 + h, x0 : x0 + w].any()  # no crop pixel used twice
            mask[y0 : y0 + h, x0 : x0 + w] = True
            inside = field.points[(field.points[:, 0] >= x) & (field.points[:, 0] < x + w)
                                  & (field.points[:, 1] >= y) & (field.points[:, 1] < y + h)]
            assert len(inside) == n
            if n:  # the figure at crop (64, 64), >= 16 px inside its window
                np.testing.assert_array_equal(inside, [[64 - x0 + x, 64 - y0 + y]])
                (fx, fy), = inside
                assert min(fx - x, x + w - 1 - fx, fy - y, y + h - 1 - fy) >= 16
            else:  # figure-free: the crop's figure >= 24 px from the window
                dx, dy = max(x0 - 64, 0, 64 - (x0 + w - 1)), max(y0 - 64, 0, 64 - (y0 + h - 1))
                assert np.hypot(dx, dy) >= 24
    stats = bench.centre_statistics(fields)
    assert stats["figures_near_window_centre"] == 1.0  # 128 px crops: a figure is always near its window's centre
    assert stats["window_centres_near_figure"] == stats["n_figures"] / stats["n_windows"] < 0.5


def test_statistics_of_the_old_mosaic_layout():
    crops = [_sample(k, "s1", 1000 + 500 * k, 1000) for k in range(4)]
    old = bench.mosaic_windows(amibr.mosaic(crops, (2, 2), seed=0))
    assert old.meta["windows"] == [[0, 0, 128, 128], [128, 0, 128, 128], [0, 128, 128, 128], [128, 128, 128, 128]]
    stats = bench.centre_statistics([old])
    assert stats["figures_near_grid_centre"] == stats["figures_near_window_centre"] == 1.0
    assert stats["window_centres_near_figure"] == 1.0 and stats["grid_chance"] == pytest.approx(np.pi / 16)


def test_real_benchmark_is_not_solved_by_position(shared_data):
    """The docstring's statistics on the real test slides: position tells little here, everything in the old mosaics."""
    root = shared_data("mitosis_amibr")
    crops = amibr.load(root)
    _, test_crops = amibr.slide_split(crops, 0.2, 0)
    fields = bench.build_fields(test_crops, bench.figure_context(crops, amibr.read_table(root)), 12, seed=1)
    stats = bench.centre_statistics(fields)
    assert len(fields) == 12 and stats["n_figures"] > 100
    assert stats["figures_near_grid_centre"] < 0.3  # chance for a 128 px grid: 0.196
    assert stats["window_centres_near_figure"] < 0.2  # ~ figure_fraction 0.15
    old = [bench.mosaic_windows(m) for m in amibr.mosaics(test_crops, (4, 4), seed=1)[:12]]
    assert bench.centre_statistics(old)["figures_near_grid_centre"] > 0.95
