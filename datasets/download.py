"""Real data sets fetched on first use: pinned public archives, checksummed, unpacked into a cache.

``fetch(name)`` returns the folder to hand to the data set's loader (downloading and unpacking it the
first time), or None for a data set with no public direct download (registration, a login-only host,
or a URL we do not know for sure: those are placed by hand and found through ``--data-dir`` /
``$MICROREPRO_DATA``). :data:`REGISTRY` says, per data set, where it comes from (URL pinned to a
commit), which folders of the archive the loader wants, its licence and citation, and how it is
checked.

The cache (``$MICROREPRO_CACHE``, default ``~/.cache/microrepro`` on Linux) is laid out like a folder
of data sets, so data sets that a paper reads beside each other (fcn_segmentation reads
``nuclei_stardist`` and ``vgg_cells`` beside ``dsb2018_stage1_test``) sit beside each other::

    <cache>/<dataset>/                        the loader's folder (what --data-dir would take)
    <cache>/.archives/<dataset>/<file>        the downloaded archive, kept (checked again if re-fetched)
    <cache>/.archives/<dataset>/<file>.sha256 its SHA-256, recorded on the first download
    <cache>/.archives/<dataset>/<file>.part   an unfinished download, resumed by the next fetch
    <cache>/.archives/<dataset>/unpacked.json written last: <cache>/<dataset>/ is complete

Nothing half-written looks valid: a download goes to ``<file>.part`` and becomes ``<file>`` only when
its checksum is right (a mismatch deletes it and is a one-line DataError); an archive is unpacked
into a hidden folder that is renamed to ``<cache>/<dataset>/`` when complete, and ``unpacked.json``
is written after that. A second fetch of a complete data set touches neither the network nor the
archive.

Checksums: none of these archives has a published SHA-256 that we could check, and we cannot compute
one here (no network), so every entry is "trust on first use": the first download's SHA-256 is
recorded in ``<file>.sha256`` and every later download into that cache (a re-fetch after the data
set folder was deleted, another machine sharing the cache) must match it. An entry with a known
hash sets ``known_hash`` (``"sha256:<hex>"``) and is checked on the first download too.

Resume: an interrupted download keeps ``<file>.part``; the next fetch asks for the rest with an HTTP
``Range`` request and appends it (a server that ignores ``Range`` sends the whole file again, which
then replaces the part; GitHub's generated archives may do that). Progress is shown with tqdm on a
terminal.

Offline: a host that cannot be reached fails after ``timeout`` seconds with ``DownloadError``
("offline: could not reach <url> ..."); mirrors, when an entry has them, are tried first. With
``$MICROREPRO_OFFLINE`` set (the test suite sets it) nothing is downloaded from the network at all;
loopback addresses (the tests' own server) are still allowed.

GitHub archives (``https://github.com/<owner>/<repo>/archive/<commit>.zip``) are pinned to the
commit recorded in ``/work/shared/data/<dataset>/SOURCE.md``; only its short form is known, which
GitHub accepts. Such an archive unpacks as one folder ``<repo>-<commit>/``; its name is not
relied upon (the archive's single top folder is used, ``top="*"``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

from microrepro.common.errors import DataError

CACHE_ENV = "MICROREPRO_CACHE"
OFFLINE_ENV = "MICROREPRO_OFFLINE"
DEFAULT_TIMEOUT_S = 10.0
ARCHIVES = ".archives"
MARKER = "unpacked.json"
CHUNK = 1 << 16
LOOPBACK = ("127.0.0.1", "localhost", "::1")
TOFU = "trust on first use: SHA-256 recorded on the first download in <file>.sha256, checked from then on"


class DownloadError(DataError):
    """A download that failed (host unreachable, HTTP error, checksum mismatch), on one line."""

    def __init__(self, message: str, url: str = ""):
        super().__init__(message)
        self.url = url


@dataclass(frozen=True)
class Remote:
    """Where one data set comes from and how its archive becomes the loader's folder.

    Attributes:
        source: ``owner/repo@commit`` or the publisher, for people.
        licence: the licence as far as we know it.
        citation: what to cite when using the data.
        used_by: the papers (and roles) that read it.
        layout: what the loader wants in the folder (for the "place it by hand" message).
        url: pinned archive URL; empty for a data set that can only be placed by hand.
        file: the archive's file name in the cache.
        known_hash: ``"sha256:<hex>"`` when a published hash is known; None: recorded on the first
            download (trust on first use) and checked from then on.
        top: folder inside the archive that ``pick`` is relative to; ``"*"`` is the archive's single
            top folder whatever its name (GitHub: ``<repo>-<commit>/``); ``""`` the archive root.
        pick: ``(destination in the data set folder, source inside top)`` pairs; ``("", "")`` copies
            all of ``top``. A source may be a folder or a file.
        optional: destinations that may be missing from the archive.
        mirrors: other sources of the same data set, tried in order when ``url`` cannot be reached.
        companions: data sets a paper reads beside this one; ``Task.fetch`` fetches them too.
        page: landing page (manual data sets, or where a pinned URL came from).
        note: anything else a user should know.
    """

    source: str = ""
    licence: str = ""
    citation: str = ""
    used_by: str = ""
    layout: str = ""
    url: str = ""
    file: str = ""
    known_hash: str | None = None
    top: str = "*"
    pick: tuple[tuple[str, str], ...] = (("", ""),)
    optional: tuple[str, ...] = ()
    mirrors: tuple[Remote, ...] = ()
    companions: tuple[str, ...] = ()
    page: str = ""
    note: str = ""

    @property
    def automatic(self) -> bool:
        """True when the data set is downloaded on first use."""
        return bool(self.url)

    @property
    def checksum(self) -> str:
        """How the archive is checked, in words."""
        if not self.url:
            return "none (placed by hand)"
        return f"known: {self.known_hash}" if self.known_hash else TOFU

    @property
    def urls(self) -> tuple[str, ...]:
        return tuple(r.url for r in (self, *self.mirrors) if r.url)


def github(repo: str, commit: str, **kwargs) -> Remote:
    """A GitHub archive of ``repo`` (``owner/name``) at ``commit``, which unpacks as ``<name>-<commit>/``."""
    name = repo.split("/")[1]
    return Remote(source=f"{repo}@{commit}", url=f"https://github.com/{repo}/archive/{commit}.zip",
                  file=f"{name}-{commit}.zip", top="*", page=f"https://github.com/{repo}/tree/{commit}", **kwargs)


_SPINES_CITE = ("M. Smirnov, T. Garrett, 'Labeled Dendritic Spines - Training Data', figshare 6149207 (2018), "
                "as converted and split by the spines paper's author")
_FNC_CITE = ("R. Morelli, L. Clissa et al., 'Automating cell counting in fluorescent microscopy through deep "
             "learning with c-ResUnet', Sci. Rep. 11 (2021); data: Clissa, Morelli et al., 'Fluorescent Neuronal "
             "Cells', AMS Acta, University of Bologna")
_DSB_CITE = ("J. C. Caicedo et al., 'Nucleus segmentation across imaging experiments: the 2018 Data Science Bowl', "
             "Nat. Methods 16 (2019); BBBC038 (Broad Bioimage Benchmark Collection)")

REGISTRY: dict[str, Remote] = {
    "spines": github(
        "ily-R/Deep-Learning-for-Dendritic-Spines-Detection", "4b0e0c87",
        pick=(("train", "Faster-RCNN/images/train"), ("train_labels.csv", "SP-CNN/train_labels.csv"),
              ("test", "Faster-RCNN/images/test"), ("test_labels.csv", "Faster-RCNN/images/test_labels.csv")),
        optional=("test", "test_labels.csv"),
        licence="none stated (no licence file in the repository); cite the data set and the paper",
        citation=_SPINES_CITE,
        used_by="spines (train; the held-out test split for evaluate)",
        layout="train/ + train_labels.csv [+ test/ + test_labels.csv]",
        note="train labels from SP-CNN/train_labels.csv (the complete one); the test split (183 images) from "
             "Faster-RCNN/images/test + test_labels.csv, in the same CSV format",
    ),
    "fnc_sample": github(
        "clissa/cell-segmentation", "11e7b39a",
        pick=(("dataset", "dataset"),),
        licence="Apache-2.0 (the repository); the images are a sample of the Fluorescent Neuronal Cells data set",
        citation=_FNC_CITE,
        used_by="cell_counting (sim-to-real evaluation on the real fields)",
        layout="dataset/<color>/sample/images/*.png + masks/*.png",
        note="every public sample field (the shared copy holds two yellow fields back)",
    ),
    "fnc": Remote(
        source="AMS Acta, University of Bologna (Fluorescent Neuronal Cells v1: 283 images; v2: amsacta 7347)",
        licence="see the AMS Acta record (not checked here)",
        citation=_FNC_CITE,
        used_by="cell_counting trained on the full real data set (--data-dir)",
        layout="all_images/images + all_masks/masks (v1) or <color>/{trainval,test}/images + ground_truths/masks (v2)",
        page="https://amsacta.unibo.it/id/eprint/6706 (v1); https://amsacta.unibo.it/id/eprint/7347 (v2)",
        note="the file URLs on AMS Acta could not be pinned with certainty: download from the landing page",
    ),
    "dsb2018_stage1_test": github(
        "yuanqing811/DSB2018_stage1_test", "ee7c37eb",
        pick=(("stage1_test", "stage1_test"), ("stage1_solution.csv", "stage1_solution.csv")),
        optional=("stage1_solution.csv",),
        companions=("nuclei_stardist", "vgg_cells"),
        licence="CC0 (BBBC038), as far as we know",
        citation=_DSB_CITE,
        used_by="fcn_segmentation (real fine-tuning and evaluation images)",
        layout="stage1_test/<id>/images/<id>.png + masks/*.png [+ stage1_solution.csv]",
        note="fcn_segmentation also reads nuclei_stardist and vgg_cells beside it: fetched with it",
    ),
    "mitosis_amibr": github(
        "DeepMicroscopy/AMi-Br", "20a217b3",
        pick=(("AMI-BR.csv", "AMI-BR.csv"), ("patches", "patches")),
        licence="not stated in our SOURCE.md (see the repository; sources MIDOG 2021 and TUPAC16)",
        citation="C. A. Bertram et al., 'Histologic Dataset of Normal and Atypical Mitotic Figures on Human "
                 "Breast Cancer (AMi-Br)', BVM 2025",
        used_by="mitos_rcnn (real fields tiled from crops), dwt_mitosis (phase 2 mosaics)",
        layout="AMI-BR.csv + patches/{normal,atypical}/<dataset>_<uid>.png",
        note="every public crop (the shared copy holds a tenth of the slides back)",
    ),
    "nuclei_stardist": github(
        "stardist/stardist", "650d3a19",
        pick=(("img2d.tif", "stardist/data/images/img2d.tif"), ("mask2d.tif", "stardist/data/images/mask2d.tif"),
              ("histo.jpg", "stardist/data/images/histo.jpg")),
        optional=("histo.jpg",),
        licence="BSD-3-Clause",
        citation="U. Schmidt, M. Weigert, C. Broaddus, G. Myers, 'Cell Detection with Star-convex Polygons', "
                 "MICCAI 2018; the 2-D image is from BBBC038",
        used_by="fcn_segmentation (real nuclei tiles beside dsb2018_stage1_test)",
        layout="img2d.tif + mask2d.tif [+ histo.jpg]",
        note="the same files ship inside the stardist wheel",
    ),
    "vgg_cells": github(
        "ieee8023/countception", "8387c305",
        pick=(("cells", "cells"),),
        mirrors=(Remote(source="robots.ox.ac.uk (VGG, original)", file="cells.zip", top="",
                        url="https://www.robots.ox.ac.uk/~vgg/research/counting/cells.zip"),),
        licence="none stated (no licence file in the repository)",
        citation="V. Lempitsky, A. Zisserman, 'Learning To Count Objects in Images', NIPS 2010",
        used_by="fcn_segmentation (the VGG cells benchmark beside its paper's data)",
        layout="cells/NNNcell.png + NNNdots.png",
        note="mirror: the original cells.zip on robots.ox.ac.uk (not pinned; also checked on first use)",
    ),
    "mitos2012": Remote(source="ICPR 2012 MITOS contest", used_by="mitos_rcnn / dwt_mitosis (--data-dir)",
                        layout="see datasets/mitos2012.py", note="registration required"),
    "mitos_atypia14": Remote(source="MITOS-ATYPIA-14 contest", used_by="mitos_rcnn / dwt_mitosis (--data-dir)",
                             layout="see datasets/mitos_atypia14.py", note="registration required"),
    "amida13": Remote(source="AMIDA13 / TUPAC16 auxiliary", used_by="mitos_rcnn / dwt_mitosis (--data-dir)",
                      layout="see datasets/amida13.py", note="registration required"),
}


# ------------------------------------------------------------------------------------- places
def cache_dir() -> Path:
    """``$MICROREPRO_CACHE`` or the OS cache folder of pooch (``~/.cache/microrepro`` on Linux)."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    import pooch

    return Path(pooch.os_cache("microrepro"))


