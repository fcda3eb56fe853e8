"""Your own data with the spine detectors: the generic folder layout (``datasets/folder.py``).

``data.load_splits`` calls :func:`load_splits` when ``--data-dir`` is not the paper's CSV layout.
Boxes: ``boxes.csv`` as given; from ``points.csv``, the ``data.box_size`` (15 px) square around
each point, the box of the paper's released labels; from ``masks/``, the bounding box of each
object. Every box is clipped to its image, as the paper's loader does. Images go through
``data.grey_uint8`` in ``data.prepare``, as in predict.

Splits: ``train/`` trains; ``test/`` is the reported split ("test"); without it 20 % of the
training images are carved as "test" (``folder.load_splits``, seeded). The operating threshold is
chosen on training images, as with the paper's data, so a ``val/`` folder is not used.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from microrepro.datasets.base import Sample, points_to_boxes


def _boxed(sample: Sample, box_size: float) -> Sample:
    """``sample`` with boxes: its own, or ``box_size`` squares around its points; clipped to the image."""
    from microrepro.datasets._util import image_size

    boxes = sample.boxes if len(sample.boxes) else points_to_boxes(sample.points, box_size)
    width, height = image_size(Path(sample.image_path))
    sample.boxes = np.clip(boxes, 0, [width, height, width, height]).astype(np.float32)
    if len(sample.labels) != len(sample.boxes):
        sample.labels = np.zeros(len(sample.boxes), np.int32)
    return sample


def boxes_from(samples: list[Sample]) -> str:
    """Where the boxes of ``samples`` came from, for the provenance note."""
    given = set(samples[0].meta.get("annotations", [])) if samples else set()
    if "boxes" in given:
        return "boxes.csv as given"
    if "points" in given:
        return "data.box_size squares around points.csv points"
    return "bounding boxes of the masks' objects"


def load_splits(root: Path, cfg, seed: int, limit) -> dict:
    """The train / evaluation samples of a generic folder, in ``data.load_splits``'s dict.

    Args:
        root: the folder.
        cfg: the resolved ``SpinesConfig``.
        seed: the run's seed: the validation carve of a trial (the generic test carve has its own fixed seed).
        limit: ``data._limit`` (``data.max_train_images`` / ``max_eval_images`` caps).

    Raises:
        DataError: ``root`` is neither the paper's layout nor the generic one (naming both), or
            a malformed generic folder.
    """
    from microrepro.datasets import folder
    from microrepro.datasets import spines as spines_data

    if not folder.is_generic(root):
        raise folder.layout_error(root, "spines", spines_data._EXPECTED)
    from microrepro.datasets.splits import stratified_split

    splits = folder.load_splits(root)
    train = [_boxed(s, cfg.data.box_size) for s in splits["train"]]
    evaluation, split = [_boxed(s, cfg.data.box_size) for s in splits["test"]], "test"
    note = f"{folder.split_note(root, 'test')}; boxes: {boxes_from(train)}"
    if cfg.data.evaluate_on == "val":  # a model-selection trial: the val/ folder, else a seeded carve of train
        if splits.get("val"):
            evaluation, note = [_boxed(s, cfg.data.box_size) for s in splits["val"]], "the val/ folder"
        else:
            train, evaluation = stratified_split(train, val_fraction=cfg.data.val_fraction, seed=seed)
            note = f"{cfg.data.val_fraction:.0%} of train, stratified by spines/image, seed {seed}"
        split = "val"
    print(f"[spines] own data {root}: {len(train)} training images, {len(evaluation)} {split} images ({note})")
    train, evaluation = limit(train, cfg.data.max_train_images), limit(evaluation, cfg.data.max_eval_images)
    files = [s.image_path for s in train + evaluation]
    return {"train": train, "eval": evaluation, "eval_split": split, "kind": "real", "files": files, "note": note,
            "dataset": folder.dataset_name(root)}
