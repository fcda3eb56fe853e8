"""dwt_mitosis learns: the DWT net overfits a few synthetic H&E fields, R-CNN learns their boxes.

Fixture: 4 synthetic H&E fields of 96 px (datasets/synthetic/he_fields.py, mitoses enriched).

* phase 1: the DWT U-shaped net (the real builder, narrow widths) trained on the fields must bring
  its pixel cross-entropy below half its start AND reach a pixel F1 >= 0.5 on them, and the boxes
  generated from its segmentation must cover >= half of the weak labels;
* phase 2: R-CNN (selective search, the feature CNN fine-tuned on 32 + 96 batches, SVM, box
  regression) on the manual boxes of those fields must bring its fine-tuning loss below half its
  start AND detect the mitoses at F1 >= 0.5 (8 µm from the box centre) on the training fields.
"""

from __future__ import annotations

import pytest

from microrepro.common.runs import Run
from microrepro.reproductions.dwt_mitosis import evaluate as E
from microrepro.reproductions.dwt_mitosis import labels as L
from microrepro.reproductions.dwt_mitosis import rcnn
from microrepro.reproductions.dwt_mitosis import segmentation as S
from microrepro.reproductions.dwt_mitosis.data import synthetic_set
from microrepro.reproductions.dwt_mitosis.proposals import build_regions
from microrepro.reproductions.dwt_mitosis.task import TASK


@pytest.fixture(scope="module")
def fields():
    cfg = TASK.load_config("paper", "smoke", {"synthetic": {"field_size": 96, "mitoses_per_mm2": 4000.0}})
    image_set = synthetic_set("fixture", 4, 7, cfg)
    assert sum(len(p) for p in image_set.points) >= 4, "fixture must hold mitoses"
    return image_set


def test_dwt_net_overfits_and_its_boxes_cover_the_points(tmp_path, fields):
    overrides = {
        "seg": {"widths": [8, 16], "convs_per_block": 2},
        "seg_train": {"epochs": 15, "steps_per_epoch": 8, "batch_size": 3, "final_lr": 1.0e-3, "positive_weight": 5.0},
    }
    cfg = TASK.load_config("paper", "smoke", overrides)
    run = Run.create("dwt_mitosis", cfg, "paper", "smoke", seed=0, out=tmp_path / "run")
    entry = S.train_seg("dwt", run, cfg, fields, fields)
    assert entry["loss_last"] < 0.5 * entry["loss_first"], entry
    model = S.load_seg(run.run_dir, cfg, "dwt")
    probs = S.predict_prob(model, fields.images, cfg)
    from microrepro.common.metrics import pixel_metrics

    f1 = pixel_metrics([p >= 0.5 for p in probs], [m > 0 for m in fields.masks])["f1"]
    assert f1 >= 0.5, f1
    generated = [L.boxes_from_segmentation(p, pts) for p, pts in zip(probs, fields.points, strict=True)]
    manual = [L.manual_boxes(m, p) for m, p in zip(fields.masks, fields.points, strict=True)]
    quality = L.label_quality([g.boxes for g in generated], manual, fields.points)
    assert quality["point_coverage"] >= 0.5, quality


def test_rcnn_learns_the_boxes(tmp_path, fields):
    overrides = {"rcnn": {"max_proposals": 200, "warp_size": 24, "warp_padding": 2, "cnn_widths": [8, 16],
                          "feature_dim": 16, "cnn_epochs": 6, "cnn_steps_per_epoch": 5, "cnn_final_lr": 1.0e-3}}
    cfg = TASK.load_config("paper", "smoke", overrides)
    boxes = [L.manual_boxes(m, p) for m, p in zip(fields.masks, fields.points, strict=True)]
    regions = build_regions(fields.images, fields.pixel_sizes, cfg.rcnn)
    entry = rcnn.train_rcnn(regions, boxes, fields.images, cfg.rcnn, run_dir=tmp_path, name="rcnn", seed=0, verbose=0)
    assert entry["loss_last"] < 0.5 * entry["loss_first"], entry
    extractor, head = rcnn.load_rcnn(tmp_path, "rcnn", cfg.rcnn)
    found, scores = [], []
    for k in range(len(fields)):
        idx = regions.of_image(k)
        b, s = rcnn.detect(extractor, head, regions.warps[idx], regions.boxes[idx], cfg.rcnn.nms_iou)
        found.append(b)
        scores.append(s)
    chosen = E.choose_threshold(found, scores, fields, cfg.eval.match_um, "train")
    assert chosen.metric_value >= 0.5, chosen
    total, _ = E.match_detections(found, scores, fields, 0.0, cfg.eval.match_um)
    assert total.recall >= 0.5, total  # the SVM margin 0 already finds most of them
