"""Your own data with the two phases: the generic folder layout (``datasets/folder.py``).

``task.load_domains`` calls :func:`load_domains` when ``--data-dir`` is given: the AMi-Br layout is
left to ``data.amibr_sets`` as before; a generic folder becomes the ``own`` domain here (it
replaces the synthetic one: splits ``own_test``); anything else is an error naming both layouts.

Phase 1 trains on masks (Sec. 3.1: MITOS 2012 pixel masks), so every image needs one in ``masks/``
(binary or instance labels); phase 2 takes points as its weak labels: ``points.csv`` when given,
else the mask centroids (or the centres of ``boxes.csv`` boxes). Both phases train on the
``train/`` images (phase 1 on their masks, phase 2 on their points), the masks also giving the
"manual" boxes of Table 2. Detections match points within ``eval.match_um`` (8 µm, Sec. 4.2) and
proposals are sized in µm, so the pixel size is needed: ``pixel_size_um`` in ``meta.yaml`` or
``--set pixel_size_um=...`` (which wins). Images go through ``data.to_rgb8``, as in predict.

Splits: ``val/`` validates both phases (checkpoint, score threshold); without it a seeded
``amibr.val_fraction`` of the training images does (``amibr.seed``, as for AMi-Br); ``test/`` is the
reported split (else 20 % of the training images, seeded, ``folder.load_splits``). The
``amibr.max_*_mosaics`` caps apply. Phase 1 stacks its images, so they are zero-padded at the
bottom / right to the largest size of their split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from microrepro.common.errors import DataError
from microrepro.common.runs import DataInfo, checksum_files


def _pad(images: list[np.ndarray]) -> list[np.ndarray]:
    """``images`` zero-padded at the bottom / right to their largest height and width."""
    height, width = max(i.shape[0] for i in images), max(i.shape[1] for i in images)
    return [np.pad(i, [(0, height - i.shape[0]), (0, width - i.shape[1])] + [(0, 0)] * (i.ndim - 2)) for i in images]


def load_domains(root: Path, cfg):
    """``(phase-1 sets, {"own": {det_train, det_val, test}})`` of a generic folder; None for AMi-Br.

    Raises:
        DataError: ``root`` is neither the AMi-Br nor the generic layout (naming both), images
            without masks, no pixel size, or a malformed generic folder.
    """
    from microrepro.datasets import amibr, folder
    from microrepro.reproductions.dwt_mitosis.data import ImageSet, to_rgb8

    root = Path(root)
    if (root / "patches").is_dir() and (root / amibr.CSV_NAME).is_file():
        return None
    if not folder.is_generic(root):
        raise folder.layout_error(root, "dwt_mitosis", amibr._EXPECTED)
    splits = folder.load_splits(root, cfg.pixel_size_um)
    folder.require_masks(splits, "dwt_mitosis", "trains phase 1 (the segmentation nets) on masks")
    folder.require_pixel_size(splits, root, "dwt_mitosis", f"matches detections within {cfg.eval.match_um:g} µm "
                              "and sizes proposals in µm", "pixel_size_um")
    a = cfg.amibr
    if "val" not in splits:
        if len(splits["train"]) < 2:
            raise DataError(f"{root}: {len(splits['train'])} training image; dwt_mitosis carves its validation "
                            "images from two or more (or give a val/ folder)")
        splits["train"], splits["val"] = folder.carve(splits["train"], a.val_fraction, a.seed)
    caps = {"train": a.max_train_mosaics, "val": a.max_val_mosaics, "test": a.max_test_mosaics}
    name = folder.dataset_name(root)

    def image_set(split: str, set_name: str) -> ImageSet:
        samples = splits[split][: caps[split]] if caps[split] else splits[split]
        files = [s.image_path for s in samples] + [s.mask_path for s in samples]
        info = DataInfo("real", name, len(samples), checksum_files(files), folder.split_note(root, split))
        return ImageSet(set_name, [to_rgb8(s.image) for s in samples], [np.asarray(s.points, np.float32)
                        for s in samples], [float(s.pixel_size_um) for s in samples], [s.id for s in samples], info,
                        [np.asarray(s.mask, np.int32) for s in samples], [dict(s.meta) for s in samples])

    sets = {"det_train": image_set("train", "det_train"), "det_val": image_set("val", "det_val"),
            "test": image_set("test", "test")}
    phase1 = {"test": sets["test"]}
    for key, source in (("seg_train", "det_train"), ("seg_val", "det_val")):
        s = sets[source]
        phase1[key] = ImageSet(key, _pad(s.images), s.points, s.pixel_sizes, s.ids, s.info, _pad(s.masks), s.meta)
    print(f"[dwt_mitosis] own data {root}: {len(sets['det_train'])} train / {len(sets['det_val'])} val / "
          f"{len(sets['test'])} test images ({folder.split_note(root, 'test')}); phase 1 on their masks, "
          "phase 2 on their points")
    return phase1, {"own": sets}
