"""Run folders and provenance.

A run folder holds everything needed to trust (or redo) a number::

    runs/<paper>/<name>/
        config.json        resolved config (after preset, schedule and --set)
        provenance.json    commit, config hash, data (real/synthetic + checksum), schedule actually
                           run, backend, device, versions, date
        metrics.json       {model: {split: {metric: value}}}
        train/...          checkpoints, CSV and TensorBoard logs (common/training.py)

Which folders ``reproduce`` writes into (:func:`run_state`, :meth:`Run.create`):

- a new or empty folder: a new run;
- an *unfinished* run (interrupted or failed: ``provenance.json`` says ``"status": "running"``, or
  there is only ``config.json``): re-running the same command continues it from its checkpoints,
  with or without ``--resume``; a different config, preset, schedule or seed is refused (a
  ``config.json`` written before configs had a ``runtime`` section counts as the default runtime:
  one device, float32);
- a *finished* run (``"status": "finished"``; a folder of an older version without a status counts
  as finished once it has metrics): refused unless ``--resume`` (which continues it: trained models
  are kept, the evaluation is redone);
- anything else (a non-empty folder that is not a run) is refused; nothing is overwritten silently.

``--resume`` only continues: it refuses a folder that does not exist, is empty or is not a run.

Each run has a ``run_id`` (a hash of its absolute folder and start time) in its provenance. Its
summary goes to ``results/runs/<paper>/<name>.json`` (small, tracked in git; ``microrepro results``
re-renders the tables from them) unless that file holds another run's summary (a shipped result,
or a run of the same name in another folder): then it goes beside it as ``<name>-<run_id>.json``
and nothing is replaced, unless ``replace=True`` (``--replace``). Re-publishing the same run (evaluate
after reproduce) updates its own summary.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from microrepro.common import config as config_lib
from microrepro.common.errors import DataError, UserError

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




# ----------------------------------------------------------------------------------- checks
# A name that becomes a folder (the config's ``name``, a preset, a schedule): no separators, no '..'.
_FOLDER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
RUN_FILES = ("config.json", "provenance.json", "metrics.json")


def check_folder_name(value: str, what: str) -> str:
    """``value`` if it is safe as one folder name, else a ConfigError naming ``what``.

    Safe: letters, digits and ``. _ + -``, not starting with a dot, no path separator, so that a
    run folder (``runs/<paper>/<name>_<preset>_<schedule>_s<seed>``) can never land outside runs/.
    """
    from microrepro.common.errors import ConfigError

    text = str(value)
    if not _FOLDER_NAME.fullmatch(text) or ".." in text:
        raise ConfigError(
            f"{what}={text!r}: becomes a folder name, so it may hold only letters, digits, '.', '_', '+', '-' "
            "(no '/', no '..'); use --out to choose the folder itself"
        )
    return text


def check_writable(folder: Path, what: str, fix: str = "") -> Path:
    """``folder`` if it exists as a writable folder or could be created, else a UserError naming ``what``.

    Nothing is created: for a folder that does not exist yet its nearest existing parent is checked.
    ``os.access`` honours read-only mounts and immutable folders even for root. ``fix`` replaces the
    default advice ("choose another <what> or make it writable").
    """
    folder = Path(folder)
    probe = folder
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        detail = "is a file, not a folder" if probe == folder else f"{probe} is a file, not a folder"
        raise UserError(f"{what} {folder}: {detail}; {fix or f'choose another {what}'}")
    if not os.access(probe, os.W_OK | os.X_OK):
        where = "" if probe == folder else f" ({probe} is not writable)"
        raise UserError(f"{what} {folder}: not writable{where}; {fix or f'choose another {what} or make it writable'}")
    return folder


def read_json(path: Path, fix: str = "restore it from a copy, or re-create the run in a new --out") -> Any:
    """The JSON content of ``path``, or a DataError naming the file (and saying ``fix``) when it is not JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: corrupt JSON ({err}); {fix}") from None
    except OSError as err:
        raise DataError(f"{path}: unreadable ({err.strerror or err})") from None


def _read_dict(path: Path) -> dict:
    if not path.is_file():
        return {}
    data = read_json(path)
    if not isinstance(data, dict):
        raise DataError(f"{path}: corrupt (expected a JSON object, found {type(data).__name__})")
    return data


