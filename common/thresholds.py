"""Operating thresholds: chosen once (a sweep of the paper's metric), stored once, read by every predict.

Every model of every paper keeps its operating threshold in one file of its run folder,
``<run_dir>/thresholds.json`` (stardist ``optimize_thresholds`` keeps ``thresholds.json`` beside
the weights the same way)::

    {"yolov2": {"value": 0.475, "rule": "max_f1_train", "metric": "f1", "metric_value": 0.93,
                "split": "train", "n_images": 300,
                "curve": {"thresholds": [...], "f1": [...], "precision": [...], "recall": [...]}},
     ...}

``rule`` says how the value was obtained: ``max_<metric>_<split>`` when it maximises ``metric``
over a sweep on ``split`` (ties go to the lowest threshold), ``fixed`` when it is a configured
value. ``evaluate`` and ``predict`` read it back with :func:`load`; ``predict --threshold``
overrides it for one call without changing the file.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import math
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from microrepro.common.errors import UserError

FILE = "thresholds.json"
# A threshold the user gave for this call (predict --threshold): load() returns it instead of the stored one.
_OVERRIDE: contextvars.ContextVar[float | None] = contextvars.ContextVar("threshold_override", default=None)


@dataclass
class Threshold:
    """One model's operating threshold and where it came from."""

    value: float
    rule: str
    metric: str | None = None
    metric_value: float | None = None
    split: str | None = None
    n_images: int | None = None
    curve: dict[str, list[float]] = field(default_factory=dict)

    def to_json(self) -> dict:
        out = asdict(self)
        out["curve"] = {k: [_num(v) for v in values] for k, values in self.curve.items()}
        return out


def _num(value) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value


def grid(start: float, stop: float, step: float) -> np.ndarray:
    """Thresholds ``start, start + step, ...`` up to and including ``stop`` (within half a step)."""
    if step <= 0:
        raise ValueError(f"threshold step must be > 0, got {step}")
    n = int(math.floor((stop - start) / step + 0.5)) + 1
    return np.round(start + step * np.arange(max(n, 1)), 10)


def choose(sweep: dict[str, Iterable[float]], metric: str = "f1", *, split: str = "train",
           n_images: int | None = None) -> Threshold:
    """The threshold of ``sweep`` maximising ``metric``; ties go to the lowest threshold.

    Args:
        sweep: ``{"thresholds": (T,), metric: (T,), ...}`` as returned by
            ``common.metrics.detection_sweep`` / ``threshold_sweep`` or :func:`sweep`.
        metric: which curve to maximise (``"f1"``, ``"mcc"``).
        split: the images the sweep was computed on (never the reported split).
        n_images: how many images that was.

    Returns:
        The chosen :class:`Threshold` with the whole sweep as its curve.

    Reference: cell_counting Sec. 5.1 (the cut-off of maximum F1 on the training images);
        fcn_segmentation Sec. 7.2 (the threshold maximising MCC).
    """
    thresholds = np.asarray(sweep["thresholds"], np.float64).reshape(-1)
    if metric not in sweep:
        raise ValueError(f"the sweep has no metric {metric!r}; it has {sorted(sweep)}")
    values = np.asarray(sweep[metric], np.float64).reshape(-1)
    if values.size == 0 or np.all(np.isnan(values)):
        raise ValueError(f"no defined value of {metric!r} in the sweep")
    best = np.nanmax(values)
    index = int(np.flatnonzero(values == best)[np.argmin(thresholds[values == best])])
    curve = {k: np.asarray(v, np.float64).reshape(-1).tolist() for k, v in sweep.items()
             if np.ndim(v) == 1 and len(v) == len(thresholds)}
    return Threshold(value=float(thresholds[index]), rule=f"max_{metric}_{split}", metric=metric,
                     metric_value=float(best), split=split, n_images=n_images, curve=curve)


def sweep(thresholds: Iterable[float], evaluate: Callable[[float], dict[str, float]]) -> dict[str, np.ndarray]:
    """``{"thresholds": ..., <metric>: ...}`` from calling ``evaluate(t)`` at every threshold.

    For pipelines whose objects change with the threshold (a heat map cut, then labelled), where
    ``common.metrics.detection_sweep`` (which filters scored detections) does not apply.
    """
    thresholds = np.asarray(list(thresholds), np.float64)
    rows = [evaluate(float(t)) for t in thresholds]
    keys = rows[0].keys() if rows else ()
    return {"thresholds": thresholds, **{k: np.array([r[k] for r in rows], np.float64) for k in keys}}


def fixed(value: float) -> Threshold:
    """A configured threshold (no sweep)."""
    return Threshold(value=float(value), rule="fixed")


def path(run_dir: Path) -> Path:
    return Path(run_dir) / FILE


def read_all(run_dir: Path) -> dict[str, Threshold]:
    """Every model's threshold stored in ``run_dir`` ({} when none is stored yet)."""
    file = path(run_dir)
    if not file.is_file():
        return {}
    try:
        data = json.loads(file.read_text())
        return {model: Threshold(**entry) for model, entry in data.items()}
    except (json.JSONDecodeError, TypeError, AttributeError) as err:
        raise UserError(f"{file}: not a thresholds file of this tool ({err}); re-run evaluate to rewrite it") from None


def save(run_dir: Path, model: str, threshold: Threshold) -> Path:
    """Store ``model``'s threshold in ``<run_dir>/thresholds.json`` (other models' entries kept)."""
    file = path(run_dir)
    entries = {name: t.to_json() for name, t in read_all(run_dir).items()}
    entries[model] = threshold.to_json()
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_name(f".{file.name}.partial")
    tmp.write_text(json.dumps(entries, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, file)
    return file


@contextlib.contextmanager
def override(value: float | None) -> Iterator[None]:
    """Within this block :func:`load` returns ``value`` (rule ``user``) when it is not None."""
    token = _OVERRIDE.set(value)
    try:
        yield
    finally:
        _OVERRIDE.reset(token)


def load(run_dir: Path, model: str) -> Threshold:
    """``model``'s stored threshold (or the user's, under :func:`override`), or a UserError saying how to get one."""
    if _OVERRIDE.get() is not None:
        return Threshold(value=float(_OVERRIDE.get()), rule="user")
    stored = read_all(run_dir)
    if model not in stored:
        have = f" (it has: {', '.join(sorted(stored))})" if stored else ""
        raise UserError(
            f"{path(run_dir)}: no operating threshold for model '{model}'{have}; run "
            f"`microrepro evaluate {run_dir}` to choose it, or pass --threshold"
        )
    return stored[model]
