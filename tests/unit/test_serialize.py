"""Every custom layer and loss round-trips through its JSON config (``common.serialize``)."""

import json

import numpy as np
import pytest

from microrepro.common.detection.heads import BoxHead
from microrepro.common.detection.rpn import ProposalLayer, RPNHead
from microrepro.common.serialize import constructor_config
from microrepro.reproductions.cell_counting.model import WeightedBCE
from microrepro.reproductions.mitos_rcnn.backbone import Conv34Fusion, L2Normalization
from microrepro.reproductions.spines.sp_cnn import SpCnnLoss
from microrepro.reproductions.spines.tiny_yolo import YoloV2Loss

OBJECTS = {
    "box_head": lambda: BoxHead(1, 1 / 8, 7, 2, "align", (16,), False),
    "rpn_head": lambda: RPNHead(3, 16),
    "proposals": lambda: ProposalLayer((64, 64), 100, 10, 0.6),
    "l2_norm": lambda: L2Normalization(),
    "conv34": lambda: Conv34Fusion(8, 8, "learnable", 10.0, 0.01),
    "yolo_loss": lambda: YoloV2Loss([[1.0, 1.5], [2.0, 2.5]], object_scale=4.0),
    "sp_cnn_loss": lambda: SpCnnLoss(np.ones((2, 5, 5), np.float32), gate="hard"),
    "weighted_bce": lambda: WeightedBCE(2.0, use_map=False),
}


@pytest.mark.parametrize("key", sorted(OBJECTS))
def test_config_is_json_and_rebuilds_the_same_object(key):
    obj = OBJECTS[key]()
    config = obj.get_config()
    rebuilt = type(obj).from_config(json.loads(json.dumps(config)))
    assert json.dumps(rebuilt.get_config(), sort_keys=True) == json.dumps(config, sort_keys=True)


def test_constructor_config_reads_attributes_and_lists_arrays():
    class Thing:
        a, b = 1, np.arange(3)

    assert constructor_config(Thing(), ("a", "b"), {"name": "t"}) == {"name": "t", "a": 1, "b": [0, 1, 2]}
