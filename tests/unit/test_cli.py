"""The command line: help everywhere, one-line errors (no traceback), papers listed."""

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
