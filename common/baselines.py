"""Baselines a detector's rows are read against, scored with the papers' point rule.

Both are matched like the models: a detection is a point ``[x, y]`` px, a true positive when within
``match_um`` (8 um) of a ground-truth centroid, one-to-one (``common.matching.match_points``),
counts summed over fields (micro-average).

- **Position only** (:func:`fit_position`): no pixel is looked at. Candidate rules are "one point at
  every cell centre of a square grid of pitch P anchored at (0, 0)" for the pitches given (they
  need only the field size) and "one point at every window centre" (needs the field's window
  outlines, ``meta["windows"]`` ``[[x, y, w, h], ...]``: a user sees them as seams). The rule of
  best F1 on the TRAINING fields is kept. A data set where it scores well is solved by position.
- **Classical nucleus detector** (:func:`fit_log_blobs`): the haematoxylin channel of the colour
  deconvolution (``skimage.color.rgb2hed``), Laplacian-of-Gaussian blobs
  (``skimage.feature.blob_log``), each scored by its scale-normalised LoG response or its mean
  haematoxylin; the score (of the two) and threshold of best F1 on the training fields
  (``common.metrics.detection_sweep`` + ``common.thresholds.choose``) are kept. No training.

Reference: MITOS-RCNN Sec. V-A and DWT mitosis Sec. 4.2 (TP: detection within 8 um of a
ground-truth centroid, the ICPR 2012 / 2014 criterion); Lindeberg 1998 (scale-normalised LoG).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from microrepro.common import matching, thresholds
from microrepro.common.metrics import detection_sweep

DEFAULT_PIXEL_SIZE_UM = 0.25  # x40 H&E, for fields that carry no pixel size
GRID_PITCHES = tuple(range(32, 257, 8))  # px: from 8 um (denser than the 8 um rule needs) to 64 um


def pixel_size(sample) -> float:
    """The sample's micrometres per pixel, or :data:`DEFAULT_PIXEL_SIZE_UM` when it has none."""
    return float(getattr(sample, "pixel_size_um", None) or DEFAULT_PIXEL_SIZE_UM)


def _truth(sample) -> np.ndarray:
    return np.asarray(sample.points, np.float64).reshape(-1, 2)


def match_fields(points_per_field, fields, match_um: float = 8.0) -> matching.MatchResult:
    """Counts of detections ``[(N_i, 2) [x, y] px]`` against the fields' points, summed over fields."""
    return matching.aggregate(
        matching.match_points(p, _truth(f), match_um, pixel_size_um=pixel_size(f))
        for p, f in zip(points_per_field, fields, strict=True)
    )


# ---------------------------------------------------------------------------- position only
def grid_centres(height: int, width: int, pitch: int) -> np.ndarray:
    """Cell centres ``(N, 2)`` ``[x, y]`` px of a ``pitch`` px grid anchored at (0, 0) that lie in the image.

    Pixel-index convention: the cell ``[0, pitch)`` has its centre at ``(pitch - 1) / 2``.

    Example: ``grid_centres(256, 128, 128) == [[63.5, 63.5], [63.5, 191.5]]``.
    """
    if pitch <= 0:
        raise ValueError(f"grid pitch must be positive, got {pitch}")
    xs = np.arange((pitch - 1) / 2, width, pitch)
    ys = np.arange((pitch - 1) / 2, height, pitch)
    gx, gy = np.meshgrid(xs, ys)
    return np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float64)


def window_centres(sample) -> np.ndarray:
    """Centres ``(N, 2)`` ``[x, y]`` px of ``meta["windows"]`` ``[[x, y, w, h], ...]`` ((0, 2) if none)."""
    windows = np.asarray(sample.meta.get("windows") or [], np.float64).reshape(-1, 4)
    return windows[:, :2] + (windows[:, 2:] - 1) / 2


