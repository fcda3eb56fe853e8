"""fixture_paper: a 2-conv heat-map net finds bright discs; objects = connected components.

``reproduce`` trains on generated images (``common.training.fit``), chooses the F1-maximising
threshold on the training images (``common.thresholds``, point matching of ``common.matching``),
stores it in ``thresholds.json`` and reports detection metrics on unseen test images;
``evaluate`` re-does the metrics from the stored weights and threshold; ``predict`` is the shared
``Task.predict`` fed by :meth:`FixtureTask.load_predictor`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from microrepro.common import thresholds
from microrepro.common.data_sources import DataSource
from microrepro.common.imageio import convert_channels, to_float01
from microrepro.common.matching import aggregate, match_points
from microrepro.common.metrics import count_errors
from microrepro.common.predict import Objects, Predictor
from microrepro.common.runs import DataInfo, Run
from microrepro.common.task import Task

from .config import FixtureConfig
from .data import make_images

MODEL = "heatmap_net"
TEST_SEED_OFFSET = 1000  # test images never share a seed with training images
STEPS_PER_EPOCH = 10  # the training stream is endless; an "epoch" is a checkpoint interval


def build_model(cfg: FixtureConfig):
    """``(B, H, W, 1)`` image → ``(B, H, W, 1)`` disc probability (any H, W)."""
    import keras

    inputs = keras.Input((None, None, 1))
    x = keras.layers.Conv2D(cfg.model.filters, 3, padding="same", activation="relu")(inputs)
    outputs = keras.layers.Conv2D(1, 3, padding="same", activation="sigmoid")(x)
    return keras.Model(inputs, outputs, name=MODEL)


def heat_maps(model, images: np.ndarray) -> np.ndarray:
    """``(N, H, W)`` float images in [0, 1] → ``(N, H, W)`` disc probabilities."""
    return np.asarray(model.predict_on_batch(images[..., None].astype(np.float32)))[..., 0]


def objects_at(heat: np.ndarray, threshold: float) -> Objects:
    """4-connected components of ``heat >= threshold``, scored by their mean probability."""
    from scipy import ndimage
    from skimage.measure import label

    labels = label(heat >= threshold, connectivity=1)
    scores = ndimage.mean(heat, labels, index=np.arange(1, labels.max() + 1)) if labels.max() else []
    return Objects.from_labels(labels, scores=np.asarray(scores, np.float64))


def detection_metrics(heats: np.ndarray, centres: list[np.ndarray], threshold: float, cfg: FixtureConfig) -> dict:
    """F1 / precision / recall of one-to-one point matching (within ``eval.max_dist`` px), summed over
    images, and the mean absolute count error, of the objects at ``threshold``."""
    found = [objects_at(heat, threshold).points for heat in heats]
    total = aggregate(match_points(p, c, cfg.eval.max_dist) for p, c in zip(found, centres, strict=True))
    counts = count_errors([len(p) for p in found], [len(c) for c in centres])
    return {"f1": total.f1, "precision": total.precision, "recall": total.recall, "count_mae": counts["mae"]}


class FixtureTask(Task):
    """The fixture paper: one model (``heatmap_net``), synthetic data only."""

    name = "fixture_paper"
    title = "Bright discs on noise (test fixture)"
    dataset = "fixture_discs"  # no such real data set: always the synthetic generator
    config_cls = FixtureConfig
    models = (MODEL,)
    default_model = MODEL

    def reproduce(self, run: Run, data: DataSource) -> None:
        """Train ``cfg.train.steps`` steps, choose and store the threshold, record test metrics."""
        import keras
        import tensorflow as tf

        from microrepro.common import training

        cfg: FixtureConfig = run.config
        images, centres, masks = make_images(cfg.data, cfg.data.n_train, run.seed)
        model = build_model(cfg)
        model.compile(optimizer=training.make_optimizer(cfg.train.optimizer, cfg.train.lr),
                      loss=keras.losses.BinaryCrossentropy())
        ds = tf.data.Dataset.from_tensor_slices((images[..., None], masks[..., None]))
        ds = ds.shuffle(len(images), seed=run.seed).repeat().batch(cfg.train.batch_size)
        epochs, per_epoch = training.steps_to_epochs(cfg.train.steps, STEPS_PER_EPOCH)
        result = training.fit(model, ds, None, run_dir=run.run_dir, name=MODEL, epochs=epochs,
                              steps_per_epoch=per_epoch, verbose=0, tensorboard=False)
        training.load_weights(model, run.run_dir, MODEL, "best")
        run.schedule_run[MODEL] = training.schedule_record(result, batch=cfg.train.batch_size,
                                                           steps_per_epoch=per_epoch)
        self._choose_threshold(run, model, images, centres)
        self._test(run, model)

    def evaluate(self, run: Run, data: DataSource) -> None:
        """Test metrics of the stored weights at the stored threshold (chosen again if missing)."""
        model = self._load_model(run.run_dir, run.config)
        if MODEL not in thresholds.read_all(run.run_dir):
            cfg: FixtureConfig = run.config
            images, centres, _ = make_images(cfg.data, cfg.data.n_train, run.seed)
            self._choose_threshold(run, model, images, centres)
        self._test(run, model)

    def load_predictor(self, run_dir: Path, model: str) -> Predictor:
        """Any grey / RGB(A) image, any dtype → discs = components of the heat map at the threshold."""
        threshold = thresholds.load(run_dir, model).value
        network = self._load_model(run_dir, self.config_from_run(run_dir))

        def detect(image: np.ndarray, t: float) -> Objects:
            grey = to_float01(convert_channels(image, 1))
            return objects_at(heat_maps(network, grey[None])[0], t)

        return Predictor(paper=self.name, model=model, threshold=threshold, detect=detect, noun="discs")

    # -- helpers --------------------------------------------------------------------------------

    @staticmethod
    def _load_model(run_dir: Path, cfg: FixtureConfig):
        from microrepro.common.training import load_weights

        return load_weights(build_model(cfg), run_dir, MODEL, "best")

    @staticmethod
    def _choose_threshold(run: Run, model, images: np.ndarray, centres: list[np.ndarray]) -> None:
        cfg: FixtureConfig = run.config
        heats = heat_maps(model, images)
        grid = thresholds.grid(cfg.eval.threshold_step, 1 - cfg.eval.threshold_step, cfg.eval.threshold_step)
        sweep = thresholds.sweep(grid, lambda t: detection_metrics(heats, centres, t, cfg))
        thresholds.save(run.run_dir, MODEL, thresholds.choose(sweep, "f1", split="train", n_images=len(images)))

    @staticmethod
    def _test(run: Run, model) -> None:
        cfg: FixtureConfig = run.config
        images, centres, _ = make_images(cfg.data, cfg.data.n_test, run.seed + TEST_SEED_OFFSET)
        threshold = thresholds.load(run.run_dir, MODEL).value
        values = detection_metrics(heat_maps(model, images), centres, threshold, cfg) | {"threshold": threshold}
        run.add_metrics(MODEL, "test", values, DataInfo(kind="synthetic", dataset="discs", n_images=len(images)))


TASK = FixtureTask()
