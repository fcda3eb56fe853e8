"""The papers this suite reproduces. A paper's module must define ``TASK`` (a common.task.Task)."""

from __future__ import annotations

import importlib

from microrepro.common.errors import UserError

PAPERS = {
    "spines": "Dendritic spine detection: Faster R-CNN (Inception-V2), tiny-YOLOv2, SP-CNN",
    "cell_counting": "Fluorescent neuron counting: c-ResUNet with 5x5 bottleneck, weight maps, watershed",
    "mitos_rcnn": "Mitosis detection: Faster R-CNN on VGG-16 with a two-stage cascade RPN",
    "fcn_segmentation": "FCN (FCRN-A) cell segmentation: SIMCEP-like pre-training, fine-tuning, MCC",
    "dwt_mitosis": "Two-phase mitosis detection: Haar-DWT U-Net -> boxes -> R-CNN",
}


def paper_list() -> str:
    return "\n".join(f"  {name:<18} {text}" for name, text in PAPERS.items())


def get_task(name: str):
    """Import ``reproductions/<name>/task.py`` and return its TASK, with a clear error otherwise."""
    if name not in PAPERS:
        raise UserError(f"unknown paper '{name}'. Papers:\n{paper_list()}")
    try:
        module = importlib.import_module(f"microrepro.reproductions.{name}.task")
    except ModuleNotFoundError as err:
        if err.name and err.name.startswith(f"microrepro.reproductions.{name}"):
            raise UserError(f"paper '{name}' is registered but its reproduction is not built yet") from None
        raise
    return module.TASK
