"""Figures for results pages: curves (F1/MCC against threshold, losses), ROC, detection overlays,
montages. matplotlib only, Agg rendering.

Every function builds a ``matplotlib.figure.Figure`` directly (never ``pyplot``), so no global
figure registry fills up and nothing depends on the interactive backend; each writes one PNG
(parent folders created) and returns its path.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle

from microrepro.common.matching import MatchResult

TP_COLOUR = "#1a9641"  # green
FP_COLOUR = "#d7191c"  # red
FN_COLOUR = "#2b83ba"  # blue
PRED_COLOUR = "#fdae61"  # orange: predictions when no matching is given
GT_COLOUR = "#00e5ff"  # cyan: ground truth when no matching is given


def _save(fig: Figure, out_png, **kwargs) -> Path:
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, format="png", **kwargs)
    return out_png


def _display(image: np.ndarray) -> tuple[np.ndarray, dict]:
    """Image and imshow keywords: grey images are stretched to their 1–99.8 percentiles (dim
    microscopy stays visible); uint8 RGB is shown as is; other RGB is min–max scaled."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        finite = image[np.isfinite(image)] if np.issubdtype(image.dtype, np.floating) else image
        low, high = (np.percentile(finite, (1, 99.8)) if finite.size else (0.0, 1.0))
        if high <= low:
            low, high = float(np.min(finite, initial=0)), float(np.max(finite, initial=0)) + 1e-9
        return image, {"cmap": "gray", "vmin": float(low), "vmax": float(high)}
    if image.ndim == 3 and image.shape[-1] in (3, 4):
        if image.dtype == np.uint8:
            return image[..., :3], {}
        rgb = image[..., :3].astype(np.float64)
        span = rgb.max() - rgb.min()
        return (rgb - rgb.min()) / (span if span > 0 else 1.0), {}
    raise ValueError(f"image must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {image.shape}")


def plot_curves(
    curves: dict[str, tuple[Sequence[float], Sequence[float]]],
    xlabel: str,
    ylabel: str,
    title: str,
    out_png,
    mark: tuple | None = None,
    *,
    log_y: bool = False,
) -> Path:
    """Line plot of one or more named curves (F1 or MCC against threshold, loss against epoch).

    Args:
        curves: ``{name: (x, y)}``, each a pair of equal-length sequences.
        xlabel, ylabel, title: axis labels and title.
        out_png: file to write.
        mark: optional ``(x, y)`` or ``(x, y, label)`` to highlight (e.g. the best threshold):
            a dashed vertical line and a dot, labelled in the legend.
        log_y: logarithmic y axis (losses).

    Returns:
        The PNG path.
    """
    if not curves:
        raise ValueError("plot_curves needs at least one curve")
    fig = Figure(figsize=(6, 4), dpi=100)
    ax = fig.add_subplot()
    for name, (x, y) in curves.items():
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        if x.shape != y.shape:
            raise ValueError(f"curve {name!r}: x has shape {x.shape} but y has {y.shape}")
        ax.plot(x, y, label=str(name), linewidth=1.8)
    if mark is not None:
        if len(mark) not in (2, 3):
            raise ValueError(f"mark must be (x, y) or (x, y, label), got {mark!r}")
        mx, my = float(mark[0]), float(mark[1])
        label = mark[2] if len(mark) == 3 else f"{xlabel} = {mx:.3g}, {ylabel} = {my:.3g}"
        ax.axvline(mx, color="0.3", linestyle="--", linewidth=1)
        ax.plot([mx], [my], "o", color="black", label=label)
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, out_png)