def run_state(folder: Path) -> str:
    """What ``folder`` holds: "absent", "empty", "not_run", "unfinished" or "finished" (module doc)."""
    folder = Path(folder)
    if not folder.exists():
        return "absent"
    if not folder.is_dir():
        return "not_run"
    if not any(folder.iterdir()):
        return "empty"
    if not (folder / "config.json").is_file():
        return "not_run"
    prov = _read_dict(folder / "provenance.json")
    status = prov.get("status")
    if status == "finished":
        return "finished"
    if status is None and prov and _read_dict(folder / "metrics.json"):
        return "finished"  # a run folder of a version before the status was recorded
    return "unfinished"


def weights_files(run_dir: Path, include_backup: bool = False) -> list[Path]:
    """The Keras weight / model files of a run folder (``*.h5``, ``*.keras``), backups optional."""
    run_dir = Path(run_dir)
    files = [p for pattern in ("*.h5", "*.keras") for p in run_dir.rglob(pattern) if p.is_file()]
    if not include_backup:
        files = [p for p in files if "backup" not in p.relative_to(run_dir).parts[:-1]]
    return sorted(files)


def check_weights(run_dir: Path, include_backup: bool = False) -> None:
    """Open every weights file of ``run_dir`` (header and size only): a DataError names a corrupt one.

    HDF5 (``.h5``) files are opened with h5py, which checks the signature and that the file is not
    truncated; ``.keras`` files must be zip archives. This runs before ``evaluate`` / ``predict``
    load a model, so a damaged file is one line naming it rather than a traceback from Keras.
    """
    import zipfile

    for path in weights_files(run_dir, include_backup):
        problem = ""
        if path.suffix == ".keras":
            if not zipfile.is_zipfile(path):
                problem = "not a .keras (zip) archive"
        else:
            import h5py

            try:
                with h5py.File(path, "r"):
                    pass
            except (OSError, ValueError) as err:
                problem = str(err).splitlines()[0] if str(err) else type(err).__name__
        if problem:
            raise DataError(
                f"{path}: corrupt weights file ({problem}); restore it from a copy, or re-train the run "
                "in a new --out"
            )


def check_run_files(run_dir: Path, include_backup: bool = False) -> None:
    """:func:`check_weights`, and every JSON file of the run folder (config, provenance, metrics,
    thresholds, splits, training state) must parse: a DataError names the first damaged file."""
    run_dir = Path(run_dir)
    for path in sorted(run_dir.rglob("*.json")):
        parts = path.relative_to(run_dir).parts[:-1]
        if not include_backup and "backup" in parts:
            continue
        read_json(path)
    check_weights(run_dir, include_backup)


def new_run_id(run_dir: Path) -> str:
    """A short id unique to this run: hash of its absolute folder and the start time."""
    text = f"{Path(run_dir).resolve()}|{time.time_ns()}|{os.getpid()}"
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def legacy_run_id(run_dir: Path) -> str:
    """A stable id for a run folder written before run ids existed (hash of its absolute path)."""
    return hashlib.sha256(str(Path(run_dir).resolve()).encode()).hexdigest()[:8]


def _stored_config(config: Any) -> dict:
    return json.loads(json.dumps(config_lib.to_dict(config), default=str))


def default_run_dir(paper: str, config: Any, preset: str, schedule: str, seed: int,
                    runs_root: Path | None = None) -> Path:
    """``runs/<paper>/<name>_<preset>_<schedule>_s<seed>``, each part checked as a folder name."""
    name = check_folder_name(getattr(config, "name", paper), "--set name")
    check_folder_name(preset, "--preset")
    check_folder_name(schedule, "--schedule")
    root = Path(runs_root) if runs_root else globals()["runs_root"]()
    return root / paper / f"{name}_{preset}_{schedule}_s{seed}"


