"""The interface every paper's ``task.py`` implements, so the CLI can drive any of them."""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Any

from microrepro.common import config as config_lib
from microrepro.common.data_sources import DataSource
from microrepro.common.runs import Run


class Task(abc.ABC):
    """One paper's reproduction.

    Subclasses set the class attributes and implement ``reproduce``, ``evaluate`` and ``predict``.
    """

    name: str = ""
    title: str = ""
    dataset: str = ""  # folder name of the default real data set under the data root
    config_cls: type = object
    folder: Path = Path(".")

    @property
    def config_path(self) -> Path:
        return self.folder / "config.yaml"

    @property
    def published_path(self) -> Path:
        return self.folder / "published.yaml"

    def load_config(self, preset: str = "paper", schedule: str = "short", overrides: dict | None = None) -> Any:
        return config_lib.resolve(self.config_cls, self.config_path, preset, schedule, overrides)

    def config_from_run(self, run_dir: Path) -> Any:
        from microrepro.common.runs import load_run

        stored, _, _ = load_run(run_dir)
        return config_lib.from_dict(self.config_cls, stored)

    def fetch(self) -> Path | None:
        """Download the default data set into the pooch cache; None when it has no public URL."""
        from microrepro.datasets import download

        if self.dataset in download.REGISTRY:
            return download.fetch(self.dataset)
        return None

    @abc.abstractmethod
    def reproduce(self, run: Run, data: DataSource) -> None:
        """Train and evaluate every model of the paper's table, recording metrics into ``run``."""

    @abc.abstractmethod
    def evaluate(self, run: Run, data: DataSource) -> None:
        """Re-evaluate the trained models stored in ``run.run_dir`` on ``data``."""

    @abc.abstractmethod
    def predict(self, run_dir: Path, images: list[Path], out_dir: Path, **options) -> list[Path]:
        """Detect/count in ``images`` with a trained run; write per-image CSV + overlay PNG."""
