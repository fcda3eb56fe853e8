"""The two baseline rows every MITOS-RCNN row is read against (``common.baselines``).

- ``baseline_position``: the fixed-position rule (a grid of cell centres, or every window centre)
  of best F1 on the training fields of a split, applied to its test fields. On the old
  ``real_mosaic`` fields (AMi-Br crops tiled on a 128 px grid) it scores F1 ~0.99: those fields
  are solved by position. On ``real_bench`` (``datasets/amibr_benchmark``) it must score poorly.
- ``baseline_log_blobs``: LoG blobs of the haematoxylin channel, score kind and threshold of best
  F1 on (at most ``MAX_FIT_FIELDS``) training fields: what "find the dark round blobs" gets.

Both use the models' 8 um point rule (``eval.match_um``) and are recorded like models:
``precision``, ``recall``, ``f1`` (each with its 95 % bootstrap interval over test fields,
``common.stats``), ``tp``, ``fp``, ``fn``, ``train_f1``; the chosen rule, score kind
and threshold go to the run's ``schedule_run["baselines"]``.

Reference: MITOS-RCNN Sec. V-A (F1 with the 8 um rule).
"""

from __future__ import annotations

from microrepro.common import baselines, stats

POSITION, LOG_BLOBS = "baseline_position", "baseline_log_blobs"
MODELS = (POSITION, LOG_BLOBS)
MAX_FIT_FIELDS = 24  # LoG blobs take ~1 s per 512 px field on a CPU; the threshold needs no more


def _values(train_f1: float, counts: dict) -> dict:
    """The recorded row: rates with their bootstrap intervals over fields (``counts``: per field)."""
    return {**stats.detection_row(counts), "train_f1": train_f1}


def _per_field(points_per_field, fields, match_um: float) -> dict:
    """``{"tp", "fp", "fn"}`` per field (the bootstrap's unit, ``evaluation.record_paired``)."""
    return stats.per_image_counts(baselines.match_fields([p], [f], match_um)
                                  for p, f in zip(points_per_field, fields, strict=True))


def evaluate_baselines(run, cfg, sets: dict, per_field: dict | None = None) -> dict:
    """Fit both baselines on each split's training fields and record them on its test fields.

    Args:
        run: the ``Run``.
        cfg: ``MitosRCNNConfig`` (``eval.match_um``).
        sets: ``{split: (train fields, test fields, DataInfo)}`` (``data.Fields.baseline_sets``).
        per_field: when given, ``per_field[split][model]`` is set to each baseline's per-field
            tp / fp / fn on the split's test fields.

    Returns:
        ``{split: {"position": rule name, "log_blobs": {"score", "threshold"}}}`` (also stored in
        ``run.schedule_run["baselines"]``).

    Reference: MITOS-RCNN Sec. V-A.
    """
    match_um = cfg.eval.match_um
    chosen = {}
    for split, (train, test, info) in sets.items():
        if not train or not test:
            continue
        fit = baselines.fit_position(train, match_um)
        positions = [fit.rule.detect(f) for f in test]
        counts = _per_field(positions, test, match_um)
        if per_field is not None:
            per_field.setdefault(split, {})[POSITION] = counts
        train_f1 = fit.train_f1[fit.rule.name]
        row = _values(train_f1, counts)
        run.add_metrics(POSITION, split, row | {"pitch_px": fit.rule.pitch}, info)
        print(f"[mitos_rcnn] {POSITION} on {split}: rule {fit.rule.name} (train F1 {train_f1:.3f}) -> "
              f"P {row['precision']:.3f} R {row['recall']:.3f} F1 {row['f1']:.3f}")
        blob = baselines.fit_log_blobs(train[:MAX_FIT_FIELDS], match_um)
        found = [blob.detect(f.image, baselines.pixel_size(f))[0] for f in test]
        counts = _per_field(found, test, match_um)
        if per_field is not None:
            per_field.setdefault(split, {})[LOG_BLOBS] = counts
        row = _values(blob.threshold.metric_value, counts)
        run.add_metrics(LOG_BLOBS, split, row | {"threshold": blob.threshold.value}, info)
        run.extra["bootstrap"] = stats.settings()
        print(f"[mitos_rcnn] {LOG_BLOBS} on {split}: score {blob.score} >= {blob.threshold.value:.4g} (train F1 "
              f"{blob.threshold.metric_value:.3f}) -> P {row['precision']:.3f} R {row['recall']:.3f} "
              f"F1 {row['f1']:.3f}")
        chosen[split] = {"position": fit.rule.name,
                         "log_blobs": {"score": blob.score, "threshold": blob.threshold.value,
                                       "fit_fields": min(len(train), MAX_FIT_FIELDS)}}
    run.schedule_run["baselines"] = chosen
    run.save()
    return chosen