@dataclass(frozen=True)
class PositionRule:
    """A fixed-position detector: ``kind`` "grid" (with ``pitch`` px) or "windows"."""

    kind: str
    pitch: int = 0

    @property
    def name(self) -> str:
        return f"grid_{self.pitch}px" if self.kind == "grid" else "window_centres"

    def detect(self, sample) -> np.ndarray:
        """Points ``(N, 2)`` ``[x, y]`` px for a field; only its size (and window outlines) are read."""
        if self.kind == "windows":
            return window_centres(sample)
        height, width = np.asarray(sample.image).shape[:2]
        return grid_centres(height, width, self.pitch)


@dataclass
class PositionFit:
    """The chosen rule and every candidate's F1 on the training fields (``{rule name: f1}``)."""

    rule: PositionRule
    train_f1: dict[str, float] = field(default_factory=dict)


def fit_position(fields, match_um: float = 8.0, pitches=GRID_PITCHES, windows: bool = True) -> PositionFit:
    """The position-only rule of best F1 on ``fields`` (training fields; ties: the first candidate).

    Candidates: a grid of each pitch in ``pitches``, then (with ``windows`` and when the fields
    have ``meta["windows"]``) the window centres.

    Reference: MITOS-RCNN Sec. V-A (F1, 8 um rule).
    """
    rules = [PositionRule("grid", int(p)) for p in pitches]
    if windows and any(f.meta.get("windows") for f in fields):
        rules.append(PositionRule("windows"))
    if not rules:
        raise ValueError("no position rule to try: give grid pitches or fields with windows")
    scores = {r.name: match_fields([r.detect(f) for f in fields], fields, match_um).f1 for r in rules}
    best = max(rules, key=lambda r: (scores[r.name], -rules.index(r)))
    return PositionFit(best, scores)


# -------------------------------------------------------------------------- LoG blobs
@dataclass(frozen=True)
class BlobParams:
    """LoG blob search in micrometres (converted with each field's pixel size).

    Attributes:
        min_sigma_um, max_sigma_um: Gaussian scales searched (a blob of radius r answers at r/sqrt 2).
        num_sigma: scales between them.
        blob_threshold: ``blob_log``'s lower bound on the scale-normalised response (candidates
            only; the operating threshold is chosen on the training fields).
        overlap: ``blob_log``'s overlap above which the smaller blob is dropped.
    """

    min_sigma_um: float = 1.5
    max_sigma_um: float = 4.0
    num_sigma: int = 6
    blob_threshold: float = 0.01
    overlap: float = 0.5


@dataclass
class Blobs:
    """LoG blobs of one image: ``points`` ``(N, 2)`` ``[x, y]`` px, ``sigma`` ``(N,)`` px, and the two
    scores ``log`` (``-sigma^2 LoG * H`` at the blob) and ``hematoxylin`` (mean H within sigma sqrt 2)."""

    points: np.ndarray
    sigma: np.ndarray
    log: np.ndarray
    hematoxylin: np.ndarray

    def scores(self, kind: str) -> np.ndarray:
        if kind not in ("log", "hematoxylin"):
            raise ValueError(f"blob score must be 'log' or 'hematoxylin', not {kind!r}")
        return getattr(self, kind)


def hematoxylin(image: np.ndarray) -> np.ndarray:
    """Haematoxylin optical density ``(H, W)`` float64 >= 0 of an RGB image (uint8 or float in [0, 1]).

    Reference: Ruifrok & Johnston 2001 (colour deconvolution), ``skimage.color.rgb2hed``.
    """
    from skimage.color import rgb2hed

    image = np.asarray(image)
    rgb = image[..., :3] if image.ndim == 3 else np.repeat(image[..., None], 3, axis=-1)
    return np.clip(rgb2hed(rgb)[..., 0], 0, None)


