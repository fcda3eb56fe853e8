"""Your own data with every paper: the generic folder layout through ``reproduce``, ``evaluate``, ``predict``.

Fixtures are small folders built in ``tmp_path``: discs drawn at known positions, with
instance-label masks, a ``points.csv`` or both. The models only need to run (smoke schedule),
not to learn; what is checked is that the folder is recognised, split as documented, trained on,
evaluated with the paper's rule on the ``test`` split, recorded as real data from that folder,
and predicted on; and that a folder of neither layout is refused in one line naming both.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from microrepro.common.cli import main
from microrepro.common.errors import DataError
from microrepro.common.imageio import write_image
from microrepro.datasets import folder

RADIUS = 6


# ------------------------------------------------------------------------------------ fixtures
def _centres(rng: np.random.Generator, size: int, n: int, radius: int) -> list[tuple[int, int]]:
    """``n`` disc centres ``(x, y)`` at least ``3 * radius`` apart, ``2 * radius`` from the border."""
    centres: list[tuple[int, int]] = []
    while len(centres) < n:
        x, y = (int(v) for v in rng.integers(2 * radius, size - 2 * radius, 2))
        if all((x - a) ** 2 + (y - b) ** 2 >= (3 * radius) ** 2 for a, b in centres):
            centres.append((x, y))
    return centres


def _labels(size: int, centres: list[tuple[int, int]], radius: int = RADIUS) -> np.ndarray:
    """``(size, size)`` uint8 instance labels: disc ``i + 1`` around ``centres[i]``."""
    yy, xx = np.mgrid[:size, :size]
    labels = np.zeros((size, size), np.uint8)
    for i, (x, y) in enumerate(centres, 1):
        labels[(xx - x) ** 2 + (yy - y) ** 2 <= radius**2] = i
    return labels


def _he(rng: np.random.Generator, labels: np.ndarray) -> np.ndarray:
    """An H&E-like RGB uint8 field: pink stroma, pale unannotated nuclei, dark purple figures (the discs)."""
    size = labels.shape[0]
    image = np.empty((size, size, 3), np.float64)
    image[:] = (232, 170, 200)
    image[_labels(size, _centres(rng, size, 5, 4), 4) > 0] = (170, 120, 190)
    image += rng.normal(0, 8, image.shape)
    image[labels > 0] = (90, 40, 130)
    return np.clip(image, 0, 255).astype(np.uint8)


def masks_folder(root: Path, size: int = 96, splits: tuple = (("train", 4), ("test", 2))) -> Path:
    """16-bit grey TIFF fluorescence images with instance-label PNG masks, in split folders."""
    rng = np.random.default_rng(0)
    for split, n in splits:
        for i in range(n):
            labels = _labels(size, _centres(rng, size, 3, RADIUS))
            image = rng.normal(900, 80, (size, size)) + 2400 * (labels > 0)
            write_image(root / split / f"field{i}.tif", np.clip(image, 0, 65535).astype(np.uint16))
            write_image(root / split / "masks" / f"field{i}.png", labels)
    return root


def points_folder(root: Path, size: int = 128, splits: tuple = (("train", 4), ("test", 2)),
                  pixel_size_um: float | None = 0.25, masks: bool = False, float_tiff: bool = False) -> Path:
    """H&E-like fields with a ``points.csv`` per split folder: RGB uint8 PNG, or float32 TIFF in [0, 1]
    with ``float_tiff``; with ``masks``, binary (0 / 255) PNG masks too."""
    rng = np.random.default_rng(1)
    for split, n in splits:
        rows = ["image,x,y"]
        for i in range(n):
            centres = _centres(rng, size, 3, RADIUS)
            labels = _labels(size, centres)
            (root / split).mkdir(parents=True, exist_ok=True)
            image = _he(rng, labels)
            name = f"hpf{i}.tif" if float_tiff else f"hpf{i}.png"
            write_image(root / split / name, image.astype(np.float32) / 255 if float_tiff else image)
            if masks:
                write_image(root / split / "masks" / f"hpf{i}.png", (labels > 0).astype(np.uint8) * 255)
            rows += [f"{name},{x},{y}" for x, y in centres]
        (root / split / "points.csv").write_text("\n".join(rows) + "\n")
    if pixel_size_um is not None:
        (root / "meta.yaml").write_text(f"pixel_size_um: {pixel_size_um}\n")
    return root


def _files(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def _cycle(tmp_path: Path, paper: str, root: Path, *extra: str) -> tuple[dict, dict, Path]:
    """reproduce (smoke) -> evaluate -> predict on the test images; returns (metrics, provenance, predictions)."""
    run = tmp_path / f"run_{paper}"
    args = ["reproduce", paper, "--schedule", "smoke", "--data-dir", str(root), "--out", str(run), *extra]
    assert main(args) == 0
    assert main(["evaluate", str(run), "--data-dir", str(root)]) == 0
    out = tmp_path / f"pred_{paper}"
    assert main(["predict", str(run), str(root / "test"), "--out", str(out)]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    provenance = json.loads((run / "provenance.json").read_text())
    with open(out / "counts.csv", newline="") as handle:
        counts = list(csv.DictReader(handle))
    assert len(counts) == len(list((root / "test").glob("*.png")) + list((root / "test").glob("*.tif")))
    return metrics, provenance, out


def _assert_real_test(provenance: dict, root: Path, split: str = "test") -> None:
    info = provenance["splits"][split]
    assert info["kind"] == "real" and str(root) in info["dataset"], info


# ------------------------------------------------------------------------------ the loader
def test_load_splits_folders_and_carve(tmp_path):
    root = points_folder(tmp_path / "pts", splits=(("train", 3), ("val", 1), ("test", 2)), masks=True)
    splits = folder.load_splits(root)
    assert {k: len(v) for k, v in splits.items()} == {"train": 3, "val": 1, "test": 2}
    sample = splits["train"][0]
    assert sample.mask_path is not None and sample.count == 3 and sample.pixel_size_um == 0.25
    assert sample.meta["annotations"] == ["masks", "points"] and sample.meta["split"] == "train"
    assert folder.is_generic(root) and not folder.is_generic(tmp_path)

    flat = tmp_path / "flat"
    for i in range(5):
        write_image(flat / f"a{i}.png", np.zeros((20, 20), np.uint8))
    (flat / "boxes.csv").write_text("image,x1,y1,x2,y2\na0.png,2,2,8,8\n")
    splits = folder.load_splits(flat)
    assert {k: len(v) for k, v in splits.items()} == {"train": 4, "test": 1}
    assert [s.meta["carved"] for s in splits["test"]] == [True] and not splits["train"][0].meta["carved"]
    a0 = next(s for s in splits["train"] + splits["test"] if s.id == "a0")
    np.testing.assert_array_equal(a0.boxes, [[2, 2, 8, 8]])
    np.testing.assert_array_equal(a0.points, [[5, 5]])
    assert "seeded split" in folder.split_note(flat, "test")


@pytest.mark.parametrize("text, message", [
    ("image,x1,y1,x2\na.png,1,2,3\n", "line 1: missing column 'y2'"),
    ("image,x1,y1,x2,y2\na.png,5,2,3,8\n", r"line 2: x2 < x1 or y2 < y1"),
    ("image,x1,y1,x2,y2\na.png,15,15,30,30\n", r"line 2: box \(15, 15, 30, 30\): its centre lies outside a.png"),
])
def test_malformed_boxes_csv_names_file_and_line(tmp_path, text, message):
    write_image(tmp_path / "a.png", np.zeros((20, 20), np.uint8))
    (tmp_path / "boxes.csv").write_text(text)
    with pytest.raises(DataError, match=f"boxes.csv, {message}"):
        folder.load(tmp_path)


def test_require_masks_and_pixel_size_name_what_is_missing(tmp_path):
    root = points_folder(tmp_path / "pts", splits=(("train", 2),), pixel_size_um=None)
    splits = folder.load_splits(root)
    with pytest.raises(DataError, match="masks are needed .*this folder gives points"):
        folder.require_masks(splits, "fcn_segmentation", "trains on masks")
    with pytest.raises(DataError, match=r"meta.yaml or pass --set data.pixel_size_um="):
        folder.require_pixel_size(splits, root, "mitos_rcnn", "matches at 8 µm", "data.pixel_size_um")


# ----------------------------------------------------------------------- refused folders, no writes
def _refused(tmp_path: Path, capsys, paper: str, root: Path, *extra: str) -> str:
    """reproduce on ``root`` must exit 2 with one ``error:`` line and write nothing anywhere under tmp_path."""
    before = _files(tmp_path)
    code = main(["reproduce", paper, "--schedule", "smoke", "--data-dir", str(root), "--out",
                 str(tmp_path / "run"), *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and "\n" not in err, err
    assert _files(tmp_path) == before and not (tmp_path / "run").exists()
    return err


@pytest.mark.parametrize("paper", ["spines", "cell_counting", "fcn_segmentation", "mitos_rcnn", "dwt_mitosis"])
def test_a_folder_of_neither_layout_is_refused_naming_both(tmp_path, capsys, paper):
    root = tmp_path / "data"
    write_image(root / "a.png", np.zeros((32, 32), np.uint8))  # images, but no masks/, points.csv or boxes.csv
    (root / "notes.txt").write_text("not annotations\n")
    err = _refused(tmp_path, capsys, paper, root)
    assert f"neither the {paper} data layout (" in err and "nor the generic layout (" in err
    assert "masks/" in err and "points.csv" in err and "boxes.csv" in err


@pytest.mark.parametrize("paper", ["cell_counting", "fcn_segmentation", "dwt_mitosis"])
def test_points_only_is_refused_where_a_paper_trains_on_masks(tmp_path, capsys, paper):
    root = points_folder(tmp_path / "data", splits=(("train", 2), ("test", 1)))
    err = _refused(tmp_path, capsys, paper, root)
    assert "masks are needed" in err and str(root / "train") in err


@pytest.mark.parametrize("paper, option", [("mitos_rcnn", "data.pixel_size_um"), ("dwt_mitosis", "pixel_size_um")])
def test_no_pixel_size_names_meta_yaml_and_the_option(tmp_path, capsys, paper, option):
    root = points_folder(tmp_path / "data", splits=(("train", 2), ("test", 1)), pixel_size_um=None, masks=True)
    err = _refused(tmp_path, capsys, paper, root)
    assert str(root / "meta.yaml") in err and f"--set {option}=" in err


# -------------------------------------------------------------------------- end to end, per paper
@pytest.fixture(scope="module")
def masks_root(tmp_path_factory) -> Path:
    return masks_folder(tmp_path_factory.mktemp("own") / "masks16")


@pytest.fixture(scope="module")
def points_root(tmp_path_factory) -> Path:
    return points_folder(tmp_path_factory.mktemp("own") / "points")


def test_cell_counting_trains_evaluates_predicts_16bit_tiffs_with_label_masks(tmp_path, masks_root):
    metrics, provenance, out = _cycle(tmp_path, "cell_counting", masks_root, "--set", "train.ablation=false")
    values = metrics["c_resunet"]["test"]  # Sec. 5.1: F1 of centroids matched within 50 px, MAE of counts
    assert 0.0 <= values["f1"] <= 1.0 and values["mae"] >= 0
    _assert_real_test(provenance, masks_root)
    assert (out / "field0_labels.tif").is_file()


def test_fcn_segmentation_trains_evaluates_predicts_16bit_tiffs_with_label_masks(tmp_path, masks_root):
    metrics, provenance, out = _cycle(tmp_path, "fcn_segmentation", masks_root)
    for model in ("fcrn_a_finetuned", "fcrn_a_pretrained"):  # Sec. 7.2: pixel MCC at the validation threshold
        assert -1.0 <= metrics[model]["test"]["mcc"] <= 1.0
    _assert_real_test(provenance, masks_root)
    assert "fcrn_a_vgg" not in metrics  # the VGG benchmark is not run on your own data


def test_spines_trains_evaluates_predicts_a_points_csv(tmp_path, points_root):
    metrics, provenance, _ = _cycle(tmp_path, "spines", points_root, "--set", "faster_rcnn.enabled=false",
                                    "--set", "sp_cnn.enabled=false")
    values = metrics["yolov2"]["test"]  # Sec. 2, eq. 1: IoU >= 0.4 or centres within 6 px, one-to-one
    assert 0.0 <= values["f1"] <= 1.0 and "map50" in values
    _assert_real_test(provenance, points_root)
    assert "data.box_size squares around points.csv points" in provenance["splits"]["test"]["note"]


def test_mitos_rcnn_trains_evaluates_predicts_a_points_csv_at_its_pixel_size(tmp_path, points_root):
    metrics, provenance, _ = _cycle(tmp_path, "mitos_rcnn", points_root, "--set", "models=[mitos_rcnn]")
    values = metrics["mitos_rcnn"]["test"]  # Sec. V-A: box centre within 8 µm of a point, one-to-one
    assert values["tp"] + values["fn"] == 3  # smoke: data.max_test_fields = 1 field of 3 figures
    _assert_real_test(provenance, points_root)


def test_dwt_mitosis_trains_both_phases_on_float_tiffs_with_masks_and_points(tmp_path):
    root = points_folder(tmp_path / "both", masks=True, float_tiff=True)
    metrics, provenance, _ = _cycle(tmp_path, "dwt_mitosis", root, "--set", "faster.enabled=false")
    assert 0.0 <= metrics["dwt_unet_seg"]["own_test"]["f1"] <= 1.0  # phase 1: pixel metrics on the test masks
    for model in ("rcnn_dwt_labels", "rcnn_unet_labels", "rcnn_manual_labels"):  # Sec. 4.2: 8 µm from a point
        assert 0.0 <= metrics[model]["own_test"]["f1"] <= 1.0
    _assert_real_test(provenance, root, "own_test")


def test_a_spines_choice_trial_on_own_data_scores_on_val_never_on_test(tmp_path):
    from microrepro.reproductions.spines import own_data
    from microrepro.reproductions.spines.task import TASK

    root = points_folder(tmp_path / "data", size=64, splits=(("train", 10), ("test", 2)))
    trial = TASK.load_config("paper", "smoke", {"data": {"evaluate_on": "val", "val_fraction": 0.2}})
    splits = own_data.load_splits(root, trial, seed=0, limit=lambda samples, n: samples)
    test_ids = {s.id for s in own_data.load_splits(root, TASK.load_config("paper", "smoke"), 0,
                                                   lambda samples, n: samples)["eval"]}
    assert splits["eval_split"] == "val" and (len(splits["train"]), len(splits["eval"])) == (8, 2)
    assert not {s.id for s in splits["eval"]} & test_ids
