"""Your own data with FCRN-A: the generic folder layout (``datasets/folder.py``).

``splits.real_or_substitute`` calls :func:`load_real` when ``--data-dir`` is not the DSB 2018
layout. The paper fine-tunes and scores pixels against manual masks (Sec. 7.1-7.2), so every image
needs one in ``masks/`` (binary or instance labels: the target is ``mask > 0``); points or boxes
alone are refused. Images go through ``data.prepare_image`` (channel maximum, percentile
normalisation), as in predict. Pre-training stays on the SIMCEP-like synthetic patches (Sec. 7.1).

Splits: ``train/`` fine-tunes, ``val/`` chooses the threshold and the best checkpoint (else the
paper's rule carves ``finetune.val_fraction`` of the training images, by image, with
``finetune.split_seed``), ``test/`` is the reported split "test" (else 20 % of the training
images, seeded, ``folder.load_splits``). The VGG-cells benchmark is not run on your own data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from microrepro.common.errors import DataError


def layout(data_path: Path | None) -> str | None:
    """None (no data: the synthetic stand-in), "dsb2018" (the paper's real images) or "generic".

    Raises:
        DataError: a folder of neither layout, naming both (before anything is trained).
    """
    from microrepro.datasets import dsb2018, folder

    if data_path is None:
        return None
    try:
        dsb2018.list_ids(data_path)
        return "dsb2018"
    except DataError:
        pass
    if folder.is_generic(data_path):
        root = Path(data_path)
        for path in [root / name for name in folder.SPLIT_DIRS if (root / name).is_dir()] or [root]:
            if "masks" not in folder.present_annotations(path):  # before pre-training: what load_real refuses
                raise DataError(f"{path}: fcn_segmentation fine-tunes and scores pixels against masks: masks are "
                                f"needed ({folder.MASKS_DIR}/<same stem> beside the images)")
        return "generic"
    raise folder.layout_error(data_path, "fcn_segmentation", dsb2018._EXPECTED)


def load_real(root: Path, cfg):
    """The generic folder as a ``data.RealSplit`` (fine-tune train / val, evaluation = test).

    Raises:
        DataError: images without masks, or a malformed generic folder.
    """
    from microrepro.datasets import folder
    from microrepro.reproductions.fcn_segmentation import data as fdata

    ft = cfg.finetune
    splits = folder.load_splits(root)
    folder.require_masks(splits, "fcn_segmentation", "fine-tunes and scores pixels against masks")
    name = folder.dataset_name(root)

    def items(samples) -> list:
        return [fdata.Item(s.id, fdata.prepare_image(s.image, cfg.normalize_low, cfg.normalize_high),
                           (np.asarray(s.mask) > 0).astype(np.uint8), name, str(s.image_path)) for s in samples]

    split = fdata.RealSplit(datasets=[name])
    split.train, split.eval = items(splits["train"]), items(splits["test"])
    if "val" in splits:
        split.val = items(splits["val"])
    else:  # the paper's rule, as for its own images (splits._split_items): by image, finetune.split_seed
        by_id = {item.id: item for item in split.train}
        train_ids, val_ids = fdata.split_by_image(list(by_id), ft.val_fraction, ft.split_seed + 1)
        split.train, split.val = [by_id[i] for i in train_ids], [by_id[i] for i in val_ids]
    if ft.max_eval_images > 0:
        split.eval = split.eval[: ft.max_eval_images]
    print(f"[fcn_segmentation] own data {root}: {len(split.train)} fine-tune, {len(split.val)} validation, "
          f"{len(split.eval)} test images ({folder.split_note(root, 'test')})")
    return split
