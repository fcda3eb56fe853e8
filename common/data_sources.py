"""Where a paper's data comes from, resolved in one fixed order by every command.

1. ``--data-dir``: the dataset folder itself, or a folder of data sets holding ``<dataset>/``;
2. the folder of data sets :func:`data_root`: ``$MICROREPRO_DATA`` when it is set, else
   ``../shared/data`` beside the checkout when that exists (what the Makefile and ``.ci/run`` do);
3. the download cache (``datasets/download.py``: pinned public archives, checksummed), downloading
   the data set there on first use when it has a public source;
4. the paper's synthetic generator, only when the data set has no public source (or the user asked
   for it with ``--synthetic``), announced on the console and recorded as "synthetic" in the run's
   provenance. A data set that has a public source but cannot be downloaded (offline, no cached
   copy) is a one-line DataError naming the URL, the folder to place it in by hand, and
   ``--synthetic``: real data is never replaced by synthetic data silently.

``microrepro list``, ``reproduce``, ``evaluate`` and ``preview`` all use this module, so they find
the same data inside and outside ``make``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from microrepro.common.errors import DataError

DATA_ENV = "MICROREPRO_DATA"
CHECKOUT_ROOT = Path(__file__).resolve().parent.parent
ORDER = f"--data-dir, ${DATA_ENV} (else ../shared/data beside the checkout), the download cache"


@dataclass
class DataSource:
    """A resolved data source: ``path`` is None when the synthetic generator must be used."""

    dataset: str
    path: Path | None
    how: str

    @property
    def kind(self) -> str:
        return "synthetic" if self.path is None else "real"


def beside_checkout() -> Path:
    """``../shared/data`` beside the repository checkout (it may not exist)."""
    return CHECKOUT_ROOT.parent / "shared" / "data"


def data_root() -> Path | None:
    """The folder of real data sets: ``$MICROREPRO_DATA`` if set, else ``../shared/data`` if it exists.

    A set ``$MICROREPRO_DATA`` is used alone (as in the Makefile), so pointing it at an empty folder
    turns the real data off.
    """
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    shared = beside_checkout()
    return shared if shared.is_dir() else None


def describe_root() -> str:
    """How :func:`data_root` was found, for messages (``$MICROREPRO_DATA`` or ``../shared/data``)."""
    if os.environ.get(DATA_ENV):
        return f"${DATA_ENV}"
    return "../shared/data"


def manual_folder(dataset: str) -> Path:
    """Where to place ``dataset`` by hand so that it is found: ``<data root>/<dataset>``."""
    return (data_root() or beside_checkout()) / dataset


def resolve(dataset: str, data_dir: str | Path | None = None, fetch=None, synthetic: bool = False) -> DataSource:
    """Resolve ``dataset`` (a folder name such as ``spines``) following the module's order.

    Args:
        dataset: name of the data set folder.
        data_dir: the user's ``--data-dir``; if given it must exist.
        fetch: optional callable ``() -> Path | None`` that returns the data set's folder in the download
            cache (downloading it on first use), or None when the data set has no public source.
            Without it (``microrepro list``) nothing is downloaded and a data set that is not found
            resolves to the synthetic generator.
        synthetic: the user's ``--synthetic``: use the synthetic generator, whatever data exists.

    Raises:
        DataError: ``data_dir`` is given but is not a folder, or is given with ``synthetic``; or the data
            set has a public source that cannot be downloaded (offline, checksum mismatch...): one line
            naming the URL, the folder to place the data in by hand, and ``--synthetic``.
    """
    if synthetic:
        if data_dir is not None:
            raise DataError(f"--data-dir {data_dir} and --synthetic: give one of them (real data or the generator)")
        return DataSource(dataset, None, "synthetic generator (--synthetic)")
    if data_dir is not None:
        data_dir = Path(data_dir).expanduser()
        if not data_dir.is_dir():
            what = "is a file, not a folder" if data_dir.exists() else "no such folder"
            raise DataError(f"--data-dir {data_dir}: {what}; give the data set folder or a folder of data sets")
        if (data_dir / dataset).is_dir():
            return DataSource(dataset, data_dir / dataset, f"--data-dir {data_dir / dataset}")
        return DataSource(dataset, data_dir, f"--data-dir {data_dir}")
    root = data_root()
    if root is not None and (root / dataset).is_dir():
        return DataSource(dataset, root / dataset, f"{describe_root()}/{dataset}")
    if fetch is not None:
        try:
            path = fetch()
        except DataError as err:  # offline, checksum mismatch...: never fall back to synthetic silently
            where = f"not in {describe_root()}/{dataset}" if root is not None else "no data folder"
            raise DataError(f"{dataset}: {where}, and the download failed ({_one_line(err)}); {_by_hand(dataset)}, "
                            "or pass --synthetic to use the synthetic generator") from None
        if path is not None:
            return DataSource(dataset, Path(path), "download cache")
    return DataSource(dataset, None, "synthetic generator (no public source of real data)")


def _by_hand(dataset: str) -> str:
    from microrepro.datasets import download

    layout = download.manual_hint(dataset)
    return f"place it by hand in {manual_folder(dataset)}{f' ({layout})' if layout else ''} or pass --data-dir"


def _one_line(err: Exception) -> str:
    return "; ".join(line.strip() for line in str(err).splitlines() if line.strip())


def default_data_root() -> Path | None:
    """Kept for callers of the earlier name: the same as :func:`data_root`."""
    return data_root()
