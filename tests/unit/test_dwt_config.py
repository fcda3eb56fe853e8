"""dwt_mitosis config: every preset x schedule resolves; the paper's values are the base."""

import pytest

from microrepro.common.errors import ConfigError
from microrepro.reproductions.dwt_mitosis.task import TASK


@pytest.mark.parametrize("preset", ["paper", "released"])
@pytest.mark.parametrize("schedule", ["smoke", "short", "paper"])
def test_all_presets_and_schedules_resolve(preset, schedule):
    cfg = TASK.load_config(preset, schedule)
    assert cfg.name == "rcnn_dwtunet_amibr"
    assert cfg.seg.convs_per_block == 4  # Sec. 3.1, in every schedule
    assert cfg.rcnn.batch_positives == 32 and cfg.rcnn.batch_negatives == 96  # Sec. 3.2
    assert cfg.eval.match_um == 8.0  # Sec. 4.2


def test_paper_schedule_is_the_paper():
    cfg = TASK.load_config("paper", "paper")
    t = cfg.seg_train
    assert (t.epochs, t.batch_size, t.lr, t.final_lr, t.positive_weight) == (100, 8, 1e-3, 1e-6, 1.0)  # Sec. 4.3, eq. 1
    assert cfg.rcnn.ss_mode == "fast" and cfg.rcnn.nms_iou == 0.3
    assert cfg.label_sources == ("dwt", "unet", "manual")
    assert TASK.load_config("released", "paper") == cfg  # no code released: released = paper


def test_short_fields_fit_the_dwt_levels():
    cfg = TASK.load_config("paper", "short")
    factor = 2 ** (len(cfg.seg.widths) - 1)
    assert cfg.synthetic.field_size % factor == 0 and cfg.seg_train.crop_size % factor == 0


def test_unknown_key_is_refused():
    with pytest.raises(ConfigError, match="rcnn.svm_cc"):
        TASK.load_config("paper", "short", {"rcnn": {"svm_cc": 1.0}})


def test_unknown_label_source_is_refused():
    with pytest.raises(ConfigError, match="label_sources"):
        TASK.load_config("paper", "short", {"label_sources": ["dwt", "boxes"]})
