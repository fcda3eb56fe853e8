"""common/bench.py measures a case and renders the table (structure only: timings are never asserted)."""

import numpy as np

from microrepro.common import bench


def _case():
    import keras

    def build():
        model = keras.Sequential([keras.Input((16, 16, 1)), keras.layers.Conv2D(4, 3, padding="same"),
                                  keras.layers.Conv2D(1, 1)])
        model.compile(optimizer="adam", loss="mse")
        return model

    def make_batch(batch):
        x = np.zeros((batch, 16, 16, 1), "float32")
        return x, x

    return bench.BenchCase(
        paper="toy", name="tiny", build=build, input_shape=(16, 16, 1), batch=2, make_batch=make_batch,
        field_shape=(40, 40, 1), field_predict=lambda model, image: model.predict_on_batch(image[None, :32, :32]),
        published=[{"metric": "ms_per_image", "value": 29, "hardware": "GTX 650", "source": "Table 1"}],
    )


def test_measure_and_render(tmp_path):
    row = bench.measure(_case(), repeats=2, steps=1)
    assert row["parameters"] == 4 * 9 + 4 + 4 + 1
    for key in ("train_images_per_s", "train_ms_per_step", "infer_ms_per_image", "s_per_field"):
        assert row[key]["n"] >= 2 and row[key]["median"] > 0
    assert row["peak_rss_mb"] > 0
    path = bench.render([row], {"commit": "abc", "date": "today"}, tmp_path / "benchmarks.md")
    text = path.read_text()
    assert "| toy | tiny |" in text and "29 (GTX 650, Table 1)" in text


def test_published_timings_come_from_published_yaml():
    from microrepro.common.bench import published_timings

    assert published_timings("spines", "yolov2") == [
        {"metric": "ms_per_image", "value": 29.016, "hardware": "GTX 650", "source": "Table 1"}
    ]
    saha = published_timings("mitos_rcnn", "saha_2017", "Saha et al. [14]")
    assert [row["metric"] for row in saha] == ["s_per_hpf (Saha et al. [14])"] and saha[0]["value"] == 0.3
    assert published_timings("cell_counting", "c_resunet") == []  # the paper gives no timing


def test_a_run_keeps_the_rows_it_did_not_measure_again():
    """Re-running one paper on the CPU keeps the other papers' rows and the GPU rows (nothing lost)."""
    cpu, gpu = {"device": "CPU x", "backend": "tensorflow"}, {"device": "H100", "backend": "jax"}
    old = [
        {"paper": "spines", "model": "yolov2", "precision": "float32", "commit": "a", **cpu},
        {"paper": "spines", "model": "gone", "precision": "float32", "commit": "a", **cpu},  # case removed since
        {"paper": "spines", "model": "yolov2", "precision": "float32", "commit": "a", **gpu},
        {"paper": "spines", "case": 3, "error": ["boom"], "commit": "a"},
        {"paper": "cell_counting", "model": "c_resunet", "precision": "float32", "commit": "a", **cpu},
    ]
    new = [
        {"paper": "spines", "model": "yolov2", "precision": "float32", "commit": "b", **cpu},
        {"paper": "spines", "model": "sp_cnn", "precision": "float32", "commit": "b", **cpu},
    ]
    merged = bench.merge_rows(old, new, ["spines"])
    assert [(r["paper"], r.get("model"), r["device"], r["commit"]) for r in merged] == [
        ("spines", "yolov2", "H100", "a"),
        ("spines", "yolov2", "CPU x", "b"),
        ("spines", "sp_cnn", "CPU x", "b"),
        ("cell_counting", "c_resunet", "CPU x", "a"),
    ]
    # a lever's run (XLA) keeps the plain rows, and a later plain run keeps the lever's rows
    xla = [{"paper": "spines", "model": "yolov2", "precision": "float32", "xla": True, "schedule": "short",
            "commit": "c", **cpu}]
    merged = bench.merge_rows(merged, xla, ["spines"])
    assert [(r.get("model"), r["device"], r["commit"]) for r in merged if r["paper"] == "spines"] == [
        ("yolov2", "H100", "a"), ("yolov2", "CPU x", "b"), ("sp_cnn", "CPU x", "b"), ("yolov2", "CPU x", "c")]
    again = bench.merge_rows(merged, [{**new[0], "commit": "d"}], ["spines"])
    assert [r["commit"] for r in again if r["paper"] == "spines"] == ["a", "c", "d"]  # plain sp_cnn: gone case