def plot_roc(fpr, tpr, auc: float, out_png, label: str = "model") -> Path:
    """ROC curve (TPR against FPR) with the chance diagonal and the AUC in the legend.

    Args:
        fpr, tpr: ``(T,)`` false and true positive rates (``metrics.roc_curve``).
        auc: area under the curve.
        out_png: file to write.
        label: name of the curve.

    Returns:
        The PNG path.

    Reference: fcn_segmentation Sec. 7.2 (ROC, one point per threshold).
    """
    fpr, tpr = np.asarray(fpr, np.float64), np.asarray(tpr, np.float64)
    if fpr.shape != tpr.shape:
        raise ValueError(f"fpr has shape {fpr.shape} but tpr has {tpr.shape}")
    order = np.lexsort((tpr, fpr))
    fig = Figure(figsize=(5, 5), dpi=100)
    ax = fig.add_subplot()
    ax.plot(fpr[order], tpr[order], marker=".", markersize=3, label=f"{label} (AUC = {auc:.3f})")
    ax.plot([0, 1], [0, 1], color="0.6", linestyle=":", label="chance")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate (recall)")
    ax.set_title("ROC")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return _save(fig, out_png)


def _draw_objects(ax, objects: np.ndarray, colour: str, *, dashed: bool, marker: str) -> None:
    if len(objects) == 0:
        return
    if objects.shape[1] == 4:
        for x1, y1, x2, y2 in objects:
            ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=colour,
                                   linewidth=1.2, linestyle="--" if dashed else "-"))
    else:
        if marker == "o":  # hollow circles leave the object visible underneath
            ax.scatter(objects[:, 0], objects[:, 1], s=60, marker="o", facecolors="none",
                       edgecolors=colour, linewidths=1.5)
        else:
            ax.scatter(objects[:, 0], objects[:, 1], s=60, marker=marker, color=colour,
                       linewidths=1.5)


def _handle(objects: np.ndarray, colour: str, dashed: bool, marker: str, label: str):
    """Legend entry drawn like the objects: an outlined box for boxes, the marker for points."""
    if objects.shape[1] == 4:
        return Patch(edgecolor=colour, facecolor="none", linestyle="--" if dashed else "-",
                     label=label)
    return Line2D([], [], color=colour, marker=marker, linestyle="", markerfacecolor="none",
                  label=label)


def _as_objects(values, name: str) -> np.ndarray:
    array = np.asarray(values if values is not None else [], np.float64)
    if array.size == 0 and not (array.ndim == 2 and array.shape[1] in (2, 4)):
        return np.zeros((0, 2), np.float64)  # [] or None: no objects, drawn as points
    if array.ndim != 2 or array.shape[1] not in (2, 4):
        raise ValueError(f"{name} must be (N, 2) points [x, y] or (N, 4) boxes [x1, y1, x2, y2], "
                         f"got {array.shape}")
    return array


