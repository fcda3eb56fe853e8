"""Training on several devices and in mixed precision: the ``runtime`` config section every paper has.

``common.training.runtime_scope`` (strategy + dtype policy), which ``common.task.run_in_runtime``
wraps around each paper's reproduce / evaluate, and what it must keep: the loss trajectory of one device at
the same global batch, checkpoints and ``--resume``, the provenance record.

Each distribution case runs in a subprocess: TensorFlow's logical CPU devices and XLA's host device
count must be set before the backend starts. Tolerances (relative, per epoch of log.csv):

- TF MirroredStrategy over 2 logical CPUs: 5e-3 for a paper (measured 8e-4 on fcn_segmentation; the
  per-replica convolutions of half batches round differently), 1e-4 for the small Dense models.
- JAX DataParallel over 2 host devices: 1e-3 (measured 1e-7 on fcn_segmentation, 1.4e-5 on
  cell_counting, whose single-device smoke run is eager and its data-parallel run jitted).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from microrepro.common import config as config_lib
from microrepro.common import runs, training
from microrepro.common.config import RuntimeConfig
from microrepro.common.errors import ConfigError, UserError
from microrepro.common.registry import PAPERS, get_task

REPO = Path(__file__).resolve().parents[2]

# The paper runs compared: a few more epochs than smoke so that a trajectory is compared, not one number.
LONGER = {
    "fcn_segmentation": ["--set", "pretrain.train.epochs=2", "--set", "finetune.train.epochs=2"],
    "cell_counting": ["--set", "train.epochs=3"],
}

TF_TWO_CPUS = r"""
import tensorflow as tf  # before anything else touches TF: two logical CPU devices for MirroredStrategy
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
"""

# argv: out folder, strategy, paper, extra --set arguments. Prints one JSON line.
CASES = r"""
import json, sys
from pathlib import Path

import keras, numpy as np, tensorflow as tf

from microrepro.common import cli, training
from microrepro.common.config import RuntimeConfig

root, strategy, paper, extra = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4:]
result = {"backend": keras.backend.backend()}


class OwnLoss(keras.Model):  # computes its own loss, as the Faster R-CNN detectors do
    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        return keras.ops.mean(keras.ops.square(y - y_pred))


def small(own=False):
    training.set_seed(1)
    inputs = keras.Input((4,))
    outputs = keras.layers.Dense(1)(keras.layers.Dense(8, activation="relu")(inputs))
    model = (OwnLoss if own else keras.Model)(inputs, outputs)
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), loss=None if own else "mse")
    return model


rng = np.random.default_rng(0)
x = rng.normal(size=(64, 4)).astype("float32")
y = (x @ np.float32([1.0, -2.0, 0.5, 3.0]))[:, None]


class Killed(Exception):
    pass


