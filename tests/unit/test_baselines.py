"""common.baselines: position-only rules and LoG blobs on synthetic fields with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.color import hed2rgb

from microrepro.common import baselines
from microrepro.datasets.base import Sample


def _field(points, size=(256, 256), windows=None) -> Sample:
    meta = {"windows": windows} if windows is not None else {}
    return Sample(id="f", image_array=np.zeros(size + (3,), np.uint8), points=points, pixel_size_um=0.25, meta=meta)


def test_grid_and_window_centres_are_exact():
    np.testing.assert_array_equal(baselines.grid_centres(256, 128, 128), [[63.5, 63.5], [63.5, 191.5]])
    np.testing.assert_array_equal(baselines.grid_centres(100, 100, 64), [[31.5, 31.5], [95.5, 31.5],
                                                                         [31.5, 95.5], [95.5, 95.5]])
    field = _field([[0, 0]], windows=[[10, 20, 40, 40], [150, 100, 60, 32]])
    np.testing.assert_array_equal(baselines.window_centres(field), [[29.5, 39.5], [179.5, 115.5]])
    assert baselines.window_centres(_field([[0, 0]])).shape == (0, 2)
    with pytest.raises(ValueError, match="pitch"):
        baselines.grid_centres(10, 10, 0)


def test_position_rule_of_a_tiled_layout_is_the_tile_grid():
    """Figures at the centres of 128 px tiles (the old AMi-Br mosaics): the 128 px grid wins."""
    centres = baselines.grid_centres(256, 256, 128)
    fields = [_field(centres), _field(centres[:2])]
    fit = baselines.fit_position(fields, pitches=(64, 128))
    assert fit.rule == baselines.PositionRule("grid", 128) and fit.rule.name == "grid_128px"
    # 128 px: 4 + 4 points, 6 figures, all hit -> 2*6 / (2*6 + 2 FP); 64 px: its centres are 45 px from each
    # tile centre, beyond 8 um (32 px) -> no TP
    assert fit.train_f1 == {"grid_64px": 0.0, "grid_128px": pytest.approx(12 / 14)}


def test_position_rule_uses_window_centres_when_they_win_and_the_8um_radius_is_inclusive():
    windows = [[10, 20, 40, 40], [150, 100, 60, 32]]
    fields = [_field([[29.5, 39.5], [179.5, 115.5]], windows=windows)]
    fit = baselines.fit_position(fields, pitches=(128,))
    assert fit.rule.name == "window_centres" and fit.train_f1 == {"grid_128px": 0.0, "window_centres": 1.0}
    assert baselines.fit_position(fields, pitches=(128,), windows=False).rule.name == "grid_128px"
    # exactly 8 um (32 px at 0.25 um/px) from a grid centre matches, 33 px does not
    near, far = _field([[63.5 + 32, 63.5]], size=(128, 128)), _field([[63.5 + 33, 63.5]], size=(128, 128))
    rule = baselines.PositionRule("grid", 128)
    assert baselines.match_fields([rule.detect(near)], [near]).tp == 1
    assert baselines.match_fields([rule.detect(far)], [far]).tp == 0


def _he(blobs, size=(128, 160)) -> np.ndarray:
    """An RGB H&E image from a haematoxylin map of Gaussian blobs ``(x, y, radius px, amplitude)``."""
    yy, xx = np.mgrid[: size[0], : size[1]]
    h = np.zeros(size)
    for x, y, r, amp in blobs:
        h += amp * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * (r / np.sqrt(2)) ** 2))
    hed = np.stack([h, np.full(size, 0.05), np.zeros(size)], axis=-1)
    return (np.clip(hed2rgb(hed), 0, 1) * 255).round().astype(np.uint8)


STRONG = [(40, 40, 12, 0.8), (120, 40, 12, 0.8), (80, 96, 12, 0.8)]  # the "figures"
WEAK = [(40, 100, 12, 0.25), (130, 100, 12, 0.25)]  # faint nuclei


def test_hematoxylin_and_log_blobs_find_the_known_blobs():
    assert np.all(baselines.hematoxylin(np.full((2, 2, 3), 255, np.uint8)) == 0)  # white: no stain
    blobs = baselines.log_blobs(_he(STRONG + WEAK), pixel_size_um=0.25)
    order = np.lexsort(blobs.points.T[::-1])
    points, log, mean_h = blobs.points[order], blobs.log[order], blobs.hematoxylin[order]
    np.testing.assert_array_equal(points, [[39, 100], [40, 40], [80, 96], [120, 40], [130, 100]])
    strong = np.array([False, True, True, True, False])
    assert log[strong].min() > 5 * log[~strong].max() and mean_h[strong].min() > 4 * mean_h[~strong].max()
    assert blobs.sigma.min() >= 1.5 / 0.25 and blobs.sigma.max() <= 4.0 / 0.25
    with pytest.raises(ValueError, match="blob score"):
        blobs.scores("area")


def test_log_blob_threshold_is_chosen_on_training_fields():
    train = [Sample(id="t", image_array=_he(STRONG + WEAK), points=[b[:2] for b in STRONG], pixel_size_um=0.25)]
    fitted = baselines.fit_log_blobs(train)
    assert fitted.train_f1 == {"log": 1.0, "hematoxylin": 1.0} and fitted.score == "log"  # tie: the first kind
    assert fitted.threshold.rule == "max_f1_train" and fitted.threshold.n_images == 1
    points, scores = fitted.detect(_he(STRONG + WEAK))
    np.testing.assert_array_equal(points[np.lexsort(points.T[::-1])], [[40, 40], [80, 96], [120, 40]])
    assert len(scores) == 3 and np.all(scores >= fitted.threshold.value)
    with pytest.raises(ValueError, match="at least one"):
        baselines.fit_log_blobs([])


def test_score_grid_is_the_quantiles():
    np.testing.assert_array_equal(baselines.score_grid([4, 0, 2, 1, 3], n=5), [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(baselines.score_grid([4, 0, 2, 1, 3], n=3), [0, 2, 4])
    np.testing.assert_array_equal(baselines.score_grid([]), [0])
