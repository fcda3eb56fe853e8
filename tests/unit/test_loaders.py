"""Loaders on tiny fixtures written in each data set's exact on-disk format (only into tmp_path)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from microrepro.common.errors import DataError
from microrepro.common.imageio import write_image
from microrepro.datasets import (
    amibr,
    amida13,
    dsb2018,
    fnc,
    folder,
    mitos2012,
    mitos_atypia14,
    spines,
    splits,
    stardist_nuclei,
    vgg_cells,
)
from microrepro.datasets.base import Sample


def _rgb(width: int, height: int, value=(40, 40, 40)) -> np.ndarray:
    return np.full((height, width, 3), value, np.uint8)


def _write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# --------------------------------------------------------------------------------------- spines
SPINES_HEADER = "filename,width,height,class,xmin,ymin,xmax,ymax\n"


def _spines_fixture(root: Path, split: str = "train") -> Path:
    sizes = {"img1.jpg": (40, 30), "img2.jpg": (32, 32), "img10.jpg": (50, 40), "img3.jpg": (20, 20)}
    for name, (w, h) in sizes.items():
        write_image(root / split / name, _rgb(w, h)[..., 0])
    _write_text(
        root / f"{split}_labels.csv",
        SPINES_HEADER
        + "img10.jpg,50,40,dendrite,0,0,14,14\n"
        + "img1.jpg,40,30,dendrite,10,20,24,34\n"
        + "img1.jpg,40,30,dendrite,30,-5,44,9\n"
        + "img2.jpg,32,32,dendrite,3,4,17,18\n",
    )
    return root


def test_spines_points_boxes_order_and_pixel_size(tmp_path):
    samples = spines.load(_spines_fixture(tmp_path), "train")
    assert [s.id for s in samples] == ["img1", "img2", "img10"]  # natural order; img3 has no row
    img1 = samples[0]
    np.testing.assert_array_equal(img1.points, [[17, 27], [37, 2]])  # centre = xmin + 7, unclipped
    np.testing.assert_array_equal(img1.boxes, [[10, 20, 24, 30], [30, 0, 40, 9]])  # clipped to 40x30
    np.testing.assert_array_equal(img1.labels, [0, 0])
    np.testing.assert_array_equal(img1.meta["raw_boxes"][1], [30, -5, 44, 9])
    assert img1.pixel_size_um == pytest.approx(1 / 15.36)
    assert img1.image.shape == (30, 40)
    assert [s.count for s in samples] == [2, 1, 1]


def test_spines_unlabelled_images_and_splits(tmp_path):
    root = _spines_fixture(tmp_path)
    with_unlabelled = spines.load(root, include_unlabelled=True)
    assert [s.id for s in with_unlabelled] == ["img1", "img2", "img3", "img10"]
    assert with_unlabelled[2].count == 0 and with_unlabelled[2].meta["unlabelled"] is True
    assert spines.has_split(root, "train") and not spines.has_split(root, "test")
    _spines_fixture(root, "test")
    assert spines.has_split(root, "test")
    assert spines.load(root, "test")[0].meta["split"] == "test"
    with pytest.raises(ValueError, match="split"):
        spines.load(root, "val")


def test_spines_errors_name_file_and_line(tmp_path):
    root = _spines_fixture(tmp_path)
    (root / "train" / "img2.jpg").unlink()
    with pytest.raises(DataError, match="img2.jpg.*not found"):
        spines.load(root)
    csv_path = root / "train_labels.csv"
    csv_path.write_text(SPINES_HEADER + "img1.jpg,40,30,dendrite,10,20,24,34\nimg1.jpg,40,30,dendrite,ten,20,24,34\n")
    with pytest.raises(DataError, match=r"line 3: column 'xmin' is not a number"):
        spines.load(root)
    csv_path.write_text("filename,width,height,class,xmin,ymin,xmax\nimg1.jpg,40,30,dendrite,1,2,3\n")
    with pytest.raises(DataError, match="missing column 'ymax'"):
        spines.load(root)


@pytest.mark.parametrize(
    "row, message",
    [
        ("../../x.jpg,40,30,dendrite,1,2,15,16", r"line 2: column 'filename' = '\.\./\.\./x\.jpg' points outside"),
        ("/etc/x.jpg,40,30,dendrite,1,2,15,16", "line 2: column 'filename' = '/etc/x.jpg' points outside"),
        ("sub/../../x.jpg,40,30,dendrite,1,2,15,16", "points outside"),
        ("img1.jpg,40,30,dendrite,-30,-20,-16,-6", "line 2: box .* centre outside the 40x30 image"),
        ("img1.jpg,40,30,dendrite,50,2,64,16", "line 2: box .* centre outside"),
        ("img1.jpg,0,30,dendrite,1,2,15,16", "line 2: width and height must be positive"),
        ("img1.jpg,400,300,dendrite,1,2,15,16", "line 2: img1.jpg is 40x30 px but the CSV says 400x300"),
    ],
)
def test_spines_rows_that_leave_the_folder_or_the_image_are_errors(tmp_path, row, message):
    root = _spines_fixture(tmp_path)
    (root / "train_labels.csv").write_text(SPINES_HEADER + row + "\n")
    with pytest.raises(DataError, match=f"train_labels.csv, {message}" if "line" in message else message):
        spines.load(root)


def test_spines_boxes_crossing_the_border_are_clipped_not_refused(tmp_path):
    root = _spines_fixture(tmp_path)
    (root / "train_labels.csv").write_text(SPINES_HEADER + "img1.jpg,40,30,dendrite,-7,-7,7,7\n")
    (sample,) = spines.load(root)
    np.testing.assert_array_equal(sample.boxes, [[0, 0, 7, 7]])
    np.testing.assert_array_equal(sample.points, [[0, 0]])


@pytest.mark.parametrize("name", ["a.png", "sub/a.png"])
def test_inside_accepts_relative_names(tmp_path, name):
    from microrepro.datasets._util import inside

    assert inside(tmp_path, name, tmp_path / "l.csv", 2) == tmp_path / name


@pytest.mark.parametrize("name", ["../a.png", "/abs/a.png", "C:\\x.png", "..\\a.png", "~/a.png", "", "a/../../b"])
def test_inside_refuses_names_that_leave_the_folder(tmp_path, name):
    from microrepro.datasets._util import inside

    with pytest.raises(DataError, match=r"l.csv, line 2: column 'filename'"):
        inside(tmp_path, name, tmp_path / "l.csv", 2)


# --------------------------------------------------------------------------------------- splits
def _counted(n_per_count: dict[int, int]) -> list[Sample]:
    samples, k = [], 0
    for count, n in n_per_count.items():
        for _ in range(n):
            samples.append(Sample(id=f"s{k:03d}", points=np.zeros((count, 2)), meta={"slide": f"slide{k % 7}"}))
            k += 1
    return samples


def _histogram(samples):
    hist = {}
    for s in samples:
        hist[s.count] = hist.get(s.count, 0) + 1
    return hist


def test_stratified_split_keeps_histogram_exactly():
    samples = _counted({1: 10, 2: 20, 3: 30, 4: 40})
    train, val = splits.stratified_split(samples, 0.1, seed=0)
    assert _histogram(val) == {1: 1, 2: 2, 3: 3, 4: 4}
    assert _histogram(train) == {1: 9, 2: 18, 3: 27, 4: 36}
    assert not {s.id for s in train} & {s.id for s in val}
    assert len(train) + len(val) == 100


def test_stratified_split_histograms_within_one_per_bin_and_deterministic():
    samples = _counted({1: 7, 2: 13, 3: 5, 5: 11, 8: 3})
    train, val = splits.stratified_split(samples, 0.1, seed=3)
    hist = _histogram(samples)
    for count, n in hist.items():
        assert abs(_histogram(val).get(count, 0) - n * 0.1) < 1
    assert len(val) == round(len(samples) * 0.1) == 4
    assert not {s.id for s in train} & {s.id for s in val}
    again = splits.stratified_split(list(reversed(samples)), 0.1, seed=3)  # input order does not matter
    assert [s.id for s in again[1]] == [s.id for s in val]
    other = {tuple(s.id for s in splits.stratified_split(samples, 0.1, seed=k)[1]) for k in range(5)}
    assert len(other) > 1  # the seed does change the draw


def test_split_argument_errors():
    with pytest.raises(ValueError, match="val_fraction"):
        splits.stratified_split(_counted({1: 3}), 1.5)
    with pytest.raises(ValueError, match="unique"):
        splits.stratified_split([Sample(id="a"), Sample(id="a")])


def test_group_split_never_shares_a_group():
    samples = _counted({1: 30, 2: 40})
    train, val = splits.group_split(samples, 0.2, seed=1)
    assert not {s.meta["slide"] for s in train} & {s.meta["slide"] for s in val}
    assert len(val) >= 14 and len(train) + len(val) == 70
    assert splits.group_split(samples, 0.0)[1] == []


# ------------------------------------------------------------------------------------------ fnc
def _two_cells_mask(width=40, height=30) -> np.ndarray:
    mask = np.zeros((height, width), np.uint8)
    mask[2:6, 3:9] = 255  # rows 2-5, cols 3-8: centroid (5.5, 3.5), box [3, 2, 9, 6]
    mask[10:12, 20:24] = 255  # rows 10-11, cols 20-23: centroid (21.5, 10.5), box [20, 10, 24, 12]
    return mask


def _fnc_pair(image_dir: Path, mask_dir: Path, name: str, mask=None) -> None:
    write_image(image_dir / name, _rgb(40, 30, (200, 200, 0)))
    write_image(mask_dir / name, _two_cells_mask() if mask is None else mask)


def test_fnc_v1_layout_objects(tmp_path):
    _fnc_pair(tmp_path / "all_images/images", tmp_path / "all_masks/masks", "a.png")
    samples = fnc.load(tmp_path)
    assert len(samples) == 1 and samples[0].meta["layout"] == "v1"
    np.testing.assert_allclose(samples[0].points, [[5.5, 3.5], [21.5, 10.5]])
    np.testing.assert_array_equal(samples[0].boxes, [[3, 2, 9, 6], [20, 10, 24, 12]])
    assert samples[0].mask.max() == 2 and samples[0].pixel_size_um is None
    with pytest.raises(DataError, match="no 'test' split"):
        fnc.load(tmp_path, split="test")


def test_fnc_v2_and_sample_layouts(tmp_path):
    v2 = tmp_path / "v2"
    for split in ("trainval", "test"):
        _fnc_pair(v2 / f"yellow/{split}/images", v2 / f"yellow/{split}/ground_truths/masks", f"{split}1.png")
    assert [s.id for s in fnc.load(v2)] == ["trainval1", "test1"]
    assert [s.meta["split"] for s in fnc.load(v2, split="test")] == ["test"]
    sample_root = tmp_path / "fnc_sample"
    _fnc_pair(sample_root / "dataset/yellow/sample/images", sample_root / "dataset/yellow/sample/masks", "m.png")
    assert fnc.detect_layout(sample_root) == "sample"
    assert [s.count for s in fnc.load(sample_root, split="sample")] == [2]
    with pytest.raises(DataError, match="color 'red'"):
        fnc.load(sample_root, color="red")


def test_fnc_size_mismatch_names_both_files(tmp_path):
    _fnc_pair(tmp_path / "all_images/images", tmp_path / "all_masks/masks", "a.png", mask=np.zeros((31, 40), np.uint8))
    with pytest.raises(DataError, match=r"masks/a.png: mask is 40x31 but image .*images/a.png is 40x30"):
        fnc.load(tmp_path)


# ------------------------------------------------------------------------------------ vgg cells
def test_vgg_cells_counts_red_pixels_sorted_by_number(tmp_path):
    cells = tmp_path / "cells"
    for number, dots_at in {10: [(1, 1)], 1: [(5, 7), (6, 7), (20, 3)], 2: []}.items():
        dots = np.zeros((16, 24, 3), np.uint8)
        for x, y in dots_at:
            dots[y, x] = (255, 0, 0)
        dots[0, 0] = (255, 255, 255)  # white is not red
        write_image(cells / f"{number:03d}cell.png", _rgb(24, 16))
        write_image(cells / f"{number:03d}dots.png", dots)
    samples = vgg_cells.load(tmp_path)  # the parent of cells/ works too
    assert [s.id for s in samples] == ["001", "002", "010"]
    np.testing.assert_array_equal(samples[0].points, [[20, 3], [5, 7], [6, 7]])  # touching dots count twice
    assert [s.count for s in samples] == [3, 0, 1]
    train, test = vgg_cells.conventional_split(samples, n_train=2)
    assert [s.id for s in train] == ["001", "002"] and [s.id for s in test] == ["010"]
    (cells / "002dots.png").unlink()
    with pytest.raises(DataError, match="002dots.png"):
        vgg_cells.load(cells)


# ------------------------------------------------------------------------------------ mitos2012
def _mitos2012_fixture(root: Path, first_csv: str) -> Path:
    write_image(root / "A00_v2" / "A00_00.bmp", _rgb(30, 20))
    _write_text(root / "A00_v2" / "A00_00.csv", first_csv)
    write_image(root / "H01_v2" / "H01_00.bmp", _rgb(30, 20))
    _write_text(root / "H01_v2" / "H01_00.csv", "")
    return root


def test_mitos2012_pixel_lists_to_mask_points_boxes(tmp_path):
    root = _mitos2012_fixture(tmp_path, "3,4,4,4,3,5,4,5\n10,2,11,2,12,2\n")
    a, h = mitos2012.load(root)
    np.testing.assert_allclose(a.points, [[3.5, 4.5], [11, 2]])
    np.testing.assert_array_equal(a.boxes, [[3, 4, 5, 6], [10, 2, 13, 3]])
    mask = a.mask
    assert mask.shape == (20, 30) and mask.dtype == np.int32
    assert mask[4, 3] == 1 and mask[5, 4] == 1 and mask[2, 12] == 2 and (mask > 0).sum() == 7
    assert a.meta["areas"] == [4, 3]
    assert (a.pixel_size_um, h.pixel_size_um) == (0.2455, 0.2273)
    assert (a.meta["scanner"], h.meta["scanner"]) == ("aperio", "hamamatsu")
    assert h.count == 0 and h.mask.max() == 0
    swapped = mitos2012.load(root, coord_order="yx")[0]
    np.testing.assert_allclose(swapped.points, [[4.5, 3.5], [2, 11]])


def test_mitos2012_errors(tmp_path):
    root = _mitos2012_fixture(tmp_path, "25,15\n")
    assert mitos2012.load(root)[0].count == 1
    with pytest.raises(DataError, match="outside the 30x20 image.*try the other order"):
        mitos2012.load(root, coord_order="yx")
    (root / "A00_v2" / "A00_00.csv").write_text("1,2\n1,2,3\n")
    with pytest.raises(DataError, match="line 2: 3 values"):
        mitos2012.load(root)
    (root / "A00_v2" / "A00_00.csv").unlink()
    with pytest.raises(DataError, match="A00_00.csv: annotation file"):
        mitos2012.load(root)


# ------------------------------------------------------------------------------- mitos atypia 14
def test_mitos_atypia14_points_labels_confidence(tmp_path):
    (tmp_path / "A03/frames/x40").mkdir(parents=True)
    (tmp_path / "H05/frames/x40").mkdir(parents=True)
    tifffile.imwrite(tmp_path / "A03/frames/x40/A03_00Aa.tiff", _rgb(64, 64))
    tifffile.imwrite(tmp_path / "H05/frames/x40/H05_00Ab.tiff", _rgb(64, 64))
    _write_text(tmp_path / "A03/mitosis/A03_00Aa_mitosis.csv", "10,20,1\n30,40,0.5\n")
    _write_text(tmp_path / "A03/mitosis/A03_00Aa_not_mitosis.csv", "50,60,0.3\n")
    a, h = mitos_atypia14.load(tmp_path)
    np.testing.assert_array_equal(a.points, [[10, 20], [30, 40], [50, 60]])
    np.testing.assert_array_equal(a.labels, [0, 0, 1])
    np.testing.assert_allclose(a.meta["confidence"], [1, 0.5, 0.3])
    assert (a.pixel_size_um, h.pixel_size_um) == (0.2455, 0.2273) and h.count == 0
    assert a.image.shape == (64, 64, 3)
    only = mitos_atypia14.load(tmp_path, include_not_mitosis=False)[0]
    np.testing.assert_array_equal(only.labels, [0, 0])
    confident = mitos_atypia14.load(tmp_path, min_confidence=0.4)[0]
    np.testing.assert_array_equal(confident.points, [[10, 20], [30, 40]])
    _write_text(tmp_path / "A03/mitosis/A03_00Aa_mitosis.csv", "10,20,1\n30\n")
    with pytest.raises(DataError, match="line 2: expected x,y,confidence"):
        mitos_atypia14.load(tmp_path)


# ------------------------------------------------------------------------------------- amida13
def test_amida13_row_col_becomes_xy(tmp_path):
    for case, field in (("01", "01"), ("01", "02"), ("02", "01")):
        (tmp_path / "mitoses_image_data" / case).mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(tmp_path / "mitoses_image_data" / case / f"{field}.tif", _rgb(8, 8))
    _write_text(tmp_path / "mitoses_ground_truth/01/01.csv", "100,50\n10,20\n")
    _write_text(tmp_path / "mitoses_ground_truth/02/01.csv", "")
    samples = amida13.load(tmp_path)
    assert [s.id for s in samples] == ["01_01", "01_02", "02_01"]
    np.testing.assert_array_equal(samples[0].points, [[50, 100], [20, 10]])
    assert [s.count for s in samples] == [2, 0, 0] and samples[0].pixel_size_um == 0.25
    _write_text(tmp_path / "mitoses_ground_truth/01/01.csv", "100,abc\n")
    with pytest.raises(DataError, match="01.csv, line 1: column 'col' is not a number"):
        amida13.load(tmp_path)


def test_amida13_missing_ground_truth_folder(tmp_path):
    (tmp_path / "mitoses_image_data/01").mkdir(parents=True)
    tifffile.imwrite(tmp_path / "mitoses_image_data/01/01.tif", _rgb(8, 8))
    with pytest.raises(DataError, match="no mitoses_ground_truth"):
        amida13.load(tmp_path)
    assert amida13.load(tmp_path, require_ground_truth=False)[0].count == 0


# ------------------------------------------------------------------------------------- dsb2018
def _rle(mask: np.ndarray) -> str:
    flat = np.concatenate([[0], mask.T.reshape(-1).astype(np.int8), [0]])
    changes = np.flatnonzero(np.diff(flat))
    starts, ends = changes[0::2], changes[1::2]
    return " ".join(f"{s + 1} {e - s}" for s, e in zip(starts, ends, strict=True))


def _dsb_fixture(root: Path) -> Path:
    nuclei = {"m1.png": (slice(2, 6), slice(3, 9)), "m2.png": (slice(10, 12), slice(20, 24))}
    lines = ["ImageId,EncodedPixels,Height,Width,Usage"]
    images = {"fluo": _rgb(30, 20, (12, 12, 12)), "histo": _rgb(30, 20, (230, 170, 200))}
    for image_id, image in images.items():
        write_image(root / "stage1_test" / image_id / "images" / f"{image_id}.png", image)
        for name, (rows, cols) in nuclei.items():
            mask = np.zeros((20, 30), np.uint8)
            mask[rows, cols] = 255
            write_image(root / "stage1_test" / image_id / "masks" / name, mask)
            lines.append(f"{image_id},{_rle(mask > 0)},20,30,Public")
    _write_text(root / "stage1_solution.csv", "\n".join(lines) + "\n")
    return root


def test_dsb2018_masks_and_rle_agree(tmp_path):
    root = _dsb_fixture(tmp_path)
    from_masks = dsb2018.load(root, source="masks")
    from_rle = dsb2018.load(root, source="rle")
    assert [s.id for s in from_masks] == ["fluo", "histo"]
    for sample in from_masks + from_rle:
        np.testing.assert_allclose(sample.points, [[5.5, 3.5], [21.5, 10.5]])
        np.testing.assert_array_equal(sample.boxes, [[3, 2, 9, 6], [20, 10, 24, 12]])
    np.testing.assert_array_equal(from_masks[0].mask, from_rle[0].mask)
    assert from_masks[0].mask[3, 5] == 1 and from_masks[0].mask[11, 21] == 2
    assert dsb2018.load(root)[0].meta["source"] == "rle"  # auto prefers the CSV


def test_dsb2018_rle_decode_column_major():
    mask = dsb2018.rle_decode("2 2 4 1", height=3, width=2)
    np.testing.assert_array_equal(mask, [[False, True], [True, False], [True, False]])
    with pytest.raises(ValueError, match="outside"):
        dsb2018.rle_decode("6 2", height=3, width=2)


def test_dsb2018_modality_heuristic(tmp_path):
    root = _dsb_fixture(tmp_path)
    assert [s.id for s in dsb2018.load(root, modality="fluorescence")] == ["fluo"]
    assert [s.id for s in dsb2018.load(root, modality="other")] == ["histo"]
    assert dsb2018.is_fluorescence(_rgb(8, 8, (20, 20, 20)))
    assert not dsb2018.is_fluorescence(_rgb(8, 8, (200, 200, 200)))  # grey brightfield: bright background
    assert not dsb2018.is_fluorescence(_rgb(8, 8, (60, 10, 90)))  # dark but coloured
    assert dsb2018.fluorescence_features(np.full((4, 4), 65535, np.uint16)) == (255.0, 0.0)


def test_dsb2018_needs_masks_or_solution(tmp_path):
    root = _dsb_fixture(tmp_path)
    (root / "stage1_solution.csv").unlink()
    assert dsb2018.load(root)[0].meta["source"] == "masks"
    with pytest.raises(DataError, match="needs stage1_solution.csv"):
        dsb2018.load(root, source="rle")
    with pytest.raises(DataError, match="no image folder for id nope"):
        dsb2018.load(root, ids=["nope"])


# --------------------------------------------------------------------------------------- amibr
AMIBR_HEADER = (
    ",slide,dataset,uid,x,y,expert1_label,expert2_label,expert1_atypical,expert2_atypical,"
    "expert3_atypical,majority_atypical\n"
)


def _amibr_fixture(root: Path) -> Path:
    rows = [  # uid, slide, x, y, atypical
        (1, "s1.tiff", 1000, 1000, False),
        (2, "s1.tiff", 1030, 980, True),
        (3, "s1.tiff", 1100, 1000, False),
        (4, "s2.tiff", 1000, 1000, True),  # same position, other slide: never a neighbour of uid 1
        (5, "s1.tiff", 990, 1010, False),  # crop held back, but still a neighbour
    ]
    text = AMIBR_HEADER
    for k, (uid, slide, x, y, atypical) in enumerate(rows):
        votes = ",".join([str(atypical)] * 4)
        text += f"{k},{slide},MIDOG21,{uid},{x},{y},NMF metaphase,NMF metaphase,{votes}\n"
        if uid != 5:
            folder_name = "atypical" if atypical else "normal"
            write_image(root / "patches" / folder_name / f"MIDOG21_{uid}.png", _rgb(128, 128, (uid * 40, 0, 0)))
    _write_text(root / "AMI-BR.csv", text)
    return root


def test_amibr_points_include_neighbours_of_the_same_slide(tmp_path):
    samples = amibr.load(_amibr_fixture(tmp_path))
    by_id = {s.id: s for s in samples}
    assert sorted(by_id) == ["MIDOG21_1", "MIDOG21_2", "MIDOG21_3", "MIDOG21_4"]
    np.testing.assert_array_equal(by_id["MIDOG21_1"].points, [[64, 64], [94, 44], [54, 74]])
    np.testing.assert_array_equal(by_id["MIDOG21_1"].labels, [0, 1, 0])
    np.testing.assert_array_equal(by_id["MIDOG21_2"].points, [[64, 64], [34, 84], [24, 94]])
    np.testing.assert_array_equal(by_id["MIDOG21_2"].labels, [1, 0, 0])
    np.testing.assert_array_equal(by_id["MIDOG21_3"].points, [[64, 64]])
    np.testing.assert_array_equal(by_id["MIDOG21_4"].labels, [1])
    assert by_id["MIDOG21_2"].meta["slide"] == "s1.tiff" and by_id["MIDOG21_2"].pixel_size_um == 0.25


def test_amibr_wrong_class_folder_is_an_error(tmp_path):
    root = _amibr_fixture(tmp_path)
    (root / "patches/normal/MIDOG21_1.png").rename(root / "patches/atypical/MIDOG21_1.png")
    with pytest.raises(DataError, match="filed under atypical/.*line 2"):
        amibr.load(root)


def test_amibr_uid_cannot_name_a_file_outside_patches(tmp_path):
    root = _amibr_fixture(tmp_path)
    csv_path = root / "AMI-BR.csv"
    csv_path.write_text(csv_path.read_text().replace("MIDOG21,3,", "MIDOG21,../../../x,"))
    with pytest.raises(DataError, match="AMI-BR.csv, line 4: .*uid.*path separator"):
        amibr.load(root)


def test_amibr_slide_split_and_mosaic(tmp_path):
    samples = amibr.load(_amibr_fixture(tmp_path))
    train, val = amibr.slide_split(samples, 0.25, seed=0)
    assert not {s.meta["slide"] for s in train} & {s.meta["slide"] for s in val}
    assert len(train) + len(val) == 4 and val
    tiled = amibr.mosaic(samples, grid=(2, 2), seed=0)
    assert tiled.image.shape == (256, 256, 3) and tiled.meta["seams"] is True
    assert tiled.count == sum(s.count for s in samples) == 8
    by_id = {s.id: s for s in samples}
    offset = 0
    for crop_id, (x0, y0) in zip(tiled.meta["tiles"], tiled.meta["origins"], strict=True):
        crop = by_id[crop_id]
        np.testing.assert_array_equal(tiled.image[y0 : y0 + 128, x0 : x0 + 128], crop.image)
        np.testing.assert_array_equal(tiled.points[offset : offset + crop.count], crop.points + [x0, y0])
        offset += crop.count
    assert len(amibr.mosaics(samples, grid=(1, 2), seed=0)) == 2
    with pytest.raises(ValueError, match="needs 9 samples"):
        amibr.mosaic(samples, grid=(3, 3))


# ------------------------------------------------------------------------------------- stardist
def test_stardist_load_and_tiles(tmp_path):
    image = np.arange(256 * 256, dtype=np.uint16).reshape(256, 256) % 200
    mask = np.zeros((256, 256), np.uint16)
    mask[10:20, 10:20] = 5  # inside tile (0, 0)
    mask[50:54, 124:132] = 9  # crosses x = 128: half in tile (0, 0), half in tile (0, 128)
    tifffile.imwrite(tmp_path / "img2d.tif", image)
    tifffile.imwrite(tmp_path / "mask2d.tif", mask)
    (sample,) = stardist_nuclei.load(tmp_path)
    np.testing.assert_allclose(sample.points, [[14.5, 14.5], [127.5, 51.5]])
    tiles = stardist_nuclei.tiles(sample, size=128)
    assert [t.meta["origin"] for t in tiles] == [(0, 0), (128, 0), (0, 128), (128, 128)]
    assert [t.count for t in tiles] == [2, 1, 0, 0]
    np.testing.assert_allclose(tiles[0].points, [[14.5, 14.5], [125.5, 51.5]])
    np.testing.assert_allclose(tiles[1].points, [[1.5, 51.5]])
    np.testing.assert_array_equal(np.unique(tiles[0].mask), [0, 1, 2])  # relabelled 1..K
    np.testing.assert_array_equal(tiles[1].image, image[:128, 128:])
    with pytest.raises(ValueError, match="smaller than one"):
        stardist_nuclei.tiles(sample, size=512)


# --------------------------------------------------------------------------------------- folder
def test_folder_points_csv_with_meta_yaml(tmp_path):
    for name in ("a.png", "b.png", "c.png"):
        write_image(tmp_path / name, _rgb(10, 10))
    _write_text(tmp_path / "points.csv", "image,x,y,class\na.png,1,2,mitosis\na,3.5,4,other\nb.png,5,6,mitosis\n")
    _write_text(tmp_path / "meta.yaml", "pixel_size_um: 0.5\n")
    a, b, c = folder.load(tmp_path)
    np.testing.assert_array_equal(a.points, [[1, 2], [3.5, 4]])
    np.testing.assert_array_equal(a.labels, [0, 1])  # names numbered in sorted order
    assert a.meta["class_names"] == ["mitosis", "other"]
    assert (b.count, c.count) == (1, 0) and c.pixel_size_um == 0.5
    assert folder.load(tmp_path, pixel_size_um=0.2)[0].pixel_size_um == 0.2


@pytest.mark.parametrize(
    "text, message",
    [
        ("image,x\na.png,1\n", "line 1: missing column 'y'"),
        ("image,x,y\na.png,1,2\na.png,one,2\n", "line 3: column 'x' is not a number"),
        ("image,x,y\nz.png,1,2\n", "line 2: image 'z.png' is not in"),
        ("image,x,y\na.png,1\n", "line 2: 2 values, expected 3"),
        ("image,x,y\na.png,1,2\na.png,-1,2\n", r"line 3: point \(-1, 2\) lies outside a.png \(10x10 px\)"),
        ("image,x,y\na.png,1,11\n", r"line 2: point \(1, 11\) lies outside"),
    ],
)
def test_folder_malformed_csv_names_file_and_line(tmp_path, text, message):
    write_image(tmp_path / "a.png", _rgb(10, 10))
    _write_text(tmp_path / "points.csv", text)
    with pytest.raises(DataError, match=f"points.csv, {message}"):
        folder.load(tmp_path)


def test_folder_masks_binary_and_instance(tmp_path):
    write_image(tmp_path / "a.png", _rgb(40, 30))
    write_image(tmp_path / "b.png", _rgb(40, 30))
    write_image(tmp_path / "masks" / "a.png", _two_cells_mask())
    labels = np.zeros((30, 40), np.uint16)
    labels[0:2, 0:2], labels[2:4, 2:4], labels[20:22, 30:32] = 3, 7, 8  # 3 and 7 touch: labels keep them apart
    tifffile.imwrite(tmp_path / "masks" / "b.tif", labels)
    a, b = folder.load(tmp_path)
    np.testing.assert_array_equal(a.boxes, [[3, 2, 9, 6], [20, 10, 24, 12]])
    np.testing.assert_allclose(b.points, [[0.5, 0.5], [2.5, 2.5], [30.5, 20.5]])
    _write_text(tmp_path / "points.csv", "image,x,y\n")
    with pytest.raises(DataError, match="annotations='masks' or 'points'"):
        folder.load(tmp_path)
    assert [s.count for s in folder.load(tmp_path, annotations="points")] == [0, 0]
    _write_text(tmp_path / "meta.yaml", "pixel_size_um: -1\n")
    with pytest.raises(DataError, match="meta.yaml: pixel_size_um must be a positive number"):
        folder.load(tmp_path, annotations="masks")


# ------------------------------------------------------------------------- wrong layouts, all
LOADERS = {
    "spines": spines.load,
    "fnc": fnc.load,
    "vgg_cells": vgg_cells.load,
    "mitos2012": mitos2012.load,
    "mitos_atypia14": mitos_atypia14.load,
    "amida13": amida13.load,
    "dsb2018": dsb2018.load,
    "amibr": amibr.load,
    "stardist": stardist_nuclei.load,
    "folder": folder.load,
}


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_every_loader_rejects_an_empty_folder_in_one_line(tmp_path, name):
    with pytest.raises(DataError, match="expected") as info:
        LOADERS[name](tmp_path)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", sorted(set(LOADERS) - {"fnc", "folder"}))
def test_every_loader_rejects_the_fnc_layout(tmp_path, name):
    _fnc_pair(tmp_path / "all_images/images", tmp_path / "all_masks/masks", "a.png")
    with pytest.raises(DataError, match="expected"):
        LOADERS[name](tmp_path)
