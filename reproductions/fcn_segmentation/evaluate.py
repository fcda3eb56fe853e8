"""Pixel metrics, the MCC-maximising threshold, ROC and example figures of fcn_segmentation.

Every model's operating threshold is chosen once on validation data with ``common.thresholds``
(a sweep of pixel MCC over ``eval.n_thresholds`` thresholds in [0, 1], ties to the lowest) and
stored in the run's ``thresholds.json``; the metrics of Table 1 are then computed at it on
images never used to choose it.

Every metric computed from the evaluation images carries a 95 % bootstrap interval over images
(``common.stats``: ``<metric>_ci_low`` / ``<metric>_ci_high``); the paper's claim that fine-tuning
raises MCC is a paired bootstrap difference on the same images (model ``paired``, key
``mcc_diff__fcrn_a_finetuned__vs__fcrn_a_pretrained``; the same interval beside
``mcc_gain_over_pretrained``).

Reference: Marzo & La Rosa 2016, Sec. 7.2 (specificity, precision, recall, accuracy, F-score and
MCC at the threshold maximising MCC; ROC curve, Fig. 10), Table 1.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from microrepro.common import stats
from microrepro.common import thresholds as thresholds_lib
from microrepro.common.runs import DataInfo, Run, checksum_files
from microrepro.reproductions.fcn_segmentation import data as fdata
from microrepro.reproductions.fcn_segmentation.config import FcnSegmentationConfig
from microrepro.reproductions.fcn_segmentation.splits import SPLIT_FILE

PRETRAINED, FINETUNED, VGG = "fcrn_a_pretrained", "fcrn_a_finetuned", "fcrn_a_vgg"
MODELS = (FINETUNED, PRETRAINED, VGG)
METRIC_KEYS = ("specificity", "precision", "recall", "accuracy", "f1", "mcc")
# The paper's ordering (Sec. 8, Table 1): fine-tuned minus pre-trained, on the same images.
COMPARED = ((FINETUNED, PRETRAINED),)
COMPARED_METRICS = ("mcc",)


def threshold_grid(cfg: FcnSegmentationConfig) -> np.ndarray:
    """``eval.n_thresholds`` probability thresholds evenly spaced over [0, 1] (101: 0, 0.01, ..., 1)."""
    return np.linspace(0.0, 1.0, cfg.eval.n_thresholds)


def choose_threshold(probs: list[np.ndarray], targets: list[np.ndarray], cfg: FcnSegmentationConfig,
                     split: str = "val") -> thresholds_lib.Threshold:
    """The threshold maximising ``eval.select_metric`` (MCC) of ``prob >= t`` over the grid.

    Args:
        probs: ``(H, W)`` cell probabilities, one per image (sizes may differ).
        targets: ``(H, W)`` binary masks of the same shapes.
        cfg: the run's config (grid and metric).
        split: name of the images, recorded with the threshold (never the reported split).

    Returns:
        A ``common.thresholds.Threshold`` (rule ``max_mcc_<split>``, the whole sweep as its curve).

    Reference: Sec. 7.2 (the threshold maximising MCC).
    """
    from microrepro.common.metrics import threshold_sweep

    sweep = threshold_sweep(probs, targets, threshold_grid(cfg))
    return thresholds_lib.choose(sweep, cfg.eval.select_metric, split=split, n_images=len(probs))


def metrics_at(probs: list[np.ndarray], targets: list[np.ndarray], threshold: float,
               cfg: FcnSegmentationConfig) -> dict:
    """Table 1 metrics at ``threshold`` (``prob >= t`` is cell), plus ROC AUC and the
    eval-set-optimal MCC and threshold (``mcc_oracle``, ``threshold_oracle``) for context.

    Args:
        probs: ``(H, W)`` cell probabilities, one per image.
        targets: ``(H, W)`` binary masks of the same shapes (pixel counts are pooled over images).
        threshold: the operating threshold chosen on other images.

    Returns:
        ``{specificity, precision, recall, accuracy, f1, mcc, threshold, auc, mcc_oracle,
        threshold_oracle}``; ``auc`` is None when the masks have no cell or no background pixel;
        and ``<metric>_ci_low`` / ``_ci_high`` of each but the two thresholds (95 % bootstrap over
        images, ``common.stats``; None where undefined, e.g. with one image).

    Reference: Sec. 7.2, Table 1.
    """
    from microrepro.common.metrics import pixel_metrics, roc_curve, threshold_counts

    values = pixel_metrics([p >= threshold for p in probs], targets)
    out = {k: values[k] for k in METRIC_KEYS}
    out["threshold"] = float(threshold)
    try:
        out["auc"] = roc_curve(probs, targets, threshold_grid(cfg))[3]
    except ValueError:  # no positive or no negative pixel: AUC undefined
        out["auc"] = None
    oracle = choose_threshold(probs, targets, cfg, split="eval")
    out["mcc_oracle"], out["threshold_oracle"] = oracle.metric_value, oracle.value
    intervals = stats.bootstrap(per_image_counts(probs, targets, threshold), stats.pixel_statistic)
    sweep = threshold_counts(probs, targets, threshold_grid(cfg))
    intervals.update(stats.bootstrap({k: sweep[k] for k in ("tp", "fp", "fn", "tn")}, stats.sweep_statistic))
    out.update(stats.interval_keys({k: intervals[k] for k in (*METRIC_KEYS, "auc", "mcc_oracle")}))
    return out


def per_image_counts(probs: list[np.ndarray], targets: list[np.ndarray], threshold: float) -> dict[str, np.ndarray]:
    """Pixel ``tp``, ``fp``, ``fn``, ``tn`` of ``prob >= threshold`` per image, ``(I,)`` each (what is resampled)."""
    from microrepro.common.metrics import pixel_counts

    return pixel_counts([p >= threshold for p in probs], targets)


def real_info(split: fdata.RealSplit, items: list[fdata.Item], kind: str, what: str) -> DataInfo:
    """Provenance of a part of the real split: sources, image count, checksum of the files."""
    files = sorted({Path(it.path) for it in items if it.path})
    by_source: dict[str, int] = {}
    for it in items:
        by_source[it.source] = by_source.get(it.source, 0) + 1
    note = ", ".join(f"{n} {src}" for src, n in sorted(by_source.items())) + f"; {what}; ids in {SPLIT_FILE}"
    return DataInfo(kind=kind, dataset="+".join(split.datasets), n_images=len(items),
                    checksum=checksum_files(files) if files else "", note=note)


def evaluate_real(run: Run, cfg: FcnSegmentationConfig, real: fdata.RealSplit, models: dict,
                  thresholds: dict[str, float], kind: str, split_name: str) -> dict:
    """Table 1 metrics of ``models`` on the evaluation images, the MCC gain and the figures.

    Args:
        models: ``{name: FCRN-A}`` (pre-trained and/or fine-tuned).
        thresholds: ``{name: operating threshold}``.
        kind, split_name: "real" / "real_eval", or "synthetic" / "synthetic_eval" (stand-in).

    Returns:
        ``{name: [prob (H, W)]}`` on the evaluation images.

    Reference: Sec. 7.2, Table 1; Sec. 8 (fine-tuning improves MCC).
    """
    targets = [it.target for it in real.eval]
    info = real_info(real, real.eval, kind, "whole images (StarDist: 128 px tiles), never trained on")
    probs = {}
    for name, model in models.items():
        probs[name] = fdata.predict_probability(model, [it.image for it in real.eval])
        run.add_metrics(name, split_name, metrics_at(probs[name], targets, thresholds[name], cfg), info)
    run.extra["bootstrap"] = stats.settings()
    if PRETRAINED in probs and FINETUNED in probs:
        # The paper's claim (Sec. 8, Table 1): fine-tuning improves MCC on the real images.
        paired = stats.compare({name: per_image_counts(p, targets, thresholds[name]) for name, p in probs.items()},
                               COMPARED, COMPARED_METRICS, stats.pixel_statistic)
        run.add_metrics(stats.PAIRED, split_name, paired, info)
        gain = run.metrics[FINETUNED][split_name]["mcc"] - run.metrics[PRETRAINED][split_name]["mcc"]
        key = stats.paired_key("mcc", FINETUNED, PRETRAINED)
        run.add_metrics(FINETUNED, split_name, {"mcc_gain_over_pretrained": gain,
                                                "mcc_gain_over_pretrained_ci_low": paired[f"{key}_ci_low"],
                                                "mcc_gain_over_pretrained_ci_high": paired[f"{key}_ci_high"]}, info)
        low, high = paired[f"{key}_ci_low"], paired[f"{key}_ci_high"]
        print(f"[fcn_segmentation] {split_name}: MCC gain of fine-tuning {gain:+.3f} (paired 95% "
              + ("n/a" if low is None else f"{low:+.3f}..{high:+.3f}") + f", {len(targets)} images)")
    figures(run, cfg, real.eval, probs, thresholds)
    return probs


def figures(run: Run, cfg: FcnSegmentationConfig, items: list[fdata.Item], probs: dict,
            thresholds: dict[str, float]) -> None:
    """``figures/roc.png`` (before vs after fine-tuning) and ``figures/examples.png``
    (image | ground truth | before | after) on the evaluation images.

    Reference: Sec. 7.2, Fig. 10 (ROC, one point per threshold), Figs. 9 and 11 (examples).
    """
    from microrepro.common.figures import montage, plot_curves
    from microrepro.common.metrics import roc_curve

    targets = [it.target for it in items]
    curves = {}
    for name, label in ((PRETRAINED, "before fine-tuning"), (FINETUNED, "after fine-tuning")):
        if name in probs:
            try:
                fpr, tpr, _, auc = roc_curve(probs[name], targets, threshold_grid(cfg))
            except ValueError:
                continue
            curves[f"{label} (AUC {auc:.3f})"] = (fpr[::-1], tpr[::-1])
    if curves:
        curves["chance"] = ([0.0, 1.0], [0.0, 1.0])
        plot_curves(curves, "false positive rate", "true positive rate (recall)",
                    "ROC on the evaluation images (one point per threshold)", run.figure_path("roc"))
    rng = np.random.default_rng(0)
    chosen = sorted(rng.choice(len(items), size=min(cfg.eval.n_examples, len(items)), replace=False))
    tiles, titles = [], []
    for i in chosen:
        tiles += [items[i].image, items[i].target.astype(np.float32)]
        titles += [items[i].id[:12], "ground truth"]
        for name, label in ((PRETRAINED, "before"), (FINETUNED, "after")):
            if name in probs:
                tiles.append((probs[name][i] >= thresholds[name]).astype(np.float32))
                titles.append(f"{label} (t={thresholds[name]:.2f})")
    if tiles:
        montage(tiles, titles, run.figure_path("examples"), ncols=len(tiles) // len(chosen))


def vgg_metrics(run: Run, cfg: FcnSegmentationConfig, model, threshold: float, vgg: dict) -> None:
    """Table 1 metrics of ``fcrn_a_vgg`` on the VGG test images (split ``test``).

    Args:
        vgg: from ``splits.vgg_split``.
    """
    test = vgg["samples"]["test"]
    probs = fdata.predict_probability(model, [p[0] for p in vgg["test"]])
    run.extra["bootstrap"] = stats.settings()
    files = [s.image_path for s in test] + [s.meta["dots_path"] for s in test]
    run.add_metrics(
        VGG, "test", metrics_at(probs, [p[1] for p in vgg["test"]], threshold, cfg),
        DataInfo(kind="synthetic", dataset="vgg_cells", n_images=len(test), checksum=checksum_files(files),
                 note=f"VGG synthetic cells, last {len(test)} images (trained on the first "
                      f"{len(vgg['train'])}, threshold on the next {len(vgg['val'])}); "
                      f"target: {cfg.vgg.target} of the cell image"),
    )
