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
