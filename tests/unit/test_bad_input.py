"""The bad-input catalogue: every mistake a user can make on the command line is answered in one line.

Each case drives ``microrepro.common.cli.main`` in-process and checks that the command

- exits with code 2,
- prints exactly one line on stderr, starting with ``error:`` and naming the file or option at fault,
- prints no traceback,
- writes and overwrites nothing: every file under the test's folder (input images, data, the run
  folder, published summaries, output folders) has the same content before and after, and no file
  or folder appears.

Cases that need a trained run share one tiny fcn_segmentation smoke run (built once per session,
~20-40 s on a 2-core CPU) that each test links into its own folder (hard links: nothing is copied).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import tifffile

from microrepro.common import cli
from microrepro.common.imageio import write_image

PAPER = "fcn_segmentation"  # ported to the shared predict and fast to train (smoke schedule)


# ------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """One smoke-trained fcn_segmentation run folder (synthetic data), shared read-only by the tests."""
    root = tmp_path_factory.mktemp("trained")
    (root / "no_data").mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MICROREPRO_DATA", str(root / "no_data"))
        mp.setenv("MICROREPRO_RUNS", str(root / "runs"))
        mp.setenv("MICROREPRO_RESULTS", str(root / "results"))
        assert cli.main(["reproduce", PAPER, "--schedule", "smoke", "--synthetic", "--out", str(root / "run")]) == 0
    for board in (root / "run").rglob("tensorboard"):
        shutil.rmtree(board)  # not needed here; fewer files to link and check
    return root / "run"


_HASHES: dict[tuple, str] = {}


def _digest(path: Path) -> str:
    stat = path.stat()
    key = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
    if key not in _HASHES:
        _HASHES[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return _HASHES[key]


def snapshot(root: Path) -> dict[str, str]:
    """``{relative path: sha256 or 'dir'}`` of everything under ``root``."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        out[rel] = "dir" if path.is_dir() else _digest(path)
    return out


def _grey(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (height, width), dtype=np.uint8)


class World:
    """A test's folder: images, an empty data root, results, and (on demand) a trained run."""

    def __init__(self, root: Path, trained: Path):
        self.root = root
        self.trained = trained
        self.images = root / "images"
        write_image(self.images / "a.png", _grey(64, 64, 1))
        write_image(self.images / "b.png", _grey(48, 80, 2))
        (root / "no_data").mkdir()
        self.results = root / "results"
        self._read_only: list[Path] = []
        self.shipped_summary()  # every case also checks that a shipped result is left alone

    @property
    def run(self) -> Path:
        """A trained run folder of this test (hard links to the session's run: nothing copied)."""
        target = self.root / "run"
        if not target.exists():
            shutil.copytree(self.trained, target, copy_function=os.link)
        return target

    def file(self, rel: str, content: bytes | str) -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            path.unlink()  # a hard link: never write through it into the session's run
        if isinstance(content, str):
            path.write_text(content)
        else:
            path.write_bytes(content)
        return path

    def folder(self, rel: str) -> Path:
        path = self.root / rel
        path.mkdir(parents=True, exist_ok=True)
        return path

    def read_only(self, folder: Path) -> Path:
        """Make ``folder`` unwritable (mode 555; immutable too when running as root), or skip."""
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o555)
        self._read_only.append(folder)
        if os.access(folder, os.W_OK) and shutil.which("chattr"):
            subprocess.run(["chattr", "+i", str(folder)], capture_output=True)
        if os.access(folder, os.W_OK):
            pytest.skip("cannot make a folder read-only here (root without chattr)")
        return folder

    def undo(self) -> None:
        for folder in self._read_only:
            if shutil.which("chattr"):
                subprocess.run(["chattr", "-i", str(folder)], capture_output=True)
            folder.chmod(0o755)

    def shipped_summary(self) -> Path:
        """A published summary with the run's name, as a shipped result would be."""
        name = self.trained.name
        return self.file(f"results/runs/{PAPER}/{name}.json",
                         json.dumps({"provenance": {"paper": PAPER, "run": name, "schedule": "short"}, "metrics": {}}))

    def spines_data(self, rows: str, images: dict[str, tuple[int, int]] | None = None) -> Path:
        """A spines-layout folder (train/ + train_labels.csv) with ``rows`` under the header."""
        root = self.folder("spines_data")
        for name, (w, h) in (images or {"img1.jpg": (40, 30), "img2.jpg": (32, 32)}).items():
            write_image(root / "train" / name, _grey(h, w))
        self.file("spines_data/train_labels.csv", "filename,width,height,class,xmin,ymin,xmax,ymax\n" + rows)
        return root