def log_blobs(image: np.ndarray, pixel_size_um: float = DEFAULT_PIXEL_SIZE_UM,
              params: BlobParams = BlobParams()) -> Blobs:
    """LoG blobs of the haematoxylin channel with their two scores (see :class:`Blobs`)."""
    from scipy import ndimage
    from skimage.feature import blob_log

    h = hematoxylin(image)
    lo, hi = params.min_sigma_um / pixel_size_um, params.max_sigma_um / pixel_size_um
    found = blob_log(h, min_sigma=lo, max_sigma=hi, num_sigma=params.num_sigma,
                     threshold=params.blob_threshold, overlap=params.overlap, exclude_border=False)
    found = np.asarray(found, np.float64).reshape(-1, 3)
    log, mean_h = np.zeros(len(found)), np.zeros(len(found))
    yy, xx = np.mgrid[: h.shape[0], : h.shape[1]]
    for sigma in np.unique(found[:, 2]):
        response = -(sigma**2) * ndimage.gaussian_laplace(h, sigma)
        for k in np.flatnonzero(found[:, 2] == sigma):
            y, x = int(found[k, 0]), int(found[k, 1])
            log[k] = response[y, x]
            r = sigma * np.sqrt(2)
            y0, y1, x0, x1 = max(0, int(y - r)), int(y + r) + 1, max(0, int(x - r)), int(x + r) + 1
            disk = (yy[y0:y1, x0:x1] - y) ** 2 + (xx[y0:y1, x0:x1] - x) ** 2 <= r * r
            mean_h[k] = h[y0:y1, x0:x1][disk].mean()
    return Blobs(found[:, [1, 0]].copy(), found[:, 2].copy(), log, mean_h)


@dataclass
class LogBlobBaseline:
    """A fitted classical detector: LoG blobs kept when their ``score`` >= ``threshold.value``."""

    params: BlobParams
    score: str
    threshold: thresholds.Threshold
    train_f1: dict[str, float] = field(default_factory=dict)

    def detect(self, image: np.ndarray, pixel_size_um: float = DEFAULT_PIXEL_SIZE_UM) -> tuple[np.ndarray, np.ndarray]:
        """``(points (K, 2) [x, y] px, scores (K,))`` of the blobs kept."""
        blobs = log_blobs(image, pixel_size_um, self.params)
        scores = blobs.scores(self.score)
        keep = scores >= self.threshold.value
        return blobs.points[keep], scores[keep]


def score_grid(scores: np.ndarray, n: int = 101) -> np.ndarray:
    """Thresholds for a sweep: the ``n`` quantiles (0, 1/(n-1), ..., 1) of the scores, unique, sorted."""
    scores = np.asarray(scores, np.float64).reshape(-1)
    if not len(scores):
        return np.zeros(1)
    return np.unique(np.quantile(scores, np.linspace(0.0, 1.0, n)))


def fit_log_blobs(fields, match_um: float = 8.0, params: BlobParams = BlobParams(),
                  scores=("log", "hematoxylin"), n_thresholds: int = 101) -> LogBlobBaseline:
    """Choose the blob score and its threshold of best F1 on ``fields`` (training fields).

    For each score kind, the sweep runs over :func:`score_grid` of the training blobs' scores
    (``detection_sweep`` with the 8 um point matcher) and ``thresholds.choose`` keeps the best F1
    (ties: the lowest threshold); the kind with the higher F1 wins (ties: the first in ``scores``).

    Reference: cell_counting Sec. 5.1 (cut-off of maximum F1 on the training images), applied
        to the classical detector.
    """
    if not fields:
        raise ValueError("fit_log_blobs needs at least one training field")
    blobs = [log_blobs(f.image, pixel_size(f), params) for f in fields]
    truths = [(_truth(f), pixel_size(f)) for f in fields]

    def match(pred, truth):
        return matching.match_points(pred, truth[0], match_um, pixel_size_um=truth[1])

    best, train_f1 = None, {}
    for kind in scores:
        per_field = [b.scores(kind) for b in blobs]
        grid = score_grid(np.concatenate(per_field), n_thresholds)
        sweep = detection_sweep(match, [b.points for b in blobs], per_field, truths, grid)
        chosen = thresholds.choose(sweep, "f1", split="train", n_images=len(fields))
        train_f1[kind] = chosen.metric_value
        if best is None or chosen.metric_value > best.threshold.metric_value:
            best = LogBlobBaseline(params, kind, chosen)
    best.train_f1 = train_f1
    return best
