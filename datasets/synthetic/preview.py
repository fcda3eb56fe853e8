"""Look at and measure the synthetic data: annotated montages beside real images, and summary
statistics (objects per image, object size, touching fraction, confuser rate) that the tests
hold within the ranges the papers depend on."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from microrepro.datasets.base import Sample
from microrepro.datasets.synthetic.noise import touching_labels


def stats(samples: Sequence[Sample]) -> dict:
    """Summary statistics of a list of samples (synthetic or real).

    Object size is the equivalent diameter ``2 * sqrt(area / pi)`` of each instance of the mask
    where there is one, else ``sqrt(w * h)`` of each box; in µm when ``pixel_size_um`` is set.
    A touching object is one whose mask pixels are 8-adjacent to another instance's.

    Returns:
        dict with ``n_images``, ``objects_per_image_mean/std/min/max``,
        ``zero_object_fraction``, ``object_area_px_mean``, ``object_diameter_px_mean/std``,
        ``object_diameter_um_mean/std`` (NaN without pixel size), ``touching_fraction``
        (NaN without masks), ``confusers_per_image_mean`` and ``confuser_rate`` =
        confusers / (confusers + objects).
    """
    counts, diam_px, diam_um, areas, conf = [], [], [], [], []
    touching = masked_objects = 0
    for sample in samples:
        mask = sample.mask
        if mask is not None:
            area = np.bincount(np.asarray(mask, np.int64).ravel())[1:]
            area = area[area > 0].astype(np.float64)
            counts.append(len(area))
            d = 2.0 * np.sqrt(area / np.pi)
            areas.extend(area.tolist())
            touching += len(touching_labels(mask))
            masked_objects += len(area)
        else:
            counts.append(sample.count)
            b = sample.boxes
            d = np.sqrt(np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None))
        diam_px.extend(d.tolist())
        if sample.pixel_size_um:
            diam_um.extend((d * sample.pixel_size_um).tolist())
        conf.append(len(sample.meta.get("confusers", [])))
    counts_a = np.asarray(counts, np.float64)
    nan = float("nan")

    def mean(values):
        return float(np.mean(values)) if len(values) else nan

    def std(values):
        return float(np.std(values)) if len(values) else nan

    total = counts_a.sum() + float(np.sum(conf))
    return {
        "n_images": len(counts),
        "objects_per_image_mean": mean(counts_a),
        "objects_per_image_std": std(counts_a),
        "objects_per_image_min": int(counts_a.min()) if len(counts_a) else 0,
        "objects_per_image_max": int(counts_a.max()) if len(counts_a) else 0,
        "zero_object_fraction": mean(counts_a == 0),
        "object_area_px_mean": mean(areas),
        "object_diameter_px_mean": mean(diam_px),
        "object_diameter_px_std": std(diam_px),
        "object_diameter_um_mean": mean(diam_um),
        "object_diameter_um_std": std(diam_um),
        "touching_fraction": touching / masked_objects if masked_objects else nan,
        "confusers_per_image_mean": mean(conf),
        "confuser_rate": float(np.sum(conf)) / total if total else nan,
    }


def _draw(ax, image: np.ndarray, sample: Sample | None, title: str) -> None:
    from matplotlib.patches import Rectangle

    if image.ndim == 2:
        ax.imshow(image, cmap="gray", vmin=0, vmax=255 if image.dtype == np.uint8 else None,
                  interpolation="nearest")
    else:
        ax.imshow(image, interpolation="nearest")
    ax.set_title(title, fontsize=7)
    ax.set_xticks([])
    ax.set_yticks([])
    if sample is None:
        return
    scale = max(image.shape[:2]) / 300.0  # annotation line widths that survive downsampling
    mask = sample.mask
    if mask is not None and mask.max() > 0:
        import cv2
        from skimage.segmentation import find_boundaries

        edge = find_boundaries(mask, mode="inner").astype(np.uint8)
        if scale > 1.5:
            edge = cv2.dilate(edge, np.ones((int(scale), int(scale)), np.uint8))
        overlay = np.zeros(mask.shape + (4,), np.float32)
        overlay[edge > 0] = (1.0, 0.0, 1.0, 0.9)
        ax.imshow(overlay, interpolation="nearest")
    lw = 0.6
    for x1, y1, x2, y2 in sample.boxes:
        ax.add_patch(Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False, ec="red", lw=lw))
    if len(sample.points):
        ax.scatter(sample.points[:, 0], sample.points[:, 1], s=8, marker="+", c="cyan", linewidths=lw)
    confusers = sample.meta.get("confusers", [])
    if confusers:
        xy = np.array([[c["x"], c["y"]] for c in confusers], np.float32)
        ax.scatter(xy[:, 0], xy[:, 1], s=10, marker="x", c="orange", linewidths=lw)
    # Boxes may cross the border (as real spine labels do): keep the view on the image.
    ax.set_xlim(-0.5, image.shape[1] - 0.5)
    ax.set_ylim(image.shape[0] - 0.5, -0.5)


def preview(
    name: str,
    out_png: str | Path,
    n: int = 6,
    seed: int = 0,
    real_images: list[np.ndarray] | None = None,
    config=None,
    samples: Sequence[Sample] | None = None,
) -> Path:
    """Write a montage PNG: synthetic images with annotations (top row), real ones below.

    Annotations: mask contours magenta, boxes red, points cyan ``+``, confusers orange ``x``.

    Args:
        name: generator name, a key of ``GENERATORS`` (``simcep``, ``neurons``, ``spines``, ``he``).
        out_png: output file (parent folders are created).
        n: number of synthetic images.
        seed: generator seed.
        real_images: optional real images (numpy ``(H, W)`` or ``(H, W, 3)``) for comparison.
        config: optional generator config (defaults otherwise).
        samples: optional ready samples to show instead of generating ``n`` new ones.

    Returns:
        the written path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from microrepro.datasets.synthetic import GENERATORS

    if samples is None:
        if name not in GENERATORS:
            raise ValueError(f"unknown generator {name!r}; choose one of {sorted(GENERATORS)}")
        samples = GENERATORS[name](n, seed, config)
    samples = list(samples)
    real = list(real_images or [])
    cols = max(len(samples), len(real), 1)
    rows = 2 if real else 1
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 3.0 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for j, sample in enumerate(samples):
        axes[0, j].axis("on")
        title = f"{sample.id}\n{sample.count} objects, {len(sample.meta.get('confusers', []))} confusers"
        _draw(axes[0, j], sample.image, sample, title)
    for j, image in enumerate(real):
        axes[1, j].axis("on")
        _draw(axes[1, j], np.asarray(image), None, f"real {j}")
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=150)
    plt.close(fig)
    return out_png


