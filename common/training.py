"""Training with Keras ``fit``: resume, best/last weights, logs, NaN stop, the papers' lr schedules.

Layout of ``<run_dir>/train/<name>/``::

    backup/             keras.callbacks.BackupAndRestore state: a killed run resumes from here
    best.weights.h5     weights with the best monitored value
    last.weights.h5     weights after the last finished epoch
    log.csv             one row per epoch (loss, metrics, lr)
    tensorboard/        TensorBoard events (TensorFlow backend)
    done.json           written when training finished: epochs run, seconds

Works under every Keras backend; TensorFlow is only touched for TensorBoard and tf.distribute.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import time
from pathlib import Path

import keras
import numpy as np

from microrepro.common.errors import ConfigError, TrainingError


def set_seed(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and the backend; ``deterministic`` also asks TF for deterministic ops."""
    keras.utils.set_random_seed(int(seed))
    if deterministic and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


class TimeBudget(keras.callbacks.Callback):
    """Stop training after ``minutes`` of wall clock (0 or None = never): keeps CPU schedules bounded.

    Attributes:
        steps: optimisation steps run in this session (a resumed run counts only its own).
        stopped_early: whether the budget ended training.
    """

    def __init__(self, minutes: float | None):
        super().__init__()
        self.seconds = float(minutes or 0.0) * 60.0
        self.start = None
        self.stopped_early = False
        self.steps = 0

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        if self.seconds > 0 and time.perf_counter() - self.start > self.seconds:
            self.model.stop_training = True
            self.stopped_early = True


OPTIMIZERS = ("adam", "sgd", "momentum")


def make_optimizer(name: str, lr: float, *, momentum: float = 0.9, weight_decay: float | None = None,
                   clipnorm: float | None = None, nesterov: bool = False) -> keras.optimizers.Optimizer:
    """The optimizer a config names: ``adam``, or ``sgd`` / ``momentum`` (SGD with momentum).

    Keras' ``weight_decay`` is decoupled (``w -= lr * wd * w`` each step); for SGD that is the
    Caffe / TF-slim L2 weight decay the papers use up to its interaction with momentum.
    ``nesterov`` (SGD only) uses Nesterov momentum.
    """
    kwargs = {"weight_decay": weight_decay or None}
    if clipnorm:
        kwargs["clipnorm"] = float(clipnorm)
    if name == "adam":
        if nesterov:
            raise ConfigError("nesterov momentum is an SGD option; the optimizer is adam")
        return keras.optimizers.Adam(lr, **kwargs)
    if name in ("sgd", "momentum"):
        return keras.optimizers.SGD(lr, momentum=momentum, nesterov=bool(nesterov), **kwargs)
    raise ConfigError(f"unknown optimizer {name!r} (use one of {', '.join(OPTIMIZERS)})")


def steps_to_epochs(steps: int, steps_per_epoch: int) -> tuple[int, int]:
    """``(epochs, steps_per_epoch)`` that run at least ``steps`` steps in whole epochs."""
    per_epoch = max(1, min(int(steps_per_epoch), int(steps)))
    return max(1, math.ceil(int(steps) / per_epoch)), per_epoch


def schedule_record(result: dict, *, batch: int, steps_per_epoch: int | None = None,
                    budget: TimeBudget | None = None, **extra) -> dict:
    """The "schedule actually run" of one model, in one spelling for every paper.

    Args:
        result: what :func:`fit` returned.
        batch: the global batch size.
        steps_per_epoch: steps per epoch (to count steps when no budget counted them).
        budget: the run's :class:`TimeBudget`, if any.
        **extra: paper-specific entries (``input_size``, ``init``...).

    Returns:
        ``{"epochs", "steps", "batch", "seconds", "stopped_by_time_budget", "loss_first",
        "loss_last", **extra}``; a missing loss is None.
    """
    loss = result.get("history", {}).get("loss") or []
    epochs = int(result.get("epochs_run", 0))
    steps = budget.steps if budget is not None and budget.steps else epochs * int(steps_per_epoch or 0) or None
    record = {
        "epochs": epochs,
        "steps": steps,
        "batch": int(batch),
        "seconds": round(float(result.get("seconds", 0.0)), 1),
        "stopped_by_time_budget": bool(budget.stopped_early) if budget is not None else False,
        "loss_first": float(loss[0]) if loss else None,
        "loss_last": float(loss[-1]) if loss else None,
    }
    record.update(extra)
    return record


