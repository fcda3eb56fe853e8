"""common/figures.py writes real PNGs of the expected size, with the expected colours, and leaks no
pyplot state."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.colors import to_rgb
from matplotlib.image import imread

from microrepro.common.figures import (
    FN_COLOUR,
    FP_COLOUR,
    TP_COLOUR,
    draw_detections,
    montage,
    plot_curves,
    plot_roc,
)
from microrepro.common.matching import match_boxes, match_points


def read_png(path) -> np.ndarray:
    image = imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    return image[..., :3]


def has_colour(image: np.ndarray, colour: str, tolerance: float = 0.08) -> bool:
    return bool(np.any(np.all(np.abs(image - np.asarray(to_rgb(colour))) < tolerance, axis=-1)))


def assert_not_blank(image: np.ndarray) -> None:
    assert image.std() > 0.01, "the figure is a flat colour"


def test_plot_curves_writes_a_figure(tmp_path):
    x = np.linspace(0, 1, 21)
    path = plot_curves(
        {"f1": (x, 1 - (x - 0.55) ** 2), "mcc": (x, 0.8 - (x - 0.4) ** 2)},
        "threshold", "score", "threshold optimisation", tmp_path / "sub" / "curves.png",
        mark=(0.55, 1.0),
    )
    assert path == tmp_path / "sub" / "curves.png"
    image = read_png(path)
    assert image.shape[:2] == (400, 600)  # 6 x 4 inches at 100 dpi
    assert_not_blank(image)
    loss = plot_curves({"loss": ([1, 2, 3], [1.0, 0.1, 0.01])}, "epoch", "loss", "loss",
                       tmp_path / "loss.png", log_y=True)
    assert loss.stat().st_size > 1000
    with pytest.raises(ValueError, match="shape"):
        plot_curves({"bad": ([1, 2], [1])}, "x", "y", "t", tmp_path / "bad.png")


def test_plot_roc(tmp_path):
    path = plot_roc([1.0, 0.5, 0.2, 0.0], [1.0, 0.9, 0.6, 0.0], 0.81, tmp_path / "roc.png", "FCRN-A")
    image = read_png(path)
    assert image.shape[:2] == (500, 500)
    assert_not_blank(image)


def test_draw_detections_points_with_matching(tmp_path):
    image = np.zeros((100, 150), np.uint8)
    image[40:60, 40:60] = 200
    gt = np.array([[50, 50], [120, 20]], float)  # the second is missed
    pred = np.array([[51, 50], [20, 80]], float)  # the second is a false positive
    result = match_points(pred, gt, 5)
    path = draw_detections(image, pred, gt, tmp_path / "overlay.png", matched=result, title="img 1")
    png = read_png(path)
    # 100 x 150 is enlarged to 512 px on the longer side
    assert png.shape[:2] == (round(100 * 512 / 150), 512)
    for colour in (TP_COLOUR, FP_COLOUR, FN_COLOUR):
        assert has_colour(png, colour), colour


def test_draw_detections_boxes_without_matching_and_rgb(tmp_path):
    image = np.random.default_rng(0).integers(0, 255, (64, 48, 3), dtype=np.uint8)
    boxes = np.array([[5, 5, 20, 20]], float)
    path = draw_detections(image, boxes, boxes + 2, tmp_path / "boxes.png", scale=2.0)
    assert read_png(path).shape[:2] == (128, 96)
    matched = match_boxes(boxes, boxes + 2, 0.5)
    path = draw_detections(image, boxes, boxes + 2, tmp_path / "boxes_m.png", matched=matched, scale=3)
    png = read_png(path)
    assert png.shape[:2] == (192, 144)
    assert has_colour(png, TP_COLOUR)
    with pytest.raises(ValueError, match="matched describes"):
        draw_detections(image, boxes[:0], boxes, tmp_path / "x.png", matched=matched)


def test_montage(tmp_path):
    images = [np.full((32, 32), v, np.float32) for v in (0.0, 0.5)] + [
        np.random.default_rng(1).random((20, 30, 3))]
    path = montage(images, ["a", "b", "c"], tmp_path / "montage.png", ncols=2, tile_inches=2)
    image = read_png(path)
    assert image.shape[:2] == (400, 400)  # 2 x 2 tiles of 2 inches at 100 dpi
    assert_not_blank(image)
    with pytest.raises(ValueError, match="2 titles for 3 images"):
        montage(images, ["a", "b"], tmp_path / "m.png")


def test_no_pyplot_figures_leak(tmp_path):
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    plot_curves({"a": ([0, 1], [0, 1])}, "x", "y", "t", tmp_path / "a.png")
    draw_detections(np.zeros((10, 10)), [[1, 1]], [[2, 2]], tmp_path / "b.png")
    assert plt.get_fignums() == before
