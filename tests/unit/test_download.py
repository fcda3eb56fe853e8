"""Real data fetched on first use (datasets/download.py), without the internet.

Every registry entry's URL is pointed at an HTTP server on 127.0.0.1 started by the test (Range
requests honoured, every request logged, shut down afterwards). It serves small archives built here
in each source's real layout: a zip whose one top folder is ``<repo>-<commit>/`` holding the folders
the loader wants (plus decoys the registry must leave out), with tiny files in the real formats.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import io
import json
import socket
import threading
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile

from microrepro.common import cli, data_sources
from microrepro.common.errors import DataError
from microrepro.datasets import amibr, download, dsb2018, fnc, spines, stardist_nuclei, vgg_cells


# ---------------------------------------------------------------------------------- the archives
def _png(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", image)
    assert ok
    return data.tobytes()


def _jpg(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".jpg", image)
    assert ok
    return data.tobytes()


def _tif(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array)
    return buffer.getvalue()


def _zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _grey(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 200, (h, w), dtype=np.uint8)


def _discs(h: int, w: int, centres: list[tuple[int, int]], value: int = 255) -> np.ndarray:
    mask = np.zeros((h, w), np.uint8)
    for x, y in centres:
        cv2.circle(mask, (x, y), 4, value, -1)
    return mask


SPINES_HEADER = "filename,width,height,class,xmin,ymin,xmax,ymax\n"


def spines_zip() -> bytes:
    top = "Deep-Learning-for-Dendritic-Spines-Detection-4b0e0c87/"
    return _zip({
        top + "README.md": b"decoy",
        top + "Faster-RCNN/images/train/img1.jpg": _jpg(_grey(30, 40, 1)),
        top + "Faster-RCNN/images/train/img2.jpg": _jpg(_grey(32, 32, 2)),
        top + "Faster-RCNN/images/train_labels.csv": (SPINES_HEADER + "img1.jpg,40,30,dendrite,1,2,15,16\n").encode(),
        top + "SP-CNN/train_labels.csv": (SPINES_HEADER + "img1.jpg,40,30,dendrite,1,2,15,16\n"
                                          "img1.jpg,40,30,dendrite,20,10,34,24\n"
                                          "img2.jpg,32,32,dendrite,8,8,22,22\n").encode(),
        top + "Faster-RCNN/images/test/img3.jpg": _jpg(_grey(30, 30, 3)),
        top + "Faster-RCNN/images/test_labels.csv": (SPINES_HEADER + "img3.jpg,30,30,dendrite,5,5,19,19\n").encode(),
        top + "Faster-RCNN/model.ckpt": b"decoy",
    })


def fnc_zip() -> bytes:
    top = "cell-segmentation-11e7b39a/"
    base = top + "dataset/yellow/sample/"
    image = np.dstack([_grey(40, 48, 4)] * 3)
    return _zip({
        top + "README.md": b"decoy",
        top + "fluocells/model.py": b"decoy",
        base + "images/Mar23bS1C1R4_VLPAGl_200x.png": _png(image),
        base + "masks/Mar23bS1C1R4_VLPAGl_200x.png": _png(_discs(40, 48, [(10, 10), (30, 25)])),
        base + "stats_df.csv": b"img,n\nMar23bS1C1R4_VLPAGl_200x,2\n",
    })


DSB_ID = "0114f484a16c152baa2d82fdd43740880a762c93f436c8988ac461c5c9dbe7d5"


def dsb_zip() -> bytes:
    top = "DSB2018_stage1_test-ee7c37eb/"
    base = f"{top}stage1_test/{DSB_ID}/"
    image = np.dstack([_grey(32, 32, 5) // 8] * 3)
    return _zip({
        top + "README.md": b"decoy",
        top + "run_stage1_decode.py": b"decoy",
        f"{base}images/{DSB_ID}.png": _png(image),
        f"{base}masks/{DSB_ID}_0.png": _png(_discs(32, 32, [(8, 8)])),
        f"{base}masks/{DSB_ID}_1.png": _png(_discs(32, 32, [(22, 20)])),
    })


def amibr_zip() -> bytes:
    top = "AMi-Br-20a217b3/"
    rows = (",slide,dataset,uid,x,y,expert1_label,expert2_label,expert1_atypical,expert2_atypical,"
            "expert3_atypical,majority_atypical\n"
            "0,002.tiff,MIDOG21,6,4422,216,NMF prometaphase,NMF metaphase,False,False,False,False\n"
            "1,002.tiff,MIDOG21,7,4440,230,AMF segregation,AMF segregation,True,True,True,True\n")
    crop = np.dstack([_grey(128, 128, 6)] * 3)
    return _zip({
        top + "README.md": b"decoy",
        top + "images/subclassification.jpg": _jpg(_grey(8, 8)),
        top + "AMI-BR.csv": rows.encode(),
        top + "patches/normal/MIDOG21_6.png": _png(crop),
        top + "patches/atypical/MIDOG21_7.png": _png(crop),
    })


def stardist_zip() -> bytes:
    top = "stardist-650d3a19/"
    labels = np.zeros((64, 64), np.uint16)
    labels[5:15, 5:15], labels[30:40, 40:50] = 1, 2
    return _zip({
        top + "setup.py": b"decoy",
        top + "stardist/data/images/img2d.tif": _tif((labels * 50).astype(np.uint16)),
        top + "stardist/data/images/mask2d.tif": _tif(labels),
        top + "stardist/data/images/histo.jpg": _jpg(_grey(16, 16, 7)),
        top + "stardist/data/images/img3d.tif": _tif(np.zeros((2, 8, 8), np.uint16)),
    })


def _vgg_pair(prefix: str) -> dict[str, bytes]:
    dots = np.zeros((32, 32, 3), np.uint8)
    dots[10, 12] = (0, 0, 255)  # BGR: pure red
    dots[20, 5] = (0, 0, 255)
    return {f"{prefix}001cell.png": _png(np.dstack([_grey(32, 32, 8)] * 3)), f"{prefix}001dots.png": _png(dots)}


def vgg_zip() -> bytes:
    top = "countception-8387c305/"
    return _zip({top + "README.md": b"decoy", top + "MBM_data/BM_GRAZ_HE_0001_01_000.png": b"decoy",
                 **_vgg_pair(top + "cells/")})


ARCHIVES = {
    "spines": spines_zip,
    "fnc_sample": fnc_zip,
    "dsb2018_stage1_test": dsb_zip,
    "mitosis_amibr": amibr_zip,
    "nuclei_stardist": stardist_zip,
    "vgg_cells": vgg_zip,
}


def _check_spines(folder: Path) -> None:
    train = spines.load(folder, "train")
    assert [s.id for s in train] == ["img1", "img2"] and len(train[0].points) == 2  # SP-CNN's complete CSV
    assert [len(s.points) for s in spines.load(folder, "test")] == [1]
    assert not (folder / "model.ckpt").exists() and not (folder / "README.md").exists()


def _check_fnc(folder: Path) -> None:
    samples = fnc.load(folder, "sample")
    assert len(samples) == 1 and len(samples[0].points) == 2


def _check_dsb(folder: Path) -> None:
    samples = dsb2018.load(folder)
    assert [s.id for s in samples] == [DSB_ID] and len(samples[0].points) == 2
    assert not (folder / "stage1_solution.csv").exists()  # optional: absent from this archive


def _check_amibr(folder: Path) -> None:
    samples = amibr.load(folder)
    assert [s.id for s in samples] == ["MIDOG21_6", "MIDOG21_7"] and len(samples[0].points) == 2


def _check_stardist(folder: Path) -> None:
    assert len(stardist_nuclei.load(folder)[0].points) == 2
    assert sorted(p.name for p in folder.iterdir()) == ["histo.jpg", "img2d.tif", "mask2d.tif"]


def _check_vgg(folder: Path) -> None:
    samples = vgg_cells.load(folder)
    assert len(samples) == 1 and len(samples[0].points) == 2


CHECKS = {
    "spines": _check_spines,
    "fnc_sample": _check_fnc,
    "dsb2018_stage1_test": _check_dsb,
    "mitosis_amibr": _check_amibr,
    "nuclei_stardist": _check_stardist,
    "vgg_cells": _check_vgg,
}


# ------------------------------------------------------------------------------------ the server
class Served:
    """Files served on 127.0.0.1: ``files`` by URL path, every request in ``log``; options per test."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.log: list[tuple[str, str | None, int]] = []  # (path, Range header, status)
        self.ranges = True  # honour Range requests
        self.cut_after: int | None = None  # announce the full length but close after this many bytes
        self.port = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}"


