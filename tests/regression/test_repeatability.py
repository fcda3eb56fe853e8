"""A training run repeats in a fresh process: same seed, same config -> the same weights, bit for bit.

dwt_mitosis' DWT-net did not (TensorFlow's default inter-op pool ran independent ops of its
graph-mode step side by side, and its loss after one epoch differed in the 4th digit from one
process to the next); its config therefore sets ``runtime.inter_op_threads: 1``. Both runs are on
this machine, so the test compares the machine with itself, not with stored numbers.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.regression

_TRAIN = """
import hashlib
import numpy as np
from microrepro.common import training
from microrepro.reproductions.dwt_mitosis import task as T
from microrepro.reproductions.dwt_mitosis.segmentation import build_seg_model, compile_seg_model

cfg = T.TASK.load_config("paper", "short", {})
training.set_inter_op_threads(cfg.runtime.inter_op_threads)
training.set_seed(0)
model, _ = compile_seg_model(build_seg_model(cfg, "dwt"), cfg, 32)
rng = np.random.default_rng(0)
x = rng.random((32, 64, 64, 3), np.float32)
y = (rng.random((32, 64, 64, 1)) > 0.9).astype(np.float32)
model.fit(x, np.concatenate([1 - y, y], -1), batch_size=8, epochs=2, verbose=0, shuffle=False)
print("WEIGHTS", hashlib.sha256(b"".join(np.asarray(w).tobytes() for w in model.get_weights())).hexdigest())
"""


def _weights_hash() -> str:
    done = subprocess.run([sys.executable, "-c", _TRAIN], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return next(line.split()[1] for line in done.stdout.splitlines() if line.startswith("WEIGHTS"))


def test_dwt_net_training_repeats_in_a_fresh_process():
    assert _weights_hash() == _weights_hash()
