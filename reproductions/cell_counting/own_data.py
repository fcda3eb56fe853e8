"""Your own data with the c-ResUNet: the generic folder layout (``datasets/folder.py``).

``data.load_data`` calls :func:`load_data` when ``--data-dir`` is not a Fluorescent Neuronal Cells
layout. The paper trains on masks (weight maps, Sec. 4.2; instance labels for the metrics), so
every image needs one in ``masks/`` (binary: connected components are the cells; or instance
labels); points or boxes alone are refused. Images go through ``data.rgb_uint8``, as in predict.

Splits: ``train/`` trains, ``val/`` validates (else the paper's 70/30 carve of the training fields,
Sec. 4.1), ``test/`` is the reported split "test" (else 20 % of the training images, seeded,
``folder.load_splits``). Objects are matched at ``postprocess.match_distance`` px (50 px: the
paper's mean cell diameter), so set it for your cells with ``--set postprocess.match_distance=...``.
"""

from __future__ import annotations

from pathlib import Path

from microrepro.common.runs import DataInfo, checksum_files


def load_data(root: Path, seed: int):
    """``(train FieldSet (with ``val`` from val/ when given), {"test": FieldSet})`` of a generic folder.

    Args:
        root: the folder.
        seed: the run's seed (unused: the generic test carve has its own fixed seed).

    Raises:
        DataError: ``root`` is neither an FNC layout nor the generic one (naming both), a folder
            without masks, or a malformed generic folder.
    """
    from microrepro.datasets import fnc, folder
    from microrepro.reproductions.cell_counting.data import FieldSet, fields_from_samples

    if not folder.is_generic(root):
        raise folder.layout_error(root, "cell_counting", fnc._EXPECTED)
    splits = folder.load_splits(root)
    folder.require_masks(splits, "cell_counting", "trains on masks (weight maps, instance labels)")
    name = folder.dataset_name(root)

    def info(split: str):
        samples = splits[split]
        files = [s.image_path for s in samples] + [s.mask_path for s in samples]
        return DataInfo("real", name, len(samples), checksum_files(files), folder.split_note(root, split))

    val = fields_from_samples(splits["val"]) if "val" in splits else None
    train = FieldSet(fields_from_samples(splits["train"]), info("train"), val)
    test = FieldSet(fields_from_samples(splits["test"]), info("test"))
    print(f"[data] own data {root}: {len(train.fields)} training, {len(val) if val else 'carved'} validation, "
          f"{len(test.fields)} test fields ({folder.split_note(root, 'test')})")
    return train, {"test": test}
