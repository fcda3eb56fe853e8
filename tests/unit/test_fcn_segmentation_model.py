"""FCRN-A of fcn_segmentation: parameter count, receptive field from the layer graph, L2 decay."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers

from microrepro.common.errors import ConfigError
from microrepro.reproductions.fcn_segmentation.config import ModelConfig, OptimConfig
from microrepro.reproductions.fcn_segmentation.model import (
    build_fcrn_a,
    count_parameters,
    receptive_fields,
)
from microrepro.reproductions.fcn_segmentation.task import TASK
from microrepro.reproductions.fcn_segmentation.train import build_model

# conv 3x3 1->32, 32->64, 64->128, 128->512, 512->128, 128->64, 64->32 (+ bias), 1x1 32->2
FCRN_A_PARAMS = (9 * 1 * 32 + 32) + (9 * 32 * 64 + 64) + (9 * 64 * 128 + 128) + (9 * 128 * 512 + 512) \
    + (9 * 512 * 128 + 128) + (9 * 128 * 64 + 64) + (9 * 64 * 32 + 32) + (32 * 2 + 2)


def first_upsampling_input(model: keras.Model) -> str:
    """Name of the last layer before the first UpSampling2D (the bottleneck ReLU)."""
    names = [layer.name for layer in model.layers]
    index = next(i for i, layer in enumerate(model.layers) if isinstance(layer, layers.UpSampling2D))
    return names[index - 1]


def test_parameter_count_matches_the_paper():
    model = build_fcrn_a(1, 2)
    assert count_parameters(model) == FCRN_A_PARAMS == 1_365_282
    # Sec. 7: "contains in total about 1.3 million parameters"
    assert abs(count_parameters(model) - 1.3e6) / 1.3e6 < 0.10


def test_released_preset_batch_norm_parameter_count():
    cfg = TASK.load_config("released", "short").model
    model = build_model(cfg)
    kernels = FCRN_A_PARAMS - (32 + 64 + 128 + 512 + 128 + 64 + 32) - 2  # no conv bias but the head's
    bn_trainable = 2 * (32 + 64 + 128 + 512 + 128 + 64 + 32)
    assert count_parameters(model) == kernels + 2 + bn_trainable == 1_366_242
    assert count_parameters(model, trainable_only=False) == 1_366_242 + bn_trainable  # moving mean/var


def test_receptive_field_computed_from_the_layer_graph():
    model = build_fcrn_a(1, 2)
    fields = receptive_fields(model)
    # Sec. 7: "three max-poolings ... effective receptive field of size 38×38": the units after
    # the third pooling's 3x3 conv (the 512 bottleneck) see 38 px at a stride of 8 px.
    bottleneck = fields[first_upsampling_input(model)]
    assert (bottleneck.size, bottleneck.jump) == (38, 8)
    # The decoder's three 3x3 convs at strides 4, 2, 1 add 2*(4+2+1) = 14 px at the output.
    output = fields[model.layers[-1].name]
    assert (output.size, output.jump) == (52, 1)


def test_receptive_field_rules_on_a_hand_built_chain():
    inputs = keras.Input((None, None, 1))
    x = layers.Conv2D(1, 5, strides=2, padding="same", name="c5s2")(inputs)  # 5, jump 2
    x = layers.Conv2D(1, 3, dilation_rate=2, padding="same", name="dil")(x)  # 5 + 4*2 = 13
    x = layers.UpSampling2D(2, interpolation="bilinear", name="up")(x)  # 13 + 2 = 15, jump 1
    x = layers.MaxPooling2D(3, strides=1, padding="same", name="pool")(x)  # 15 + 2 = 17
    fields = receptive_fields(keras.Model(inputs, x))
    assert [(f.size, f.jump) for f in fields.values()] == [(1, 1), (5, 2), (13, 2), (15, 1), (17, 1)]


def test_receptive_field_refuses_unknown_layers():
    inputs = keras.Input((8, 8, 1))
    model = keras.Model(inputs, layers.Dense(2, name="dense")(inputs))
    with pytest.raises(ValueError, match="dense"):
        receptive_fields(model)


def test_output_is_a_two_class_softmax_of_the_input_size():
    model = build_fcrn_a(1, 2, encoder_filters=(2, 2, 2), bottleneck_filters=4, decoder_filters=(2, 2, 2))
    x = np.random.default_rng(0).random((2, 24, 40, 1), dtype=np.float32)
    y = np.asarray(model(x))
    assert y.shape == (2, 24, 40, 2)
    np.testing.assert_allclose(y.sum(axis=-1), 1.0, atol=1e-5)


def test_l2_penalty_is_caffe_weight_decay_over_two():
    optim = OptimConfig(weight_decay=1e-3, weight_decay_mode="l2")
    model = build_model(ModelConfig(encoder_filters=(2, 2, 2), bottleneck_filters=4, decoder_filters=(2, 2, 2)), optim)
    kernels = [w for w in model.trainable_weights if w.path.endswith("kernel")]
    expected = 0.5e-3 * sum(float(np.sum(np.square(keras.ops.convert_to_numpy(k)))) for k in kernels)
    assert len(model.losses) == len(kernels) == 8
    assert float(sum(keras.ops.convert_to_numpy(v) for v in model.losses)) == pytest.approx(expected, rel=1e-5)
    decoupled = build_model(ModelConfig(), OptimConfig(weight_decay_mode="decoupled"))
    assert decoupled.losses == []


def test_bad_architecture_is_a_config_error():
    with pytest.raises(ConfigError, match="same length"):
        build_fcrn_a(1, 2, encoder_filters=(32, 64), decoder_filters=(64, 32, 16))
    with pytest.raises(ConfigError, match="upsampling"):
        build_fcrn_a(1, 2, upsampling="cubic")
    with pytest.raises(ConfigError, match="2 classes"):
        build_fcrn_a(1, 1)