class KillAt(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 2:
            raise Killed()


def fit(model, folder, callbacks=()):
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    return training.fit(model, data, run_dir=root / folder, name="m", epochs=4, callbacks=list(callbacks), verbose=0)


for name, chosen in (("one", "none"), ("many", strategy)):
    with training.runtime_scope(RuntimeConfig(strategy=chosen)) as runtime:
        result[f"replicas_{name}"] = runtime["replicas"]
        model = small()
        result[f"loss_{name}"] = fit(model, f"small_{name}")["history"]["loss"]
        result[f"own_loss_{name}"] = fit(small(own=True), f"own_{name}")["history"]["loss"]
        if name == "many":
            straight = model.get_weights()
            try:
                fit(small(), "killed", [KillAt()])
            except Killed:
                result["killed_epochs"] = len(training.read_log(root / "killed/train/m/log.csv")["epoch"])
            resumed = small()  # a new process would rebuild the model from scratch, then resume from backup/
            result["resumed_epochs"] = fit(resumed, "killed")["epochs_run"]
            result["resume_diff"] = max(float(np.max(np.abs(a - b)))
                                        for a, b in zip(straight, resumed.get_weights(), strict=True))
            result["predict_diff"] = float(np.max(np.abs(training.predict_batch(resumed, x[:3])
                                                         - np.asarray(resumed(x[:3])))))
best = small()  # built outside any strategy: the checkpoint of a distributed run loads into it
best.load_weights(str(root / "killed/train/m/best.weights.h5"))
result["best_loads"] = True

for chosen in ("none", strategy):
    out = root / f"{paper}_{chosen}"
    code = cli.main(["reproduce", paper, "--schedule", "smoke", "--synthetic", "--out", str(out),
                     "--set", f"runtime.strategy={chosen}", *extra])
    logs = {p.parent.name: training.read_log(p)["loss"] for p in sorted(out.glob("train/*/log.csv"))}
    prov = json.loads((out / "provenance.json").read_text()) if code == 0 else {}
    result[chosen] = {"code": code, "logs": logs, "distribution": prov.get("distribution")}
print(json.dumps(result))
"""


def _run(script: str, args: list[str], env: dict, timeout: int = 900) -> dict:
    out = subprocess.run([sys.executable, "-c", script, *args], env=env, capture_output=True, text=True,
                         timeout=timeout, cwd=REPO)
    assert out.returncode == 0, (out.stdout[-2000:], out.stderr[-4000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def _check(result: dict, strategy: str, paper_rtol: float, small_rtol: float) -> None:
    assert result["replicas_one"] == 1 and result["replicas_many"] == 2, result
    np.testing.assert_allclose(result["loss_many"], result["loss_one"], rtol=small_rtol)
    np.testing.assert_allclose(result["own_loss_many"], result["own_loss_one"], rtol=small_rtol)
    assert result["killed_epochs"] == 2 and result["resumed_epochs"] == 4, result
    assert result["resume_diff"] < 1e-5 and result["predict_diff"] < 1e-5, result
    assert result["best_loads"]
    one, many = result["none"], result[strategy]
    assert one["code"] == 0 and many["code"] == 0, result
    assert many["distribution"] == {"strategy": strategy, "replicas": 2, "precision": "float32",
                                    "backend": result["backend"]}
    assert one["distribution"]["strategy"] == "none" and one["distribution"]["replicas"] == 1
    assert sorted(many["logs"]) == sorted(one["logs"]) and one["logs"], result
    for name, losses in one["logs"].items():
        assert len(losses) >= 2, (name, losses)
        np.testing.assert_allclose(many["logs"][name], losses, rtol=paper_rtol, err_msg=name)


def test_mirrored_over_two_cpu_devices_matches_one_device(tmp_path):
    # ~1.5 min alone on 2 cores (3 min on the shared, loaded 2 cores here): small models (loss, own
    # compute_loss, kill + resume, best weights) and fcn_segmentation's smoke run with 2 + 2 epochs, once on
    # one device and once mirrored.
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2")
    paper = "fcn_segmentation"
    result = _run(TF_TWO_CPUS + CASES, [str(tmp_path), "mirrored", paper, *LONGER[paper]], env)
    _check(result, "mirrored", paper_rtol=5e-3, small_rtol=1e-4)


@pytest.mark.parametrize("paper", ["fcn_segmentation", pytest.param("cell_counting", marks=pytest.mark.slow)])
def test_jax_data_parallel_over_two_host_devices_matches_one_device(tmp_path, paper):
    # ~1 min each alone on 2 cores (3 min on the shared, loaded 2 cores here).
    pytest.importorskip("jax")
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2",
               XLA_FLAGS="--xla_force_host_platform_device_count=2")
    result = _run(CASES, [str(tmp_path), "data_parallel", paper, *LONGER[paper]], env)
    _check(result, "data_parallel", paper_rtol=1e-3, small_rtol=1e-4)


WORKER = r"""
import sys
from microrepro.common import cli
sys.exit(cli.main(["reproduce", "fcn_segmentation", "--schedule", "smoke", "--synthetic", "--out", sys.argv[1],
                   "--set", "runtime.strategy=multiworker"]))
"""


def _free_ports(n: int) -> list[int]:
    import socket

    sockets = [socket.socket() for _ in range(n)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _h5_arrays(path: Path) -> dict:
    import h5py

    arrays = {}
    with h5py.File(path, "r") as fh:
        fh.visititems(lambda name, item: arrays.__setitem__(name, item[()]) if isinstance(item, h5py.Dataset) else None)
    return arrays


@pytest.mark.slow
def test_multiworker_two_processes_end_with_identical_weights(tmp_path):
    # Two MultiWorkerMirroredStrategy workers on 127.0.0.1 train fcn_segmentation's smoke schedule,
    # each into its own run folder; gradients are all-reduced, so both end with the same weights.
    # ~1.5 min alone on 2 cores.
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(2)]}
    procs, logs = [], []
    try:
        for index in range(2):
            env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2",
                       TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
            logs.append(open(tmp_path / f"worker{index}.log", "w"))  # noqa: SIM115 - closed in finally
            procs.append(subprocess.Popen([sys.executable, "-c", WORKER, str(tmp_path / f"w{index}")], env=env,
                                          cwd=REPO, stdout=logs[-1], stderr=subprocess.STDOUT))
        for proc in procs:
            proc.wait(timeout=900)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for log in logs:
            log.close()
    for index, proc in enumerate(procs):
        assert proc.returncode == 0, (tmp_path / f"worker{index}.log").read_text()[-4000:]
    names = sorted(p.parent.name for p in (tmp_path / "w0").glob("train/*/last.weights.h5"))
    assert names == ["fcrn_a_finetuned", "fcrn_a_pretrained"]
    for name in names:
        first = _h5_arrays(tmp_path / "w0/train" / name / "last.weights.h5")
        second = _h5_arrays(tmp_path / "w1/train" / name / "last.weights.h5")
        assert sorted(first) == sorted(second) and first
        for key, value in first.items():
            np.testing.assert_array_equal(value, second[key], err_msg=f"{name}: {key}")
    for index in range(2):
        prov = json.loads((tmp_path / f"w{index}/provenance.json").read_text())
        assert prov["distribution"] == {"strategy": "multiworker", "replicas": 2, "precision": "float32",
                                        "backend": "tensorflow"}


# In-process (TensorFlow): runtime_scope restores the dtype policy. Seconds alone on 2 cores: cell_counting
# ~11, fcn_segmentation ~9 (the module's budget); dwt_mitosis ~30, mitos_rcnn ~27, spines ~35 (slow).
BF16_SLOW = {"dwt_mitosis", "mitos_rcnn", "spines"}


@pytest.mark.parametrize("paper", [pytest.param(p, marks=pytest.mark.slow) if p in BF16_SLOW else p for p in PAPERS])
def test_mixed_bfloat16_smoke_reproduce(tmp_path, paper):
    import keras

    from microrepro.common import cli

    out = tmp_path / "run"
    code = cli.main(["reproduce", paper, "--schedule", "smoke", "--synthetic", "--out", str(out),
                     "--set", "runtime.precision=mixed_bfloat16"])
    assert code == 0
    assert keras.config.dtype_policy().name == "float32"  # restored
    prov = json.loads((out / "provenance.json").read_text())
    threads = prov["distribution"].pop("inter_op_threads", None)  # dwt_mitosis asks for 1 (kept if TF had started)
    assert threads in (None, 1)
    assert prov["distribution"] == {"strategy": "none", "replicas": 1, "precision": "mixed_bfloat16",
                                    "backend": "tensorflow"}
    logs = sorted(out.glob("train/*/log.csv"))
    assert logs
    for path in logs:
        assert np.all(np.isfinite(training.read_log(path)["loss"])), path


# ------------------------------------------------------------------------------------- no training
def test_every_paper_has_the_runtime_section():
    for paper in PAPERS:
        task = get_task(paper)
        threads = 1 if paper == "dwt_mitosis" else None  # its DWT-net repeats only with one inter-op thread
        assert task.load_config("paper", "smoke").runtime == RuntimeConfig(inter_op_threads=threads)
        cfg = task.load_config("paper", "smoke", config_lib.parse_set(
            ["runtime.strategy=mirrored", "runtime.precision=mixed_bfloat16"]))
        assert cfg.runtime == RuntimeConfig("mirrored", "mixed_bfloat16", threads)
        with pytest.raises(ConfigError, match="runtime.strategy"):
            task.load_config("paper", "smoke", {"runtime": {"strategy": "horovod"}})


def test_strategy_of_the_other_backend_is_a_one_line_config_error():
    import keras

    other = "data_parallel" if keras.backend.backend() == "tensorflow" else "mirrored"
    with pytest.raises(ConfigError, match=f"runtime.strategy={other} needs KERAS_BACKEND|runtime.strategy={other} is"):
        with training.runtime_scope(RuntimeConfig(strategy=other, precision="mixed_bfloat16")):
            pass
    assert keras.config.dtype_policy().name == "float32"
    with pytest.raises(ConfigError, match="runtime.precision"):
        with training.runtime_scope(RuntimeConfig(precision="float8")):
            pass


def test_cli_refuses_a_strategy_of_the_other_backend_and_leaves_nothing(tmp_path, capsys):
    import keras

    from microrepro.common import cli

    other = "data_parallel" if keras.backend.backend() == "tensorflow" else "mirrored"
    out = tmp_path / "run"
    code = cli.main(["reproduce", "cell_counting", "--schedule", "smoke", "--synthetic", "--out", str(out),
                     "--set", f"runtime.strategy={other}"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"runtime.strategy={other}" in err[0]
    assert not out.exists()


def test_runtime_scope_sets_and_restores_the_dtype_policy():
    import keras

    with training.runtime_scope(RuntimeConfig(precision="mixed_bfloat16")) as runtime:
        assert keras.config.dtype_policy().name == "mixed_bfloat16"
        assert runtime == {"strategy": "none", "replicas": 1, "precision": "mixed_bfloat16",
                           "backend": keras.backend.backend()}
    assert keras.config.dtype_policy().name == "float32"
    with training.runtime_scope(None) as runtime:
        assert runtime["strategy"] == "none" and runtime["precision"] == "float32"


def test_inter_op_threads_none_is_tensorflows_default_and_a_started_pool_is_kept_with_a_warning():
    import keras

    assert training.set_inter_op_threads(None) is None
    if keras.backend.backend() != "tensorflow":
        assert training.set_inter_op_threads(1) is None
        return
    import tensorflow as tf

    tf.constant(1.0) + 1.0  # TensorFlow has started in this test process: its pool is fixed now
    current = tf.config.threading.get_inter_op_parallelism_threads()
    other = (current or 1) + 1
    with pytest.warns(RuntimeWarning, match="inter_op_threads=.*not applied"):
        assert training.set_inter_op_threads(other) == (current or None)
    with pytest.warns(RuntimeWarning), training.runtime_scope(RuntimeConfig(inter_op_threads=other)) as runtime:
        assert runtime.get("inter_op_threads") == (current or None)  # provenance: the pool that ran


def test_a_run_made_before_the_runtime_section_still_continues(tmp_path):
    task = get_task("cell_counting")
    cfg = task.load_config("paper", "smoke")
    run = runs.Run.create("cell_counting", cfg, "paper", "smoke", 0, out=tmp_path / "run")
    stored = json.loads((run.run_dir / "config.json").read_text())
    del stored["runtime"]  # as written before configs had one
    (run.run_dir / "config.json").write_text(json.dumps(stored))
    assert runs.check_run_target(run.run_dir, cfg, "paper", "smoke", 0) == "continue"
    stored["runtime"] = {"strategy": "none", "precision": "float32"}  # before inter_op_threads existed
    (run.run_dir / "config.json").write_text(json.dumps(stored))
    assert runs.check_run_target(run.run_dir, cfg, "paper", "smoke", 0) == "continue"
    other = task.load_config("paper", "smoke", {"runtime": {"precision": "mixed_bfloat16"}})
    with pytest.raises(UserError, match="runtime"):
        runs.check_run_target(run.run_dir, other, "paper", "smoke", 0)


def test_pipelines_shard_by_data_under_multiworker():
    import tensorflow as tf

    from microrepro.common.pipeline import make_dataset
    from microrepro.reproductions.fcn_segmentation import data as fcn_data

    data = make_dataset({"image": np.zeros((4, 8, 8), np.uint8)}, batch_size=2)
    own = fcn_data.make_dataset(np.zeros((4, 8, 8, 1), np.float32), np.zeros((4, 8, 8), np.int32), 2,
                                shuffle=False, seed=0)
    for dataset in (data, own):
        assert dataset.options().experimental_distribute.auto_shard_policy == tf.data.experimental.AutoShardPolicy.DATA
        assert dataset.options().deterministic is not False
