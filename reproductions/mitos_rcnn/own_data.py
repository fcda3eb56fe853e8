"""Your own data with the MITOS-RCNN detectors: the generic folder layout (``datasets/folder.py``).

:func:`load_fields` is the data entry point of ``task.py``: the AMi-Br layout (or no data) goes to
``data.load_fields`` as before; a generic folder becomes the run's fields here; anything else is
an error naming both layouts.

Every annotated object is a mitotic figure (a ``class`` column is not used): its point is the
``points.csv`` point, else the centre of its ``boxes.csv`` box, else its mask centroid. Training
boxes are the paper's MITOS-BOXES squares of ``data.box_um`` (10 µm) around each point
(``data.make_subsections``), so the pixel size is needed, as it is for the 8 µm matching rule
(``eval.match_um``, Sec. V-A): ``pixel_size_um`` in ``meta.yaml`` or ``--set data.pixel_size_um=...``
(which wins). Images go through ``detect.as_rgb_uint8``, as in predict.

Splits: ``train/`` trains; the threshold is chosen on ``val/`` (else on the last ``data.tune_fields``
training fields, as with AMi-Br); ``test/`` is the reported split "test" (else 20 % of the training
images, seeded, ``folder.load_splits``). ``data.max_train_fields`` / ``max_test_fields`` cap them.
"""

from __future__ import annotations

from pathlib import Path

from microrepro.common.runs import DataInfo, checksum_files
from microrepro.datasets.base import Sample


def load_fields(cfg, data, seed: int):
    """The run's ``data.Fields``: AMi-Br or synthetic (``data.load_fields``), or a generic folder.

    Raises:
        DataError: a ``--data-dir`` of neither layout (naming both), no pixel size for a generic
            folder, or a malformed generic folder.
    """
    from microrepro.datasets import amibr, folder
    from microrepro.reproductions.mitos_rcnn import data as data_lib

    root = None if data.path is None else Path(data.path)
    if root is None or ((root / "patches").is_dir() and (root / amibr.CSV_NAME).is_file()):
        return data_lib.load_fields(cfg, data, seed)
    if not folder.is_generic(root):
        raise folder.layout_error(root, "mitos_rcnn", amibr._EXPECTED)
    return own_fields(cfg, root)


def own_fields(cfg, root: Path):
    """``data.Fields`` of a generic folder (see the module docstring)."""
    from microrepro.datasets import folder
    from microrepro.reproductions.mitos_rcnn.data import Fields
    from microrepro.reproductions.mitos_rcnn.detect import as_rgb_uint8

    d = cfg.data
    splits = folder.load_splits(root, d.pixel_size_um)
    folder.require_pixel_size(splits, root, "mitos_rcnn", f"matches detections within {cfg.eval.match_um:g} µm "
                              f"and boxes figures in {d.box_um:g} µm squares", "data.pixel_size_um")

    def fields(split: str, cap: int = 0) -> list[Sample]:
        samples = splits[split][:cap] if cap else splits[split]
        return [Sample(id=s.id, image_path=s.image_path, image_array=as_rgb_uint8(s.image), points=s.points,
                       boxes=s.boxes if len(s.boxes) == len(s.points) else (), pixel_size_um=s.pixel_size_um,
                       meta={"split": split}) for s in samples]

    name = folder.dataset_name(root)
    train, test = fields("train", d.max_train_fields), fields("test", d.max_test_fields)
    tune = fields("val") if "val" in splits else (train[-d.tune_fields:] if d.tune_fields else train)
    info = DataInfo("real", name, len(test), checksum_files([s.image_path for s in test]),
                    f"{folder.split_note(root, 'test')}; mitoses only, {cfg.eval.match_um:g} µm rule")
    print(f"[mitos_rcnn] own data {root}: {len(train)} training fields, threshold on {len(tune)} "
          f"{'val/' if 'val' in splits else 'training'} fields, {len(test)} test fields "
          f"({folder.split_note(root, 'test')}; {splits['train'][0].pixel_size_um:g} µm/px)")
    return Fields(train, tune, {"test": (test, info)}, "real", name, [], {"test": (train, test, info)})
