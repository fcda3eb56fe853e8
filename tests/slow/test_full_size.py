"""Every paper's models at full size: the ``paper`` preset at the ``paper`` schedule's widths, input and batch.

For each model (the cases of ``reproductions/<paper>/bench.py`` at ``load_config("paper", "paper")``,
without the CPU caps ``bench`` applies) a fresh subprocess builds and compiles it, runs TWO training
steps on random data of the paper's input size and batch, then one inference of one image (traced by a
first call), and reports the parameter count, the seconds of the second step (the first traces), the
inference seconds and its peak RSS (``resource.getrusage``). Rows go to ``tmp_path/full_size.json`` and
are printed (``pytest -s``); ``MICROREPRO_FULL_SIZE_JSON`` names a file to copy them to.

Memory: each subprocess runs under RLIMIT_DATA = min(20 GiB, what the machine has free less 3 GiB), so a
configuration that does not fit a 24 GB machine fails its allocation instead of pushing other processes
out; the batch is then halved until it fits, and the row says ``batch_run`` < ``batch_paper``.

TensorFlow on the CPU for every paper; the smallest paper (fcn_segmentation) also under KERAS_BACKEND=jax.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from microrepro.common.registry import PAPERS

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
GIB = 1 << 30
# How an allocation refused by RLIMIT_DATA shows (oneDNN reports it as a primitive it could not create).
MEMORY_ERRORS = ("OOM", "ResourceExhausted", "RESOURCE_EXHAUSTED", "MemoryError", "bad_alloc", "Cannot allocate",
                 "could not create a primitive")

CASE = r"""
import json, resource, sys, time

limit = int(sys.argv[4])
resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
paper, index, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

import keras, numpy as np

from microrepro.common import bench
from microrepro.reproductions.dwt_mitosis import bench as dwt_bench

bench.on_cpu = dwt_bench.on_cpu = lambda: False  # the configured sizes, not bench's CPU caps
case = bench.cases_for(paper)[index]
model = case.build()
row = {"paper": paper, "model": case.name, "backend": keras.backend.backend(), "input": list(case.input_shape),
       "batch_paper": case.batch, "batch_run": batch, "parameters": int(model.count_params())}
x, y = case.make_batch(batch)
times, losses = [], []
for _ in range(2):
    start = time.perf_counter()
    loss = model.train_on_batch(x, y)
    times.append(time.perf_counter() - start)
    losses.append(float(np.ravel(loss)[0]) if not isinstance(loss, dict) else float(loss["loss"]))
single = x[:1] if not isinstance(x, dict) else {k: v[:1] for k, v in x.items()}
model.predict_on_batch(single)
start = time.perf_counter()
model.predict_on_batch(single)
row.update(first_step_s=times[0], s_per_step=times[1], infer_s_per_image=time.perf_counter() - start, losses=losses,
           peak_rss_gib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1 << 20))
print(json.dumps(row))
"""


def _memory_limit() -> int:
    available = 20 * GIB
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            available = int(line.split()[1]) * 1024
    return int(min(20 * GIB, available - 3 * GIB))


def _cases(paper: str, env: dict) -> list[tuple[int, int]]:
    code = ("import json, sys\nfrom microrepro.common import bench\nfrom microrepro.reproductions.dwt_mitosis "
            "import bench as b\nbench.on_cpu = b.on_cpu = lambda: False\n"
            "print(json.dumps([c.batch for c in bench.cases_for(sys.argv[1])]))")
    out = subprocess.run([sys.executable, "-c", code, paper], env=env, capture_output=True, text=True, timeout=600,
                         cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    return list(enumerate(json.loads(out.stdout.strip().splitlines()[-1])))


def _measure(paper: str, env: dict) -> list[dict]:
    rows = []
    limit = _memory_limit()
    for index, batch in _cases(paper, env):
        failures = []
        while True:
            out = subprocess.run([sys.executable, "-c", CASE, paper, str(index), str(batch), str(limit)], env=env,
                                 capture_output=True, text=True, timeout=3600, cwd=REPO)
            if out.returncode == 0:
                row = json.loads(out.stdout.strip().splitlines()[-1])
                row["memory_limit_gib"] = round(limit / GIB, 1)
                if failures:
                    row["note"] = (f"batch {row['batch_paper']} does not fit RLIMIT_DATA {row['memory_limit_gib']} GiB "
                                   f"here; ran at batch {batch} ({'; '.join(failures)})")
                rows.append(row)
                break
            assert batch > 1, f"{paper} case {index} fails even at batch 1: {out.stderr[-3000:]}"
            lines = out.stderr.strip().splitlines()
            memory = [line for line in lines if any(word in line for word in MEMORY_ERRORS)]
            failures.append(f"batch {batch}: {(memory or lines or [f'exit {out.returncode}'])[0][:160]}")
            batch //= 2
    return rows


def _report(rows: list[dict], tmp_path: Path, name: str) -> None:
    (tmp_path / "full_size.json").write_text(json.dumps(rows, indent=2))
    target = os.environ.get("MICROREPRO_FULL_SIZE_JSON")
    if target:
        existing = json.loads(Path(target).read_text()) if Path(target).is_file() else {}
        existing[name] = rows
        Path(target).write_text(json.dumps(existing, indent=2))
    for row in rows:
        print(f"[full size] {row['paper']}/{row['model']} ({row['backend']}): {row['parameters'] / 1e6:.2f} M params, "
              f"input {'x'.join(map(str, row['input']))}, batch {row['batch_run']} (paper {row['batch_paper']}), "
              f"{row['s_per_step']:.2f} s/step (first {row['first_step_s']:.1f} s), "
              f"{row['infer_s_per_image']:.3f} s/image inference, peak RSS {row['peak_rss_gib']:.2f} GiB"
              + (f"; {row['note']}" if row.get("note") else ""))


def _check(rows: list[dict]) -> None:
    assert rows
    for row in rows:
        assert row["parameters"] > 0 and 1 <= row["batch_run"] <= row["batch_paper"]
        assert all(abs(value) < float("inf") for value in row["losses"]), row


@pytest.mark.parametrize("paper", PAPERS)
def test_paper_models_train_two_steps_at_full_size(tmp_path, paper):
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2")
    rows = _measure(paper, env)
    _report(rows, tmp_path, f"{paper}/tensorflow")
    _check(rows)


def test_smallest_paper_at_full_size_under_jax(tmp_path):
    pytest.importorskip("jax")
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2")
    rows = _measure("fcn_segmentation", env)
    _report(rows, tmp_path, "fcn_segmentation/jax")
    _check(rows)
