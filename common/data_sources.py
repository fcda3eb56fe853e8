"""Where a paper's data comes from, resolved in a fixed order.

1. ``--data-dir``: the dataset folder itself, or a folder of data sets holding ``<dataset>/``;
2. the environment variable ``MICROREPRO_DATA`` naming a folder of data sets
   (``.ci/run`` points it at ``../shared/data`` when that exists);
3. the download cache (pooch, with checksums) for data sets that have a public URL, when online;
4. otherwise the paper's synthetic generator, announced on the console and recorded as
   "synthetic" in the run's provenance.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from microrepro.common.errors import DataError

DATA_ENV = "MICROREPRO_DATA"


@dataclass
class DataSource:
    """A resolved data source: ``path`` is None when the synthetic generator must be used."""

    dataset: str
    path: Path | None
    how: str

    @property
    def kind(self) -> str:
        return "synthetic" if self.path is None else "real"


def resolve(dataset: str, data_dir: str | Path | None = None, fetch=None) -> DataSource:
    """Resolve ``dataset`` (a folder name such as ``spines``) following the module's order.

    Args:
        dataset: name of the data set folder.
        data_dir: the user's ``--data-dir``; if given it must exist.
        fetch: optional callable ``() -> Path | None`` that downloads into the pooch cache.
    """
    if data_dir is not None:
        data_dir = Path(data_dir).expanduser()
        if not data_dir.is_dir():
            raise DataError(f"--data-dir {data_dir}: no such folder")
        if (data_dir / dataset).is_dir():
            return DataSource(dataset, data_dir / dataset, f"--data-dir {data_dir / dataset}")
        return DataSource(dataset, data_dir, f"--data-dir {data_dir}")
    env = os.environ.get(DATA_ENV)
    if env:
        candidate = Path(env).expanduser() / dataset
        if candidate.is_dir():
            return DataSource(dataset, candidate, f"${DATA_ENV}/{dataset}")
    if fetch is not None:
        try:
            path = fetch()
        except Exception as err:  # offline, checksum mismatch...: fall through to synthetic, say why
            print(f"[data] could not download {dataset}: {err}")
            path = None
        if path is not None:
            return DataSource(dataset, Path(path), "download cache")
    return DataSource(dataset, None, "synthetic generator (no real data found)")


def default_data_root() -> Path | None:
    env = os.environ.get(DATA_ENV)
    return Path(env) if env else None
