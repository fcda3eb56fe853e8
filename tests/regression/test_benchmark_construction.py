"""The AMi-Br detection benchmark is built the same way every time (datasets/amibr_benchmark).

A small fixture of crops in the real AMi-Br layout (``AMI-BR.csv`` + ``patches/{normal,atypical}``,
as tests/unit/test_loaders.py writes them) is built into fields twice with one seed: the fields
must be identical, and their sha256 (pixels, points, labels, windows) must equal the value stored
here. A change of the construction changes the fingerprint: update ``FINGERPRINT`` only on purpose,
and say so in the commit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from microrepro.common.imageio import write_image
from microrepro.datasets import amibr_benchmark as bench

HEADER = (",slide,dataset,uid,x,y,expert1_label,expert2_label,expert1_atypical,expert2_atypical,"
          "expert3_atypical,majority_atypical\n")
CONFIG = bench.BenchmarkConfig(field_size=(128, 160), figure_fraction=0.3)
FINGERPRINT = {  # sha256 of the training and the test fields of the fixture, seed 0
    "train": "43637c3f3a3feae6f875727c9c6d60518a9035a0f9e52491dfe4d3b1601acfd1",
    "test": "60a2341a3debb1e59ca963c865b45f8f0f7a68c9d2a328b7245740799461ab0b",
}


def _crop_image(uid: int, figures: list[tuple[float, float]]) -> np.ndarray:
    rng = np.random.default_rng(uid)
    image = rng.integers(150, 256, (128, 128, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:128, :128]
    for fx, fy in figures:  # a dark "figure" at every annotated position inside the crop
        image[(yy - fy) ** 2 + (xx - fx) ** 2 < 100] = (60, 20, 90)
    if uid == 7:
        image[:, 110:] = 0  # black slide padding, never cut into a window
    return image


def write_fixture(root: Path) -> Path:
    """20 crops on 4 slides of two data sets; crop 4's figure lies inside crop 3, crop 19 is held back."""
    rows = []
    for k in range(20):
        dataset, slide = ("MIDOG21" if k < 10 else "TUPAC16"), f"{(3 if k == 4 else k) % 4:03d}.tiff"
        x, y = (1000 + 400 * k, 2000) if k != 4 else (1000 + 400 * 3 + 20, 2030)
        rows.append((k, slide, dataset, x, y, k % 5 == 2))
    text = HEADER
    for k, (uid, slide, dataset, x, y, atypical) in enumerate(rows):
        votes = ",".join([str(atypical)] * 4)
        text += f"{k},{slide},{dataset},{uid},{x},{y},NMF metaphase,NMF metaphase,{votes}\n"
        if uid != 19:
            figures = [(x2 - x + 64, y2 - y + 64) for _, s2, d2, x2, y2, _ in rows
                       if (s2, d2) == (slide, dataset) and abs(x2 - x) < 64 and abs(y2 - y) < 64]
            folder = "atypical" if atypical else "normal"
            write_image(root / "patches" / folder / f"{dataset}_{uid}.png", _crop_image(uid, figures))
    (root / "AMI-BR.csv").write_text(text)
    return root


def test_same_crops_and_seed_give_the_same_fields(tmp_path):
    root = write_fixture(tmp_path / "amibr")
    first = bench.load_benchmark(root, test_fraction=0.25, seed=0, config=CONFIG)
    second = bench.load_benchmark(root, test_fraction=0.25, seed=0, config=CONFIG)
    assert len(first.train) >= 2 and len(first.test) >= 1
    for a, b in zip(first.train + first.test, second.train + second.test, strict=True):
        assert a.id == b.id and a.meta == b.meta
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.points, b.points)
        np.testing.assert_array_equal(a.labels, b.labels)
    got = {"train": bench.fingerprint(first.train), "test": bench.fingerprint(first.test)}
    assert got == FINGERPRINT
    # another seed, other fields
    assert bench.fingerprint(bench.load_benchmark(root, 0.25, seed=1, config=CONFIG).train) != got["train"]


def test_fixture_fields_keep_slides_apart_and_annotate_every_figure(tmp_path):
    root = write_fixture(tmp_path / "amibr")
    built = bench.load_benchmark(root, test_fraction=0.25, seed=0, config=CONFIG)
    slide = {c.id: (c.meta["dataset"], c.meta["slide"]) for c in built.train_crops + built.test_crops}
    train_slides = {slide[src[0]] for f in built.train for src in f.meta["sources"]}
    test_slides = {slide[src[0]] for f in built.test for src in f.meta["sources"]}
    assert train_slides and test_slides and not train_slides & test_slides
    for field in built.train + built.test:
        assert len(field.points) == sum(src[3] for src in field.meta["sources"])
        assert set(field.labels.tolist()) <= {0, 1}
        dark = np.all(field.image == (60, 20, 90), axis=-1)
        for x, y in np.round(field.points).astype(int):
            assert dark[y, x]  # every annotated point sits on its figure
        assert not np.any(np.all(field.image == 0, axis=-1))  # no black padding was cut
