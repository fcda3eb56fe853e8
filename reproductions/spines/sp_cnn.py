"""SP-CNN: a 6-layer FCN trained with MSE minus a shape-prior correlation term (paper Sec. 5).

The model and the loss use ``keras`` / ``keras.ops`` only. The edge map of the input and the
shape-prior kernels are computed with OpenCV / scikit-learn in the data pipeline (numpy), and
travel to the loss as a second channel of ``y_true``.

Reference: paper Sec. 5.1, eq. (3); Tofighi et al., "Deep Networks with Shape Priors for Nucleus
Detection", ICIP 2018; the released SP-CNN notebook (ily-R/Deep-Learning-for-Dendritic-Spines-Detection).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

from microrepro.common.serialize import constructor_config


def build_sp_cnn(filters: int = 64, input_size: int | None = None, name: str = "sp_cnn") -> keras.Model:
    """Conv(filters, 5x5) -> 4 x Conv(filters, 3x3), ReLU -> Conv(1, 3x3) linear, "same" padding.

    Args:
        filters: channels of the hidden layers (64 in the released notebook).
        input_size: fixed square input size or None.

    Returns:
        Model ``(B, H, W, 1)`` grey /255 -> ``(B, H, W, 1)`` spine map (target: 6x6 squares of 1).

    Reference: paper Sec. 5.1 ("a 6 layer fully convolutional neural network"); released notebook.
    """
    if filters < 1:
        raise ValueError(f"filters must be >= 1, got {filters}")
    inputs = keras.Input((input_size, input_size, 1), name="image")
    x = layers.Conv2D(filters, 5, padding="same", activation="relu", name="conv1")(inputs)
    for i in range(4):
        x = layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"conv{i + 2}")(x)
    outputs = layers.Conv2D(1, 3, padding="same", activation=None, name="conv6")(x)
    return keras.Model(inputs, outputs, name=name)


def edge_map(image: np.ndarray, bilateral=(11, 150, 150), canny=(15, 30)) -> np.ndarray:
    """x-hat of eq. (3): bilateral filter then Canny with the L2 gradient norm.

    Args:
        image: ``(H, W)`` uint8 grey.
        bilateral: ``(d, sigmaColor, sigmaSpace)`` of ``cv2.bilateralFilter`` (released: 11, 150, 150).
        canny: ``(threshold1, threshold2)`` of ``cv2.Canny`` (released: 15, 30, L2gradient=True).

    Returns:
        ``(H, W)`` float32 in {0, 1}.

    Reference: paper Sec. 5.1 and Fig. 11.
    """
    import cv2

    image = np.asarray(image)
    if image.ndim != 2 or image.dtype != np.uint8:
        raise ValueError(f"edge_map expects a (H, W) uint8 image, got {image.shape} {image.dtype}")
    d, sigma_colour, sigma_space = bilateral
    smooth = cv2.bilateralFilter(image, int(d), float(sigma_colour), float(sigma_space))
    edges = cv2.Canny(smooth, float(canny[0]), float(canny[1]), L2gradient=True)
    return (edges > 0).astype(np.float32)


def heatmap_target(points: np.ndarray, shape: tuple[int, int], square: int = 6) -> np.ndarray:
    """The released notebook's target: a ``square`` x ``square`` block of ones at each centre.

    Args:
        points: ``(N, 2)`` centres ``[x, y]`` in the target's pixels.
        shape: ``(H, W)``.
        square: side of the block; the block covers rows ``round(y) - square//2 ...`` (clipped).

    Returns:
        ``(H, W)`` float32 in {0, 1}.
    """
    target = np.zeros(shape, np.float32)
    half = square // 2
    for x, y in np.asarray(points, np.float64).reshape(-1, 2):
        cx, cy = int(round(x)), int(round(y))
        target[max(cy - half, 0) : max(cy - half + square, 0), max(cx - half, 0) : max(cx - half + square, 0)] = 1.0
    return target


def cut_patches(edges: list[np.ndarray], points: list[np.ndarray], size: int = 19) -> np.ndarray:
    """``size`` x ``size`` windows of the edge maps centred on every spine (zero-padded at borders).

    Returns:
        ``(P, size, size)`` float32.
    """
    half = size // 2
    out = []
    for edge, pts in zip(edges, points, strict=True):
        padded = np.pad(edge, half)
        for x, y in np.asarray(pts, np.float64).reshape(-1, 2):
            cx, cy = int(round(x)), int(round(y))
            if 0 <= cx < edge.shape[1] and 0 <= cy < edge.shape[0]:
                out.append(padded[cy : cy + size, cx : cx + size])
    return np.asarray(out, np.float32).reshape(-1, size, size)


def select_shape_priors(patches: np.ndarray, n: int = 64, method: str = "kmeans", seed: int = 0) -> np.ndarray:
    """Choose ``n`` shape priors S_i from edge patches around training spines.

    The paper's priors were "defined by experts" (Sec. 5.1, Fig. 12, one of them cut from a
    training edge map); with no experts at hand we take the ``n`` k-means centroids of the
    patches (``method="kmeans"``: typical spine outlines, averaged) or ``n`` patches drawn at
    random (``"random"``). Each prior is scaled to unit L2 norm so that R does not favour the
    priors with more edge pixels.

    Args:
        patches: ``(P, s, s)`` edge patches (``cut_patches``), ``P >= n`` for k-means.
        n: number of priors (64 in eq. 3).
        method: "kmeans" or "random".
        seed: k-means / sampling seed.

    Returns:
        ``(n, s, s)`` float32 priors of unit norm (all-zero patches stay zero).
    """
    patches = np.asarray(patches, np.float32)
    if patches.ndim != 3 or len(patches) == 0:
        raise ValueError(f"need (P, s, s) patches with P > 0, got shape {patches.shape}")
    rng = np.random.default_rng(seed)
    if method == "random":
        idx = rng.choice(len(patches), size=n, replace=len(patches) < n)
        priors = patches[idx]
    elif method == "kmeans":
        from sklearn.cluster import KMeans

        flat = patches.reshape(len(patches), -1)
        if len(flat) < n:  # too few spines (tiny fixtures): repeat patches so k-means can run
            flat = flat[rng.choice(len(flat), size=n, replace=True)]
        km = KMeans(n_clusters=n, n_init=1, random_state=seed).fit(flat)
        priors = km.cluster_centers_.reshape(n, *patches.shape[1:]).astype(np.float32)
    else:
        raise ValueError(f"prior selection must be 'kmeans' or 'random', got {method!r}")
    norms = np.sqrt((priors**2).sum(axis=(1, 2), keepdims=True))
    return np.where(norms > 0, priors / np.maximum(norms, 1e-12), 0.0).astype(np.float32)


class SpCnnLoss(keras.losses.Loss):
    """``MSE(y_hat, y) - reg_weight * R`` with ``R = sum_i ||(g_p(y_hat) o x_hat) * S_i||^2`` (eq. 3).

    ``y_true``: ``(B, H, W, 2)``: channel 0 the target map, channel 1 the edge map x-hat.
    ``y_pred``: ``(B, H, W, 1)``.

    ``g_p``: "threshold then max-pool of window p" (Sec. 5.1). Two readings (``gate``):

    * ``"hard"`` — the text's words: the thresholded output is the step ``[y_hat > t]``. A step has
      zero gradient, so R changes the loss *value* but never the weights: training is plain MSE
      with an offset that jumps whenever a pixel crosses ``t`` ("stuck in a singleton loss value"
      is what such a loss curve looks like).
    * ``"soft"`` (default, model ``sp_cnn``) — the output's value kept where it passes the
      threshold (``y_hat * [y_hat > t]``) so R's gradient reaches the network. Eq. (3) subtracts
      R, and with the linear output of the 6-layer FCN R is unbounded above, so MSE − R is
      unbounded below: training must diverge (the output grows without limit on edges).

    Then max-pool with window p and stride 1 (to stay on x-hat's grid). R is averaged over pixels (and summed over
    the priors) so its scale does not depend on the image size; the MSE is the pixel mean.
    With ``reg_weight = 0`` this is the plain MSE of the released notebook ("sp_cnn_mse").

    Reference: paper Sec. 5.1, eq. (3); Tofighi et al. ICIP 2018.
    """

    def __init__(
        self,
        priors: np.ndarray,
        pool_window: int = 5,
        threshold: float = 0.5,
        reg_weight: float = 1.0,
        gate: str = "soft",
        name: str = "sp_cnn_loss",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        priors = np.asarray(priors, np.float32)
        if priors.ndim != 3:
            raise ValueError(f"priors must be (n, s, s), got {priors.shape}")
        self.priors = priors
        self.kernel = np.transpose(priors, (1, 2, 0))[:, :, None, :]  # (s, s, 1, n)
        self.pool_window = int(pool_window)
        self.threshold = float(threshold)
        self.reg_weight = float(reg_weight)
        if gate not in ("soft", "hard"):
            raise ValueError(f"gate must be 'soft' or 'hard', got {gate!r}")
        self.gate = gate

    def get_config(self):
        return constructor_config(self, ("priors", "pool_window", "threshold", "reg_weight", "gate", "name"))

    def terms(self, y_true, y_pred) -> dict:
        """``{"mse": (B,), "r": (B,)}`` per image."""
        y_true = ops.cast(y_true, "float32")
        y_pred = ops.cast(y_pred, "float32")
        target, edges = y_true[..., :1], y_true[..., 1:2]
        mse = ops.mean((y_pred - target) ** 2, axis=(1, 2, 3))
        step = ops.cast(y_pred > self.threshold, "float32")
        gated = ops.stop_gradient(step) if self.gate == "hard" else y_pred * step
        pooled = ops.max_pool(gated, pool_size=self.pool_window, strides=1, padding="same")
        response = ops.conv(pooled * edges, ops.convert_to_tensor(self.kernel), strides=1, padding="same")
        r = ops.mean(ops.sum(response**2, axis=-1), axis=(1, 2))
        return {"mse": mse, "r": r}

    def call(self, y_true, y_pred):
        terms = self.terms(y_true, y_pred)
        if self.reg_weight == 0:
            return terms["mse"]
        return terms["mse"] - self.reg_weight * terms["r"]


def detect_peaks(heatmap: np.ndarray, threshold: float = 0.5, min_distance: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Spine centres = local maxima of the output map above ``threshold``.

    Args:
        heatmap: ``(H, W)`` network output.
        threshold: minimum value of a peak.
        min_distance: peaks closer than this (px, Chebyshev) are merged (skimage ``peak_local_max``).

    Returns:
        ``(points (N, 2) [x, y] px, scores (N,))`` sorted by score.
    """
    from skimage.feature import peak_local_max

    heatmap = np.asarray(heatmap, np.float32)
    if heatmap.ndim != 2:
        raise ValueError(f"heatmap must be (H, W), got {heatmap.shape}")
    if not np.isfinite(heatmap).all():
        heatmap = np.nan_to_num(heatmap, nan=0.0, posinf=0.0, neginf=0.0)
    coords = peak_local_max(heatmap, min_distance=max(1, int(min_distance)), threshold_abs=threshold,
                            exclude_border=False)
    if len(coords) == 0:
        return np.zeros((0, 2), np.float32), np.zeros((0,), np.float32)
    scores = heatmap[coords[:, 0], coords[:, 1]]
    order = np.argsort(-scores, kind="mergesort")
    coords, scores = coords[order], scores[order]
    return coords[:, ::-1].astype(np.float32), scores.astype(np.float32)
