"""Run folders never overwrite silently; tables are rendered from published.yaml + run summaries."""

import json
from dataclasses import dataclass

import pytest
import yaml

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
    # unfinished (interrupted or failed): the same command continues it, with or without --resume
    assert runs.run_state(tmp_path / "run") == "unfinished"
    again = runs.Run.create("toy", Cfg(), "paper", "short", 0, out=tmp_path / "run")
    assert again.continued and again.run_id == run.run_id
    assert again.metrics == {"net": {"val": {"f1": 0.5}}}
    with pytest.raises(UserError, match="different config"):
        runs.Run.create("toy", Cfg(lr=1.0), "paper", "short", 0, out=tmp_path / "run")
    with pytest.raises(UserError, match="--seed 0, not 3"):
        runs.Run.create("toy", Cfg(), "paper", "short", 3, out=tmp_path / "run")
    again.finish()
    assert runs.run_state(tmp_path / "run") == "finished"
    with pytest.raises(UserError, match="already holds a finished run"):
        runs.Run.create("toy", Cfg(), "paper", "short", 0, out=tmp_path / "run")
    resumed = runs.Run.create("toy", Cfg(), "paper", "short", 0, out=tmp_path / "run", resume=True)
    assert resumed.metrics == {"net": {"val": {"f1": 0.5}}}
    with pytest.raises(UserError, match="different config"):
        runs.Run.create("toy", Cfg(lr=1.0), "paper", "short", 0, out=tmp_path / "run", resume=True)
    prov = json.loads((tmp_path / "run" / "provenance.json").read_text())
    assert prov["splits"]["val"]["kind"] == "real"
    assert prov["backend"] in ("tensorflow", "jax", "torch")
    assert prov["config_hash"] and prov["commit"] and prov["run_id"] == run.run_id


def test_a_config_only_folder_of_a_failed_start_is_continued(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(json.dumps({"name": "toy", "lr": 0.1}))
    assert runs.run_state(tmp_path / "run") == "unfinished"
    assert runs.Run.create("toy", Cfg(), "paper", "short", 0, out=tmp_path / "run").continued


@pytest.mark.parametrize("make, message", [
    (lambda p: None, "no such run folder"),
    (lambda p: p.mkdir(), "empty folder, not a run"),
    (lambda p: (p.mkdir(), (p / "notes.txt").write_text("x")), "holds no run"),
])
def test_resume_only_continues_a_run(tmp_path, make, message):
    make(tmp_path / "x")
    with pytest.raises(UserError, match=message) as err:
        runs.Run.create("toy", Cfg(), "paper", "short", 0, out=tmp_path / "x", resume=True)
    assert "drop --resume" in str(err.value)


def test_a_non_run_folder_is_never_written_into(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="holds no run"):
        runs.Run.create("toy", Cfg(), "paper", "short", 0, out=tmp_path / "x")
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == ["notes.txt"]


def test_a_run_folder_of_an_older_version_counts_as_finished(tmp_path):
    folder = tmp_path / "old"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"name": "toy", "lr": 0.1}))
    (folder / "provenance.json").write_text(json.dumps({"paper": "toy", "preset": "paper"}))
    (folder / "metrics.json").write_text(json.dumps({"net": {"val": {"f1": 0.5}}}))
    assert runs.run_state(folder) == "finished"
    opened = runs.Run.open("toy", folder, Cfg())
    assert opened.run_id == runs.legacy_run_id(folder) and opened.status == "finished"