def _handler(served: Served):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the http.server API
            body = served.files.get(self.path)
            wanted = self.headers.get("Range")
            if body is None:
                served.log.append((self.path, wanted, 404))
                self.send_error(404)
                return
            start = int(wanted.split("=")[1].split("-")[0]) if wanted and served.ranges else 0
            if start >= len(body) and start:
                served.log.append((self.path, wanted, 416))
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206 if start else 200
            served.log.append((self.path, wanted, status))
            self.send_response(status)
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            self.send_header("Content-Length", str(len(body) - start))
            self.end_headers()
            payload = body[start:]
            if served.cut_after is not None:
                payload = payload[: served.cut_after]
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    return Handler


@pytest.fixture
def served():
    """A Range-aware HTTP server on 127.0.0.1 for one test (daemon thread, shut down afterwards)."""
    state = Served()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def env(tmp_path, monkeypatch):
    """No data folder, an empty cache in tmp_path, downloads allowed (to loopback only: see _no_internet)."""
    (tmp_path / "no_data").mkdir()
    monkeypatch.setenv("MICROREPRO_DATA", str(tmp_path / "no_data"))
    monkeypatch.setenv("MICROREPRO_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MICROREPRO_OFFLINE", raising=False)
    return tmp_path


@pytest.fixture(autouse=True)
def _no_internet(monkeypatch):
    """Any request to a host other than 127.0.0.1 fails the test: the real URLs are never tried."""
    import requests

    real = requests.Session.request

    def guarded(self, method, url, *args, **kwargs):
        assert url.startswith("http://127.0.0.1:"), f"a test tried the network: {url}"
        return real(self, method, url, *args, **kwargs)

    monkeypatch.setattr(requests.Session, "request", guarded)


