"""c-ResUNet overfits three small fields: the weighted BCE falls below half of its start and the
counting pipeline (heat-map -> watershed -> 50 px centroid matching) reaches F1 >= 0.8 on them."""

import numpy as np
from skimage.draw import disk

from microrepro.common import training
from microrepro.common.runs import Run
from microrepro.reproductions.cell_counting import postprocess as post
from microrepro.reproductions.cell_counting.data import Field, datasets, make_crops
from microrepro.reproductions.cell_counting.evaluate import evaluate_fields
from microrepro.reproductions.cell_counting.inference import FULL, postprocessor, predict_heatmap
from microrepro.reproductions.cell_counting.model import WeightedBCE
from microrepro.reproductions.cell_counting.task import TASK
from microrepro.reproductions.cell_counting.train import build_model, train_model


def _fields():
    """Yellow cells (two of them touching) on a noisy dark background, 96 x 128 px."""
    rng = np.random.default_rng(0)
    layouts = [[(30, 30), (30, 52), (70, 100)], [(48, 64), (20, 110), (75, 25)], [(25, 40), (70, 70), (70, 92)]]
    fields = []
    for k, centres in enumerate(layouts):
        labels = np.zeros((96, 128), np.int32)
        for i, centre in enumerate(centres, start=1):
            rr, cc = disk(centre, 10, shape=labels.shape)
            labels[rr, cc] = i
        image = rng.normal(25, 8, (96, 128, 3))
        image[labels > 0] += (180, 160, 10)
        fields.append(Field(f"fixture{k}", np.clip(image, 0, 255).astype(np.uint8), labels))
    return fields


def test_c_resunet_overfits_a_few_fields(tmp_path):
    cfg = TASK.load_config("paper", "smoke", {
        "model": {"filters": [8, 16, 32], "bridge_filters": 64},
        "data": {"scale": 1.0, "crop_size": 64, "crop_stride": 32, "hard_repeat": 0,
                 "augment": {"flips": False, "rot90": False, "rotation_degrees": 0.0, "brightness": 0.0,
                             "gaussian_noise_std": 0.0, "elastic_alpha": 0.0}},
        "train": {"epochs": 5, "steps_per_epoch": 12, "batch_size": 4, "validation_steps": 1, "run_eagerly": False,
                  "lr": 3e-3},
        "postprocess": {"tile": 64, "tile_overlap": 16},
    })
    fields = _fields()
    crops = make_crops(fields, cfg)
    pipelines = datasets(crops, crops, cfg, seed=0)
    run = Run.create("cell_counting", cfg, "paper", "smoke", seed=0, out=tmp_path / "run")

    # Loss of the untrained network (same seed, so the same initial weights) on the fixture.
    training.set_seed(0)
    initial_model = build_model(cfg)
    x = crops["image"].astype(np.float32) / 255.0
    y = np.concatenate([crops["mask"], crops["weights"]], axis=-1).astype(np.float32)
    loss_fn = WeightedBCE()
    initial = float(loss_fn(y, initial_model(x, training=False)))

    model, schedule = train_model(FULL, run, cfg, crops, crops, pipelines, weighted=True)
    final = float(loss_fn(y, model(x, training=False)))
    assert final < 0.5 * initial, (initial, final)

    sizes = post.PostprocessSizes.from_cell_diameter(post.mean_cell_diameter([f.labels for f in fields]))
    heat = [predict_heatmap(model, f.image, cfg) for f in fields]
    metrics, _ = evaluate_fields(heat, fields, postprocessor(FULL, sizes), 0.5, 50.0)
    assert metrics["f1"] >= 0.8, metrics
    assert schedule["steps"] == 60 and schedule["epochs"] == 5
    assert schedule["loss_last"] < schedule["loss_first"]  # common.training.schedule_record spelling
