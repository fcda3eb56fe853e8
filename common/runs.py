"""Run folders and provenance.

A run folder holds everything needed to trust (or redo) a number::

    runs/<paper>/<name>/
        config.json        resolved config (after preset, schedule and --set)
        provenance.json    commit, config hash, data (real/synthetic + checksum), schedule actually
                           run, backend, device, versions, date
        metrics.json       {model: {split: {metric: value}}}
        train/...          checkpoints, CSV and TensorBoard logs (common/training.py)

Nothing is written over silently: a non-empty folder is refused unless ``resume=True``.
Each finished run is also summarised into ``results/runs/<paper>/<name>.json`` (small, tracked in
git) from which ``microrepro results`` re-renders the tables.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from microrepro.common import config as config_lib
from microrepro.common.errors import UserError

REPO_ROOT = Path(__file__).resolve().parent.parent


def results_root() -> Path:
    """Where generated tables live: $MICROREPRO_RESULTS (tests point it at tmp_path) or results/."""
    return Path(os.environ.get("MICROREPRO_RESULTS", REPO_ROOT / "results"))


def runs_root() -> Path:
    return Path(os.environ.get("MICROREPRO_RUNS", REPO_ROOT / "runs"))


CODE_PATHS = ("common", "datasets", "reproductions", "microrepro", "setup.cfg", "Makefile")


def git_commit(root: Path = REPO_ROOT) -> str:
    """The current commit, suffixed ``-dirty`` when the code differs from it.

    Code means the tracked and untracked (not ignored) files of the package folders and setup.cfg:
    an untracked new module changes what ran as surely as an edited one.
    """
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short=10", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=normal", "--", *CODE_PATHS],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def device_name() -> str:
    """A human name of the device the active Keras backend computes on."""
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        dev = jax.devices()[0]
        if dev.platform != "cpu":
            return f"{dev.device_kind} ({dev.platform})"
    elif backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            details = tf.config.experimental.get_device_details(gpus[0])
            return f"{details.get('device_name', 'GPU')} x{len(gpus)}"
    return cpu_name()


def cpu_name() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU {model}, {os.cpu_count()} cores"


# Packages whose version can move a number: recorded in every run's provenance.
VERSIONED = ("tensorflow", "keras", "keras-hub", "jax", "jaxlib", "numpy", "scipy", "scikit-image",
             "opencv-contrib-python-headless", "PyWavelets")


def versions() -> dict:
    """Python and the installed versions of the packages in VERSIONED (absent ones left out)."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def checksum_files(paths: list[Path], limit: int = 5000) -> str:
    """sha256 over (relative name, size, first MiB) of up to ``limit`` files: cheap and stable."""
    digest = hashlib.sha256()
    paths = sorted(Path(p) for p in paths)[:limit]
    for path in paths:
        digest.update(path.name.encode())
        try:
            digest.update(str(path.stat().st_size).encode())
            with open(path, "rb") as fh:
                digest.update(fh.read(1 << 20))
        except OSError:
            digest.update(b"?")
    return digest.hexdigest()[:16]


@dataclass
class DataInfo:
    """Where one split's data came from. ``kind`` is "real" or "synthetic" and appears in tables."""

    kind: str
    dataset: str
    n_images: int
    checksum: str = ""
    note: str = ""

    def label(self) -> str:
        text = f"{self.kind}: {self.dataset}, {self.n_images} img"
        return text + (f" ({self.note})" if self.note else "")


