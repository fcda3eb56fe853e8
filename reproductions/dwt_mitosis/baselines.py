"""The two baseline rows the phase-2 detectors on AMi-Br are read against (``common.baselines``).

- ``baseline_position``: the fixed-position rule (a grid of cell centres, or every window centre)
  of best F1 on the training fields (``det_train``), applied to the test fields. On the benchmark
  fields (``datasets/amibr_benchmark``) it must score poorly; on the OLD mosaics of whole crops of
  the same slides (``amibr_mosaic_test``, rule fitted on the training-slide mosaics) it scores
  F1 ~0.99: those fields are solved by position, which is why the models no longer use them.
- ``baseline_log_blobs``: LoG blobs of the haematoxylin channel, score kind and threshold of best
  F1 on (at most ``MAX_FIT_FIELDS``) training fields: what "find the dark round blobs" gets.

Both use the models' 8 um point rule (``eval.match_um``) on the models' test fields and are
recorded like the models: ``recall``, ``precision``, ``f1`` with 95 % bootstrap intervals over
images (``common.stats``), ``tp``, ``fp``, ``fn``, ``train_f1``; the chosen rule, score kind and
threshold go to the run's ``schedule_run["baselines"]``. The per-image counts feed the paired
comparisons of each model against each baseline (``evaluate.BASELINE_COMPARED``).

Reference: dwt_mitosis Sec. 4.2 (8 um criterion); MITOS-RCNN Sec. V-A.
"""

from __future__ import annotations

import numpy as np

from microrepro.common import baselines, matching, stats
from microrepro.common.runs import Run
from microrepro.datasets.base import Sample
from microrepro.reproductions.dwt_mitosis.config import DwtMitosisConfig
from microrepro.reproductions.dwt_mitosis.data import ImageSet

POSITION, LOG_BLOBS = "baseline_position", "baseline_log_blobs"
MODELS = (POSITION, LOG_BLOBS)
MAX_FIT_FIELDS = 24  # LoG blobs take ~0.3 s per 256 px field on a CPU; the threshold needs no more


def as_samples(image_set: ImageSet) -> list[Sample]:
    """The images of ``image_set`` as Samples (image, points, pixel size, ``meta["windows"]``)."""
    metas = image_set.meta or [{}] * len(image_set)
    return [Sample(id=i, image_array=img, points=p, pixel_size_um=px, meta=dict(m))
            for i, img, p, px, m in zip(image_set.ids, image_set.images, image_set.points, image_set.pixel_sizes,
                                        metas, strict=True)]


def _record(run: Run, model: str, split: str, test: ImageSet, found: list[np.ndarray], match_um: float,
            extra: dict) -> dict[str, np.ndarray]:
    """Match ``found`` points per image, record the row with intervals; return the per-image counts."""
    per_image = [matching.match_points(p, np.asarray(t, np.float64).reshape(-1, 2), match_um, pixel_size_um=px)
                 for p, t, px in zip(found, test.points, test.pixel_sizes, strict=True)]
    counts = stats.per_image_counts(per_image)
    values = {**stats.detection_row(counts), **extra}
    run.extra["bootstrap"] = stats.settings()
    run.add_metrics(model, split, values, test.info)
    print(f"[dwt_mitosis] {model} on {split}: recall {values['recall']:.3f}, precision {values['precision']:.3f}, "
          f"F1 {values['f1']:.3f} (95% {stats.ci_text(values, 'f1')})")
    return counts


def evaluate_baselines(run: Run, cfg: DwtMitosisConfig, domain: str, sets: dict[str, ImageSet]
                       ) -> dict[str, dict[str, np.ndarray]]:
    """Fit both baselines on ``det_train`` and record them on ``test``; the position one also on the mosaics.

    Args:
        domain: the data domain (``amibr``); splits are ``<domain>_<test.name>`` and
            ``<domain>_<mosaic_test.name>``.
        sets: ``data.amibr_sets`` (``det_train``, ``test`` and, when present, ``mosaic_train`` /
            ``mosaic_test``).

    Returns:
        ``{baseline: per-image tp / fp / fn}`` on ``test`` (for ``evaluate.record_paired``).
    """
    match_um = cfg.eval.match_um
    train, test = as_samples(sets["det_train"]), sets["test"]
    split = f"{domain}_{test.name}"
    counts, chosen = {}, {}
    fit = baselines.fit_position(train, match_um)
    found = [fit.rule.detect(f) for f in as_samples(test)]
    print(f"[dwt_mitosis] {POSITION}: rule {fit.rule.name} (train F1 {fit.train_f1[fit.rule.name]:.3f})")
    counts[POSITION] = _record(run, POSITION, split, test, found, match_um,
                               {"train_f1": fit.train_f1[fit.rule.name], "pitch_px": fit.rule.pitch})
    blob = baselines.fit_log_blobs(train[:MAX_FIT_FIELDS], match_um)
    found = [blob.detect(img, px)[0] for img, px in zip(test.images, test.pixel_sizes, strict=True)]
    print(f"[dwt_mitosis] {LOG_BLOBS}: score {blob.score} >= {blob.threshold.value:.4g} "
          f"(train F1 {blob.threshold.metric_value:.3f})")
    counts[LOG_BLOBS] = _record(run, LOG_BLOBS, split, test, found, match_um,
                                {"train_f1": blob.threshold.metric_value, "threshold": blob.threshold.value})
    chosen[split] = {"position": fit.rule.name,
                     "log_blobs": {"score": blob.score, "threshold": blob.threshold.value,
                                   "fit_fields": min(len(train), MAX_FIT_FIELDS)}}
    if sets.get("mosaic_train") is not None and sets.get("mosaic_test") is not None:
        old_train, old_test = as_samples(sets["mosaic_train"]), sets["mosaic_test"]
        old = baselines.fit_position(old_train, match_um)
        old_split = f"{domain}_{old_test.name}"
        print(f"[dwt_mitosis] {POSITION} on the OLD mosaics: rule {old.rule.name} "
              f"(train F1 {old.train_f1[old.rule.name]:.3f})")
        _record(run, POSITION, old_split, old_test, [old.rule.detect(f) for f in as_samples(old_test)], match_um,
                {"train_f1": old.train_f1[old.rule.name], "pitch_px": old.rule.pitch})
        chosen[old_split] = {"position": old.rule.name}
    run.schedule_run.setdefault("baselines", {}).update(chosen)
    run.save()
    return counts