def get(name: str) -> Remote:
    """The registry entry of ``name``, or a ValueError listing the known names."""
    if name not in REGISTRY:
        raise ValueError(f"unknown data set {name!r}; known: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def archive_dir(name: str, cache: str | Path | None = None) -> Path:
    """``<cache>/.archives/<name>``: the archives, their ``.sha256`` records and the unpack marker."""
    return Path(cache or cache_dir()) / ARCHIVES / name


def cached(name: str, cache: str | Path | None = None) -> Path | None:
    """The complete unpacked folder of ``name`` in the cache, or None; never touches the network."""
    folder = Path(cache or cache_dir()) / name
    marker = archive_dir(name, cache) / MARKER
    return folder if folder.is_dir() and marker.is_file() else None


def recorded_hash(name: str, cache: str | Path | None = None) -> str | None:
    """The SHA-256 the unpacked copy of ``name`` was checked against, or None when not fetched."""
    marker = archive_dir(name, cache) / MARKER
    try:
        return json.loads(marker.read_text()).get("sha256")
    except (OSError, ValueError):
        return None


def is_offline(url: str = "") -> bool:
    """True when ``$MICROREPRO_OFFLINE`` forbids downloading ``url`` (loopback hosts stay allowed)."""
    if os.environ.get(OFFLINE_ENV, "").strip().lower() in ("", "0", "false", "no"):
        return False
    return urlparse(url).hostname not in LOOPBACK


# ------------------------------------------------------------------------------------ download
class ResumableDownloader:
    """A pooch downloader that keeps an unfinished download in ``part`` and resumes it with ``Range``.

    pooch calls it with a temporary file name beside the final one; the bytes go to ``part`` first
    (kept when the transfer stops, so the next call resumes it) and are moved onto pooch's temporary
    file when complete; pooch then checks the hash and renames it, or deletes it on a mismatch.
    """

    def __init__(self, part: Path, timeout: float, progressbar: bool = True):
        self.part = Path(part)
        self.timeout = timeout
        self.progressbar = progressbar

    def __call__(self, url: str, output_file, pooch_instance=None, check_only: bool = False):
        import requests

        if is_offline(url):
            raise DownloadError(f"offline: could not reach {url} (${OFFLINE_ENV} is set: unset it to download)", url)
        if check_only:
            with requests.head(url, timeout=self.timeout, allow_redirects=True) as response:
                return response.status_code == 200
        offset = self.part.stat().st_size if self.part.is_file() else 0
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        # Errors before the answer (host unreachable, HTTP status) go up as requests errors.
        with requests.get(url, headers=headers, stream=True, timeout=self.timeout) as response:
            if not (offset and response.status_code == 416):  # 416: the part already holds it all
                response.raise_for_status()
                try:
                    self._stream(url, response, offset)
                except requests.exceptions.RequestException as err:  # the transfer broke off
                    done = self.part.stat().st_size if self.part.is_file() else 0
                    keep = f"; run it again to resume from {self.part}" if done else "; run it again"
                    raise DownloadError(f"offline: download of {url} stopped after {done} bytes "
                                        f"({type(err).__name__}){keep}", url) from None
        os.replace(self.part, output_file)

    def _stream(self, url: str, response, offset: int) -> None:
        from tqdm.auto import tqdm

        if response.status_code != 206:  # the server ignored Range: start again
            offset = 0
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else None
        self.part.parent.mkdir(parents=True, exist_ok=True)
        bar = tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024, leave=True,
                   desc=self.part.name.removesuffix(".part"), file=sys.stderr,
                   disable=None if self.progressbar else True)  # None: shown on a terminal only
        with open(self.part, "ab" if offset else "wb") as out, bar:
            for chunk in response.iter_content(CHUNK):
                out.write(chunk)
                bar.update(len(chunk))
        size = self.part.stat().st_size
        if total is not None and size != total:
            raise DownloadError(f"offline: download of {url} stopped at {size} of {total} bytes; "
                                f"run it again to resume from {self.part}", url)


