"""common/detection: box coding, anchors, NMS and ROI ops against TensorFlow, targets, losses,
RPN/proposals, detection decoding and the FasterRCNN wiring, on hand-built inputs."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from microrepro.common.detection import anchors as anchors_mod
from microrepro.common.detection import boxes as bx
from microrepro.common.detection import heads, losses, nms, roi_align, rpn, targets
from microrepro.common.detection.faster_rcnn import FasterRCNN, FasterRCNNConfig
from microrepro.common.errors import ConfigError


def np_(x):
    return keras.ops.convert_to_numpy(x)


def random_boxes(rng, batch, count, extent=100.0, low=4.0, high=30.0):
    xy = rng.uniform(0, extent, (batch, count, 2))
    wh = rng.uniform(low, high, (batch, count, 2))
    return np.concatenate([xy, xy + wh], -1).astype(np.float32)


# ----------------------------------------------------------------------------------- boxes
def test_encode_known_deltas_and_exact_round_trip(rng):
    anchor = np.array([[0, 0, 20, 20]], np.float32)
    box = np.array([[10, 10, 30, 50]], np.float32)  # centre (20, 30), 20 x 40 vs (10, 10), 20 x 20
    np.testing.assert_allclose(np_(bx.encode_boxes(box, anchor)), [[0.5, 1.0, 0.0, math.log(2)]], rtol=1e-6)
    np.testing.assert_allclose(
        np_(bx.encode_boxes(box, anchor, (10, 10, 5, 5))), [[5.0, 10.0, 0.0, 5 * math.log(2)]], rtol=1e-6
    )
    anchors = random_boxes(rng, 2, 50)
    boxes = random_boxes(rng, 2, 50)
    for weights in ((1, 1, 1, 1), (10, 10, 5, 5)):
        deltas = bx.encode_boxes(boxes, anchors, weights)
        np.testing.assert_allclose(np_(bx.decode_deltas(deltas, anchors, weights)), boxes, atol=1e-4)


def test_decode_clamps_huge_scale_deltas():
    anchor = np.array([[0, 0, 16, 16]], np.float32)
    decoded = np_(bx.decode_deltas(np.array([[0, 0, 50.0, 50.0]], np.float32), anchor))
    np.testing.assert_allclose(decoded, [[8 - 500, 8 - 500, 8 + 500, 8 + 500]], rtol=1e-4)  # 16 * 1000/16


def test_box_weights_must_be_positive():
    with pytest.raises(ValueError, match="box weights"):
        bx.encode_boxes(np.zeros((1, 4)), np.ones((1, 4)), (1, 1, 0, 1))


def test_pairwise_iou_exact_and_padding():
    a = np.array([[0, 0, 10, 10], [0, 0, 10, 12]], np.float32)
    b = np.array([[[0, 0, 10, 10], [5, 0, 15, 10], [-1, -1, -1, -1]]], np.float32)
    iou = np_(bx.pairwise_iou(a, b))
    np.testing.assert_allclose(iou, [[[1.0, 50 / 150, -1.0], [100 / 120, 50 / 170, -1.0]]], rtol=1e-5)


def test_clip_boxes_to_image():
    clipped = np_(bx.clip_boxes(np.array([[-5, 3, 120, 90]], np.float32), height=80, width=100))
    np.testing.assert_array_equal(clipped, [[0, 3, 100, 80]])


# ---------------------------------------------------------------------------------- anchors
def test_anchor_count_and_positions_448_stride_16():
    anchors = np_(anchors_mod.generate_anchors(28, 28, 16, sizes=(16, 24, 32), ratios=(1.0,)))
    assert anchors.shape == (28 * 28 * 3, 4)
    np.testing.assert_allclose(anchors[:3], [[0, 0, 16, 16], [-4, -4, 20, 20], [-8, -8, 24, 24]])
    np.testing.assert_allclose(anchors[3], [16, 0, 32, 16])  # next column, first size
    np.testing.assert_allclose(anchors[28 * 3], [0, 16, 16, 32])  # next row
    np.testing.assert_allclose(anchors[-1], [440 - 16, 440 - 16, 440 + 16, 440 + 16])


def test_anchor_ratio_is_height_over_width():
    base = np_(anchors_mod.base_anchors(sizes=(32,), ratios=(4.0,)))
    np.testing.assert_allclose(base, [[-8, -32, 8, 32]])  # 16 wide, 64 tall, area 32**2


def test_anchors_agree_with_keras_hub_anchor_generator_where_it_applies():
    import keras_hub

    generator = keras_hub.layers.AnchorGenerator(
        bounding_box_format="xyxy",
        min_level=4,
        max_level=4,
        num_scales=1,
        aspect_ratios=[0.25, 1.0, 4.0],
        anchor_size=2,
    )
    reference = np_(generator(np.zeros((1, 448, 448, 3), np.float32))["P4"])
    ours = np_(anchors_mod.generate_anchors(28, 28, 16, sizes=(32,), ratios=(0.25, 1.0, 4.0), offset=0.0))
    np.testing.assert_allclose(ours, reference)


def test_anchor_arguments_are_checked():
    with pytest.raises(ValueError, match="sizes"):
        anchors_mod.generate_anchors(4, 4, 16, sizes=(), ratios=(1.0,))
    with pytest.raises(ValueError, match="stride"):
        anchors_mod.generate_anchors(4, 4, 0, sizes=(16,))


# -------------------------------------------------------------------------------------- NMS
@pytest.mark.parametrize("iou_threshold", [0.3, 0.5, 0.7])
def test_nms_keeps_the_same_set_as_tensorflow(rng, iou_threshold):
    boxes = random_boxes(rng, 4, 60)
    scores = rng.uniform(size=(4, 60)).astype(np.float32)
    index, keep = nms.non_max_suppression(boxes, scores, 20, iou_threshold)
    index, keep = np_(index), np_(keep)
    for i in range(4):
        reference = tf.image.non_max_suppression(boxes[i][:, [1, 0, 3, 2]], scores[i], 20, iou_threshold).numpy()
        np.testing.assert_array_equal(index[i][keep[i]], reference)


def test_nms_score_threshold_and_padding_match_tensorflow(rng):
    boxes = random_boxes(rng, 2, 40)
    scores = rng.uniform(size=(2, 40)).astype(np.float32)
    index, keep = nms.non_max_suppression(boxes, scores, 40, 0.5, score_threshold=0.6)
    index, keep = np_(index), np_(keep)
    for i in range(2):
        yxyx = boxes[i][:, [1, 0, 3, 2]]
        reference = tf.image.non_max_suppression(yxyx, scores[i], 40, 0.5, score_threshold=0.6).numpy()
        np.testing.assert_array_equal(index[i][keep[i]], reference)
        assert not keep[i][len(reference) :].any() and (index[i][len(reference) :] == 0).all()


def test_batched_nms_never_suppresses_across_classes():
    boxes = np.array([[[0, 0, 10, 10], [0, 0, 10, 10], [1, 0, 11, 10]]], np.float32)
    scores = np.array([[0.9, 0.8, 0.7]], np.float32)
    index, keep = nms.batched_nms(boxes, scores, np.array([[0, 1, 0]]), 3, 0.5)
    np.testing.assert_array_equal(np_(index)[0][np_(keep)[0]], [0, 1])


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="traces with tf.function")
def test_nms_handles_a_dynamic_batch_in_a_traced_function(rng):
    traced = tf.function(
        lambda b, s: nms.non_max_suppression(b, s, 5, 0.5),
        input_signature=[tf.TensorSpec((None, 30, 4)), tf.TensorSpec((None, 30))],
    )
    boxes, scores = random_boxes(rng, 3, 30), rng.uniform(size=(3, 30)).astype(np.float32)
    index, keep = traced(boxes, scores)
    eager_index, _ = nms.non_max_suppression(boxes, scores, 5, 0.5)
    np.testing.assert_array_equal(index.numpy(), np_(eager_index))
    assert keep.shape == (3, 5)


# ---------------------------------------------------------------------------------- ROI ops
def crop_and_resize_reference(features, boxes, output_size, sampling, scale, pool):
    """roi_align via tf.image.crop_and_resize: the normalised box through the first and last
    sample points (see the roi_align module docstring), then S x S pooling."""
    _, height, width, _ = features.shape
    q = output_size * sampling
    b = boxes * scale
    u1, v1 = b[..., 0] - 0.5, b[..., 1] - 0.5
    w, h = b[..., 2] - b[..., 0], b[..., 3] - b[..., 1]
    normalised = np.stack(
        [
            (v1 + h / (2 * q)) / (height - 1),
            (u1 + w / (2 * q)) / (width - 1),
            (v1 + h - h / (2 * q)) / (height - 1),
            (u1 + w - w / (2 * q)) / (width - 1),
        ],
        -1,
    ).reshape(-1, 4)
    box_index = np.repeat(np.arange(boxes.shape[0]), boxes.shape[1])
    crops = tf.image.crop_and_resize(features, normalised, box_index, (q, q))
    pooled = (tf.nn.avg_pool2d if pool == "mean" else tf.nn.max_pool2d)(crops, sampling, sampling, "VALID")
    return pooled.numpy().reshape(boxes.shape[0], boxes.shape[1], output_size, output_size, -1)


@pytest.mark.parametrize("reduce", ["mean", "max"])
def test_roi_align_matches_crop_and_resize_with_pooling(rng, reduce):
    features = rng.normal(size=(2, 12, 10, 3)).astype(np.float32)
    boxes = random_boxes(rng, 2, 6, extent=48, low=1, high=40) - 8  # partly outside the map
    ours = np_(roi_align.roi_align(features, boxes, 3, 0.25, 2, boundary="zero", reduce=reduce))
    reference = crop_and_resize_reference(features, boxes, 3, 2, 0.25, reduce)
    np.testing.assert_allclose(ours, reference, atol=1e-5)


def test_roi_align_clamp_equals_crop_and_resize_inside_the_map(rng):
    features = rng.normal(size=(1, 16, 16, 4)).astype(np.float32)
    boxes = random_boxes(rng, 1, 8, extent=30, low=4, high=30) + 8  # samples within [0, 15] cells
    ours = np_(roi_align.roi_align(features, boxes, 2, 0.25, 3))
    np.testing.assert_allclose(ours, crop_and_resize_reference(features, boxes, 2, 3, 0.25, "mean"), atol=1e-5)


def test_roi_align_of_a_linear_ramp_is_the_bin_centre():
    yy, xx = np.meshgrid(np.arange(12.0), np.arange(12.0), indexing="ij")
    features = np.stack([xx, yy], -1)[None].astype(np.float32)
    out = np_(roi_align.roi_align(features, np.array([[[2, 3, 10, 7]]], np.float32), 2, 1.0, 2))
    np.testing.assert_allclose(out[0, 0, :, :, 0], [[3.5, 7.5], [3.5, 7.5]], atol=1e-6)
    np.testing.assert_allclose(out[0, 0, :, :, 1], [[3.5, 3.5], [5.5, 5.5]], atol=1e-6)


def roi_pool_reference(features, box, output_size, scale):
    """torchvision/Caffe ROIPool for one box, written with loops."""
    height, width, channels = features.shape
    x1, y1, x2, y2 = (math.floor(v * scale + 0.5) for v in box)
    roi_w, roi_h = max(x2 - x1 + 1, 1), max(y2 - y1 + 1, 1)
    bin_w, bin_h = np.float32(roi_w / output_size), np.float32(roi_h / output_size)
    out = np.zeros((output_size, output_size, channels), np.float32)
    for ph in range(output_size):
        hs = min(max(math.floor(np.float32(ph) * bin_h) + y1, 0), height)
        he = min(max(math.ceil(np.float32(ph + 1) * bin_h) + y1, 0), height)
        for pw in range(output_size):
            ws = min(max(math.floor(np.float32(pw) * bin_w) + x1, 0), width)
            we = min(max(math.ceil(np.float32(pw + 1) * bin_w) + x1, 0), width)
            if he > hs and we > ws:
                out[ph, pw] = features[hs:he, ws:we].max(axis=(0, 1))
    return out


def test_roi_pool_matches_the_fast_rcnn_definition(rng):
    features = rng.normal(size=(2, 14, 14, 3)).astype(np.float32)
    boxes = random_boxes(rng, 2, 10, extent=200, low=8, high=120) - 20
    ours = np_(roi_align.roi_pool(features, boxes, 4, 1 / 16, sampling_ratio=6))
    for b in range(2):
        for r in range(10):
            np.testing.assert_array_equal(ours[b, r], roi_pool_reference(features[b], boxes[b, r], 4, 1 / 16))


def test_roi_ops_reject_bad_arguments():
    with pytest.raises(ValueError, match="boundary"):
        roi_align.roi_align(np.zeros((1, 4, 4, 1)), np.zeros((1, 1, 4)), boundary="reflect")
    with pytest.raises(ValueError, match="boxes must be"):
        roi_align.roi_pool(np.zeros((1, 4, 4, 1)), np.zeros((1, 4)))


# ---------------------------------------------------------------------------------- targets
HAND_ANCHORS = np.array(
    [
        [0, 0, 10, 10],  # IoU 1 with gt 0: positive
        [0, 0, 10, 12],  # IoU 0.833: positive
        [0, 0, 10, 20],  # IoU 0.5: ignored
        [20, 20, 30, 30],  # IoU 0: negative
        [5, 0, 15, 10],  # IoU 0.333: ignored
        [42, 40, 52, 50],  # IoU 0.667 with gt 1, its best anchor: positive (low-quality rule)
        [60, 60, 70, 70],  # negative
    ],
    np.float32,
)


def test_rpn_targets_on_a_hand_built_case():
    gt = np.array([[[0, 0, 10, 10], [40, 40, 50, 50], [-1, -1, -1, -1]], [[-1] * 4] * 3], np.float32)
    out = targets.rpn_targets(HAND_ANCHORS, gt, batch_size_per_image=256, seed=0)
    np.testing.assert_array_equal(np_(out["labels"]), [[1, 1, -1, 0, -1, 1, 0], [0, 0, 0, 0, 0, 0, 0]])
    np.testing.assert_array_equal(np_(out["matched_gt"])[0, [0, 1, 5]], [0, 0, 1])
    box_targets = np_(out["box_targets"])
    np.testing.assert_allclose(box_targets[0, 1], [0, -1 / 12, 0, math.log(10 / 12)], atol=1e-6)
    np.testing.assert_allclose(box_targets[0, 5], [-0.2, 0, 0, 0], atol=1e-6)
    assert not box_targets[0, [2, 3, 4, 6]].any() and not box_targets[1].any()


def test_rpn_targets_ignore_invalid_anchors():
    gt = np.array([[[0, 0, 10, 10]]], np.float32)
    valid = np.array([True, False, True, True, True, True, True])
    out = targets.rpn_targets(HAND_ANCHORS, gt, anchor_valid=valid, seed=0)
    np.testing.assert_array_equal(np_(out["labels"]), [[1, -1, -1, 0, -1, 0, 0]])
    # With the perfect anchor out, the best VALID anchor (IoU 0.5) becomes the forced positive.
    valid[0] = False
    out = targets.rpn_targets(HAND_ANCHORS, gt, anchor_valid=valid, seed=0)
    np.testing.assert_array_equal(np_(out["labels"]), [[-1, -1, 1, 0, -1, 0, 0]])


def test_balanced_sampling_caps_positives_and_fills_with_negatives():
    labels = np.array([[1] * 10 + [0] * 10, [1] * 2 + [0] * 10 + [-1] * 8])
    pos, neg = targets.sample_balanced(labels, 8, 0.5, seed=3)
    pos, neg = np_(pos), np_(neg)
    assert pos.sum(1).tolist() == [4, 2] and neg.sum(1).tolist() == [4, 6]
    assert not (pos & (labels != 1)).any() and not (neg & (labels != 0)).any()
    again, _ = targets.sample_balanced(labels, 8, 0.5, seed=3)
    np.testing.assert_array_equal(np_(again), pos)  # seeded: reproducible
    picks = {tuple(np_(targets.sample_balanced(labels, 8, 0.5, seed=s)[0])[0]) for s in range(6)}
    assert len(picks) > 1  # and random


def test_head_targets_on_a_hand_built_case():
    proposals = np.array([[[0, 0, 10, 12], [20, 20, 40, 30], [60, 60, 70, 70], [0, 0, 10, 30]]], np.float32)
    gt = np.array([[[0, 0, 10, 10], [20, 20, 40, 40], [-1, -1, -1, -1]]], np.float32)
    gt_classes = np.array([[0, 1, -1]], np.int32)
    out = targets.head_targets(proposals, gt, gt_classes, batch_size_per_image=16, positive_fraction=0.25, seed=0)
    rois, classes, weights = np_(out["rois"])[0], np_(out["classes"])[0], np_(out["weights"])[0]
    assert rois.shape == (7, 4)  # min(16, 4 proposals + 3 gt slots)
    np.testing.assert_array_equal(weights, [1, 1, 1, 1, 1, 1, 0])
    np.testing.assert_array_equal(classes[:4] > 0, True)  # foreground first
    sampled = {tuple(r): int(c) for r, c, w in zip(rois.tolist(), classes, weights, strict=True) if w}
    assert sampled == {
        (0, 0, 10, 12): 1,  # IoU 0.833 with gt 0 -> class 0 + 1
        (20, 20, 40, 30): 2,  # IoU exactly 0.5 with gt 1 -> foreground
        (0, 0, 10, 10): 1,  # appended ground truth
        (20, 20, 40, 40): 2,
        (60, 60, 70, 70): 0,  # IoU 0 -> background (low bound 0)
        (0, 0, 10, 30): 0,  # IoU 0.333 -> background
    }
    row = [tuple(r) for r in rois.tolist()].index((0, 0, 10, 12))
    np.testing.assert_allclose(np_(out["box_targets"])[0, row], [0, -10 / 12, 0, 5 * math.log(10 / 12)], atol=1e-5)
    strict = targets.head_targets(proposals, gt, gt_classes, background_iou_low=0.1, seed=0)
    assert np_(strict["weights"]).sum() == 5  # the IoU-0 proposal is no longer a background


def test_head_targets_cap_foreground_fraction():
    gt = np.array([[[0, 0, 20, 20]]], np.float32)
    proposals = np.concatenate([np.tile([[0, 0, 20, 20]], (10, 1)), np.tile([[50, 50, 60, 60]], (10, 1))])
    proposals = proposals[None].astype(np.float32)
    classes = np.zeros((1, 1), np.int32)
    out = targets.head_targets(proposals, gt, classes, batch_size_per_image=8, positive_fraction=0.25, seed=1)
    assert int(np_(out["foreground"]).sum()) == 2 and np_(out["weights"]).sum() == 8


# ----------------------------------------------------------------------------------- losses
def test_smooth_l1_values():
    values = np_(losses.smooth_l1(np.array([0.0, 0.5, 1.0, 3.0], np.float32), beta=1.0))
    np.testing.assert_allclose(values, [0.0, 0.125, 0.5, 2.5])
    small_beta = np_(losses.smooth_l1(np.array([0.05, 1.0]), beta=1 / 9))
    np.testing.assert_allclose(small_beta, [0.5 * 0.0025 * 9, 1 - 1 / 18], rtol=1e-5)


def test_losses_vanish_when_predictions_equal_targets(rng):
    labels = np.array([[1, 0, -1, 1, 0]])
    box_targets = rng.normal(size=(1, 5, 4)).astype(np.float32)
    logits = np.where(labels == 1, 30.0, -30.0).astype(np.float32)
    rpn_class, rpn_box = losses.rpn_losses(logits, box_targets, labels, box_targets)
    assert float(rpn_class) < 1e-6 and float(rpn_box) == 0.0
    classes = np.array([[0, 2, 1]])
    class_logits = 30.0 * np.eye(3, dtype=np.float32)[classes]
    head_targets_ = rng.normal(size=(1, 3, 4)).astype(np.float32)
    deltas = np.zeros((1, 3, 2, 4), np.float32)
    deltas[0, 1, 1], deltas[0, 2, 0] = head_targets_[0, 1], head_targets_[0, 2]  # the gt class's slot
    head_class, head_box = losses.head_losses(class_logits, deltas, classes, head_targets_, np.ones((1, 3)))
    assert float(head_class) < 1e-6 and float(head_box) < 1e-10


def test_loss_values_are_normalised_by_sampled_count():
    labels = np.array([[1, 0, -1, -1]])
    deltas = np.zeros((1, 4, 4), np.float32)
    box_targets = np.zeros((1, 4, 4), np.float32)
    box_targets[0, 0, 0] = 0.5
    rpn_class, rpn_box = losses.rpn_losses(np.zeros((1, 4), np.float32), deltas, labels, box_targets, beta=1.0)
    np.testing.assert_allclose([float(rpn_class), float(rpn_box)], [math.log(2), 0.125 / 2], rtol=1e-6)


# ------------------------------------------------------------------------ RPN and proposals
def test_rpn_head_flattens_in_anchor_order():
    head = rpn.RPNHead(num_anchors=3, conv_channels=4)
    head.build((None, 2, 5, 8))
    head.objectness.kernel.assign(np.zeros(head.objectness.kernel.shape, np.float32))
    head.objectness.bias.assign(np.array([0.0, 1.0, 2.0], np.float32))
    logits, deltas = head(np.ones((2, 2, 5, 8), np.float32))
    assert tuple(logits.shape) == (2, 30) and tuple(deltas.shape) == (2, 30, 4)
    np.testing.assert_array_equal(np_(logits)[1], np.tile([0.0, 1.0, 2.0], 10))


PROPOSAL_ANCHORS = np.array([[10, 10, 30, 30], [12, 10, 32, 30], [50, 50, 70, 70], [90, 90, 130, 130]], np.float32)


def test_proposal_layer_decodes_clips_suppresses_and_pads():
    layer = rpn.ProposalLayer((100, 100), pre_nms_top_k=10, post_nms_top_k=4, nms_iou=0.7)
    logits = np.array([[2.0, 3.0, 1.0, 0.0]], np.float32)
    out = layer(PROPOSAL_ANCHORS, logits, np.zeros((1, 4, 4), np.float32))
    expected = [[12, 10, 32, 30], [50, 50, 70, 70], [90, 90, 100, 100], [-1, -1, -1, -1]]  # A0 suppressed by A1
    np.testing.assert_allclose(np_(out["boxes"])[0], expected)
    sigmoid = [1 / (1 + math.exp(-3)), 1 / (1 + math.exp(-1)), 0.5, 0.0]
    np.testing.assert_allclose(np_(out["scores"])[0], sigmoid, rtol=1e-6)
    np.testing.assert_array_equal(np_(out["valid"])[0], [True, True, True, False])
    no_small = rpn.ProposalLayer((100, 100), 10, 4, 0.7, min_size=15)
    no_small = no_small(PROPOSAL_ANCHORS, logits, np.zeros((1, 4, 4), np.float32))
    np.testing.assert_array_equal(np_(no_small["valid"])[0], [True, True, False, False])


def test_proposal_layer_merges_a_previous_stage_for_a_cascade():
    layer = rpn.ProposalLayer((100, 100), pre_nms_top_k=10, post_nms_top_k=3, nms_iou=0.7)
    logits = np.array([[2.0, 3.0, 1.0, 0.0]], np.float32)
    extra = np.array([[[10, 10, 30, 30], [-1, -1, -1, -1]]], np.float32)
    deltas = np.zeros((1, 4, 4), np.float32)
    out = layer(PROPOSAL_ANCHORS, logits, deltas, extra_boxes=extra, extra_scores=np.array([[0.99, 0.0]]))
    np.testing.assert_allclose(np_(out["boxes"])[0], [[10, 10, 30, 30], [50, 50, 70, 70], [90, 90, 100, 100]])
    np.testing.assert_allclose(np_(out["scores"])[0, 0], 0.99, rtol=1e-5)
    # The same proposals can serve as per-image anchors of a second RPN.
    second = targets.rpn_targets(out["boxes"], np.array([[[10, 10, 30, 30]]], np.float32), seed=0)
    np.testing.assert_array_equal(np_(second["labels"]), [[1, 0, 0]])


# ------------------------------------------------------------------------------ head decode
def test_decode_detections_threshold_per_class_nms_and_padding():
    rois = np.array([[[0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 10, 10]]], np.float32)
    logits = np.array([[[0, 5, 0], [0, 0, 5], [0, 3, 0]]], np.float32)
    deltas = np.zeros((1, 3, 2, 4), np.float32)
    out = heads.decode_detections(rois, logits, deltas, (64, 64), score_threshold=0.5, max_detections=4)
    p = math.exp(5) / (math.exp(5) + 2)
    assert int(np_(out["num_detections"])[0]) == 2
    np.testing.assert_allclose(np_(out["boxes"])[0], [[0, 0, 10, 10], [20, 20, 30, 30], [-1] * 4, [-1] * 4])
    np.testing.assert_allclose(np_(out["scores"])[0], [p, p, 0, 0], rtol=1e-6)
    np.testing.assert_array_equal(np_(out["classes"])[0], [0, 1, -1, -1])


def test_box_head_shapes():
    head = heads.BoxHead(num_classes=2, spatial_scale=1 / 8, roi_size=3, fc_units=(16,), roi_op="pool")
    head.build((None, 8, 8, 4))
    rois = np.tile(np.array([[[0, 0, 32, 32]]], np.float32), (2, 5, 1))
    logits, deltas = head(np.ones((2, 8, 8, 4), np.float32), rois)
    assert tuple(logits.shape) == (2, 5, 3) and tuple(deltas.shape) == (2, 5, 2, 4)


# ------------------------------------------------------------------------------ FasterRCNN
def _tiny_backbone(size=32, strides=(2, 2)):
    inputs = keras.Input((size, size, 3))
    x = inputs
    for s in strides:
        x = keras.layers.Conv2D(4, 3, strides=s, padding="same")(x)
    return keras.Model(inputs, x)


def _tiny_config(**overrides):
    values = dict(
        feature_stride=4, anchor_sizes=(8.0,), anchor_ratios=(1.0,), rpn_conv_channels=4,
        rpn_pre_nms_top_k_test=16, rpn_post_nms_top_k_test=4, head_fc_units=(8,), max_detections=3, score_threshold=0.0,
    )
    values.update(overrides)
    return FasterRCNNConfig(**values)


def test_config_rejects_bad_values():
    with pytest.raises(ConfigError, match="rpn_positive_iou"):
        FasterRCNNConfig(rpn_positive_iou=1.5)
    with pytest.raises(ConfigError, match="rpn_negative_iou"):
        FasterRCNNConfig(rpn_positive_iou=0.3, rpn_negative_iou=0.6)


def test_model_checks_the_backbone_stride():
    with pytest.raises(ConfigError, match="feature_stride=16"):
        FasterRCNN(_tiny_backbone(), _tiny_config(feature_stride=16))


@pytest.mark.parametrize("batch", [1, 2])
def test_model_inference_shapes(batch):
    model = FasterRCNN(_tiny_backbone(), _tiny_config())
    assert model.anchors.shape == (8 * 8, 4)
    out = model(np.zeros((batch, 32, 32, 3), np.float32), training=False)
    assert tuple(out["proposals"].shape) == (batch, 4, 4)
    assert tuple(out["boxes"].shape) == (batch, 3, 4) and tuple(out["num_detections"].shape) == (batch,)
    assert tuple(out["class_logits"].shape) == (batch, 4, 2)


def test_model_loss_terms_are_finite_and_reported():
    config = _tiny_config(rpn_post_nms_top_k_train=4, rpn_pre_nms_top_k_train=16, head_batch_size_per_image=8, seed=0)
    model = FasterRCNN(_tiny_backbone(), config)
    images = np.random.default_rng(0).uniform(size=(2, 32, 32, 3)).astype(np.float32)
    y = {
        "boxes": np.array([[[4, 4, 12, 12]], [[-1, -1, -1, -1]]], np.float32),
        "classes": np.array([[0], [-1]], np.int32),
    }
    y_pred = model(images, training=True)
    total = float(model.compute_loss(images, y, y_pred, training=True))
    terms = {m.name: float(m.result()) for m in model.metrics if m.name != "loss"}
    assert set(terms) == {"rpn_class_loss", "rpn_box_loss", "head_class_loss", "head_box_loss"}
    assert math.isfinite(total)
    np.testing.assert_allclose(total, sum(terms.values()), rtol=1e-5)
    with pytest.raises(ValueError, match="'boxes'"):
        model.compute_loss(images, {"classes": y["classes"]}, y_pred)


def test_model_saves_and_loads(tmp_path):
    model = FasterRCNN(_tiny_backbone(), _tiny_config(seed=0))
    images = np.random.default_rng(1).uniform(size=(1, 32, 32, 3)).astype(np.float32)
    expected = np_(model(images)["class_logits"])
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    assert isinstance(loaded, FasterRCNN) and loaded.config == model.config
    np.testing.assert_allclose(np_(loaded(images)["class_logits"]), expected, atol=1e-6)
