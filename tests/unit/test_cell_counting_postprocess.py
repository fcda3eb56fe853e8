"""Post-processing (Sec. 4.3): threshold, cleaning, watershed splitting, sizes, measurements."""

import math

import numpy as np
import pytest
from skimage.draw import disk

from microrepro.reproductions.cell_counting.postprocess import (
    PostprocessSizes,
    connected_components,
    mean_cell_diameter,
    measure_objects,
    separate_cells,
)


def _heat(shape, centres, radius, value=0.9):
    heat = np.zeros(shape, np.float32)
    for centre in centres:
        rr, cc = disk(centre, radius, shape=shape)
        heat[rr, cc] = value
    return heat


def test_sizes_from_a_50_px_cell_reproduce_the_released_constants():
    sizes = PostprocessSizes.from_cell_diameter(50.0)
    # area = pi 50^2 / 4 = 1963.5: hole 0.3 A = 589, object 0.1 A = 196, marker 0.0125 A = 25
    assert sizes == PostprocessSizes(hole_area=589, min_object=196, max_filter=30, footprint=40, min_marker=25)
    assert PostprocessSizes.released() == PostprocessSizes(600, 200, 30, 40, 25)
    with pytest.raises(ValueError, match="diameter"):
        PostprocessSizes.from_cell_diameter(0.0)


def test_mean_cell_diameter_is_the_mean_equivalent_diameter():
    mask = np.zeros((30, 30), np.int32)
    mask[0:10, 0:10] = 1  # area 100
    mask[20:22, 20:22] = 3  # area 4 (label 2 absent)
    expected = (math.sqrt(400 / math.pi) + math.sqrt(16 / math.pi)) / 2
    assert mean_cell_diameter([mask]) == pytest.approx(expected)
    with pytest.raises(ValueError, match="no object"):
        mean_cell_diameter([np.zeros((4, 4), np.int32)])


def test_watershed_splits_two_touching_disks_that_components_merge():
    heat = _heat((200, 300), [(100, 80), (100, 122), (50, 250)], 25)
    labels = separate_cells(heat, 0.5)  # released sizes: 50 px cells
    assert labels.dtype == np.int32
    assert labels.max() == 3
    assert connected_components(heat, 0.5).max() == 2
    objects = measure_objects(labels)
    xs = sorted(objects["centroids"][:, 0].round().tolist())
    assert xs[0] < 90 and 110 < xs[1] < 135 and xs[2] == 250


def test_small_objects_are_removed_and_small_holes_filled():
    sizes = PostprocessSizes(hole_area=50, min_object=30, max_filter=5, footprint=7, min_marker=1)
    heat = np.zeros((40, 60), np.float32)
    heat[5:25, 5:25] = 0.9  # a 20x20 cell (400 px)...
    heat[14:17, 14:17] = 0.0  # ...with a 9 px hole
    heat[30:35, 40:45] = 0.9  # a 25 px speck, below min_object
    labels = separate_cells(heat, 0.5, sizes)
    assert labels.max() == 1
    assert labels[15, 15] == 1  # hole filled
    assert (labels[30:35, 40:45] == 0).all()  # speck removed


def test_threshold_is_strict_and_empty_maps_give_no_cells():
    heat = _heat((100, 100), [(50, 50)], 25, value=0.6)
    assert separate_cells(heat, 0.6).max() == 0
    assert separate_cells(heat, 0.59).max() == 1
    assert separate_cells(np.zeros((10, 10), np.float32), 0.5).shape == (10, 10)
    assert separate_cells(heat[..., None], 0.59).max() == 1  # (H, W, 1) accepted
    with pytest.raises(ValueError, match="heat-map"):
        separate_cells(np.zeros((2, 3, 3)), 0.5)


def test_measure_objects_exact():
    labels = np.zeros((10, 12), np.int32)
    labels[2:4, 3:7] = 1  # 2 x 4 rectangle
    labels[6:9, 9:10] = 2  # 3 x 1 bar
    objects = measure_objects(labels)
    np.testing.assert_allclose(objects["centroids"], [[4.5, 2.5], [9.0, 7.0]])
    np.testing.assert_allclose(objects["boxes"], [[3, 2, 7, 4], [9, 6, 10, 9]])
    np.testing.assert_array_equal(objects["areas"], [8, 3])
    # released bbox centre: int((stop - start) / 2) + start per axis
    np.testing.assert_allclose(objects["bbox_centres"], [[5, 3], [9, 7]])
