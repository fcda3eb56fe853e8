"""The command line: help everywhere, one-line errors (no traceback), papers listed."""

import json

import pytest

from microrepro.common import cli


@pytest.mark.parametrize("command", ["list", "reproduce", "evaluate", "predict", "results", "preview", "bench"])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([command, "--help"])
    assert exc.value.code == 0
    assert len(capsys.readouterr().out) > 200


@pytest.mark.parametrize("argv", [["reproduce"], ["reproduce", "nope"]])
def test_reproduce_without_a_known_paper_lists_papers(argv, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    for paper in ("spines", "cell_counting", "mitos_rcnn", "fcn_segmentation", "dwt_mitosis"):
        assert paper in err
    assert "Traceback" not in err


def test_predict_on_missing_run_is_one_line(tmp_path, capsys):
    assert cli.main(["predict", str(tmp_path / "no_run"), str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "not a run folder" in err and err.count("\n") == 1


def test_bad_data_dir_is_one_line(tmp_path, capsys):
    assert cli.main(["reproduce", "cell_counting", "--data-dir", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and ("no such folder" in err or "not built yet" in err)


def test_reproduce_help_gives_the_real_long_schedule_time_and_the_run_folder_rules(capsys):
    with pytest.raises(SystemExit):
        cli.main(["reproduce", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "~65 min" in text and "1-2 h" not in text
    assert "an unfinished run" in text and "--resume only continues a run folder" in text and "--replace" in text


def test_startup_is_quiet_but_real_lines_are_kept():
    import microrepro

    noise = [
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
        "I0000 00:00:1796051363.867351   21866 port.cc:153] oneDNN custom operations are on.",
        "I0000 00:00:1796051363.867769   21866 cudart_stub.cc:31] Could not find cuda drivers on your machine",
    ]
    cuinit = "E0000 00:00:1796051510.505387   23339 cuda_platform.cc:52] failed call to cuInit: UNKNOWN ERROR (303)"
    kept = ["W0000 00:00:1.2   1 x.cc:1] a real TensorFlow warning", "error: ours", "UserWarning: real"]
    assert all(microrepro._is_startup_noise(line, gpu_device_present=False) for line in [*noise, cuinit])
    assert not microrepro._is_startup_noise(cuinit, gpu_device_present=True)  # a GPU machine: a real error
    assert not any(microrepro._is_startup_noise(line, gpu_device_present=False) for line in kept)


def test_list_outside_make_prints_no_tensorflow_noise(tmp_path):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"} | {"MICROREPRO_DATA": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "microrepro", "list"], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    for marker in ("I0000", "InitializeLog", "cuInit", "cudart_stub", "oneDNN custom operations"):
        assert marker not in proc.stderr
    assert "cell_counting" in proc.stdout and "downloaded on first use" in proc.stdout


def test_every_command_resolves_data_in_the_same_order(tmp_path, monkeypatch):
    from microrepro.common import data_sources

    shared = tmp_path / "shared" / "data"
    (shared / "spines").mkdir(parents=True)
    env_root = tmp_path / "env"
    (env_root / "spines").mkdir(parents=True)
    monkeypatch.setattr(data_sources, "CHECKOUT_ROOT", tmp_path / "main")
    monkeypatch.delenv("MICROREPRO_DATA", raising=False)
    assert data_sources.data_root() == shared  # ../shared/data beside the checkout, as the Makefile does
    assert data_sources.resolve("spines").path == shared / "spines"
    monkeypatch.setenv("MICROREPRO_DATA", str(env_root))
    assert data_sources.resolve("spines").path == env_root / "spines"
    assert data_sources.resolve("spines", tmp_path / "env").path == env_root / "spines"  # --data-dir first
    assert data_sources.resolve("other", fetch=lambda: tmp_path).how == "download cache"
    assert data_sources.resolve("other").path is None  # synthetic
    seen = {}

    def fake_preview(name, out, n, seed, data_root):
        seen["root"] = data_root
        return out

    from microrepro.datasets.synthetic import preview

    monkeypatch.setattr(preview, "preview_with_real", fake_preview)
    assert cli.main(["preview", "spines", "--out", str(tmp_path / "p.png")]) == 0
    assert seen["root"] == env_root


class _StubTask:
    """Enough of a Task for ``reproduce``: fails the first ``failures`` times, after ``write`` files."""

    name = dataset = "stub"

    def __init__(self, failures: int, write: bool):
        self.failures, self.write, self.calls = failures, write, 0

    def load_config(self, preset, schedule, overrides):
        from dataclasses import dataclass

        @dataclass
        class Cfg:
            name: str = "stubnet"
            lr: float = float((overrides or {}).get("lr", 0.1))

        return Cfg()

    fetch = None

    def reproduce(self, run, data):
        from microrepro.common.errors import TrainingError

        self.calls += 1
        if self.write:
            (run.run_dir / "train").mkdir(exist_ok=True)
            (run.run_dir / "train" / f"epoch{self.calls}.weights").write_text("w")
        if self.calls <= self.failures:
            raise TrainingError("loss became NaN; lower train.lr")
        run.add_metrics("net", "val", {"f1": 0.5})


def _stub(monkeypatch, **kwargs) -> _StubTask:
    from microrepro.common import registry

    task = _StubTask(**kwargs)
    monkeypatch.setattr(registry, "get_task", lambda name: task)
    return task


def test_a_failed_reproduce_is_continued_by_the_same_command(tmp_path, monkeypatch, capsys):
    _stub(monkeypatch, failures=1, write=True)
    argv = ["reproduce", "cell_counting", "--schedule", "smoke", "--out", str(tmp_path / "run")]
    assert cli.main(argv) == 2
    assert capsys.readouterr().err.strip() == "error: loss became NaN; lower train.lr"
    assert (tmp_path / "run" / "train" / "epoch1.weights").is_file()  # its checkpoint is kept
    assert cli.main(argv) == 0  # the same command again continues it
    assert "continuing the unfinished run" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "run" / "train").iterdir()) == ["epoch1.weights", "epoch2.weights"]
    assert cli.main(argv) == 2  # finished now: refused without --resume
    assert "already holds a finished run" in capsys.readouterr().err
    assert cli.main([*argv, "--resume"]) == 0


def test_a_reproduce_that_fails_before_producing_anything_leaves_nothing(tmp_path, monkeypatch, capsys):
    _stub(monkeypatch, failures=2, write=False)
    assert cli.main(["reproduce", "cell_counting", "--schedule", "smoke", "--out", str(tmp_path / "a" / "run")]) == 2
    assert not (tmp_path / "a").exists()
    monkeypatch.setenv("MICROREPRO_RUNS", str(tmp_path / "runs"))
    assert cli.main(["reproduce", "cell_counting", "--schedule", "smoke"]) == 2
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("text", ["0,x", "1,1", "-1", ","])
def test_bad_seeds_are_one_line_errors(text, capsys):
    assert cli.main(["reproduce", "fcn_segmentation", "--schedule", "smoke", "--synthetic", "--seeds", text]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --seeds")


def test_seeds_parse_in_order():
    assert cli._parse_seeds("2, 0,1") == [2, 0, 1]


def test_seeds_make_one_run_per_seed_each_in_a_fresh_process(tmp_path):
    out = tmp_path / "runs"
    assert cli.main(["reproduce", "fcn_segmentation", "--schedule", "smoke", "--synthetic", "--seeds", "0,1",
                     "--out", str(out)]) == 0
    for seed in (0, 1):
        provenance = json.loads((out / f"s{seed}" / "provenance.json").read_text())
        assert provenance["seed"] == seed and (out / f"s{seed}" / "metrics.json").is_file()


def test_seed_and_seeds_together_are_refused(capsys):
    assert cli.main(["reproduce", "fcn_segmentation", "--synthetic", "--seed", "1", "--seeds", "0,1"]) == 2
    assert "either --seed or --seeds" in capsys.readouterr().err
