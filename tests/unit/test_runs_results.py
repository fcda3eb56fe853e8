"""Run folders never overwrite silently; tables are rendered from published.yaml + run summaries."""

import json
from dataclasses import dataclass

import pytest

from microrepro.common import results, runs
from microrepro.common.errors import UserError


@dataclass
class Cfg:
    name: str = "toy"
    lr: float = 0.1


def _published(root):
    folder = root / "reproductions" / "toy"
    folder.mkdir(parents=True)
    (folder / "published.yaml").write_text(
        """
paper: "A. Author, Toy paper, 2020"
tables:
  - id: table1
    caption: "Table 1: toy detection"
    rows:
      - {model: net, metric: f1, published: 0.9, source: "Table 1"}
      - {model: net, metric: ms_per_image, published: 29, source: "Table 1", hardware: "GTX 650"}
      - {model: other, metric: f1, published: 0.5, source: "Table 1"}
notes: ["F1 is 0.9 in the table"]
"""
    )


def test_run_folder_refuses_overwrite_and_resumes(tmp_path):
    run = runs.Run.create("toy", Cfg(), "paper", "short", 0, out=tmp_path / "run")
    run.add_metrics("net", "val", {"f1": 0.5}, runs.DataInfo("real", "toyset", 3, "abc"))
    with pytest.raises(UserError, match="already holds a run"):
        runs.Run.create("toy", Cfg(), "paper", "short", 0, out=tmp_path / "run")
    again = runs.Run.create("toy", Cfg(), "paper", "short", 0, out=tmp_path / "run", resume=True)
    assert again.metrics == {"net": {"val": {"f1": 0.5}}}
    with pytest.raises(UserError, match="different config"):
        runs.Run.create("toy", Cfg(lr=1.0), "paper", "short", 0, out=tmp_path / "run", resume=True)
    prov = json.loads((tmp_path / "run" / "provenance.json").read_text())
    assert prov["splits"]["val"]["kind"] == "real"
    assert prov["backend"] in ("tensorflow", "jax", "torch")
    assert prov["config_hash"] and prov["commit"]


def test_table_has_published_beside_reproduced_with_data_and_delta(tmp_path, monkeypatch):
    _published(tmp_path)
    monkeypatch.setattr(results, "REPO_ROOT", tmp_path)
    out_root = tmp_path / "results"
    run = runs.Run.create("toy", Cfg(), "paper", "short", 0, out=tmp_path / "runs" / "r1")
    run.add_metrics("net", "synthetic_test", {"f1": 0.8, "ms_per_image": 12.5, "f1_released": 0.85},
                    runs.DataInfo("synthetic", "toy generator", 20))
    run.figure_path("curve").write_bytes(b"\x89PNG fake")
    run.publish(out_root)
    smoke = runs.Run.create("toy", Cfg(), "paper", "smoke", 0, out=tmp_path / "runs" / "r2")
    smoke.add_metrics("net", "val", {"f1": 0.1})
    smoke.publish(out_root)  # smoke runs never reach the table
    text = results.render("toy", out_root).read_text()
    assert "| net | f1 | 0.900 | 0.800 | -0.100 | synthetic_test — **synthetic**: toy generator, 20 img | paper/short (shortened schedule) | Table 1 |" in text
    assert "| other | f1 | 0.500 | not run |" in text
    assert "29.000 (GTX 650)" in text or "29 (GTX 650)" in text
    assert "f1_released" in text.split("Further measurements")[1]
    assert "| net | f1 | 0.900 | 0.100 |" not in text and "smoke" not in text
    assert "![curve](toy/r1/curve.png)" in text
    assert "F1 is 0.9 in the table" in text


def test_missing_published_file_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(results, "REPO_ROOT", tmp_path)
    with pytest.raises(UserError, match="published.yaml: missing"):
        results.render("toy", tmp_path)


def test_git_commit_is_dirty_for_an_untracked_module(tmp_path):
    import subprocess

    from microrepro.common.runs import git_commit

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "--allow-empty", "-m", "x")
    clean = git_commit(tmp_path)
    assert clean and not clean.endswith("-dirty") and clean != "unknown"
    (tmp_path / "reproductions").mkdir()
    (tmp_path / "reproductions" / "new_model.py").write_text("x = 1\n")
    assert git_commit(tmp_path) == clean + "-dirty"
    (tmp_path / "notes.txt").write_text("not code\n")  # files outside the code paths do not count
    (tmp_path / "reproductions" / "new_model.py").unlink()
    assert git_commit(tmp_path) == clean


def test_provenance_names_the_commit_the_run_started_from(tmp_path, monkeypatch):
    monkeypatch.setattr(runs, "git_commit", lambda root=None: "aaaa")
    run = runs.Run.create("toy", Cfg(), "paper", "short", 0, out=tmp_path / "run")
    run.save()
    monkeypatch.setattr(runs, "git_commit", lambda root=None: "bbbb")  # code edited during the run
    assert run.provenance()["commit"] == "aaaa"
    again = runs.Run.create("toy", Cfg(), "paper", "short", 0, out=tmp_path / "run", resume=True)
    prov = again.provenance()
    assert prov["commit"] == "bbbb" and prov["resumed_from_commit"] == "aaaa"
