"""Every paper's smoke reproduce under ``KERAS_BACKEND=jax``, end to end, in a subprocess.

``microrepro reproduce <paper> --schedule smoke --synthetic`` with the JAX backend (train under
``jax.jit``, thresholds, evaluation, figures) must exit 0 and leave a metrics.json with every
model of the paper. Runs and summaries go to tmp_path (MICROREPRO_RUNS / MICROREPRO_RESULTS);
``--synthetic`` and an empty MICROREPRO_DATA keep the real data sets and the download cache out.

Cost, measured one paper at a time (CPU seconds of the subprocess, which is about its wall time
on an idle core): fcn_segmentation 39 s, cell_counting 59 s, mitos_rcnn 67 s, spines 73 s,
dwt_mitosis 77 s; 5.3 min in all, over the ~4 min this tier can spend on repeating the papers on a
second backend, so the slowest, dwt_mitosis, is marked ``slow`` (``make test-all`` runs it) and
the other four cost ~4 min.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MODELS = {  # the models every smoke run must report (metrics.json has a few more entries)
    "fcn_segmentation": ("fcrn_a_pretrained", "fcrn_a_finetuned"),
    "cell_counting": ("c_resunet", "c_resunet_no_weightmap", "c_resunet_no_watershed"),
    "mitos_rcnn": ("mitos_rcnn", "faster_rcnn_conv4", "faster_rcnn_conv5"),
    "spines": ("yolov2", "faster_rcnn", "sp_cnn", "sp_cnn_hard", "sp_cnn_mse"),
    "dwt_mitosis": ("dwt_unet_seg", "unet_seg", "rcnn_dwt_labels", "rcnn_unet_labels", "rcnn_manual_labels",
                    "faster_rcnn_phase2"),
}
SLOW = ("dwt_mitosis",)


@pytest.mark.parametrize(
    "paper", [pytest.param(p, marks=pytest.mark.slow) if p in SLOW else p for p in MODELS],
)
def test_smoke_reproduce_under_jax(paper, tmp_path):
    pytest.importorskip("jax")
    (tmp_path / "no_data").mkdir()
    env = dict(
        os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2",
        MICROREPRO_RUNS=str(tmp_path / "runs"), MICROREPRO_RESULTS=str(tmp_path / "results"),
        MICROREPRO_DATA=str(tmp_path / "no_data"), MICROREPRO_CACHE=str(tmp_path / "cache"),
    )
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "microrepro", "reproduce", paper, "--schedule", "smoke", "--synthetic",
           "--out", str(out)]
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    metrics = json.loads((out / "metrics.json").read_text())
    missing = [model for model in MODELS[paper] if not metrics.get(model)]
    assert not missing, f"metrics.json of {paper} lacks {missing}: {sorted(metrics)}"
