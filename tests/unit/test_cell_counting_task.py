"""cell_counting helpers: config presets, crops, oversampling, threshold sweep, evaluation, input images."""

import numpy as np
import pytest
import yaml
from skimage.draw import disk
from skimage.measure import label

from microrepro.common.errors import ConfigError, UserError
from microrepro.reproductions.cell_counting import data as D
from microrepro.reproductions.cell_counting import evaluate as E
from microrepro.reproductions.cell_counting import inference as I
from microrepro.reproductions.cell_counting import postprocess as post
from microrepro.reproductions.cell_counting.data import Field
from microrepro.reproductions.cell_counting.task import TASK


def _field(shape, centres, radius=10, fid="f"):
    labels = np.zeros(shape, np.int32)
    for k, centre in enumerate(centres, start=1):
        rr, cc = disk(centre, radius, shape=shape)
        labels[rr, cc] = k
    image = np.zeros(shape + (3,), np.uint8)
    image[labels > 0] = (220, 200, 10)
    return Field(fid, image, labels)


def test_presets_and_schedules_resolve():
    paper = TASK.load_config("paper", "paper")
    assert paper.train.lr == 6e-3 and paper.train.plateau_patience == 4 and paper.train.plateau_factor == 0.7
    assert paper.weight_map.kind == "paper" and paper.weight_map.sigma == 25.0
    assert (paper.weight_map.cell_weight, paper.weight_map.background_weight) == (1.0, 1.5)
    assert paper.data.crop_size == 512 and paper.data.crop_stride == 400
    assert paper.postprocess.threshold_grid == (0.5, 0.975, 0.025)
    released = TASK.load_config("released", "paper")
    assert released.train.lr == 1e-3 and released.train.plateau_patience == 5 and released.train.min_lr == 9e-8
    assert released.train.early_stopping_patience == 20 and released.train.loss_cell_weight == 1.5
    assert released.weight_map.kind == "released" and released.postprocess.sizes == "released"
    short = TASK.load_config("paper", "short")
    assert short.data.scale == 0.5 and short.data.crop_size == 256 and short.data.crop_stride == 200
    assert TASK.load_config("released", "smoke").train.steps_per_epoch == 2
    with pytest.raises(ConfigError, match="unknown key"):
        TASK.load_config("paper", "smoke", {"train": {"learning_rate": 1.0}})


def test_published_metrics_are_keys_the_task_writes():
    published = yaml.safe_load(TASK.published_path.read_text())
    field = _field((64, 64), [(32, 32)])
    heat = (field.labels > 0).astype(np.float32)
    post_fn = I.postprocessor(I.FULL, post.PostprocessSizes(10, 10, 5, 7, 1))
    metrics, _ = E.evaluate_fields([heat], [field], post_fn, 0.5, 50.0)
    for row in published["tables"][0]["rows"]:
        assert row["model"] == I.FULL
        assert row["metric"] in metrics


def test_threshold_grid_is_the_released_one():
    grid = E.threshold_grid(TASK.load_config("paper", "paper"))
    assert len(grid) == 20 and grid[0] == 0.5 and grid[-1] == 0.975
    np.testing.assert_allclose(np.diff(grid), 0.025)
    np.testing.assert_array_equal(E.threshold_grid(TASK.load_config("paper", "smoke")), [0.5, 0.7])
    with pytest.raises(ConfigError, match="start <= stop"):
        E.threshold_grid(TASK.load_config("paper", "smoke", {"postprocess": {"threshold_grid": [0.7, 0.5, 0.1]}}))


def test_is_hard_crop_rule():
    assert not D.is_hard_crop(_field((64, 64), [(20, 20)]).labels, 3, 3)
    assert D.is_hard_crop(_field((100, 100), [(20, 20), (20, 80), (80, 20)], 8).labels, 3, 3)  # 3 cells
    touching = np.zeros((20, 30), np.int32)
    touching[5:15, 2:12] = 1
    touching[5:15, 13:23] = 2  # 1 px apart
    assert D.is_hard_crop(touching, 6, 3)
    apart = np.zeros((20, 40), np.int32)
    apart[5:15, 2:12] = 1
    apart[5:15, 25:35] = 2  # 13 px apart
    assert not D.is_hard_crop(apart, 6, 3)