def _hash_file(archive: Path) -> Path:
    return archive.with_name(archive.name + ".sha256")


def _recorded(archive: Path) -> str | None:
    path = _hash_file(archive)
    if not path.is_file():
        return None
    fields = path.read_text().split()
    return f"sha256:{fields[0]}" if fields else None


@contextlib.contextmanager
def _quiet_pooch():
    """pooch logs every download at INFO; our own lines say the same once."""
    import pooch

    logger = pooch.get_logger()
    level = logger.level
    logger.setLevel("WARNING")
    try:
        yield
    finally:
        logger.setLevel(level)


def _download(name: str, remote: Remote, store: Path, timeout: float, progressbar: bool) -> tuple[Path, str]:
    """The verified archive of ``remote`` in ``store`` (downloaded or resumed when needed) and its SHA-256."""
    import pooch
    import requests

    archive = store / remote.file
    record = _recorded(archive)
    expected = remote.known_hash or record
    downloader = ResumableDownloader(archive.with_name(archive.name + ".part"), timeout, progressbar)
    try:
        store.mkdir(parents=True, exist_ok=True)
        with _quiet_pooch():
            pooch.retrieve(remote.url, known_hash=expected, fname=remote.file, path=store, downloader=downloader)
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as err:
        raise DownloadError(f"offline: could not reach {remote.url} ({type(err).__name__})", remote.url) from None
    except requests.exceptions.RequestException as err:
        raise DownloadError(f"{remote.url}: download failed ({_first_line(err)})", remote.url) from None
    except ValueError as err:  # pooch: the SHA-256 does not match; it has deleted the download already
        what = "published one" if remote.known_hash else f"one recorded in {_hash_file(archive)}"
        fix = (f"if the source really changed, delete {_hash_file(archive)} to accept the new file"
               if not remote.known_hash else "report it: the pinned archive changed")
        raise DownloadError(f"{remote.url}: SHA-256 of the download does not match the {what}, so it was "
                            f"deleted ({_first_line(err)}); run `microrepro fetch {name}` again, or {fix}",
                            remote.url) from None
    except OSError as err:
        raise DataError(f"{store}: cannot write the download cache ({err.strerror or err}); "
                        f"set ${CACHE_ENV} to a writable folder") from None
    digest = pooch.file_hash(str(archive))
    if record is None:
        _hash_file(archive).write_text(f"{digest}  {remote.file}\n")
    return archive, digest


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