def _serve(served: Served, monkeypatch, name: str, data: bytes | None = None, **changes) -> str:
    """Serve ``name``'s archive and point its registry entry at it (no mirrors); returns the URL."""
    remote = download.REGISTRY[name]
    served.files[f"/{remote.file}"] = ARCHIVES[name]() if data is None else data
    url = served.url(remote.file)
    monkeypatch.setitem(download.REGISTRY, name, dataclasses.replace(remote, url=url, **{"mirrors": (), **changes}))
    return url


def _nothing_half_written(cache: Path, name: str) -> None:
    store = download.archive_dir(name, cache)
    leftovers = [p.name for p in store.glob("*.part")] + [p.name for p in cache.glob(".*.unpacking")]
    assert not leftovers, leftovers
    if (cache / name).exists():
        assert (store / download.MARKER).is_file()


# ------------------------------------------------------------------------------------- the tests
def test_registry_pins_every_public_data_set():
    for name in ARCHIVES:
        remote = download.REGISTRY[name]
        commit = remote.source.split("@")[1]
        assert remote.url == f"https://github.com/{remote.source.split('@')[0]}/archive/{commit}.zip"
        assert remote.licence and remote.citation and remote.layout and remote.used_by
        assert remote.known_hash is None and "first download" in remote.checksum  # trust on first use, said so
    assert download.REGISTRY["vgg_cells"].urls[1].endswith("robots.ox.ac.uk/~vgg/research/counting/cells.zip")
    assert not download.REGISTRY["fnc"].automatic and "amsacta.unibo.it" in download.REGISTRY["fnc"].page
    assert download.fetch("mitos2012") is None  # registration only: placed by hand
    with pytest.raises(ValueError, match="unknown data set"):
        download.fetch("nope")