# --------------------------------------------------------------------------- real counterparts


def _fluorescence_tiles(root: Path, n: int) -> list[np.ndarray]:
    """128x128 tiles of real fluorescence nuclei (StarDist's img2d, then dark DSB images)."""
    from microrepro.common.imageio import read_image

    tiles = []
    img2d = root / "nuclei_stardist" / "img2d.tif"
    if img2d.is_file():
        image = read_image(img2d).astype(np.float64)
        image = (255 * image / max(image.max(), 1)).astype(np.uint8)
        tiles += [image[y : y + 128, x : x + 128] for y, x in ((0, 0), (128, 256), (300, 100))]
    for path in sorted((root / "dsb2018_stage1_test" / "stage1_test").glob("*/images/*.png")):
        if len(tiles) >= n:
            break
        image = read_image(path, channels=1)
        if image.mean() < 60:  # fluorescence (dark), not brightfield/histology
            tiles.append(image[:128, :128])
    return tiles[:n]


def _neuron_fields(root: Path, n: int) -> list[np.ndarray]:
    from microrepro.common.imageio import read_image

    folder = root / "fnc_sample" / "dataset" / "yellow" / "sample" / "images"
    return [read_image(p, channels=3) for p in sorted(folder.glob("*.png"))[:n]]


def _spine_crops(root: Path, n: int) -> list[np.ndarray]:
    from microrepro.common.imageio import read_image

    return [read_image(p, channels=1) for p in sorted((root / "spines" / "train").glob("*.jpg"))[:n]]


def _he_patches(root: Path, n: int) -> list[np.ndarray]:
    from microrepro.common.imageio import read_image

    files = sorted((root / "mitosis_amibr" / "patches" / "normal").glob("*.png"))
    step = max(1, len(files) // max(n - 1, 1))
    images = [read_image(p, channels=3) for p in files[::step][: max(n - 1, 0)]]
    histo = root / "nuclei_stardist" / "histo.jpg"
    if histo.is_file():
        images.append(read_image(histo, channels=3))
    return images[:n]


REAL_IMAGES: dict[str, Callable[[Path, int], list[np.ndarray]]] = {
    "simcep": _fluorescence_tiles,
    "neurons": _neuron_fields,
    "spines": _spine_crops,
    "he": _he_patches,
}


def real_data_root() -> Path | None:
    """$MICROREPRO_DATA, else ``../shared/data`` beside the repository, else None."""
    env = os.environ.get("MICROREPRO_DATA")
    beside_repo = Path(__file__).resolve().parents[2].parent / "shared" / "data"
    candidates = ([Path(env).expanduser()] if env else []) + [beside_repo]
    return next((c for c in candidates if c.is_dir()), None)


def preview_with_real(
    name: str, out_png: str | Path, n: int = 6, seed: int = 0, data_root: str | Path | None = None
) -> Path:
    """:func:`preview` with the matching real images below, when the real data is found.

    Real counterparts: ``simcep`` -> fluorescence nuclei tiles (StarDist img2d, DSB 2018);
    ``neurons`` -> Fluorescent Neuronal Cells fields; ``spines`` -> dendrite crops; ``he`` ->
    AMi-Br mitosis patches and the StarDist H&E field.
    """
    if name not in REAL_IMAGES:
        raise ValueError(f"unknown generator {name!r}; choose one of {sorted(REAL_IMAGES)}")
    root = Path(data_root) if data_root is not None else real_data_root()
    real = REAL_IMAGES[name](root, n) if root is not None and root.is_dir() else []
    return preview(name, out_png, n=n, seed=seed, real_images=real)