@pytest.fixture
def world(tmp_path, trained_run, monkeypatch) -> World:
    monkeypatch.setenv("MICROREPRO_DATA", str(tmp_path / "no_data"))
    monkeypatch.chdir(tmp_path)
    made = World(tmp_path, trained_run)
    yield made
    made.undo()


# ---------------------------------------------------------------------------------- the cases
@dataclass
class Case:
    """One bad input: ``argv(world)`` sets the scene and returns the command line."""

    id: str
    argv: Callable[[World], list[str]]
    expect: tuple[str, ...]  # substrings of the one error line (the file / option and what is wrong)


def _pred(w: World, *extra: str, images: tuple[str, ...] | None = None) -> list[str]:
    paths = [str(w.images / "a.png")] if images is None else list(images)
    return ["predict", str(w.run), *paths, "--out", str(w.root / "out"), *extra]


def _corrupt(w: World, rel: str, content: bytes | str = "{not json") -> Path:
    w.run  # noqa: B018 - link the run first
    return w.file(f"run/{rel}", content)


def _zstack(w: World) -> Path:
    path = w.root / "stack.tif"
    tifffile.imwrite(path, np.stack([_grey(32, 32, i) for i in range(5)]))
    return path


REP = ["reproduce", "cell_counting", "--schedule", "smoke"]

