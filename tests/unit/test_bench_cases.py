"""Every paper's ``bench.py``: ``benchmarks(config)`` gives cases that ``common/bench.measure`` can run.

Timings are never asserted (a benchmark is not a timed test). The unit tests check the cases of
the paper config (sizes, published timings taken from ``published.yaml``) without building the
big models, and build the models of the shrunk "smoke" config to check that ``make_batch`` and
the real input pipeline feed them what they take. The slow test runs ``measure`` end to end on
the smoke config (tracing a detector's train step takes minutes on a loaded CPU).
"""

from __future__ import annotations

import importlib
import math

import numpy as np
import pytest

from microrepro.common.bench import BenchCase

PAPERS = ["spines", "cell_counting", "mitos_rcnn", "fcn_segmentation", "dwt_mitosis"]

# The paper's input sizes (H, W, C) per case at preset "paper", schedule "paper": the values
# the issue asks the benchmark to run at (each also comes from the paper's config.yaml).
PAPER_INPUTS = {
    "spines": {"yolov2": (448, 448, 1), "faster_rcnn": (448, 448, 1), "sp_cnn": (256, 256, 1)},
    "cell_counting": {"c_resunet": (512, 512, 3)},
    "mitos_rcnn": {"mitos_rcnn": (299, 299, 3), "faster_rcnn_conv5": (299, 299, 3), "faster_rcnn_conv4": (299, 299, 3)},
    "fcn_segmentation": {"fcrn_a": (128, 128, 1), "fcrn_a_b32": (128, 128, 1)},
}
# Timing rows of published.yaml that must appear beside a case (metric names as typed there).
PUBLISHED_METRICS = {
    ("spines", "yolov2"): {"ms_per_image"},
    ("spines", "faster_rcnn"): {"ms_per_image"},
    ("mitos_rcnn", "mitos_rcnn"): {"s_per_hpf", "s_per_hpf (Saha et al. [14])"},
}


def _task_and_bench(paper: str):
    try:
        task_module = importlib.import_module(f"microrepro.reproductions.{paper}.task")
    except Exception as err:  # noqa: BLE001 - a paper being written may fail in any way on import
        pytest.skip(f"{paper}: its task module does not import yet ({type(err).__name__}: {err})")
    try:
        bench_module = importlib.import_module(f"microrepro.reproductions.{paper}.bench")
    except ModuleNotFoundError:
        pytest.skip(f"{paper}: no reproductions/{paper}/bench.py")
    return task_module.TASK, bench_module


def _cases(paper: str, schedule: str) -> list[BenchCase]:
    task, bench_module = _task_and_bench(paper)
    return bench_module.benchmarks(task.load_config("paper", schedule))


def _first(batch):
    """The array or tensor whose leading axis is the batch (the first leaf)."""
    import tensorflow as tf

    return tf.nest.flatten(batch)[0]


def _model_input_shape(model) -> tuple:
    """``(H, W, C)`` the model takes (None = any): functional inputs, else a detector's backbone."""
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        inputs = None
    if inputs:
        return tuple(inputs[0].shape[1:])
    return tuple(model.backbone.input_shape[1:])


# Every model of a paper's result table has a case (issue 9: "all five papers' models").
TABLE_MODELS = {
    "spines": {"yolov2", "faster_rcnn", "sp_cnn"},
    "mitos_rcnn": {"faster_rcnn_conv5", "faster_rcnn_conv4", "mitos_rcnn"},
    "dwt_mitosis": {"dwt_unet", "unet"},
}
# Papers whose full field (a 1600x1200 cell image, a whole HPF) must have a tiled-prediction row.
FULL_FIELDS = {"cell_counting": (1200, 1600, 3), "mitos_rcnn": (1376, 1539, 3), "dwt_mitosis": (2000, 2000, 3)}


@pytest.mark.parametrize("paper", sorted(set(TABLE_MODELS) | set(FULL_FIELDS)))
def test_every_table_model_and_full_field_is_benchmarked(paper):
    cases = _cases(paper, "paper")
    assert TABLE_MODELS.get(paper, set()) <= {case.name for case in cases}
    if paper in FULL_FIELDS:
        assert FULL_FIELDS[paper] in {tuple(case.field_shape) for case in cases if case.field_shape is not None}