@pytest.mark.parametrize("name", sorted(ARCHIVES))
def test_each_data_set_is_downloaded_unpacked_and_read_by_its_loader(name, env, served, monkeypatch):
    _serve(served, monkeypatch, name)
    cache = env / "cache"
    folder = download.fetch(name, cache=cache, timeout=5)
    assert folder == cache / name
    CHECKS[name](folder)
    archive = download.archive_dir(name, cache) / download.REGISTRY[name].file
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    assert (archive.parent / f"{archive.name}.sha256").read_text().split()[0] == digest  # recorded on first use
    assert json.loads((archive.parent / download.MARKER).read_text())["sha256"] == digest
    _nothing_half_written(cache, name)


def test_a_second_fetch_uses_the_cache_without_the_network(env, served, monkeypatch):
    _serve(served, monkeypatch, "spines")
    first = download.fetch("spines", timeout=5)
    requests_made = len(served.log)
    served.files.clear()  # the server has nothing any more: a request would fail
    assert download.fetch("spines", timeout=5) == first == download.cached("spines")
    assert len(served.log) == requests_made
    import shutil

    shutil.rmtree(first)  # the unpacked folder gone: unpacked again from the kept, checked archive
    assert download.fetch("spines", timeout=5) == first and len(served.log) == requests_made
    _check_spines(first)


def test_a_checksum_mismatch_deletes_the_download_and_says_so(env, served, monkeypatch):
    url = _serve(served, monkeypatch, "nuclei_stardist", known_hash="sha256:" + "0" * 64)
    cache = env / "cache"
    with pytest.raises(download.DownloadError) as info:
        download.fetch("nuclei_stardist", cache=cache, timeout=5)
    message = str(info.value)
    assert "\n" not in message and url in message and "does not match the published" in message
    store = download.archive_dir("nuclei_stardist", cache)
    assert not (store / download.REGISTRY["nuclei_stardist"].file).exists() and not (cache / "nuclei_stardist").exists()
    assert download.cached("nuclei_stardist", cache) is None
    _nothing_half_written(cache, "nuclei_stardist")


def test_a_changed_source_is_refused_against_the_recorded_hash(env, served, monkeypatch):
    _serve(served, monkeypatch, "vgg_cells")
    cache = env / "cache"
    folder = download.fetch("vgg_cells", cache=cache, timeout=5)
    store = download.archive_dir("vgg_cells", cache)
    archive = store / download.REGISTRY["vgg_cells"].file
    import shutil

    shutil.rmtree(folder)
    archive.unlink()
    served.files[f"/{archive.name}"] = _zip({"countception-8387c305/cells/other.txt": b"changed upstream"})
    with pytest.raises(download.DownloadError, match=r"does not match the one recorded in .*vgg_cells.*\.sha256"):
        download.fetch("vgg_cells", cache=cache, timeout=5)
    assert not archive.exists() and not folder.exists()
    _nothing_half_written(cache, "vgg_cells")


def test_a_partial_download_is_resumed_with_a_range_request(env, served, monkeypatch):
    _serve(served, monkeypatch, "mitosis_amibr")
    remote = download.REGISTRY["mitosis_amibr"]
    data = served.files[f"/{remote.file}"]
    cache = env / "cache"
    store = download.archive_dir("mitosis_amibr", cache)
    store.mkdir(parents=True)
    half = len(data) // 2
    (store / f"{remote.file}.part").write_bytes(data[:half])
    folder = download.fetch("mitosis_amibr", cache=cache, timeout=5)
    assert served.log == [(f"/{remote.file}", f"bytes={half}-", 206)]  # only the rest was asked for
    assert (store / remote.file).read_bytes() == data
    _check_amibr(folder)
    _nothing_half_written(cache, "mitosis_amibr")