@pytest.mark.parametrize("name", ["../../x", "a/b", "..", ".hidden", "", "a\\b", "x/../../y"])
def test_names_that_become_folders_cannot_leave_runs(tmp_path, name):
    with pytest.raises(UserError, match="folder name"):
        runs.Run.create("toy", Cfg(name=name), "paper", "short", 0, runs_root=tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


def test_corrupt_json_names_the_file(tmp_path):
    run = runs.Run.create("toy", Cfg(), "paper", "short", 0, out=tmp_path / "run")
    run.save()
    (tmp_path / "run" / "provenance.json").write_text("{not json")
    with pytest.raises(UserError, match=r"provenance.json: corrupt JSON"):
        runs.load_run(tmp_path / "run")
    with pytest.raises(UserError, match=r"provenance.json: corrupt JSON"):
        runs.Run.create("toy", Cfg(), "paper", "short", 0, out=tmp_path / "run", resume=True)


def test_corrupt_weights_are_found_before_loading(tmp_path):
    import h5py

    folder = tmp_path / "run" / "train" / "net"
    folder.mkdir(parents=True)
    with h5py.File(folder / "best.weights.h5", "w") as fh:
        fh["w"] = [1.0, 2.0]
    runs.check_weights(tmp_path / "run")
    (folder / "last.weights.h5").write_bytes(b"not hdf5 at all")
    with pytest.raises(UserError, match=r"last.weights.h5: corrupt weights file"):
        runs.check_weights(tmp_path / "run")
    good = (folder / "best.weights.h5").read_bytes()
    (folder / "last.weights.h5").write_bytes(good[: len(good) // 2])  # truncated
    with pytest.raises(UserError, match=r"last.weights.h5: corrupt weights file"):
        runs.check_weights(tmp_path / "run")


def test_writable_check_names_the_option(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="--out .*is a file"):
        runs.check_writable(tmp_path / "file" / "sub", "--out")
    assert runs.check_writable(tmp_path / "new" / "deeper", "--out") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()


def test_publish_never_replaces_another_runs_summary(tmp_path):
    out_root = tmp_path / "results"
    shipped = out_root / "runs" / "toy" / "same.json"
    shipped.parent.mkdir(parents=True)
    shipped.write_text(json.dumps({"provenance": {"run": "same", "schedule": "short"}, "metrics": {}}))
    before = shipped.read_text()
    first = runs.Run.create("toy", Cfg(), "paper", "short", 0, out=tmp_path / "a" / "same")
    first.add_metrics("net", "val", {"f1": 0.5})
    target = first.publish(out_root)
    assert target == shipped.parent / f"same-{first.run_id}.json" and shipped.read_text() == before
    first.add_metrics("net", "val", {"f1": 0.6})
    assert first.publish(out_root) == target  # the same run updates its own summary
    assert json.loads(target.read_text())["metrics"]["net"]["val"]["f1"] == 0.6
    reopened = runs.Run.open("toy", tmp_path / "a" / "same", Cfg())
    assert reopened.publish(out_root) == target  # evaluate after reproduce: still its own file
    other = runs.Run.create("toy", Cfg(), "paper", "short", 0, out=tmp_path / "b" / "same")
    assert other.publish(out_root) not in (shipped, target)
    assert other.publish(out_root, replace=True) == shipped and shipped.read_text() != before
    assert len(list(shipped.parent.glob("*.json"))) == 3


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
    assert ("| net | f1 | 0.900 | 0.800 | -0.100 | synthetic_test — **synthetic**: toy generator, 20 img | "
            "paper/short (shortened schedule), seed 0 | Table 1 |") in text
    assert "| other | f1 | 0.500 | not run |" in text
    assert "29.000 (GTX 650)" in text or "29 (GTX 650)" in text
    assert "f1_released" in text.split("Further measurements")[1]
    assert "| net | f1 | 0.900 | 0.100 |" not in text and "smoke" not in text
    assert "![curve](toy/r1/curve.png)" in text
    assert "F1 is 0.9 in the table" in text


def test_table_shows_intervals_seed_spread_and_paired_orderings(tmp_path, monkeypatch):
    _published(tmp_path)
    monkeypatch.setattr(results, "REPO_ROOT", tmp_path)
    out_root = tmp_path / "results"
    info = runs.DataInfo("real", "toyset", 30)
    for seed, f1 in ((0, 0.8), (1, 0.9), (2, 0.7)):
        run = runs.Run.create("toy", Cfg(), "paper", "short", seed, out=tmp_path / "runs" / f"s{seed}")
        run.add_metrics("net", "test", {"f1": f1, "f1_ci_low": f1 - 0.05, "f1_ci_high": f1 + 0.05}, info)
        run.add_metrics("paired", "test", {"f1_diff__net__vs__other": 0.2, "f1_diff__net__vs__other_ci_low": 0.1,
                                           "f1_diff__net__vs__other_ci_high": 0.3,
                                           "f1_diff__net__vs__base": 0.1, "f1_diff__net__vs__base_ci_low": -0.1,
                                           "f1_diff__net__vs__base_ci_high": 0.3}, info)
        run.publish(out_root)
    text = results.render("toy", out_root).read_text()
    # three seeds: mean ± sd and the span of the seeds' intervals in the reproduced column,
    # Δ = mean − published, every seed named
    assert "| net | f1 | 0.900 | 0.800 ± 0.100 (3 seeds) [0.650, 0.950] | -0.100 | test — real: toyset, 30 img | " \
           "paper/short (shortened schedule), seeds 0,1,2 |" in text
    paired = text.split("## Paired comparisons")[1]
    assert paired.count("| f1_diff__net__vs__other | 0.200 [0.100, 0.300] | test — real: toyset, 30 img |") == 3
    each = paired.split("Each seed:")[1]
    assert each.split("| f1_diff__net__vs__other |")[1].split("\n")[0].rstrip().endswith("| yes |")
    assert each.split("| f1_diff__net__vs__base |")[1].split("\n")[0].rstrip().endswith("| no |")
    assert "_ci_low" not in text.split("## Provenance")[0]
    # and one summary row per comparison over the seeds: mean, and how many seeds support which way
    assert "| f1_diff__net__vs__other | 0.200 | 3/3 | 0/3 | 0/3 | test — real: toyset, 30 img |" in paired
    assert "| f1_diff__net__vs__base | 0.100 | 0/3 | 0/3 | 3/3 |" in paired


def test_delta_is_the_seed_mean_and_paper_arithmetic_has_its_own_column(tmp_path, monkeypatch):
    (tmp_path / "reproductions" / "toy").mkdir(parents=True)
    (tmp_path / "reproductions" / "toy" / "published.yaml").write_text(yaml.safe_dump({"paper": "Toy", "tables": [
        {"id": "t1", "caption": "Table 1", "rows": [
            {"model": "net", "metric": "f1", "published": 0.9, "source": "Table 1"}]},
        {"id": "fig", "caption": "Fig. 2 counts", "kind": "paper_arithmetic", "rows": [
            {"model": "fig_counts", "metric": "f1_top", "published": 0.5, "source": "Fig. 2"}]}]}))
    monkeypatch.setattr(results, "REPO_ROOT", tmp_path)
    out_root = tmp_path / "results"
    for seed, f1 in ((0, 0.6), (1, 0.8)):
        run = runs.Run.create("toy", Cfg(), "paper", "short", seed, out=tmp_path / "runs" / f"s{seed}")
        run.add_metrics("net", "test", {"f1": f1}, runs.DataInfo("real", "toyset", 30))
        run.add_metrics("fig_counts", "paper", {"f1_top": 0.7}, runs.DataInfo("real", "paper counts", 200))
        run.publish(out_root)
    text = results.render("toy", out_root).read_text()
    assert "| net | f1 | 0.900 | 0.700 ± 0.141 (2 seeds) | -0.200 |" in text  # no interval stored: no span
    fig = text.split("## Fig. 2 counts")[1].split("##")[0].split("With several seeds")[0]
    assert "not a reproduction" in fig and "| fig_counts | f1_top | 0.500 | 0.700 | 0.200 | Fig. 2 |" in fig
    assert "seeds" not in fig and "reproduced" not in fig


def test_value_text_shows_the_interval_when_stored():
    assert results.value_text({"f1": 0.8, "f1_ci_low": 0.7, "f1_ci_high": 0.85}, "f1") == "0.800 [0.700, 0.850]"
    assert results.value_text({"f1": 0.8, "f1_ci_low": None, "f1_ci_high": None}, "f1") == "0.800 [–, –]"
    assert results.value_text({"f1": 0.8}, "f1") == "0.800"


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


def test_a_model_only_a_later_seed_has_is_still_shown(tmp_path, monkeypatch):
    _published(tmp_path)
    monkeypatch.setattr(results, "REPO_ROOT", tmp_path)
    out_root = tmp_path / "results"
    info = runs.DataInfo("real", "toyset", 30)
    for seed in (0, 1):
        run = runs.Run.create("toy", Cfg(), "paper", "short", seed, out=tmp_path / "runs" / f"s{seed}")
        run.add_metrics("net", "test", {"f1": 0.8}, info)
        if seed == 1:  # added after seed 0 was published
            run.add_metrics("newer", "test", {"f1": 0.6}, info)
            run.add_metrics("paired", "test", {"f1_diff__net__vs__newer": 0.2, "f1_diff__net__vs__newer_ci_low": 0.1,
                                               "f1_diff__net__vs__newer_ci_high": 0.3}, info)
        run.publish(out_root)
    text = results.render("toy", out_root).read_text()
    assert "| newer | f1 | 0.600 | test — real: toyset, 30 img | paper/short (shortened schedule), seed 1 |" in text
    assert "| f1_diff__net__vs__newer | 0.200 [0.100, 0.300] |" in text.split("## Paired comparisons")[1]


def test_a_choice_trial_goes_to_choices_and_never_into_a_table(tmp_path, monkeypatch):
    @dataclass
    class Data:
        evaluate_on: str = "val"

    @dataclass
    class TrialCfg:
        name: str = "toy"
        data: Data = None

    _published(tmp_path)
    monkeypatch.setattr(results, "REPO_ROOT", tmp_path)
    out_root = tmp_path / "results"
    trial = runs.Run.create("toy", TrialCfg(data=Data()), "paper", "short", 0, out=tmp_path / "runs" / "bn0.9")
    trial.extra["overrides"] = ["faster_rcnn.bn_momentum=0.9"]
    trial.add_metrics("net", "val", {"f1": 0.77, "f1_ci_low": 0.7, "f1_ci_high": 0.8},
                      runs.DataInfo("real", "toy", 12))
    trial.figure_path("curve").write_bytes(b"\x89PNG fake")
    target = trial.publish(out_root)
    assert target == out_root / "runs" / "toy" / "choices" / "bn0.9.json"
    assert not (out_root / "toy").exists()  # no figures for a trial
    reported = runs.Run.create("toy", TrialCfg(data=Data("reported")), "paper", "short", 0, out=tmp_path / "r")
    reported.add_metrics("net", "holdout", {"f1": 0.8}, runs.DataInfo("real", "toy", 10))
    assert reported.publish(out_root) == out_root / "runs" / "toy" / "r.json"
    text = results.render("toy", out_root).read_text()
    table, choices = text.split("## Choices made on the validation split")
    assert "0.770" not in table and "| net | f1 | 0.900 | 0.800 |" in table
    assert ("| bn0.9 | `faster_rcnn.bn_momentum=0.9` | net | 0.770 [0.700, 0.800] | – | val — real: toy, 12 img | "
            "paper/short (shortened schedule), seed 0, commit") in choices