def check_run_target(out: Path, config: Any, preset: str, schedule: str, seed: int, resume: bool = False) -> str:
    """Check that ``reproduce`` may write into ``out`` (see the module doc); nothing is written.

    Returns:
        "new" (a new run) or "continue" (an existing run is continued from its checkpoints).

    Raises:
        UserError: the folder may not be used, with what to do instead.
    """
    out = Path(out)
    state = run_state(out)
    drop = "drop --resume to start a new run there"
    if resume and state == "absent":
        raise UserError(f"--resume {out}: no such run folder; {drop}, or give --out the run to continue")
    if resume and state == "empty":
        raise UserError(f"--resume {out}: empty folder, not a run; {drop}")
    if state == "not_run":
        what = "is a file" if out.exists() and not out.is_dir() else "is not empty and holds no run (no config.json)"
        hint = drop if resume else "choose another --out (nothing is overwritten)"
        raise UserError(f"{out} {what}; {hint}")
    if state == "finished" and not resume:
        raise UserError(
            f"{out} already holds a finished run; pass --resume to continue it (trained models are kept, "
            "the evaluation is redone) or --out to write elsewhere (nothing is overwritten silently)"
        )
    if state in ("absent", "empty"):
        check_writable(out, "--out")
        return "new"
    stored = _read_dict(out / "config.json")
    if hasattr(config, "runtime"):
        # A run made before configs had a runtime section (or one of its later keys, e.g. inter_op_threads)
        # ran with the defaults of what it lacks: one device, float32, TensorFlow's thread pools.
        defaults = _stored_config(type(config.runtime)())
        stored = {**stored, "runtime": defaults | (stored.get("runtime") or {})}
    if stored != _stored_config(config):
        keys = sorted(k for k in set(stored) | set(_stored_config(config))
                      if stored.get(k) != _stored_config(config).get(k))
        raise UserError(
            f"{out} holds a run with a different config ({', '.join(keys) or 'values'} differ); "
            "continue it with the same --preset/--schedule/--set, or choose another --out"
        )
    prov = _read_dict(out / "provenance.json")
    for key, value in (("preset", preset), ("schedule", schedule), ("seed", seed)):
        if key in prov and str(prov[key]) != str(value):
            raise UserError(
                f"{out} holds a run with --{key} {prov[key]}, not {value}; continue it with the same "
                f"--{key}, or choose another --out"
            )
    check_writable(out, "--out")
    check_run_files(out, include_backup=True)
    return "continue"


def check_results_writable(paper: str, results_dir: Path | None = None) -> None:
    """Check, before the work, that a run of ``paper`` can be published (nothing is written)."""
    results_dir = Path(results_dir) if results_dir else results_root()
    for folder in (results_dir / "runs" / paper, results_dir / paper):
        check_writable(folder, "results folder")