def test_run_merges_into_an_existing_file(tmp_path, monkeypatch):
    import json

    monkeypatch.setattr(bench, "cases_for", lambda paper, schedule="paper": [_case()])
    old = {"meta": {"commit": "old1", "date": "then"},
           "rows": [{"paper": "cell_counting", "model": "c_resunet", "device": "CPU x", "backend": "tensorflow",
                     "precision": "float32", "input": "8x8x3", "batch": 1, "parameters": 10,
                     "train_images_per_s": None, "train_ms_per_step": None, "infer_ms_per_image": None,
                     "peak_rss_mb": 1.0}]}
    (tmp_path / "benchmarks.json").write_text(json.dumps(old))
    monkeypatch.setattr(bench.subprocess, "run", lambda *a, **k: type("P", (), {
        "returncode": 0, "stdout": json.dumps({**bench.measure(_case(), repeats=1, steps=1), "paper": "spines"}),
        "stderr": ""})())
    bench.run(["spines"], repeats=1, out_dir=tmp_path)
    rows = json.loads((tmp_path / "benchmarks.json").read_text())["rows"]
    assert [(r["paper"], r["commit"]) for r in rows][1] == ("cell_counting", "old1")
    assert rows[0]["paper"] == "spines" and rows[0]["commit"] != "old1"
    text = (tmp_path / "benchmarks.md").read_text()
    assert "| cell_counting | c_resunet |" in text and "old1" in text
    (tmp_path / "benchmarks.json").write_text("not json")
    import pytest

    with pytest.raises(SystemExit, match="not a benchmarks file"):
        bench.run(["spines"], repeats=1, out_dir=tmp_path)


def test_precision_is_recorded_and_checked(tmp_path):
    import keras
    import pytest

    from microrepro.common.errors import UserError

    with pytest.raises(UserError, match="precision must be one of"):
        bench.run(["spines"], precision="fp8", out_dir=tmp_path)
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        row = bench.measure(_case(), repeats=1, steps=1)
    finally:
        keras.config.set_dtype_policy("float32")
    assert row["precision"] == "mixed_bfloat16"


def test_no_tensorflow_means_no_pipeline_row_but_a_note(monkeypatch):
    """The lent GPU runs Keras on JAX without TensorFlow: the tf.data row is skipped, and says so."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorflow" else real(name, *a))
    case = _case()
    case.pipeline = lambda: (_ for _ in ()).throw(AssertionError("tf.data must not be built"))
    row = bench.measure(case, repeats=1, steps=1)
    assert "pipeline_images_per_s" not in row and "no TensorFlow" in row["note"]


def test_xla_and_profile_are_recorded_and_the_step_is_broken_down(tmp_path):
    import pytest

    from microrepro.common.errors import UserError

    row = bench.measure(_case(), repeats=1, steps=1, jit=True, profile=True)
    assert row["xla"] is True and row["first_step_s"] > 0
    assert row["profile"]["forward_ms"]["median"] > 0 and row["profile"]["forward_loss_ms"]["median"] > 0
    row.update(schedule="short", threads=[2, 1])
    text = bench.render([row], {"commit": "abc", "date": "today"}, tmp_path / "benchmarks.md").read_text()
    assert "short, float32, xla, threads 2/1" in text and "## Where a training step's time goes" in text
    plain = {**row, "xla": False, "threads": [0, 0]}
    assert bench._row_key(plain) != bench._row_key(row)  # a lever's row never replaces the plain one
    assert bench.parse_threads("2,1") == (2, 1)
    with pytest.raises(UserError, match="INTRA,INTER"):
        bench.parse_threads("2")
    assert bench.Levers("short", xla=True, threads=(2, 1)).args() == [
        "--schedule", "short", "--precision", "float32", "--xla", "--threads", "2,1"]
