"""The interface every paper's ``task.py`` implements, so the CLI can drive any of them."""

from __future__ import annotations

import abc
import sys
from pathlib import Path
from typing import Any

from microrepro.common import config as config_lib
from microrepro.common import thresholds
from microrepro.common.data_sources import DataSource
from microrepro.common.errors import UserError
from microrepro.common.predict import Predictor, check_threshold, predict_images
from microrepro.common.runs import Run


class Task(abc.ABC):
    """One paper's reproduction.

    Subclasses set the class attributes and implement ``reproduce``, ``evaluate`` and
    ``load_predictor``; ``predict`` is shared (``common.predict``): every paper writes the same
    files with the same columns. ``folder`` (where ``config.yaml`` and ``published.yaml`` are) is
    the folder of the module that defines the subclass unless the subclass sets it.
    """

    name: str = ""
    title: str = ""
    dataset: str = ""  # folder name of the default real data set under the data root
    config_cls: type = object
    folder: Path = Path(".")  # see the class docstring
    models: tuple[str, ...] = ()  # the models ``predict --model`` accepts
    default_model: str = ""  # the paper's main model

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        module_file = getattr(sys.modules.get(cls.__module__), "__file__", None)
        if cls.folder is Task.folder and module_file:  # neither it nor a base paper class set one
            cls.folder = Path(module_file).resolve().parent

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
        """The default data set's folder in the download cache, downloaded on first use.

        Data sets the paper reads beside it (``download.REGISTRY[dataset].companions``, e.g.
        nuclei_stardist and vgg_cells beside dsb2018_stage1_test) are fetched too; one of those that
        cannot be downloaded is announced and left out, as when it is missing from a data folder.

        Returns:
            The folder, or None when the data set has no public source (the synthetic generator is used).

        Raises:
            DataError: the data set has a public source but could not be downloaded (offline, checksum).
        """
        from microrepro.common.errors import DataError
        from microrepro.datasets import download

        remote = download.REGISTRY.get(self.dataset)
        if remote is None or not remote.automatic:
            return None
        path = download.fetch(self.dataset)
        for companion in remote.companions:
            try:
                download.fetch(companion)
            except DataError as err:
                print(f"[data] {companion} (read beside {self.dataset}) not downloaded, left out: {err}")
        return path

    @abc.abstractmethod
    def reproduce(self, run: Run, data: DataSource) -> None:
        """Train and evaluate every model of the paper's table, recording metrics into ``run``."""

    @abc.abstractmethod
    def evaluate(self, run: Run, data: DataSource) -> None:
        """Re-evaluate the trained models stored in ``run.run_dir`` on ``data``."""

    def load_predictor(self, run_dir: Path, model: str) -> Predictor:
        """``model`` of the trained run ``run_dir``, ready for ``common.predict.predict_images``.

        The returned Predictor carries the run's stored operating threshold
        (``common.thresholds``); ``predict`` replaces it when the user gives one.
        """
        raise NotImplementedError

    def check_model(self, model: str | None) -> str:
        """``model`` (default: the paper's main model), or a UserError listing the choices."""
        model = model or self.default_model
        if model not in self.models:
            raise UserError(f"unknown {self.name} model {model!r}; choose one of {', '.join(self.models)}")
        return model

    def predict(self, run_dir: Path, images: list[Path], out_dir: Path, *, model: str | None = None,
                threshold: float | None = None, plane: int | None = None, resume: bool = False) -> list[Path]:
        """Detect / count objects in ``images`` with a trained run; see ``common.predict`` for the files.

        Args:
            run_dir: a finished run folder of this paper.
            images: image files.
            out_dir: output folder (created).
            model: one of ``self.models`` (default ``self.default_model``).
            threshold: operating threshold for this call (default: the one stored with the run).
            plane: plane of multi-plane TIFFs.
            resume: keep the outputs of images already done in ``out_dir``.

        Returns:
            The written paths, ``counts.csv`` last.
        """
        model = self.check_model(model)
        with thresholds.override(threshold):  # a run without a stored threshold still predicts with the user's
            predictor = self.load_predictor(Path(run_dir), model)
        if threshold is not None:
            predictor.threshold = check_threshold(threshold, predictor.score_range)
        return predict_images(predictor, images, Path(out_dir), plane=plane, resume=resume)


def run_in_runtime(run: Run, method, data: DataSource, key: str = "distribution") -> None:
    """``method(run, data)`` (a task's ``reproduce`` or ``evaluate``) in the scope of ``run.config.runtime``.

    The CLI calls every paper's ``reproduce`` and ``evaluate`` through this: the strategy and precision of
    the config's ``runtime`` section (``common.training.runtime_scope``) hold for every model the paper
    builds, and what they were (strategy, replicas, precision, backend) goes to the run's provenance as
    ``key``: ``distribution`` for reproduce, ``evaluate_distribution`` for evaluate (``distribution`` stays
    the one the models were trained under). A config without a runtime section runs on one device in float32.
    """
    from microrepro.common.training import runtime_scope

    with runtime_scope(getattr(run.config, "runtime", None)) as runtime:
        run.extra[key] = runtime
        method(run, data)