def test_an_interrupted_download_is_kept_and_continued_by_the_next_fetch(env, served, monkeypatch):
    # a decoy beside dataset/ makes the archive span several of the downloader's 64 KiB chunks
    with zipfile.ZipFile(io.BytesIO(fnc_zip())) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    files["cell-segmentation-11e7b39a/weights.bin"] = np.random.default_rng(0).bytes(300_000)
    _serve(served, monkeypatch, "fnc_sample", _zip(files))
    remote = download.REGISTRY["fnc_sample"]
    data = served.files[f"/{remote.file}"]
    cache = env / "cache"
    served.cut_after = len(data) // 2
    with pytest.raises(download.DownloadError, match="run it again to resume") as info:
        download.fetch("fnc_sample", cache=cache, timeout=5)
    assert "\n" not in str(info.value)
    part = download.archive_dir("fnc_sample", cache) / f"{remote.file}.part"
    kept = part.stat().st_size
    assert 0 < kept <= len(data) // 2 and not (cache / "fnc_sample").exists()
    assert part.read_bytes() == data[:kept]
    served.cut_after = None
    folder = download.fetch("fnc_sample", cache=cache, timeout=5)
    assert served.log[-1] == (f"/{remote.file}", f"bytes={kept}-", 206)
    _check_fnc(folder)
    _nothing_half_written(cache, "fnc_sample")


def test_a_server_that_ignores_range_sends_it_all_again(env, served, monkeypatch):
    _serve(served, monkeypatch, "spines")
    remote = download.REGISTRY["spines"]
    store = download.archive_dir("spines", env / "cache")
    store.mkdir(parents=True)
    (store / f"{remote.file}.part").write_bytes(b"stale bytes of another try")
    served.ranges = False
    _check_spines(download.fetch("spines", timeout=5))


def test_offline_reproduce_is_one_line_naming_url_folder_and_synthetic(env, monkeypatch, capsys):
    url = f"http://127.0.0.1:{_closed_port()}/Deep-Learning-for-Dendritic-Spines-Detection-4b0e0c87.zip"
    monkeypatch.setitem(download.REGISTRY, "spines", dataclasses.replace(download.REGISTRY["spines"], url=url))
    out = env / "run"
    code = cli.main(["reproduce", "spines", "--schedule", "smoke", "--out", str(out)])
    err = capsys.readouterr().err.splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: spines: ")
    for text in (url, "offline", str(env / "no_data" / "spines"), "train_labels.csv", "--data-dir", "--synthetic"):
        assert text in err[0], text
    assert not out.exists() and not (env / "cache" / "spines").exists()


def test_offline_switch_never_touches_the_network(env, monkeypatch):
    monkeypatch.setenv("MICROREPRO_OFFLINE", "1")
    remote = download.REGISTRY["dsb2018_stage1_test"]  # the real GitHub URL: refused before any request
    with pytest.raises(DataError) as info:
        data_sources.resolve("dsb2018_stage1_test", fetch=lambda: download.fetch("dsb2018_stage1_test"))
    message = str(info.value)
    assert remote.url in message and "MICROREPRO_OFFLINE" in message and "--synthetic" in message
    assert "\n" not in message


def test_synthetic_only_when_asked_or_without_a_public_source(env):
    assert data_sources.resolve("spines", synthetic=True).how == "synthetic generator (--synthetic)"
    with pytest.raises(DataError, match="give one of them"):
        data_sources.resolve("spines", env, synthetic=True)
    no_source = data_sources.resolve("fixture_discs", fetch=lambda: None)
    assert no_source.path is None and "no public source" in no_source.how