def draw_detections(
    image: np.ndarray,
    pred_points_or_boxes,
    gt_points_or_boxes,
    out_png,
    matched: MatchResult | None = None,
    *,
    title: str | None = None,
    scale: float | None = None,
) -> Path:
    """Overlay predictions and ground truth on an image.

    With ``matched`` (the MatchResult of this image): TP predictions green, FP predictions red,
    missed ground truth (FN) blue, matched ground truth green dashed (boxes) or '+' (points).
    Without it: predictions orange, ground truth cyan. Boxes are drawn as rectangles, points as
    markers (circles for predictions, '+' for ground truth). The legend gives the counts.

    Args:
        image: ``(H, W)`` or ``(H, W, 3|4)`` image as read.
        pred_points_or_boxes: ``(N, 2)`` points ``[x, y]`` or ``(N, 4)`` boxes
            ``[x1, y1, x2, y2]`` px.
        gt_points_or_boxes: ``(M, 2)`` or ``(M, 4)``, same convention.
        out_png: file to write.
        matched: matching of these predictions to this ground truth, or None.
        title: optional title drawn in the top-left corner.
        scale: output pixels per image pixel; None = enlarge small images to about 512 px on
            the longer side (never shrink). The PNG is ``round(W·scale) × round(H·scale)``.

    Returns:
        The PNG path.

    Reference: cell_counting Fig. 7 (green TP, red FP, blue FN).
    """
    shown, kwargs = _display(image)
    height, width = shown.shape[:2]
    pred = _as_objects(pred_points_or_boxes, "predictions")
    gt = _as_objects(gt_points_or_boxes, "ground truth")
    if scale is None:
        scale = max(1.0, 512.0 / max(height, width))
    if scale <= 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    out_w, out_h = int(round(width * scale)), int(round(height * scale))
    dpi = 100
    # +1e-3 px: Agg truncates the canvas size to int, so an exact product could lose a pixel
    fig = Figure(figsize=((out_w + 1e-3) / dpi, (out_h + 1e-3) / dpi), dpi=dpi)
    ax = fig.add_axes((0, 0, 1, 1))
    # extent puts pixel (r, c) over [c, c+1) × [r, r+1): box edges fall on pixel edges
    ax.imshow(shown, extent=(0, width, height, 0), interpolation="nearest", **kwargs)
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.axis("off")

    if matched is None:
        _draw_objects(ax, pred, PRED_COLOUR, dashed=False, marker="o")
        _draw_objects(ax, gt, GT_COLOUR, dashed=True, marker="+")
        handles = [_handle(pred, PRED_COLOUR, False, "o", f"prediction ({len(pred)})"),
                   _handle(gt, GT_COLOUR, True, "+", f"ground truth ({len(gt)})")]
    else:
        if matched.n_pred != len(pred) or matched.n_gt != len(gt):
            raise ValueError(
                f"matched describes {matched.n_pred} predictions and {matched.n_gt} ground truths, "
                f"but {len(pred)} and {len(gt)} were given"
            )
        tp_mask, hit_gt = matched.matched_pred, matched.matched_gt
        _draw_objects(ax, gt[hit_gt], TP_COLOUR, dashed=True, marker="+")
        _draw_objects(ax, gt[~hit_gt], FN_COLOUR, dashed=True, marker="+")
        _draw_objects(ax, pred[tp_mask], TP_COLOUR, dashed=False, marker="o")
        _draw_objects(ax, pred[~tp_mask], FP_COLOUR, dashed=False, marker="o")
        handles = [_handle(pred, TP_COLOUR, False, "o", f"TP ({int(tp_mask.sum())})"),
                   _handle(pred, FP_COLOUR, False, "o", f"FP ({int((~tp_mask).sum())})"),
                   _handle(gt, FN_COLOUR, True, "+", f"FN ({int((~hit_gt).sum())})")]
    ax.legend(handles=handles, loc="upper right", fontsize=7, framealpha=0.7)
    if title:
        ax.text(0.01, 0.99, title, transform=ax.transAxes, va="top", ha="left", fontsize=8,
                color="white", bbox={"facecolor": "black", "alpha": 0.5, "pad": 2})
    return _save(fig, out_png, dpi=dpi)


def montage(
    images: list[np.ndarray],
    titles: Sequence[str] | None,
    out_png,
    ncols: int = 4,
    *,
    tile_inches: float = 2.5,
) -> Path:
    """Grid of images with optional titles (samples, synthetic previews, predictions).

    Args:
        images: list of ``(H, W)`` or ``(H, W, 3|4)`` arrays (sizes may differ).
        titles: one title per image, or None.
        out_png: file to write.
        ncols: images per row.
        tile_inches: size of one tile (at 100 dpi).

    Returns:
        The PNG path.
    """
    if not images:
        raise ValueError("montage needs at least one image")
    if titles is not None and len(titles) != len(images):
        raise ValueError(f"{len(titles)} titles for {len(images)} images")
    if ncols < 1:
        raise ValueError(f"ncols must be >= 1, got {ncols}")
    ncols = min(ncols, len(images))
    nrows = -(-len(images) // ncols)
    fig = Figure(figsize=(tile_inches * ncols, tile_inches * nrows), dpi=100)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for index, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if index >= len(images):
            continue
        shown, kwargs = _display(images[index])
        ax.imshow(shown, interpolation="nearest", **kwargs)
        if titles is not None:
            ax.set_title(str(titles[index]), fontsize=8)
    fig.tight_layout()
    return _save(fig, out_png)
