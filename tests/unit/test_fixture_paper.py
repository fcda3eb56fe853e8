"""A paper registered from outside reproductions/ gets reproduce / evaluate / predict / results from
the shared skeleton alone (tests/fixture_paper, the worked example of docs/ARCHITECTURE.md)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from microrepro.common import cli, registry, results
from microrepro.common.errors import UserError
from microrepro.common.predict import COUNT_COLUMNS, OBJECT_COLUMNS

TESTS = Path(__file__).resolve().parent.parent
PAPER = "fixture_paper"


@pytest.fixture
def fixture_paper(monkeypatch):
    """tests/fixture_paper registered as ``fixture_paper`` for one test, unregistered afterwards."""
    monkeypatch.syspath_prepend(str(TESTS))
    with registry.registered(PAPER, "Bright discs on noise: 2-conv heat map (test fixture)", "fixture_paper.task"):
        yield PAPER
    assert PAPER not in registry.PAPERS


def _rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as fh:
        return list(csv.reader(fh))


def test_fixture_paper_through_the_cli(fixture_paper, tmp_path):
    # reproduce: train a few steps, choose the threshold, test; smoke runs are not published
    assert cli.main(["reproduce", PAPER, "--schedule", "smoke"]) == 0
    run_dir = tmp_path / "runs" / PAPER / "discs_heatmap_paper_smoke_s0"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics["heatmap_net"]["test"]) == {"f1", "precision", "recall", "count_mae", "threshold"}
    stored = json.loads((run_dir / "thresholds.json").read_text())["heatmap_net"]
    assert stored["rule"] == "max_f1_train" and stored["value"] == metrics["heatmap_net"]["test"]["threshold"]
    provenance = json.loads((run_dir / "provenance.json").read_text())
    assert provenance["paper"] == PAPER and provenance["splits"]["test"]["kind"] == "synthetic"
    assert provenance["schedule_run"]["heatmap_net"]["steps"] == 30
    assert not (tmp_path / "results" / "runs").exists()

    # evaluate: the stored weights and threshold give the same numbers again
    assert cli.main(["evaluate", str(run_dir)]) == 0
    assert json.loads((run_dir / "metrics.json").read_text()) == metrics

    # predict on two images a user would have (uint8 PNG): the shared files and columns
    from fixture_paper.data import make_images  # importable while the fixture holds tests/ on sys.path

    from microrepro.common.imageio import write_image

    task = registry.get_task(PAPER)
    images, _, _ = make_images(task.load_config("paper", "smoke").data, 2, seed=7)
    inputs = [write_image(tmp_path / "in" / f"img{i}.png", (image * 255).round().astype(np.uint8))
              for i, image in enumerate(images)]
    out = tmp_path / "pred"
    assert cli.main(["predict", str(run_dir), *map(str, inputs), "--out", str(out)]) == 0
    counts = _rows(out / "counts.csv")
    assert tuple(counts[0]) == COUNT_COLUMNS
    assert [row[0] for row in counts[1:]] == ["img0.png", "img1.png"]
    for row in counts[1:]:
        objects = _rows(out / row[4])
        assert tuple(objects[0]) == OBJECT_COLUMNS
        assert int(row[1]) == len(objects) - 1 and row[2] == "heatmap_net"
        assert (out / row[5]).is_file() and (out / row[6]).is_file()  # overlay PNG, label TIFF

    # results: a non-smoke run is published and rendered by reproduce itself, and again by `results`
    assert cli.main(["reproduce", PAPER, "--schedule", "short"]) == 0
    short = json.loads((tmp_path / "runs" / PAPER / "discs_heatmap_paper_short_s0" / "metrics.json").read_text())
    assert (tmp_path / "results" / "runs" / PAPER / "discs_heatmap_paper_short_s0.json").is_file()
    (tmp_path / "results" / f"{PAPER}.md").unlink()
    assert cli.main(["results", PAPER]) == 0
    table = (tmp_path / "results" / f"{PAPER}.md").read_text()
    assert "from `tests/fixture_paper/published.yaml`" in table
    ours = short["heatmap_net"]["test"]
    assert ours["f1"] > 0.5  # the fixture learns its discs (1.0 on this CPU)
    for metric, published in (("f1", 0.95), ("count_mae", 0.1)):
        row = f"| heatmap_net | {metric} | {results._fmt(published)} | {results._fmt(ours[metric])} |"
        assert row in table


def test_registry_keeps_the_real_papers_and_its_errors(fixture_paper):
    assert list(registry.PAPERS)[:5] == list(registry.BUILT_IN)
    assert registry.task_module("spines") == "microrepro.reproductions.spines.task"
    assert registry.is_registered(PAPER) and not registry.is_registered("spines")
    assert results.published_path("spines") == results.REPO_ROOT / "reproductions" / "spines" / "published.yaml"
    assert results.published_path(PAPER) == TESTS / "fixture_paper" / "published.yaml"
    assert registry.get_task(PAPER).name == PAPER
    with pytest.raises(UserError, match="unknown paper 'nope'"):
        registry.get_task("nope")
    with pytest.raises(ValueError, match="suite's own papers"):
        registry.register("spines", "x", "fixture_paper.task")
    with pytest.raises(ValueError, match="already registered"):
        registry.register(PAPER, "x", "elsewhere.task")
    with pytest.raises(ValueError, match="paper name"):
        registry.register("Bad-Name", "x", "fixture_paper.task")
    with pytest.raises(ValueError, match="import path"):
        registry.register("other", "x", "not a module")
    with registry.registered("missing_paper", "x", "no_such_package.task"):
        with pytest.raises(UserError, match="no_such_package.task, which is not found"):
            registry.get_task("missing_paper")
    with registry.registered("misnamed", "x", "fixture_paper.task"):
        with pytest.raises(UserError, match="is named 'fixture_paper'"):
            registry.get_task("misnamed")
    assert "missing_paper" not in registry.PAPERS and "misnamed" not in registry.PAPERS
