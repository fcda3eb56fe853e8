"""Regression tier: each registered paper's REAL config, shrunk (schedule "smoke"), on a small
synthetic fixture with a fixed seed; its metrics must match the stored golden values.

The golden file is rewritten only behind an explicit switch:
    EXPECTTEST_ACCEPT=1 pytest tests/regression
"""

import json
import math
import os
from pathlib import Path

import pytest

from microrepro.common.data_sources import DataSource
from microrepro.common.errors import UserError
from microrepro.common.registry import PAPERS, get_task
from microrepro.common.runs import Run
from microrepro.common.training import set_seed

GOLDEN = Path(__file__).with_name("golden.json")
ABS_TOL = 0.02  # smoke runs are deterministic on one machine; this absorbs cross-CPU float noise
TIMING = ("ms_", "s_per", "seconds", "images_per_s", "throughput")


def _comparable(metrics: dict) -> dict:
    return {
        model: {
            split: {k: v for k, v in values.items() if not k.startswith(TIMING) and not any(t in k for t in TIMING)}
            for split, values in splits.items()
        }
        for model, splits in metrics.items()
    }


@pytest.mark.parametrize("paper", list(PAPERS))
def test_smoke_metrics_match_golden(paper, tmp_path):
    try:
        task = get_task(paper)
    except UserError as err:
        pytest.skip(str(err))
    cfg = task.load_config("paper", "smoke")
    set_seed(0, deterministic=True)
    run = Run.create(paper, cfg, "paper", "smoke", 0, out=tmp_path / "run")
    task.reproduce(run, DataSource(task.dataset, None, "regression fixture: synthetic"))
    metrics = _comparable(run.metrics)
    assert metrics, f"{paper}: the smoke run recorded no metrics"

    golden = json.loads(GOLDEN.read_text()) if GOLDEN.is_file() else {}
    if os.environ.get("EXPECTTEST_ACCEPT") == "1":
        golden[paper] = metrics
        GOLDEN.write_text(json.dumps(golden, indent=2, sort_keys=True) + "\n")
        return
    if paper not in golden:
        pytest.fail(f"no golden values for '{paper}': run EXPECTTEST_ACCEPT=1 pytest tests/regression -k {paper}")
    expected = golden[paper]
    assert sorted(metrics) == sorted(expected), "the set of models changed"
    for model, splits in expected.items():
        for split, values in splits.items():
            for key, value in values.items():
                got = metrics[model][split].get(key)
                if value is None or (isinstance(value, float) and math.isnan(value)):
                    assert got is None or math.isnan(got), f"{model}/{split}/{key}: {got} != {value}"
                else:
                    assert got == pytest.approx(value, abs=ABS_TOL), f"{model}/{split}/{key}: {got} vs golden {value}"