# -------------------------------------------------------------------------------------- unpack
def _safe(rel: str, archive: Path) -> PurePosixPath:
    path = PurePosixPath(rel)
    if path.is_absolute() or ".." in path.parts:
        raise DataError(f"{archive}: member {rel!r} would leave the data set folder; the archive is not safe")
    return path


def _top(names: list[str], remote: Remote, archive: Path) -> str:
    if remote.top != "*":
        return remote.top.strip("/")
    tops = {n.split("/", 1)[0] for n in names if n.strip("/")}
    if len(tops) != 1:
        raise DataError(f"{archive}: expected one top folder (<repo>-<commit>/), found {len(tops)}")
    return tops.pop()


def _unpack(name: str, remote: Remote, archive: Path, digest: str, root: Path) -> Path:
    """Unpack ``remote.pick`` of ``archive`` into ``<root>/<name>/`` (renamed into place when complete)."""
    folder = root / name
    marker = archive_dir(name, root) / MARKER
    if folder.exists():
        raise DataError(f"{folder}: already there but not unpacked by microrepro; move it away (or give it with "
                        f"--data-dir) and fetch {name} again")
    staging = root / f".{name}.unpacking"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        with zipfile.ZipFile(archive) as zf:
            members = [m for m in zf.infolist() if not m.filename.startswith("__MACOSX/")]
            top = _top([m.filename for m in members], remote, archive)
            for dest, src in remote.pick:
                prefix = "/".join(p for p in (top, src.strip("/")) if p)
                found = 0
                for member in members:
                    path = member.filename.rstrip("/")
                    if prefix and not (path == prefix or path.startswith(prefix + "/")):
                        continue
                    rel = _safe(path[len(prefix):].lstrip("/"), archive)
                    target = staging / dest / rel if str(rel) != "." else staging / dest
                    if member.is_dir():
                        target.mkdir(parents=True, exist_ok=True)
                        continue
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(member) as fin, open(target, "wb") as fout:
                        shutil.copyfileobj(fin, fout, CHUNK)
                    found += 1
                if not found and dest not in remote.optional:
                    raise DataError(f"{archive}: no {prefix or 'file'} in the archive; expected {remote.layout} "
                                    f"(from {remote.source})")
        staging.mkdir(parents=True, exist_ok=True)
        # The marker goes first and the folder appears in one rename: no moment shows a folder without it.
        marker.write_text(json.dumps({"dataset": name, "source": remote.source, "url": remote.url,
                                      "file": remote.file, "sha256": digest}, indent=1) + "\n")
        try:
            os.replace(staging, folder)
        except OSError:
            marker.unlink(missing_ok=True)
            raise
    except zipfile.BadZipFile:
        archive.unlink(missing_ok=True)
        if remote.known_hash is None:  # the record was taken from this very file: it is worthless
            _hash_file(archive).unlink(missing_ok=True)
        raise DataError(f"{archive}: not a readable zip archive, so it was deleted; run "
                        f"`microrepro fetch {name}` again") from None
    except OSError as err:
        raise DataError(f"{root}: cannot unpack {archive.name} there ({err.strerror or err}); "
                        f"free some space or set ${CACHE_ENV} to another folder") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