def test_crops_layout_weights_and_oversampling():
    cfg = TASK.load_config("paper", "paper",
                           {"data": {"crop_size": 32, "crop_stride": 24, "hard_min_cells": 2, "hard_repeat": 2}})
    fields = [_field((56, 80), [(20, 20), (20, 60)], 8), _field((56, 80), [], 8, "empty")]
    crops = D.make_crops(fields, cfg)
    # 56 x 80 at size 32 / stride 24: rows {0, 24}, cols {0, 24, 48} -> 6 crops per field
    assert crops["image"].shape == (12, 32, 32, 3) and crops["image"].dtype == np.uint8
    assert crops["mask"].shape == (12, 32, 32, 1) and set(np.unique(crops["mask"])) == {0, 1}
    assert crops["weights"].dtype == np.float16
    assert float(crops["weights"][6:].min()) == 1.5  # empty field: background class weight only
    # Only the middle column of crops (x 24..56) holds parts of both cells (x 12..28 and 52..68).
    np.testing.assert_array_equal(crops["hard"], [False, True, False, False, True, False] + [False] * 6)
    sampled = D.oversample(crops, 2)
    assert len(sampled["image"]) == 12 + 2 * 2 and "hard" not in sampled
    np.testing.assert_array_equal(sampled["image"][12:], crops["image"][[1, 4, 1, 4]])


def test_split_fields_is_seeded_and_disjoint():
    fields = [_field((16, 16), [], fid=str(i)) for i in range(10)]
    train, val = D.split_fields(fields, 0.3, seed=0)
    assert len(train) == 7 and len(val) == 3
    assert {f.id for f in train}.isdisjoint({f.id for f in val})
    assert [f.id for f in D.split_fields(fields, 0.3, seed=0)[1]] == [f.id for f in val]
    with pytest.raises(UserError, match="at least 2"):
        D.split_fields(fields[:1], 0.3, seed=0)


def test_sweep_and_evaluation_on_hand_built_heatmaps():
    field = _field((120, 200), [(60, 50), (60, 150)], radius=12)
    heat = np.zeros((120, 200), np.float32)
    heat[field.labels == 1] = 0.9
    heat[field.labels == 2] = 0.6  # dim cell: found only below 0.6
    rr, cc = disk((20, 100), 10, shape=heat.shape)
    heat[rr, cc] = 0.7  # a false positive above 0.6
    sizes = post.PostprocessSizes(hole_area=50, min_object=20, max_filter=9, footprint=13, min_marker=1)
    fn = I.postprocessor(I.FULL, sizes)
    result = E.f1_sweep([heat], [field], fn, np.array([0.5, 0.65, 0.8]), 50.0)
    # t=0.5: 2 TP + 1 FP -> F1 0.8; t=0.65: 1 TP, 1 FP, 1 FN -> 0.5; t=0.8: 1 TP, 1 FN -> 2/3
    np.testing.assert_allclose(result["f1"], [0.8, 0.5, 2 / 3])
    np.testing.assert_array_equal(result["tp"], [2, 1, 1])
    np.testing.assert_array_equal(result["thresholds"], [0.5, 0.65, 0.8])
    metrics, per_field = E.evaluate_fields([heat], [field], fn, 0.5, 50.0)
    assert metrics["f1"] == pytest.approx(0.8) and metrics["f1_released"] == pytest.approx(0.8)
    assert metrics["precision"] == pytest.approx(2 / 3) and metrics["recall"] == 1.0
    assert metrics["mae"] == 1.0 and metrics["medae"] == 1.0 and metrics["mean_error"] == 1.0
    assert metrics["threshold"] == 0.5
    assert per_field[0][1].max() == 3
    perfect, _ = E.evaluate_fields([(field.labels > 0).astype(np.float32)], [field], fn, 0.5, 50.0)
    assert perfect["f1"] == 1.0 and perfect["mae"] == 0.0 and perfect["mean_iou"] == 1.0


