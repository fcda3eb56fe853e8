"""The papers this suite reproduces. A paper's module must define ``TASK`` (a common.task.Task).

The five papers of the suite live in ``reproductions/<name>/`` and are listed in :data:`PAPERS`;
their task module is ``microrepro.reproductions.<name>.task``. A paper kept elsewhere (a plug-in,
or the fixture paper of the tests) is added at run time with :func:`register`, which names the
module whose ``TASK`` is the paper; from then on ``microrepro reproduce|evaluate|predict|results``
drive it like the others::

    from microrepro.common import registry

    registry.register("my_paper", "What it detects: model, data", "my_package.my_paper.task")
"""

from __future__ import annotations

import contextlib
import importlib
import re
from collections.abc import Iterator

from microrepro.common.errors import UserError

PAPERS = {
    "spines": "Dendritic spine detection: Faster R-CNN (Inception-V2), tiny-YOLOv2, SP-CNN",
    "cell_counting": "Fluorescent neuron counting: c-ResUNet with 5x5 bottleneck, weight maps, watershed",
    "mitos_rcnn": "Mitosis detection: Faster R-CNN on VGG-16 with a two-stage cascade RPN",
    "fcn_segmentation": "FCN (FCRN-A) cell segmentation: SIMCEP-like pre-training, fine-tuning, MCC",
    "dwt_mitosis": "Two-phase mitosis detection: Haar-DWT U-Net -> boxes -> R-CNN",
}
BUILT_IN = tuple(PAPERS)  # the papers of reproductions/; register() never replaces them

# Papers registered with register(): name -> import path of the module that defines TASK.
_MODULES: dict[str, str] = {}
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def paper_list() -> str:
    return "\n".join(f"  {name:<18} {text}" for name, text in PAPERS.items())


def register(name: str, description: str, module: str) -> None:
    """Add a paper whose ``TASK`` is defined in ``module`` (an import path) to :data:`PAPERS`.

    Registering the same name with the same module again is allowed (it only updates the
    description), so a plug-in may register itself each time it is imported.

    Args:
        name: the paper's name on the command line and in ``runs/`` and ``results/``; lower case
            letters, digits and ``_``. It must equal ``TASK.name``.
        description: one line for ``microrepro list`` and the CLI help.
        module: import path of the module defining ``TASK``, e.g. ``"my_package.task"``; it is
            imported by :func:`get_task`, not here.

    Raises:
        ValueError: a bad name, an empty module path, one of the built-in papers, or a name
            already registered with another module.
    """
    if not _NAME.match(name or ""):
        raise ValueError(f"paper name {name!r}: use lower case letters, digits and '_', starting with a letter")
    if not module or not all(part.isidentifier() for part in module.split(".")):
        raise ValueError(f"paper {name!r}: module must be an import path such as 'package.task', got {module!r}")
    if name in BUILT_IN:
        raise ValueError(f"paper {name!r} is one of the suite's own papers (reproductions/{name}); choose another name")
    if name in _MODULES and _MODULES[name] != module:
        raise ValueError(f"paper {name!r} is already registered with module {_MODULES[name]!r}; unregister it first")
    _MODULES[name] = module
    PAPERS[name] = description


def unregister(name: str) -> None:
    """Remove a paper added with :func:`register` (a name never registered is ignored).

    Raises:
        ValueError: ``name`` is one of the built-in papers.
    """
    if name in BUILT_IN:
        raise ValueError(f"paper {name!r} is one of the suite's own papers and cannot be unregistered")
    if _MODULES.pop(name, None) is not None:
        PAPERS.pop(name, None)


@contextlib.contextmanager
def registered(name: str, description: str, module: str) -> Iterator[None]:
    """:func:`register` for the duration of a ``with`` block (tests), :func:`unregister` after."""
    register(name, description, module)
    try:
        yield
    finally:
        unregister(name)


def task_module(name: str) -> str:
    """Import path of the module defining ``name``'s TASK (the paper need not be built)."""
    return _MODULES.get(name, f"microrepro.reproductions.{name}.task")


def is_registered(name: str) -> bool:
    """Whether ``name`` was added with :func:`register` (False for the suite's own papers)."""
    return name in _MODULES


def get_task(name: str):
    """Import ``name``'s task module (``reproductions/<name>/task.py`` or the registered one) and
    return its TASK, with a clear error otherwise."""
    if name not in PAPERS:
        raise UserError(f"unknown paper '{name}'. Papers:\n{paper_list()}")
    module_name = task_module(name)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if name in _MODULES and err.name and (module_name + ".").startswith(err.name + "."):
            raise UserError(f"paper '{name}' is registered with module {module_name}, which is not found "
                            f"(no module named {err.name!r}; is its folder on sys.path?)") from None
        if err.name and err.name.startswith(f"microrepro.reproductions.{name}"):
            raise UserError(f"paper '{name}' is registered but its reproduction is not built yet") from None
        raise
    task = getattr(module, "TASK", None)
    if task is None:
        raise UserError(f"paper '{name}': module {module_name} defines no TASK")
    if name in _MODULES and task.name != name:
        raise UserError(f"paper '{name}': {module_name}.TASK is named {task.name!r}; register it under that name")
    return task