# --------------------------------------------------------------------------------------- fetch
def fetch(name: str, cache: str | Path | None = None, timeout: float = DEFAULT_TIMEOUT_S,
          progressbar: bool = True) -> Path | None:
    """Download (once, resumably) and unpack a data set into the cache, returning the loader's folder.

    Args:
        name: a key of ``REGISTRY``.
        cache: cache root (default :func:`cache_dir`); the data set goes to ``<cache>/<name>/``.
        timeout: seconds to wait for the server before giving up (never hangs).
        progressbar: show a tqdm progress bar on a terminal.

    Returns:
        The folder to pass to the loader, or None for a data set without a public URL.

    Raises:
        ValueError: unknown name.
        DownloadError: "offline: could not reach <url> ..." when no source can be reached (or
            ``$MICROREPRO_OFFLINE`` is set), an HTTP error, or a checksum mismatch; one line.
        DataError: the cache cannot be written, or the archive lacks what the loader needs.
    """
    remote = get(name)
    if not remote.automatic:
        return None
    root = Path(cache or cache_dir())
    hit = cached(name, root)
    if hit is not None:
        return hit
    store = archive_dir(name, root)
    first: DownloadError | None = None
    for source in (remote, *remote.mirrors):
        if not source.url:
            continue
        try:
            archive, digest = _download(name, source, store, timeout, progressbar)
        except DownloadError as err:  # the next mirror, if any; the first source's error is reported
            first = first or err
            continue
        return _unpack(name, source, archive, digest, root)
    also = f" (mirrors tried: {', '.join(remote.urls[1:])})" if len(remote.urls) > 1 else ""
    raise DownloadError(f"{first}{also}", remote.url)


def describe(name: str) -> str:
    """One line saying where a data set comes from (URL or how to get it by hand)."""
    remote = get(name)
    how = f"{', '.join(remote.urls)} ({remote.source})" if remote.automatic else f"manual: {remote.source}"
    page = f"; {remote.page}" if remote.page and not remote.automatic else ""
    return f"{name}: {how}{page}{'; ' + remote.note if remote.note else ''}"


def manual_hint(name: str) -> str:
    """What to place by hand for ``name`` (its layout), or "" for a name outside the registry."""
    remote = REGISTRY.get(name)
    return remote.layout if remote else ""