def test_intervals_over_fields_and_paired_differences():
    from microrepro.common import stats
    from microrepro.common.runs import DataInfo

    sizes = post.PostprocessSizes(hole_area=50, min_object=20, max_filter=9, footprint=13, min_marker=1)
    fn = I.postprocessor(I.FULL, sizes)
    fields = [_field((120, 200), [(60, 50), (60, 150)], radius=12, fid="a"),
              _field((120, 200), [(40, 40), (80, 100), (60, 160)], radius=12, fid="b"),
              _field((120, 200), [(60, 100)], radius=12, fid="c")]
    heats = [(f.labels > 0).astype(np.float32) for f in fields]
    heats[1][fields[1].labels == 3] = 0.0  # field b: one cell missed
    metrics, per_field = E.evaluate_fields(heats, fields, fn, 0.5, 50.0)
    reported = ("f1", "precision", "recall", "f1_released", "precision_released", "recall_released", "mae",
                "medae", "mean_error", "mean_iou", "foreground_iou")
    assert {f"{m}_ci_{b}" for m in reported for b in ("low", "high")} <= set(metrics)
    assert "threshold_ci_low" not in metrics
    for m in reported:
        assert metrics[f"{m}_ci_low"] <= metrics[m] <= metrics[f"{m}_ci_high"], m
    # the statistic on all fields is exactly the reported point estimate
    values = E.table1_statistic(E.per_image(per_field))
    assert values == {m: metrics[m] for m in reported}
    assert per_field[1].hungarian.fn == 1 and per_field[1].pixels["fn"] > 0
    # recall is lowest (2/3) when all three draws are field b: probability 1/27 > 2.5 %, so the low
    # bound is 2/3; resamples without b (probability 8/27) give 1.0
    assert metrics["recall_ci_low"] == pytest.approx(2 / 3) and metrics["recall_ci_high"] == 1.0

    class FakeRun:
        def __init__(self):
            self.metrics, self.extra = {}, {}

        def add_metrics(self, model, split, values, data=None):
            self.metrics.setdefault(model, {}).setdefault(split, {}).update(values)

    run = FakeRun()
    info = DataInfo(kind="synthetic", dataset="fixture", n_images=3)
    paired = E.record_paired(run, "test", info, {I.FULL: per_field, I.NO_WATERSHED: per_field})
    key = stats.paired_key("f1", I.FULL, I.NO_WATERSHED)
    assert paired == run.metrics["paired"]["test"]
    assert set(paired) == {f"{m}_diff__{I.FULL}__vs__{I.NO_WATERSHED}{s}" for m in ("f1", "mae")
                           for s in ("", "_ci_low", "_ci_high")}
    assert paired[key] == 0.0 and paired[f"{key}_ci_low"] == 0.0 and paired[f"{key}_ci_high"] == 0.0
    assert run.extra["bootstrap"] == {"n_boot": 1000, "level": 0.95, "unit": "image", "seed": 0}
    assert E.record_paired(FakeRun(), "test", info, {I.FULL: per_field}) == {}  # nothing to compare


def test_threshold_only_postprocessor_is_connected_components():
    heat = _two_touching_cells_with_hole_and_speck()
    labels = I.postprocessor(I.THRESHOLD_ONLY, post.PostprocessSizes())(heat, 0.5)
    np.testing.assert_array_equal(labels, post.connected_components(heat, 0.5))
    np.testing.assert_array_equal(labels, label(heat > 0.5, connectivity=2))
    assert all(I.NETWORK[key] == I.FULL for key in I.SKIPPED)
    assert TASK.models == I.MODELS and TASK.default_model == I.FULL


def _two_touching_cells_with_hole_and_speck():
    """Two touching discs (one with a 3x3 hole) and a 2x2 speck far away, as a heat-map."""
    yy, xx = np.mgrid[:80, :120]
    heat = np.zeros((80, 120), np.float32)
    heat[(yy - 40) ** 2 + (xx - 40) ** 2 <= 15**2] = 0.9
    heat[(yy - 40) ** 2 + (xx - 66) ** 2 <= 15**2] = 0.9
    heat[39:42, 39:42] = 0.0  # hole
    heat[5:7, 110:112] = 0.9  # speck
    return heat


@pytest.mark.parametrize("key, n_objects, hole_filled", [
    (I.FULL, (2, 2), True),               # watershed splits the pair, speck removed, hole filled
    (I.NO_WATERSHED, (1, 1), True),       # the cleaned mask's components: the pair stays one object
    (I.NO_HOLE_FILLING, (3, 8), False),   # the hole adds distance maxima: the watershed over-splits
    (I.NO_SMALL_REMOVAL, (3, 3), True),   # the speck survives
    (I.THRESHOLD_ONLY, (2, 2), False),    # pair merged + speck
])
def test_each_postprocessing_ablation_leaves_out_one_step(key, n_objects, hole_filled):
    sizes = post.PostprocessSizes(hole_area=20, min_object=10, max_filter=9, footprint=12, min_marker=1)
    labels = I.postprocessor(key, sizes)(_two_touching_cells_with_hole_and_speck(), 0.5)
    assert n_objects[0] <= labels.max() <= n_objects[1]
    assert (labels[40, 40] > 0) == hole_filled


def test_unknown_postprocessing_step_is_refused():
    with pytest.raises(ValueError, match="unknown post-processing step"):
        post.separate_cells(np.ones((8, 8), np.float32), 0.5, skip=("erode",))