def test_reproduce_downloads_before_any_synthetic_fallback(env, served, monkeypatch):
    from microrepro.common.registry import get_task

    _serve(served, monkeypatch, "spines")
    task = get_task("spines")
    data = data_sources.resolve(task.dataset, fetch=task.fetch)
    assert data.path == env / "cache" / "spines" and data.how == "download cache"


def test_a_paper_fetches_the_data_sets_it_reads_beside_its_own(env, served, monkeypatch):
    for name in ("dsb2018_stage1_test", "nuclei_stardist", "vgg_cells"):
        _serve(served, monkeypatch, name)
    from microrepro.common.registry import get_task

    folder = get_task("fcn_segmentation").fetch()
    assert folder == env / "cache" / "dsb2018_stage1_test"
    _check_stardist(folder.parent / "nuclei_stardist")  # where fcn_segmentation looks: beside it
    _check_vgg(folder.parent / "vgg_cells")


def test_a_mirror_is_used_when_the_pinned_source_is_unreachable(env, served, monkeypatch):
    remote = download.REGISTRY["vgg_cells"]
    served.files["/cells.zip"] = _zip(_vgg_pair("cells/"))
    mirror = dataclasses.replace(remote.mirrors[0], url=served.url("cells.zip"))
    dead = f"http://127.0.0.1:{_closed_port()}/{remote.file}"
    monkeypatch.setitem(download.REGISTRY, "vgg_cells", dataclasses.replace(remote, url=dead, mirrors=(mirror,)))
    _check_vgg(download.fetch("vgg_cells", timeout=5))


def test_a_folder_not_unpacked_by_us_is_never_replaced(env, served, monkeypatch):
    _serve(served, monkeypatch, "nuclei_stardist")
    mine = env / "cache" / "nuclei_stardist"
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="not unpacked by microrepro"):
        download.fetch("nuclei_stardist", timeout=5)
    assert (mine / "notes.txt").read_text() == "keep me"


def test_fetch_command_all_then_again_from_the_cache(env, served, monkeypatch, capsys):
    for name in ARCHIVES:
        _serve(served, monkeypatch, name)
    assert cli.main(["fetch", "all"]) == 0
    out = capsys.readouterr().out
    for name in ARCHIVES:
        assert f"[fetch] {name}: {env / 'cache' / name} (downloaded;" in out
    assert "[fetch] fnc: no automatic download" in out and "amsacta.unibo.it" in out
    made = len(served.log)
    assert cli.main(["fetch", "spines", "vgg_cells"]) == 0
    assert out.count("downloaded") == len(ARCHIVES) and "already in the cache" in capsys.readouterr().out
    assert len(served.log) == made
    assert cli.main(["list"]) == 0
    assert f"spines -> {env / 'cache' / 'spines'} (download cache)" in capsys.readouterr().out


def test_fetch_command_errors_are_one_line(env, monkeypatch, capsys):
    dead = f"http://127.0.0.1:{_closed_port()}/x.zip"
    monkeypatch.setitem(download.REGISTRY, "spines", dataclasses.replace(download.REGISTRY["spines"], url=dead))
    for argv, expect in ((["fetch", "nope"], "unknown data set 'nope'"),
                         (["fetch", "mitos2012"], "no automatic download"),
                         (["fetch", "spines"], dead)):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and expect in err[0], err


def test_fetch_leaves_a_data_set_found_in_the_data_folder_alone(env, served, monkeypatch, capsys):
    (env / "no_data" / "spines").mkdir()
    _serve(served, monkeypatch, "spines")
    assert cli.main(["fetch", "spines"]) == 0
    assert "used from there" in capsys.readouterr().out and not served.log
    assert cli.main(["fetch", "spines", "--force"]) == 0
    assert (env / "cache" / "spines" / "train_labels.csv").is_file()