@dataclass
class Run:
    """One reproduction run; see the module docstring for the folder layout."""

    paper: str
    run_dir: Path
    config: Any
    preset: str
    schedule: str
    seed: int
    metrics: dict = field(default_factory=dict)
    splits: dict = field(default_factory=dict)
    schedule_run: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    commit: str = ""  # the code as the run started (what was imported), not as it ended

    @classmethod
    def create(
        cls,
        paper: str,
        config: Any,
        preset: str,
        schedule: str,
        seed: int,
        out: Path | None = None,
        resume: bool = False,
        runs_root: Path | None = None,
    ) -> "Run":
        name = getattr(config, "name", paper)
        if out is None:
            root = Path(runs_root) if runs_root else globals()["runs_root"]()
            out = root / paper / f"{name}_{preset}_{schedule}_s{seed}"
        out = Path(out)
        if out.exists() and any(out.iterdir()) and not resume:
            raise UserError(
                f"{out} already holds a run; pass --resume to continue it or --out to write elsewhere "
                "(nothing is overwritten silently)"
            )
        if resume and (out / "config.json").is_file():
            stored = json.loads((out / "config.json").read_text())
            if stored != json.loads(json.dumps(config_lib.to_dict(config), default=str)):
                raise UserError(f"{out}: --resume with a different config than the stored one; use --out")
        out.mkdir(parents=True, exist_ok=True)
        run = cls(paper=paper, run_dir=out, config=config, preset=preset, schedule=schedule, seed=seed,
                  commit=git_commit())
        if resume and (out / "provenance.json").is_file():
            earlier = json.loads((out / "provenance.json").read_text()).get("commit")
            if earlier and earlier != run.commit:
                run.extra["resumed_from_commit"] = earlier
        (out / "config.json").write_text(json.dumps(config_lib.to_dict(config), indent=2, default=str))
        if (out / "metrics.json").is_file():
            run.metrics = json.loads((out / "metrics.json").read_text())
        return run

    @classmethod
    def open(cls, paper: str, run_dir: Path, config: Any) -> "Run":
        """Re-open a finished run folder (for ``evaluate``): keeps its metrics and provenance."""
        _, prov, metrics = load_run(run_dir)
        run = cls(
            paper=paper,
            run_dir=Path(run_dir),
            config=config,
            preset=prov.get("preset", "?"),
            schedule=prov.get("schedule", "?"),
            seed=int(prov.get("seed", 0)),
            metrics=metrics,
            splits=prov.get("splits", {}),
            schedule_run=prov.get("schedule_run", {}),
            commit=prov.get("commit", ""),
        )
        return run

    def add_metrics(self, model: str, split: str, values: dict, data: DataInfo | None = None) -> None:
        """Record ``values`` ({metric: number}) for ``model`` on ``split`` and save at once."""
        clean = {k: (None if v is None else float(v)) for k, v in values.items()}
        self.metrics.setdefault(model, {}).setdefault(split, {}).update(clean)
        if data is not None:
            self.splits[split] = data.__dict__ | {"label": data.label()}
        self.save()

    def figure_path(self, name: str) -> Path:
        """Where a figure of this run goes (``<run>/figures/<name>.png``); publish() copies it."""
        path = self.run_dir / "figures" / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def provenance(self) -> dict:
        import keras

        return {
            "paper": self.paper,
            "run": self.run_dir.name,
            "commit": self.commit or git_commit(),
            "config_hash": config_lib.config_hash(self.config),
            "preset": self.preset,
            "schedule": self.schedule,
            "schedule_run": self.schedule_run,
            "seed": self.seed,
            "splits": self.splits,
            "backend": keras.backend.backend(),
            "device": device_name(),
            "versions": versions(),
            "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            **self.extra,
        }

    def save(self) -> None:
        (self.run_dir / "metrics.json").write_text(json.dumps(self.metrics, indent=2, sort_keys=True))
        (self.run_dir / "provenance.json").write_text(json.dumps(self.provenance(), indent=2, default=str))

    def publish(self, results_dir: Path | None = None) -> Path:
        """Copy the run's summary (provenance + metrics) to results/runs/<paper>/<run>.json."""
        import shutil

        results_dir = Path(results_dir) if results_dir else results_root()
        target = results_dir / "runs" / self.paper / f"{self.run_dir.name}.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        figures = []
        for png in sorted((self.run_dir / "figures").glob("*.png")):
            dest = results_dir / self.paper / self.run_dir.name / png.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(png, dest)
            figures.append(str(dest.relative_to(results_dir)))
        summary = {"provenance": self.provenance(), "metrics": self.metrics, "figures": figures}
        target.write_text(json.dumps(summary, indent=2, sort_keys=True, default=str))
        return target


def load_run(run_dir: Path) -> tuple[dict, dict, dict]:
    """(config, provenance, metrics) of a finished run folder, with clear errors."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise UserError(f"{run_dir}: not a run folder (no config.json)")
    read = lambda name: json.loads((run_dir / name).read_text()) if (run_dir / name).is_file() else {}
    return read("config.json"), read("provenance.json"), read("metrics.json")
