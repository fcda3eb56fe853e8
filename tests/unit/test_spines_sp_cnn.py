"""SP-CNN of the spines reproduction (Sec. 5): layout, targets, edges, priors, loss, peaks."""

import numpy as np
import pytest

from microrepro.reproductions.spines import sp_cnn


def test_six_layer_fcn_parameter_count():
    model = sp_cnn.build_sp_cnn(64)
    # conv1 5x5 1->64, four 3x3 64->64, conv6 3x3 64->1, all with bias
    expected = (25 * 64 + 64) + 4 * (9 * 64 * 64 + 64) + (9 * 64 + 1)
    assert model.count_params() == expected == 149_953
    assert len(model.layers) == 7  # input + 6 conv layers
    assert tuple(model(np.zeros((1, 256, 256, 1), np.float32)).shape) == (1, 256, 256, 1)


def test_heatmap_target_is_a_6x6_block_per_centre_clipped_at_borders():
    target = sp_cnn.heatmap_target(np.array([[10.0, 20.0], [1.0, 1.0]]), (32, 32), square=6)
    assert target[17:23, 7:13].sum() == 36  # rows y-3..y+2, cols x-3..x+2
    assert target[0:4, 0:4].sum() == 16  # the corner block loses 2 rows and 2 columns
    assert target.sum() == 36 + 16


def test_edge_map_finds_the_outline_of_a_bright_square():
    image = np.zeros((40, 40), np.uint8)
    image[10:30, 10:30] = 200
    edges = sp_cnn.edge_map(image)
    assert set(np.unique(edges)) == {0.0, 1.0}
    ys, xs = np.nonzero(edges)
    assert ys.min() >= 8 and ys.max() <= 31 and xs.min() >= 8 and xs.max() <= 31
    assert edges[15:25, 15:25].sum() == 0  # nothing inside the flat square
    with pytest.raises(ValueError, match="uint8"):
        sp_cnn.edge_map(image.astype(np.float32))


def test_cut_patches_and_priors_have_unit_norm():
    edge = np.zeros((30, 30), np.float32)
    edge[10, 5:25] = 1
    patches = sp_cnn.cut_patches([edge], [np.array([[15.0, 10.0], [100.0, 100.0]])], size=5)
    assert patches.shape == (1, 5, 5)  # the centre outside the image is skipped
    np.testing.assert_array_equal(patches[0, 2], np.ones(5))
    stack = np.concatenate([patches, 2 * patches, np.zeros_like(patches)])
    priors = sp_cnn.select_shape_priors(stack, n=2, method="kmeans")
    norms = np.sqrt((priors**2).sum(axis=(1, 2)))
    assert sorted(np.round(norms, 6).tolist()) == [0.0, 1.0]
    rnd = sp_cnn.select_shape_priors(patches, n=3, method="random")
    assert rnd.shape == (3, 5, 5)
    with pytest.raises(ValueError, match="kmeans"):
        sp_cnn.select_shape_priors(patches, n=1, method="expert")


def test_loss_is_mse_minus_r_on_a_hand_built_case():
    y_pred = np.ones((1, 4, 4, 1), np.float32)
    y_true = np.zeros((1, 4, 4, 2), np.float32)
    y_true[0, 1, 1, 1] = y_true[0, 2, 3, 1] = 1.0  # two edge pixels
    priors = np.ones((1, 1, 1), np.float32)  # a 1x1 prior: R = mean((g o x)^2) = 2/16
    loss = sp_cnn.SpCnnLoss(priors, pool_window=3, threshold=0.5, reg_weight=1.0)
    terms = {k: float(np.asarray(v)[0]) for k, v in loss.terms(y_true, y_pred).items()}
    assert terms["mse"] == pytest.approx(1.0)
    assert terms["r"] == pytest.approx(2 / 16)
    assert float(np.asarray(loss(y_true, y_pred))) == pytest.approx(1.0 - 2 / 16)
    plain = sp_cnn.SpCnnLoss(priors, reg_weight=0.0)
    assert float(np.asarray(plain(y_true, y_pred))) == pytest.approx(1.0)
    # Below the threshold g_p is zero: R vanishes.
    low = sp_cnn.SpCnnLoss(priors, threshold=2.0)
    assert float(np.asarray(low.terms(y_true, y_pred)["r"])[0]) == 0.0


def test_detect_peaks_returns_xy_sorted_by_score():
    heat = np.zeros((20, 30), np.float32)
    heat[5, 7] = 0.9
    heat[15, 20] = 0.7
    heat[15, 21] = 0.6  # within min_distance of the 0.7 peak: merged
    heat[2, 28] = 0.3  # below threshold
    points, scores = sp_cnn.detect_peaks(heat, threshold=0.5, min_distance=3)
    np.testing.assert_array_equal(points, [[7, 5], [20, 15]])
    np.testing.assert_allclose(scores, [0.9, 0.7])
    empty_points, empty_scores = sp_cnn.detect_peaks(np.zeros((8, 8)), 0.5)
    assert empty_points.shape == (0, 2) and empty_scores.shape == (0,)


def _loss_and_grad(gate: str, reg_weight: float):
    import keras

    rng = np.random.default_rng(0)
    priors = sp_cnn.select_shape_priors(rng.random((8, 5, 5)).astype(np.float32), 4, "random", 0)
    y_true = np.concatenate([rng.random((1, 12, 12, 1)) > 0.8, rng.random((1, 12, 12, 1))], -1).astype(np.float32)
    y_pred = keras.Variable(rng.uniform(0.0, 1.5, (1, 12, 12, 1)).astype(np.float32))
    loss = sp_cnn.SpCnnLoss(priors, pool_window=3, threshold=0.5, reg_weight=reg_weight, gate=gate)
    import tensorflow as tf  # the gradient tape is the test's, not the loss's

    with tf.GradientTape() as tape:
        value = loss(y_true, y_pred)
    return float(value), np.asarray(tape.gradient(value, y_pred))


def test_hard_threshold_gives_r_a_value_but_no_gradient():
    """The text's step threshold (``gate="hard"``): MSE − R in value, plain MSE in gradient (Sec. 5.1)."""
    hard_value, hard_grad = _loss_and_grad("hard", 1.0)
    mse_value, mse_grad = _loss_and_grad("hard", 0.0)
    soft_value, soft_grad = _loss_and_grad("soft", 1.0)
    assert hard_value < mse_value  # R > 0 is subtracted
    np.testing.assert_allclose(hard_grad, mse_grad, rtol=1e-5, atol=1e-7)
    assert np.abs(soft_grad - mse_grad).max() > 1e-3  # the soft gate lets R move the output
    with pytest.raises(ValueError, match="gate"):
        sp_cnn.SpCnnLoss(np.ones((1, 3, 3), np.float32), gate="step")