def median_seconds(fn, repeats: int = 3, warmup: int = 1) -> float:
    """Median wall-clock seconds of ``fn()`` over ``repeats`` calls after ``warmup`` untimed ones.

    The warm-up calls absorb graph tracing, compilation and first allocations, which are not part
    of the steady-state time (detectron2 ``inference_on_dataset`` skips its first iterations too).
    """
    for _ in range(max(0, int(warmup))):
        fn()
    times = []
    for _ in range(max(1, int(repeats))):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def train_dir(run_dir: Path, name: str) -> Path:
    return Path(run_dir) / "train" / name


class StopOnNaN(keras.callbacks.Callback):
    """Stop at the first non-finite loss with a message that says what to try."""

    def __init__(self):
        super().__init__()
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.model.stop_training = True
            raise TrainingError(
                f"loss became {float(loss)} at epoch {self.epoch + 1}, batch {batch + 1}: lower the learning "
                "rate (--set train.lr=...), check the inputs for NaN/inf, or resume from the last good "
                "checkpoint with --resume"
            )


class LastWeights(keras.callbacks.Callback):
    def __init__(self, path: Path):
        super().__init__()
        self.path = str(path)

    def on_epoch_end(self, epoch, logs=None):
        self.model.save_weights(self.path)


class LearningRateLogger(keras.callbacks.Callback):
    """Put the current learning rate into the epoch logs (so log.csv shows the schedule)."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            lr = self.model.optimizer.learning_rate
            logs["lr"] = float(keras.ops.convert_to_numpy(lr))


class BudgetCosine(keras.callbacks.Callback):
    """Cosine decay from ``lr`` to ``lr * floor`` over whichever ends first: ``steps`` or ``minutes``.

    A budget-aware schedule (Li et al., "Budgeted training", ICLR 2020): progress is
    ``max(optimizer step / steps, wall clock / minutes)``, so a run stopped by its time budget
    still ends with a small learning rate instead of being cut mid-plateau. The step count is the
    optimizer's (resumes continue on schedule); the clock counts this session only. The rate is set
    before every step; under JAX the trainer keeps the variables in its own state within an epoch,
    so there the new rate takes effect at each epoch's first step (a step-wise cosine).
    """

    def __init__(self, lr: float, steps: int, minutes: float | None = None, floor: float = 0.0):
        super().__init__()
        self.lr, self.steps, self.floor = float(lr), max(1, int(steps)), float(floor)
        self.seconds = float(minutes or 0.0) * 60.0
        self.start, self.step = None, 0

    def progress(self) -> float:
        done = self.step / self.steps
        if self.seconds > 0 and self.start is not None:
            done = max(done, (time.perf_counter() - self.start) / self.seconds)
        return min(1.0, done)

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()
        self.step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))  # > 0 after a resume

    def on_train_batch_begin(self, batch, logs=None):
        cosine = 0.5 * (1.0 + math.cos(math.pi * self.progress()))
        self.model.optimizer.learning_rate = self.lr * (self.floor + (1.0 - self.floor) * cosine)

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1


def schedule_callbacks(lr_schedule: dict | None, monitor: str) -> list:
    """Callbacks for the lr schedules the papers use.

    ``{"kind": "plateau", "factor": 0.7, "patience": 4, "min_lr": 0}`` (cell_counting Sec. 4.5),
    ``{"kind": "step", "every_epochs": 20, "factor": 0.1}`` (fcn_segmentation Sec. 7.1),
    ``{"kind": "budget_cosine", "lr": 1e-3, "steps": 9000, "minutes": 12}`` (``BudgetCosine``),
    ``{"kind": "constant"}`` or None.
    """
    if not lr_schedule or lr_schedule.get("kind", "constant") == "constant":
        return []
    kind = lr_schedule["kind"]
    if kind == "plateau":
        return [
            keras.callbacks.ReduceLROnPlateau(
                monitor=monitor,
                factor=float(lr_schedule.get("factor", 0.7)),
                patience=int(lr_schedule.get("patience", 4)),
                min_lr=float(lr_schedule.get("min_lr", 0.0)),
                verbose=0,
            )
        ]
    if kind == "step":
        every = int(lr_schedule["every_epochs"])
        factor = float(lr_schedule.get("factor", 0.1))
        base: list[float] = []

        def step(epoch, lr):
            if not base:  # the compiled lr is the base; epoch is absolute, so resume stays on schedule
                base.append(float(lr) / (factor ** (epoch // every)))
            return base[0] * factor ** (epoch // every)

        return [keras.callbacks.LearningRateScheduler(step)]
    if kind == "budget_cosine":
        return [BudgetCosine(lr_schedule["lr"], lr_schedule["steps"], lr_schedule.get("minutes"),
                             lr_schedule.get("floor", 0.0))]
    raise ConfigError(f"unknown lr schedule kind {kind!r} (use plateau, step, budget_cosine or constant)")


def _replicas_in_sync() -> int:
    """Replicas of the tf.distribute strategy in scope (1 outside any, and on other backends)."""
    if keras.backend.backend() != "tensorflow":
        return 1
    import tensorflow as tf

    return int(tf.distribute.get_strategy().num_replicas_in_sync)


@contextlib.contextmanager
def _per_replica_loss(model: keras.Model):
    """Divide a model's own ``compute_loss`` by the replica count while it trains under tf.distribute.

    tf.distribute sums the replicas' gradients; Keras' Loss objects and regularisation losses divide
    themselves by the replica count (``keras.losses.Loss``: ``scale_loss_for_distribution``), but a
    ``compute_loss`` a model overrides (the Faster R-CNN detectors) returns its replica's mean. Scaled
    here, the summed gradient is that of the global batch and the logged loss (which Keras multiplies
    back) the mean over replicas, as on one device. JAX's DataParallel computes on the global batch.
    """
    n = _replicas_in_sync()
    if n <= 1 or getattr(type(model), "compute_loss", None) is keras.Model.compute_loss:
        yield
        return
    own = model.compute_loss

    def compute_loss(*args, **kwargs):
        loss = own(*args, **kwargs)
        return keras.ops.multiply(loss, keras.ops.cast(1.0 / n, loss.dtype))

    model.compute_loss = compute_loss
    try:
        yield
    finally:
        del model.compute_loss


@contextlib.contextmanager
def _multiworker_build(model: keras.Model, train_ds):
    """Build a model's training state from ``train_ds``'s element spec while it fits under MultiWorkerMirroredStrategy.

    Keras 3's TF ``fit`` / ``evaluate`` first all-reduce one distributed data batch to build the model, loss
    and metrics symbolically, which fails under MultiWorkerMirroredStrategy (keras-team/keras#20585,
    tensorflow/tensorflow#72388); the build needs only shapes and dtypes, which the dataset's element spec
    (or a PyDataset's first batch) gives without a collective.
    """
    if keras.backend.backend() != "tensorflow":
        yield
        return
    import tensorflow as tf

    if not isinstance(model.distribute_strategy, tf.distribute.MultiWorkerMirroredStrategy):
        yield
        return
    batch = train_ds.element_spec if hasattr(train_ds, "element_spec") else train_ds[0]
    strategy = model.distribute_strategy

    def symbolic_build(iterator=None, data_batch=None):
        with strategy.scope():
            model._symbolic_build(data_batch=batch)

    model._maybe_symbolic_build = symbolic_build
    try:
        yield
    finally:
        del model._maybe_symbolic_build


def fit(
    model: keras.Model,
    train_ds,
    val_ds=None,
    *,
    run_dir: Path,
    name: str,
    epochs: int,
    steps_per_epoch: int | None = None,
    validation_steps: int | None = None,
    lr_schedule: dict | None = None,
    monitor: str = "val_loss",
    early_stopping_patience: int | None = None,
    callbacks: list | tuple = (),
    verbose="auto",
    tensorboard: bool = True,
) -> dict:
    """Train a compiled model with resume and logs; see the module docstring for the files.

    Args:
        model: a compiled Keras model.
        train_ds, val_ds: anything ``model.fit`` accepts (tf.data.Dataset usually).
        run_dir: the run folder; training state goes to ``run_dir/train/<name>``.
        name: the model's name within the run (``c_resunet``, ``yolov2``...).
        epochs: total epochs (a resumed run trains only the remaining ones).
        monitor: quantity for best weights, plateau and early stopping; falls back to ``loss``
            when there is no validation data.

    Returns:
        ``{"history": {key: [per epoch]}, "epochs_run": int, "seconds": float}``; history is read
        back from log.csv so a resumed run reports its whole curve.

    Raises:
        TrainingError: the loss became NaN/inf.
    """
    folder = train_dir(run_dir, name)
    folder.mkdir(parents=True, exist_ok=True)
    if val_ds is None and monitor.startswith("val_"):
        monitor = monitor[4:]
    log_path = folder / "log.csv"
    cbs = [
        StopOnNaN(),
        LearningRateLogger(),
        keras.callbacks.BackupAndRestore(str(folder / "backup"), delete_checkpoint=False),
        keras.callbacks.ModelCheckpoint(
            str(folder / "best.weights.h5"), monitor=monitor, save_best_only=True, save_weights_only=True
        ),
        LastWeights(folder / "last.weights.h5"),
        keras.callbacks.CSVLogger(str(log_path), append=True),
        *schedule_callbacks(lr_schedule, monitor),
        *callbacks,
    ]
    if early_stopping_patience:
        cbs.append(keras.callbacks.EarlyStopping(monitor=monitor, patience=int(early_stopping_patience)))
    if tensorboard and keras.backend.backend() == "tensorflow":
        cbs.append(keras.callbacks.TensorBoard(str(folder / "tensorboard"), write_graph=False))
    if keras.distribution.distribution() is not None and (model.run_eagerly or not model.jit_compile):
        # Uncompiled steps of a model sharded by keras.distribution (JAX) dispatch op by op; on CPU devices they
        # hung in XLA's all-reduce rendezvous (cell_counting's eager smoke schedule). The jitted step computes the same.
        model.run_eagerly, model.jit_compile = False, True
    start = time.perf_counter()
    with _per_replica_loss(model), _multiworker_build(model, train_ds):
        model.fit(
            train_ds,
            validation_data=val_ds,
            epochs=int(epochs),
            steps_per_epoch=steps_per_epoch,
            validation_steps=validation_steps,
            callbacks=cbs,
            verbose=verbose,
            # A tf.data pipeline shuffles itself (common.pipeline); fit's shuffle only applies to arrays.
            shuffle=not hasattr(train_ds, "element_spec"),
        )
    seconds = time.perf_counter() - start
    history = read_log(log_path)
    epochs_run = len(history.get("epoch", []))
    (folder / "done.json").write_text(json.dumps({"epochs_run": epochs_run, "seconds_last_session": seconds}))
    return {"history": history, "epochs_run": epochs_run, "seconds": seconds}


def read_log(log_path: Path) -> dict:
    """log.csv as {column: [floats]}, keeping the last row of each epoch (resumes may repeat one)."""
    log_path = Path(log_path)
    if not log_path.is_file():
        return {}
    rows: dict[int, dict] = {}
    with open(log_path, newline="") as fh:
        for row in csv.DictReader(fh):
            if row.get("epoch") in (None, "", "epoch"):
                continue
            rows[int(float(row["epoch"]))] = row
    keys = sorted({k for row in rows.values() for k in row})
    out: dict[str, list] = {k: [] for k in keys}
    for epoch in sorted(rows):
        for key in keys:
            value = rows[epoch].get(key, "")
            try:
                out[key].append(float(value))
            except (TypeError, ValueError):  # CSVLogger writes "NA" for keys missing in an epoch
                out[key].append(float("nan"))
    return out


def load_weights(model: keras.Model, run_dir: Path, name: str, which: str = "best") -> keras.Model:
    """Load ``best`` or ``last`` weights of ``name`` from a run folder into a built model."""
    path = train_dir(run_dir, name) / f"{which}.weights.h5"
    if not path.is_file():
        from microrepro.common.errors import UserError

        raise UserError(f"{path}: no trained weights for '{name}' in this run (did training finish?)")
    model.load_weights(str(path))
    return model


def plot_history(run_dir: Path, name: str, out_png: Path, title: str | None = None) -> Path:
    """Loss (and validation loss) per epoch from log.csv, log-scale y."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    history = read_log(train_dir(run_dir, name) / "log.csv")
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    for key in ("loss", "val_loss"):
        if key in history:
            values = np.asarray(history[key])
            ax.plot(np.arange(1, len(values) + 1), values, label=key)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    if history.get("loss") and min(history["loss"]) > 0:
        ax.set_yscale("log")
    ax.set_title(title or f"{name}: training curve")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png)
    plt.close(fig)
    return out_png


STRATEGIES = ("none", "mirrored", "multiworker", "data_parallel")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
_TF_ENGINES: dict = {}  # tf.distribute strategies made by distribution(), by name


def _local_devices(tf) -> list[str] | None:
    """Devices of a MirroredStrategy: the GPUs; without GPUs every logical CPU device (one, unless a
    test split the CPU with ``tf.config.set_logical_device_configuration``); None = TF's default."""
    if tf.config.list_logical_devices("GPU"):
        return None
    cpus = [device.name for device in tf.config.list_logical_devices("CPU")]
    return cpus if len(cpus) > 1 else None


def _keras_multiworker_logs() -> None:
    """Let Keras 3's TF trainer average scalar logs over MultiWorkerMirroredStrategy workers.

    ``keras.src.backend.tensorflow.trainer.reduce_per_replica`` reduces every log of a multi-worker
    step with ``strategy.reduce("MEAN", value, axis=0)``, which fails on the scalar loss and metrics
    ("Invalid reduction dimension 0 for input with 0 dimensions"; keras-team/keras#20585): scalars are
    averaged with ``axis=None`` instead. Installed once, when ``distribution("multiworker")`` makes its
    strategy; every other strategy and reduction goes to Keras' own function.
    """
    from keras.src.backend.tensorflow import trainer as tf_trainer

    original = tf_trainer.reduce_per_replica
    if getattr(original, "microrepro_multiworker", False):
        return

    def reduce_per_replica(values, strategy, reduction):
        if reduction not in ("auto", "mean") or not tf_trainer._collective_all_reduce_multi_worker(strategy):
            return original(values, strategy, reduction)

        def mean(value):
            first = value.values[0] if tf_trainer._is_per_replica_instance(value) else value
            return strategy.reduce("MEAN", value, axis=0 if len(first.shape) else None)

        return keras.tree.map_structure(mean, values)

    reduce_per_replica.microrepro_multiworker = True
    tf_trainer.reduce_per_replica = reduce_per_replica


@contextlib.contextmanager
def distribution(strategy: str = "none"):
    """Scope for multi-device training through the engines that exist (never a home-made one).

    ``none``: the default device. ``mirrored``: tf.distribute.MirroredStrategy (all local GPUs, or
    the logical CPU devices when there is no GPU; TensorFlow backend). ``multiworker``:
    tf.distribute.MultiWorkerMirroredStrategy (TF_CONFIG set per worker). ``data_parallel``:
    keras.distribution.DataParallel (JAX backend, all local devices). Build and compile the model
    inside the scope; the batch a pipeline yields is the global batch, split over the replicas.

    Raises:
        ConfigError: an unknown strategy, or one the active backend does not have.
    """
    backend = keras.backend.backend()
    if strategy in ("none", "", None):
        yield None
        return
    if strategy in ("mirrored", "multiworker"):
        if backend != "tensorflow":
            raise ConfigError(f"runtime.strategy={strategy} needs KERAS_BACKEND=tensorflow, the backend is {backend} "
                              "(on jax use runtime.strategy=data_parallel)")
        import tensorflow as tf

        # One per process, shared by its runs (--seeds, tests): a second MirroredStrategy reused the first one's
        # collective keys (a shape mismatch), and MultiWorkerMirroredStrategy cannot be made twice.
        if strategy == "mirrored" and strategy not in _TF_ENGINES:
            _TF_ENGINES[strategy] = tf.distribute.MirroredStrategy(devices=_local_devices(tf))
        elif strategy not in _TF_ENGINES:
            _TF_ENGINES[strategy] = tf.distribute.MultiWorkerMirroredStrategy()
            _keras_multiworker_logs()
        engine = _TF_ENGINES[strategy]
        with engine.scope():
            yield engine
        return
    if strategy == "data_parallel":
        if backend != "jax":
            raise ConfigError(f"runtime.strategy=data_parallel is keras.distribution on KERAS_BACKEND=jax, the backend "
                              f"is {backend} (on tensorflow use runtime.strategy=mirrored or multiworker)")
        previous = keras.distribution.distribution()
        keras.distribution.set_distribution(keras.distribution.DataParallel())
        try:
            yield keras.distribution.distribution()
        finally:
            keras.distribution.set_distribution(previous)
        return
    raise ConfigError(f"unknown runtime.strategy={strategy!r} (use one of {', '.join(STRATEGIES)})")


def replicas(engine) -> int:
    """How many model replicas a :func:`distribution` engine trains (1 for none)."""
    if engine is None:
        return 1
    if hasattr(engine, "num_replicas_in_sync"):  # tf.distribute
        return int(engine.num_replicas_in_sync)
    mesh = getattr(engine, "device_mesh", None)  # keras.distribution
    return int(np.asarray(mesh.devices).size) if mesh is not None else 1


def predict_batch(model: keras.Model, x):
    """``model.predict_on_batch(x)`` that is right under every :func:`distribution` strategy.

    Under a tf.distribute strategy of N > 1 replicas Keras 3's ``predict_on_batch`` feeds the whole
    batch to every replica and returns its outputs N times over; there this is ``model.predict`` of
    one batch, padded (last example repeated) to a multiple of N so that no replica gets an empty
    share, split over the replicas (and gathered from the workers) and cut back. Elsewhere (one
    device; JAX DataParallel, whose ``predict`` wants batches divisible by the device count) it is
    ``predict_on_batch``.
    """
    n_replicas = model.distribute_strategy.num_replicas_in_sync if keras.backend.backend() == "tensorflow" else 1
    if n_replicas <= 1:
        return model.predict_on_batch(x)
    n = int(keras.tree.flatten(x)[0].shape[0])
    pad = -n % n_replicas

    def padded(a):
        a = np.asarray(a)
        return np.concatenate([a, np.repeat(a[-1:], pad, axis=0)]) if pad else a

    out = model.predict(keras.tree.map_structure(padded, x), batch_size=n + pad, verbose=0)
    return keras.tree.map_structure(lambda a: a[:n], out)


@contextlib.contextmanager
def runtime_scope(runtime=None):
    """The scope a paper's ``reproduce`` / ``evaluate`` runs in: its ``runtime`` config section.

    :func:`distribution` of ``runtime.strategy`` plus the Keras dtype policy ``runtime.precision``
    (models built inside compute in bf16 / fp16 with float32 weights; the previous policy is restored
    on exit). ``common.task.run_in_runtime`` runs every paper's reproduce / evaluate in it.

    Args:
        runtime: a ``common.config.RuntimeConfig`` (or anything with ``strategy`` and ``precision``);
            None = the defaults (one device, float32).

    Yields:
        ``{"strategy", "replicas", "precision", "backend"}``, recorded in the run's provenance.

    Raises:
        ConfigError: an unknown precision, or a strategy the backend does not have.
    """
    strategy = getattr(runtime, "strategy", "none") or "none"
    precision = getattr(runtime, "precision", "float32") or "float32"
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown runtime.precision={precision!r} (use one of {', '.join(PRECISIONS)})")
    threads = set_inter_op_threads(getattr(runtime, "inter_op_threads", None))
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    try:
        with distribution(strategy) as engine:
            yield {"strategy": strategy, "replicas": replicas(engine), "precision": precision,
                   "backend": keras.backend.backend()} | ({"inter_op_threads": threads} if threads else {})
    finally:
        keras.config.set_dtype_policy(previous)


def set_inter_op_threads(n: int | None) -> int | None:
    """TensorFlow's inter-op thread pool size ``n`` (``RuntimeConfig.inter_op_threads``); returns the size in effect.

    None leaves TensorFlow's default (returns None). TensorFlow fixes the pool when it starts: asked for
    another size after that (a second run in one process, a test session), the pool is kept and a
    warning says so; the returned size is the pool's, so provenance records what ran. Other backends:
    no effect, None.
    """
    if n is None or keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    try:
        tf.config.threading.set_inter_op_parallelism_threads(int(n))
    except RuntimeError:  # TensorFlow already started in this process
        current = tf.config.threading.get_inter_op_parallelism_threads()
        if current != int(n):
            import warnings

            warnings.warn(f"runtime.inter_op_threads={n} not applied: TensorFlow already started in this "
                          f"process with {current or 'its default'} (run in a fresh process to apply it)",
                          RuntimeWarning, stacklevel=2)
        return current or None
    return int(n)