def discard_if_untouched(run_dir: Path, created: Path | None = None) -> bool:
    """Remove a new run folder that holds nothing but its ``config.json`` (and empty folders).

    ``reproduce`` calls it when a new run fails before producing anything (unreadable data, a bad
    option found late), so that such a failure leaves nothing behind. A folder with any other file
    (a checkpoint, a metric) is kept: it is an unfinished run that the same command continues.

    Args:
        run_dir: the run folder.
        created: the highest folder that ``Run.create`` made (``run_dir`` or one of its parents), removed
            with the folders between when empty; None when the run folder existed before.

    Returns:
        True when the folder's content was removed.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return False
    files = [p for p in run_dir.rglob("*") if not p.is_dir()]
    if [p.relative_to(run_dir).as_posix() for p in files] not in ([], ["config.json"]):
        return False
    for path in files:
        path.unlink()
    for folder in sorted((p for p in run_dir.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        folder.rmdir()
    if created is not None:
        folder = run_dir
        while True:
            if any(folder.iterdir()):
                break
            folder.rmdir()
            if folder == Path(created) or folder.parent == folder:
                break
            folder = folder.parent
    return True


# -------------------------------------------------------------------------------------- runs
@dataclass
class Run:
    """One reproduction run; see the module docstring for the folder layout and the rules."""

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
    run_id: str = ""
    status: str = "running"  # "finished" once reproduce has completed (``finish``)
    continued: bool = False  # create() continued an existing run folder

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
    ) -> Run:
        """Start a run in ``out`` (default :func:`default_run_dir`) or continue the one there.

        Args:
            paper: registry name.
            config: the resolved config dataclass.
            preset: preset name. schedule: schedule name. seed: random seed.
            out: the run folder.
            resume: continue a run folder that exists (refused for anything that is not a run).
            runs_root: root of the default run folders (default ``runs_root()``).

        Raises:
            UserError: see :func:`check_run_target`.
        """
        if out is None:
            out = default_run_dir(paper, config, preset, schedule, seed, runs_root)
        else:
            check_folder_name(getattr(config, "name", paper), "--set name")
        out = Path(out)
        mode = check_run_target(out, config, preset, schedule, seed, resume)
        prov = _read_dict(out / "provenance.json") if mode == "continue" else {}
        metrics = _read_dict(out / "metrics.json") if mode == "continue" else {}
        out.mkdir(parents=True, exist_ok=True)
        run = cls(paper=paper, run_dir=out, config=config, preset=preset, schedule=schedule, seed=seed,
                  commit=git_commit(), run_id=prov.get("run_id") or new_run_id(out),
                  continued=mode == "continue")
        earlier = prov.get("commit")
        if earlier and earlier != run.commit:
            run.extra["resumed_from_commit"] = earlier
        (out / "config.json").write_text(json.dumps(config_lib.to_dict(config), indent=2, default=str))
        run.metrics = metrics  # a continued run keeps what it recorded: metrics, their data, its schedule
        run.splits = dict(prov.get("splits") or {})
        run.schedule_run = dict(prov.get("schedule_run") or {})
        return run

    @classmethod
    def open(cls, paper: str, run_dir: Path, config: Any) -> Run:
        """Re-open a finished run folder (for ``evaluate``): keeps its metrics and provenance."""
        _, prov, metrics = load_run(run_dir)
        extra = {k: prov[k] for k in ("resumed_from_commit", "commit_note", "distribution", "overrides") if prov.get(k)}
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
            extra=extra,
            commit=prov.get("commit", ""),
            run_id=prov.get("run_id") or legacy_run_id(run_dir),
            status=prov.get("status") or ("finished" if metrics else "running"),
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
            "run_id": self.run_id,
            "status": self.status,
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
            "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            **self.extra,
        }

    def save(self) -> None:
        """Write metrics.json and provenance.json, each to a temporary name first, then renamed."""
        _write_atomic(self.run_dir / "metrics.json", json.dumps(self.metrics, indent=2, sort_keys=True))
        _write_atomic(self.run_dir / "provenance.json", json.dumps(self.provenance(), indent=2, default=str))

    def finish(self) -> None:
        """Mark the run finished (reproduce completed) and save."""
        self.status = "finished"
        self.save()

    @property
    def is_choice_trial(self) -> bool:
        """A model-selection trial: the config's ``data.evaluate_on`` is ``val`` (scored on the
        validation split only; published under ``results/runs/<paper>/choices/``, never in a table)."""
        return getattr(getattr(self.config, "data", None), "evaluate_on", "reported") == "val"

    def summary_path(self, results_dir: Path | None = None, replace: bool = False) -> Path:
        """Where :meth:`publish` writes this run's summary (see the module doc); nothing is written."""
        results_dir = Path(results_dir) if results_dir else results_root()
        folder = results_dir / "runs" / self.paper / ("choices" if self.is_choice_trial else "")
        target = folder / f"{self.run_dir.name}.json"
        if replace or not target.is_file():
            return target
        try:
            other = json.loads(target.read_text(encoding="utf-8")).get("provenance", {}).get("run_id")
        except (json.JSONDecodeError, UnicodeDecodeError, OSError, AttributeError):
            other = None  # unreadable: never written over without --replace
        if other == self.run_id:
            return target
        return folder / f"{self.run_dir.name}-{self.run_id}.json"

    def publish(self, results_dir: Path | None = None, replace: bool = False) -> Path:
        """Copy the run's summary (provenance + metrics) and figures into results/.

        The summary goes to :meth:`summary_path`: ``results/runs/<paper>/<name>.json``, or beside it
        as ``<name>-<run_id>.json`` when that file is another run's (announced); ``replace=True``
        writes over it. Figures go to ``results/<paper>/<summary stem>/``. A model-selection trial
        (:attr:`is_choice_trial`) goes to ``results/runs/<paper>/choices/``, without figures.
        """
        import shutil

        results_dir = Path(results_dir) if results_dir else results_root()
        target = self.summary_path(results_dir, replace)
        plain = target.parent / f"{self.run_dir.name}.json"
        if target != plain:
            print(f"[results] {plain} holds another run's summary (a shipped result or a run of the same name "
                  f"elsewhere): this run's goes beside it as {target.name} (--replace would replace it)")
        target.parent.mkdir(parents=True, exist_ok=True)
        figures = []
        for png in [] if self.is_choice_trial else sorted((self.run_dir / "figures").glob("*.png")):
            dest = results_dir / self.paper / target.stem / png.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(png, dest)
            figures.append(str(dest.relative_to(results_dir)))
        summary = {"provenance": self.provenance(), "metrics": self.metrics, "figures": figures}
        _write_atomic(target, json.dumps(summary, indent=2, sort_keys=True, default=str))
        return target


def _write_atomic(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def load_run(run_dir: Path) -> tuple[dict, dict, dict]:
    """(config, provenance, metrics) of a run folder, with one-line errors naming the folder or file."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise UserError(f"{run_dir}: not a run folder (no such folder); give the folder `reproduce` wrote")
    if not (run_dir / "config.json").is_file():
        raise UserError(f"{run_dir}: not a run folder (no config.json); give the folder `reproduce` wrote")
    config = _read_dict(run_dir / "config.json")
    return config, _read_dict(run_dir / "provenance.json"), _read_dict(run_dir / "metrics.json")