CASES = [
    # -- papers, presets, schedules, config values
    Case("unknown paper", lambda w: ["reproduce", "nope"], ("unknown paper 'nope'", "cell_counting")),
    Case("no paper", lambda w: ["reproduce"], ("no paper given", "spines")),
    Case("unknown preset", lambda w: [*REP, "--preset", "nope"], ("nope",)),
    Case("unknown schedule", lambda w: ["reproduce", "cell_counting", "--schedule", "nope"], ("nope",)),
    Case("unknown --set key", lambda w: [*REP, "--set", "train.nope=1"], ("train.nope",)),
    Case("--set without =", lambda w: [*REP, "--set", "train.lr"], ("--set", "key=value", "train.lr")),
    Case("batch size -1", lambda w: [*REP, "--set", "train.batch_size=-1"], ("batch_size", "-1")),
    Case("crop size 0", lambda w: [*REP, "--set", "data.crop_size=0"], ("crop_size", "0")),
    Case("val_fraction 1.5", lambda w: [*REP, "--set", "data.val_fraction=1.5"], ("val_fraction", "1.5")),
    Case("learning rate not a number", lambda w: [*REP, "--set", "train.lr=fast"], ("lr", "fast")),
    Case("--set name=../../x", lambda w: [*REP, "--set", "name=../../x"], ("name", "../../x", "folder name")),
    Case("--set name=a/b", lambda w: [*REP, "--set", "name=a/b"], ("name", "a/b")),
    # -- run folders
    Case("existing --out without --resume",
         lambda w: ["reproduce", PAPER, "--schedule", "smoke", "--out", str(w.run)],
         (str(Path("run")), "already holds a finished run", "--resume")),
    Case("--out holds other files", lambda w: (w.file("mine/notes.txt", "keep me"),
                                              [*REP, "--out", str(w.root / "mine")])[1],
         ("mine", "holds no run")),
    Case("--out is a file", lambda w: (w.file("afile", "x"), [*REP, "--out", str(w.root / "afile")])[1],
         ("afile", "is a file")),
    Case("resume of a missing folder", lambda w: [*REP, "--resume", "--out", str(w.root / "nowhere")],
         ("nowhere", "drop --resume")),
    Case("resume of an empty folder", lambda w: [*REP, "--resume", "--out", str(w.folder("empty"))],
         ("empty", "drop --resume")),
    Case("resume of a non-run folder", lambda w: (w.file("mine/notes.txt", "x"),
                                                 [*REP, "--resume", "--out", str(w.root / "mine")])[1],
         ("mine", "no config.json", "drop --resume")),
    Case("resume with another config",
         lambda w: ["reproduce", PAPER, "--schedule", "smoke", "--resume", "--out", str(w.run),
                    "--set", "finetune.split_seed=5"], ("run", "different config")),
    Case("resume with another seed",
         lambda w: ["reproduce", PAPER, "--schedule", "smoke", "--resume", "--out", str(w.run), "--seed", "3"],
         ("run", "--seed 0, not 3")),
    Case("read-only --out", lambda w: [*REP, "--out", str(w.read_only(w.root / "ro") / "run")],
         ("--out", "ro", "not writable")),
    Case("missing --data-dir", lambda w: [*REP, "--data-dir", str(w.root / "no_such_data")],
         ("--data-dir", "no_such_data", "no such folder")),
    Case("--data-dir is a file", lambda w: [*REP, "--data-dir", str(w.file("data.zip", "x"))],
         ("--data-dir", "data.zip", "is a file")),
    Case("resume with corrupt config.json",
         lambda w: (_corrupt(w, "config.json"),
                    ["reproduce", PAPER, "--schedule", "smoke", "--resume", "--out", str(w.run)])[1],
         ("config.json", "corrupt JSON")),
    Case("resume with corrupt weights",
         lambda w: (_corrupt(w, "train/fcrn_a_finetuned/backup/latest.weights.h5", b"garbage"),
                    ["reproduce", PAPER, "--schedule", "smoke", "--resume", "--out", str(w.run)])[1],
         ("latest.weights.h5", "corrupt weights")),
    # -- data a loader refuses (spines layout, through the spines reproduction)
    Case("malformed labels CSV",
         lambda w: ["reproduce", "spines", "--schedule", "smoke", "--out", str(w.root / "r"),
                    "--data-dir", str(w.spines_data("img1.jpg,40,30,dendrite,ten,20,24,34\n"))],
         ("train_labels.csv", "line 2", "xmin")),
    Case("CSV path escaping its folder",
         lambda w: ["reproduce", "spines", "--schedule", "smoke", "--out", str(w.root / "r"),
                    "--data-dir", str(w.spines_data("../../x.jpg,40,30,dendrite,1,2,15,16\n"))],
         ("train_labels.csv", "line 2", "../../x.jpg", "outside")),
    Case("negative label box",
         lambda w: ["reproduce", "spines", "--schedule", "smoke", "--out", str(w.root / "r"),
                    "--data-dir", str(w.spines_data("img1.jpg,40,30,dendrite,-30,-20,-16,-6\n"))],
         ("train_labels.csv", "line 2", "outside")),
    Case("label CSV size differs from the image",
         lambda w: ["reproduce", "spines", "--schedule", "smoke", "--out", str(w.root / "r"),
                    "--data-dir", str(w.spines_data("img1.jpg,400,300,dendrite,1,2,15,16\n"))],
         ("train_labels.csv", "img1.jpg", "40x30")),
    # -- evaluate
    Case("evaluate a missing run", lambda w: ["evaluate", str(w.root / "no_run")], ("no_run", "not a run folder")),
    Case("evaluate a non-run folder", lambda w: ["evaluate", str(w.images)], ("images", "not a run folder")),
    Case("evaluate: corrupt provenance.json", lambda w: (_corrupt(w, "provenance.json"),
                                                        ["evaluate", str(w.run)])[1],
         ("provenance.json", "corrupt JSON")),
    Case("evaluate: corrupt metrics.json", lambda w: (_corrupt(w, "metrics.json", "[1, 2"),
                                                     ["evaluate", str(w.run)])[1],
         ("metrics.json", "corrupt JSON")),
    Case("evaluate: corrupt weights", lambda w: (_corrupt(w, "train/fcrn_a_finetuned/best.weights.h5", b"\x89HDF"),
                                                ["evaluate", str(w.run)])[1],
         ("best.weights.h5", "corrupt weights")),
    Case("evaluate: truncated weights",
         lambda w: (_corrupt(w, "train/fcrn_a_finetuned/last.weights.h5",
                             (w.trained / "train/fcrn_a_finetuned/last.weights.h5").read_bytes()[:4096]),
                    ["evaluate", str(w.run)])[1],
         ("last.weights.h5", "corrupt weights")),
    Case("evaluate: corrupt thresholds.json", lambda w: (_corrupt(w, "thresholds.json", "{"),
                                                        ["evaluate", str(w.run)])[1],
         ("thresholds.json", "corrupt JSON")),
    Case("resume: corrupt training state",
         lambda w: (_corrupt(w, "train/fcrn_a_finetuned/backup/training_metadata.json", "{"),
                    ["reproduce", PAPER, "--schedule", "smoke", "--resume", "--out", str(w.run)])[1],
         ("training_metadata.json", "corrupt JSON")),
    Case("evaluate a read-only run", lambda w: ["evaluate", str(w.read_only(w.run))], ("run folder", "not writable")),
    Case("evaluate: missing --data-dir", lambda w: ["evaluate", str(w.run), "--data-dir", str(w.root / "nope")],
         ("--data-dir", "nope", "no such folder")),
    # -- predict
    Case("predict on a missing run", lambda w: ["predict", str(w.root / "no_run"), str(w.images / "a.png")],
         ("no_run", "not a run folder")),
    Case("predict: missing image", lambda w: _pred(w, images=(str(w.images / "zzz.png"),)),
         ("zzz.png", "no such image")),
    Case("predict: empty image folder", lambda w: _pred(w, images=(str(w.folder("empty_images")),)),
         ("empty_images", "no image files")),
    Case("predict: not an image file name", lambda w: _pred(w, images=(str(w.file("notes.txt", "x")),)),
         ("notes.txt", "not an image")),
    Case("predict: text file named .png", lambda w: _pred(w, images=(str(w.file("fake.png", "hello")),)),
         ("fake.png", "unreadable image")),
    Case("predict: corrupt image file",
         lambda w: _pred(w, images=(str(w.file("broken.png", (w.images / "a.png").read_bytes()[:60])),)),
         ("broken.png",)),
    Case("predict: 1x1 image", lambda w: (write_image(w.root / "tiny.png", _grey(1, 1)),
                                         _pred(w, images=(str(w.root / "tiny.png"),)))[1],
         ("tiny.png", "1x1", "smaller")),
    Case("predict: z-stack without --plane", lambda w: _pred(w, images=(str(_zstack(w)),)),
         ("stack.tif", "5 planes", "--plane")),
    Case("predict: --plane out of range", lambda w: _pred(w, "--plane", "7", images=(str(_zstack(w)),)),
         ("stack.tif", "--plane 7", "0..4")),
    Case("predict: --plane -1", lambda w: _pred(w, "--plane", "-1", images=(str(_zstack(w)),)),
         ("--plane -1",)),
    Case("predict: --plane on a flat image", lambda w: _pred(w, "--plane", "2"), ("a.png", "--plane 2")),
    Case("predict: --threshold 5", lambda w: _pred(w, "--threshold", "5"), ("--threshold 5", "outside")),
    Case("predict: --threshold -1", lambda w: _pred(w, "--threshold", "-1"), ("--threshold -1", "outside")),
    Case("predict: --threshold nan", lambda w: _pred(w, "--threshold", "nan"), ("--threshold nan",)),
    Case("predict: unknown --model", lambda w: _pred(w, "--model", "nope"), ("nope", "fcrn_a")),
    Case("predict: non-empty --out", lambda w: (w.file("out/old.csv", "mine"), _pred(w))[1],
         ("--out", "out", "not empty", "--overwrite")),
    Case("predict: --out is a file", lambda w: (w.file("out", "x"), _pred(w))[1], ("--out", "out", "is a file")),
    Case("predict: read-only --out", lambda w: (w.read_only(w.root / "out"), _pred(w))[1],
         ("--out", "out", "not writable")),
    Case("predict: an output would overwrite an input",
         lambda w: (write_image(w.images / "a_overlay.png", _grey(16, 16)),
                    ["predict", str(w.run), str(w.images), "--out", str(w.images), "--overwrite"])[1],
         ("--out", "a_overlay.png", "overwrite the input")),
    Case("predict: same file twice", lambda w: _pred(w, images=(str(w.images / "a.png"), str(w.images / "a.png"))),
         ("a.png", "more than once")),
    Case("predict: same file through a folder and by name",
         lambda w: _pred(w, images=(str(w.images), str(w.images / "b.png"))), ("b.png", "more than once")),
    Case("predict: corrupt provenance.json", lambda w: (_corrupt(w, "provenance.json", "\x00\x01"), _pred(w))[1],
         ("provenance.json", "corrupt JSON")),
    Case("predict: corrupt weights", lambda w: (_corrupt(w, "train/fcrn_a_finetuned/best.weights.h5", b""),
                                               _pred(w))[1], ("best.weights.h5", "corrupt weights")),
    # -- preview, bench, results
    Case("preview nope", lambda w: ["preview", "nope"], ("unknown generator 'nope'", "simcep")),
    Case("preview -n -3", lambda w: ["preview", "simcep", "-n", "-3"], ("-n -3",)),
    Case("preview -n 0", lambda w: ["preview", "simcep", "-n", "0"], ("-n 0",)),
    Case("preview: --out is a folder", lambda w: ["preview", "simcep", "--out", str(w.folder("pv"))],
         ("--out", "pv", "is a folder")),
    Case("preview: --out not an image name", lambda w: ["preview", "simcep", "--out", str(w.root / "pv.txt")],
         ("--out", "pv.txt")),
    Case("preview: read-only --out",
         lambda w: ["preview", "simcep", "--out", str(w.read_only(w.root / "ro") / "p.png")],
         ("--out", "not writable")),
    Case("bench nope", lambda w: (w.file("results/benchmarks.md", "old table\n"), ["bench", "nope"])[1],
         ("unknown paper 'nope'",)),
    Case("bench --repeats 0", lambda w: ["bench", "cell_counting", "--repeats", "0"], ("--repeats 0",)),
    Case("results nope", lambda w: ["results", "nope"], ("unknown paper 'nope'",)),
    Case("results: corrupt summary", lambda w: (w.file(f"results/runs/{PAPER}/x.json", "{"), ["results", PAPER])[1],
         ("x.json", "corrupt JSON")),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_and_writes_nothing(case, world, capsys):
    argv = case.argv(world)
    before = snapshot(world.root)
    capsys.readouterr()
    code = cli.main(argv)
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert code == 2, f"exit {code}\nstdout: {out}\nstderr: {err}"
    assert "Traceback" not in out + err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for text in case.expect:
        assert text in lines[0], f"{text!r} not in {lines[0]!r}"
    assert snapshot(world.root) == before, "something was written or changed"


def test_the_catalogue_is_long_enough():
    assert len(CASES) >= 40


# ------------------------------------------------------------------------- nothing lost on success
def test_evaluating_another_run_of_a_shipped_name_publishes_beside_it(world, capsys):
    """A run folder named like a shipped result never replaces that result's summary."""
    prov_path = world.run / "provenance.json"
    prov = json.loads(prov_path.read_text())
    world.file("run/provenance.json", json.dumps(prov | {"schedule": "short"}))  # publishable
    shipped = world.shipped_summary()
    before = shipped.read_text()
    assert cli.main(["evaluate", str(world.run), "--synthetic"]) == 0
    assert shipped.read_text() == before
    beside = shipped.with_name(f"{world.run.name}-{prov['run_id']}.json")
    assert beside.is_file() and "beside it" in capsys.readouterr().out
    first = beside.read_text()
    assert cli.main(["evaluate", str(world.run), "--synthetic"]) == 0  # the same run again: updates its own summary
    assert sorted(p.name for p in shipped.parent.glob("*.json")) == sorted([shipped.name, beside.name])
    assert json.loads(beside.read_text())["provenance"]["run_id"] == json.loads(first)["provenance"]["run_id"]