@pytest.mark.parametrize("paper", PAPERS)
def test_paper_config_cases(paper):
    import tensorflow as tf

    cases = _cases(paper, "paper")
    assert len(cases) >= 1
    names = [case.name for case in cases]
    assert len(set(names)) == len(names), f"duplicate case names {names}"
    for case in cases:
        assert isinstance(case, BenchCase) and case.paper == paper
        assert len(case.input_shape) == 3 and all(int(v) > 0 for v in case.input_shape)
        assert case.batch >= 1 and callable(case.build) and callable(case.make_batch)
        assert (case.field_shape is None) == (case.field_predict is None)
        if paper in PAPER_INPUTS:
            assert tuple(case.input_shape) == PAPER_INPUTS[paper][case.name]
        for entry in case.published:
            assert set(entry) == {"metric", "value", "hardware", "source"}
            assert entry["metric"] == "ms_per_image" or entry["metric"].startswith("s_per")
            assert isinstance(entry["value"], (int, float)) and entry["value"] > 0
        assert {p["metric"] for p in case.published} == PUBLISHED_METRICS.get((paper, case.name), set())
        # make_batch is numpy only: cheap at the paper's size for one image.
        x, y = case.make_batch(1)
        assert _first(x).shape == (1, *case.input_shape)
        assert all(np.shape(leaf)[0] == 1 for leaf in tf.nest.flatten(y))


def test_paper_published_values_come_from_published_yaml():
    from microrepro.common.results import load_published

    for paper, _ in PUBLISHED_METRICS:
        cases = _cases(paper, "paper")
        typed = {
            (row["metric"], row["published"], row["source"])
            for table in load_published(paper)["tables"] for row in table["rows"]
        }
        for case in cases:
            for entry in case.published:
                metric = entry["metric"].split(" (")[0]
                assert (metric, entry["value"], entry["source"]) in typed


@pytest.mark.parametrize("paper", PAPERS)
def test_smoke_cases_feed_their_models(paper):
    """Shrunk config: the built model takes make_batch's x; the real pipeline yields the same structure."""
    import tensorflow as tf

    for case in _cases(paper, "smoke"):
        model = case.build()
        assert model.optimizer is not None, f"{case.name}: build() must return a compiled model"
        x, y = case.make_batch(1)
        expected = _model_input_shape(model)
        fits = len(expected) == x.ndim - 1 == 3 and all(
            e is None or e == s for e, s in zip(expected, x.shape[1:], strict=True)
        )
        assert fits, f"{case.name}: make_batch gives {x.shape}, the model takes {expected}"
        if case.pipeline is None:
            continue
        x_pipe, y_pipe = next(iter(case.pipeline()))[:2]
        assert x_pipe.shape[0] == case.batch and x_pipe.shape[-1] == x.shape[-1]
        tf.nest.assert_same_structure(y_pipe, y)
        for piped, made in zip(tf.nest.flatten(y_pipe), tf.nest.flatten(y), strict=True):
            assert piped.shape.rank == made.ndim and piped.shape[-1] == made.shape[-1]
            assert piped.dtype.as_numpy_dtype == made.dtype, (
                f"{case.name}: pipeline {piped.dtype} vs make_batch {made.dtype}"
            )


@pytest.mark.slow
@pytest.mark.parametrize("paper", PAPERS)
def test_smoke_cases_measure(paper):
    """``measure`` end to end on the shrunk config: train, infer, pipeline, full field."""
    from microrepro.common import bench

    for case in _cases(paper, "smoke"):
        row = bench.measure(case, repeats=1, steps=1)
        assert row["model"] == case.name and row["parameters"] > 0
        assert math.isfinite(row["train_ms_per_step"]["median"]) and row["infer_ms_per_image"]["median"] > 0
        if case.pipeline is not None:
            assert row["pipeline_images_per_s"]["median"] > 0
        if case.field_shape is not None:
            assert row["s_per_field"]["median"] > 0
