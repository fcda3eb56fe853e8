"""dwt_mitosis on AMi-Br: benchmark fields split by slide, the old mosaics, the two baselines, paired rows."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from microrepro.common import stats
from microrepro.reproductions.dwt_mitosis import baselines as B
from microrepro.reproductions.dwt_mitosis import evaluate as ev
from microrepro.reproductions.dwt_mitosis.config import DwtMitosisConfig
from microrepro.reproductions.dwt_mitosis.data import amibr_sets, benchmark_config

HEADER = (",slide,dataset,uid,x,y,expert1_label,expert2_label,expert1_atypical,expert2_atypical,"
          "expert3_atypical,majority_atypical\n")


def _fake_amibr(root: Path, slides: int = 10, per_slide: int = 8) -> Path:
    """Crops of ``slides`` slides, each 128 px of textured tissue with a dark disc (the figure) at its centre."""
    rng = np.random.default_rng(0)
    text, k = HEADER, 0
    for s in range(slides):
        for j in range(per_slide):
            uid = s * 100 + j
            text += f"{k},slide{s}.tiff,MIDOG21,{uid},{1000 + 400 * j},1000,NMF,NMF,False,False,False,False\n"
            image = rng.integers(150, 230, (128, 128, 3)).astype(np.uint8)
            cv2.circle(image, (64, 64), 12, (60, 20, 90), -1)
            path = root / "patches" / "normal" / f"MIDOG21_{uid}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(path), image[..., ::-1])
            k += 1
    (root / "AMI-BR.csv").write_text(text)
    return root


def _cfg(**amibr) -> DwtMitosisConfig:
    cfg = DwtMitosisConfig()
    cfg.amibr.grid = (1, 1)
    cfg.amibr.test_fraction, cfg.amibr.val_fraction = 0.3, 0.3
    cfg.amibr.max_train_mosaics, cfg.amibr.max_val_mosaics, cfg.amibr.max_test_mosaics = 3, 2, 3
    for key, value in amibr.items():
        setattr(cfg.amibr, key, value)
    return cfg


class _Run:
    """What the baselines and ``record_paired`` use of a ``Run``."""

    def __init__(self):
        self.metrics, self.splits, self.extra, self.schedule_run = {}, {}, {}, {}

    def add_metrics(self, model, split, values, data=None):
        self.metrics.setdefault(model, {}).setdefault(split, {}).update(values)
        if data is not None:
            self.splits[split] = data

    def save(self):
        pass


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = _fake_amibr(tmp_path_factory.mktemp("amibr"))
    return amibr_sets(root, _cfg(), "mitosis_amibr")


def test_benchmark_config_follows_the_grid_and_defaults():
    assert benchmark_config(_cfg()).field_size == (128, 128)
    assert benchmark_config(DwtMitosisConfig()).field_size == (256, 256)  # the old 2x2 mosaics' size
    assert benchmark_config(DwtMitosisConfig()).figure_fraction == 0.15


def test_amibr_sets_are_benchmark_fields_split_by_slide(sets):
    assert {k: v.name for k, v in sets.items()} == {"det_train": "det_train", "det_val": "det_val",
                                                    "test": "bench_test", "mosaic_train": "mosaic_train",
                                                    "mosaic_test": "mosaic_test"}
    slides = {}
    for key in ("det_train", "det_val", "test"):
        s = sets[key]
        assert 1 <= len(s) <= {"det_train": 3, "det_val": 2, "test": 3}[key]
        assert all(img.shape == (128, 128, 3) and img.dtype == np.uint8 for img in s.images)
        assert s.info.kind == "real" and "amibr_benchmark" in s.info.note
        slides[key] = {int(src[0].split("_")[1]) // 100 for m in s.meta for src in m["sources"]}
        for m, pts in zip(s.meta, s.points, strict=True):
            windows = np.asarray(m["windows"])
            assert windows[:, 2:].min() >= 32  # random strips, no fixed grid
            for x, y in pts:  # every figure at least 4 um (16 px) inside its window
                inside = ((windows[:, 0] + 16 <= x) & (x <= windows[:, 0] + windows[:, 2] - 17)
                          & (windows[:, 1] + 16 <= y) & (y <= windows[:, 1] + windows[:, 3] - 17))
                assert inside.any()
    assert not slides["det_train"] & slides["test"] and not slides["det_val"] & slides["test"]
    assert not slides["det_train"] & slides["det_val"]
    for m in sets["mosaic_test"].meta:  # the old mosaics: one 128 px tile per crop, the figure at its centre
        assert m["windows"] == [[x0, y0, 128, 128] for x0, y0 in m["origins"]]


def test_baselines_recorded_on_the_models_test_fields_and_position_solves_the_old_mosaics(sets):
    run = _Run()
    counts = B.evaluate_baselines(run, _cfg(), "amibr", sets)
    assert set(counts) == {B.POSITION, B.LOG_BLOBS}
    n_test = len(sets["test"])
    for model in B.MODELS:
        row = run.metrics[model]["amibr_bench_test"]
        assert {"f1", "f1_ci_low", "f1_ci_high", "tp", "fp", "fn", "train_f1"} <= set(row)
        assert row["tp"] + row["fn"] == sum(len(p) for p in sets["test"].points)
        assert len(counts[model]["tp"]) == n_test
    old = run.metrics[B.POSITION]["amibr_mosaic_test"]
    assert old["f1"] == 1.0  # a figure at every tile centre: solved by position (first pitch of best train F1)
    assert run.schedule_run["baselines"]["amibr_mosaic_test"] == {"position": f"grid_{int(old['pitch_px'])}px"}
    assert set(run.schedule_run["baselines"]["amibr_bench_test"]) == {"position", "log_blobs"}
    assert B.LOG_BLOBS not in {m for m in run.metrics if "amibr_mosaic_test" in run.metrics[m]}

    detector = {"tp": counts[B.LOG_BLOBS]["tp"], "fp": counts[B.LOG_BLOBS]["fp"] * 0,
                "fn": counts[B.LOG_BLOBS]["fn"]}  # the blobs without their false positives
    paired = ev.record_paired(run, "amibr_bench_test", sets["test"].info,
                              {"rcnn_dwt_labels": detector} | counts, ev.BASELINE_COMPARED)
    key = stats.paired_key("f1", "rcnn_dwt_labels", B.LOG_BLOBS)
    assert {key, f"{key}_ci_low", f"{key}_ci_high"} <= set(paired) and len(paired) == 2 * 3  # two baselines
    assert paired[key] >= 0.0  # no false positive cannot lower F1
    assert run.metrics[stats.PAIRED]["amibr_bench_test"] == paired
    assert ev.record_paired(run, "synthetic_test", None, {"rcnn_dwt_labels": detector}, ev.BASELINE_COMPARED) == {}
