"""Download the data sets that have a public URL into a local cache (pooch), failing fast offline.

``fetch(name)`` returns the folder to hand to the data set's loader, or None for a data set with no
public direct download (registration, a login-only host, or a URL we do not know for sure: those
are placed by hand and found through ``--data-dir`` / ``$MICROREPRO_DATA``).

Checksums: we do not know the published SHA-256 of any of these archives, and we do not invent
one. The first download is made with ``known_hash=None``; its SHA-256 is then recorded in a
``<file>.sha256`` beside it, and every later download into that cache is checked against it by
pooch (a changed file raises). Pass ``known_hash`` in ``REGISTRY`` once a hash is confirmed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from microrepro.common.errors import DataError

CACHE_ENV = "MICROREPRO_CACHE"
DEFAULT_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Remote:
    """Where a data set comes from: ``files`` maps file names to URLs (empty = manual only)."""

    files: dict[str, str]
    unzip: bool = False
    subdir: str = ""  # folder inside the cache entry that the loader wants
    note: str = ""


REGISTRY: dict[str, Remote] = {
    "vgg_cells": Remote(
        files={"cells.zip": "https://www.robots.ox.ac.uk/~vgg/research/counting/cells.zip"},
        unzip=True,
        note="Lempitsky & Zisserman 2010 synthetic cells; vgg_cells.load finds the NNNcell.png files.",
    ),
    "spines": Remote(
        files={},
        note=(
            "figshare 6149207 (Smirnov & Garrett) holds the original annotations, not the CSV layout "
            "the spines loader reads (the author's conversion in ily-R/Deep-Learning-for-Dendritic-"
            "Spines-Detection); place train/ + train_labels.csv by hand."
        ),
    ),
    "fnc": Remote(files={}, note="Fluorescent Neuronal Cells (AMS Acta / Kaggle): manual download."),
    "fnc_sample": Remote(files={}, note="dataset/ folder of clissa/cell-segmentation: manual copy."),
    "dsb2018_stage1_test": Remote(files={}, note="BBBC038 stage1_test + stage1_solution.csv: manual download."),
    "mitosis_amibr": Remote(files={}, note="DeepMicroscopy/AMi-Br repository: manual copy."),
    "nuclei_stardist": Remote(files={}, note="ships inside the stardist wheel (stardist/data/images)."),
    "mitos2012": Remote(files={}, note="ICPR 2012 MITOS contest: registration required."),
    "mitos_atypia14": Remote(files={}, note="MITOS-ATYPIA-14 contest: registration required."),
    "amida13": Remote(files={}, note="AMIDA13 / TUPAC16 auxiliary: registration required."),
}


def cache_dir() -> Path:
    """``$MICROREPRO_CACHE`` or the OS cache folder of pooch (``~/.cache/microrepro`` on Linux)."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    import pooch

    return Path(pooch.os_cache("microrepro"))


def fetch(name: str, cache: str | Path | None = None, timeout: float = DEFAULT_TIMEOUT_S) -> Path | None:
    """Download (once) and unpack a data set, returning its folder; None when it has no URL.

    Args:
        name: a key of ``REGISTRY``.
        cache: cache root (default ``cache_dir()``); the data set goes to ``<cache>/<name>/``.
        timeout: seconds to wait for the server before giving up (never hangs).

    Returns:
        The folder to pass to the loader, or None for a data set without a public URL.

    Raises:
        ValueError: unknown name.
        DataError: "offline: could not reach <url>" when the host cannot be reached, or any
            other download/checksum failure, on one line.
    """
    if name not in REGISTRY:
        raise ValueError(f"unknown data set {name!r}; known: {', '.join(sorted(REGISTRY))}")
    remote = REGISTRY[name]
    if not remote.files:
        return None
    import pooch
    import requests

    target = Path(cache or cache_dir()) / name
    target.mkdir(parents=True, exist_ok=True)
    downloader = pooch.HTTPDownloader(progressbar=False, timeout=timeout)
    for file_name, url in remote.files.items():
        hash_file = target / f"{file_name}.sha256"
        known = f"sha256:{hash_file.read_text().split()[0]}" if hash_file.is_file() else None
        processor = pooch.Unzip(extract_dir=f"{file_name}.unzipped") if remote.unzip else None
        try:
            pooch.retrieve(url, known_hash=known, fname=file_name, path=target, processor=processor,
                           downloader=downloader)
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as err:
            raise DataError(f"offline: could not reach {url} ({type(err).__name__})") from None
        except requests.exceptions.RequestException as err:
            raise DataError(f"{url}: download failed ({err})") from None
        except ValueError as err:  # pooch's checksum mismatch
            raise DataError(f"{target / file_name}: {str(err).splitlines()[0]}") from None
        if not hash_file.is_file():
            hash_file.write_text(f"{pooch.file_hash(str(target / file_name))}  {file_name}\n")
    if remote.unzip:
        first = next(iter(remote.files))
        folder = target / f"{first}.unzipped"
        return folder / remote.subdir if remote.subdir else folder
    return target / remote.subdir if remote.subdir else target


def describe(name: str) -> str:
    """One line saying where a data set comes from (URL or how to get it by hand)."""
    if name not in REGISTRY:
        raise ValueError(f"unknown data set {name!r}; known: {', '.join(sorted(REGISTRY))}")
    remote = REGISTRY[name]
    urls = ", ".join(remote.files.values())
    return f"{name}: {urls or 'no public direct URL'}{'; ' + remote.note if remote.note else ''}"
