"""Shared fixtures. Tests write only into tmp_path; real data tests skip with a reason when absent.

Folders set the tier marker: tests/unit -> unit, tests/instant -> instant, tests/learns -> learns,
tests/regression -> regression.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("MICROREPRO_OFFLINE", "1")  # tests never download (test_download.py serves on 127.0.0.1)

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
TIERS = ("unit", "instant", "learns", "regression")


def pytest_collection_modifyitems(config, items):
    for item in items:
        parts = Path(str(item.fspath)).relative_to(REPO / "tests").parts
        if parts and parts[0] in TIERS:
            item.add_marker(getattr(pytest.mark, parts[0]))


def data_root() -> Path | None:
    """The folder of real data sets: $MICROREPRO_DATA, else ../shared/data beside the repo."""
    env = os.environ.get("MICROREPRO_DATA")
    for candidate in ([Path(env)] if env else []) + [REPO.parent / "shared" / "data"]:
        if candidate.is_dir():
            return candidate
    return None


@pytest.fixture
def shared_data():
    """``shared_data("spines")`` -> Path to that real data set, or skip with a clear reason."""

    def get(name: str) -> Path:
        root = data_root()
        if root is None or not (root / name).is_dir():
            pytest.skip(f"real data set '{name}' not found (set MICROREPRO_DATA or put ../shared/data beside the repo)")
        return root / name

    return get


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _isolated_outputs(tmp_path, monkeypatch):
    """Runs, published summaries and the download cache go to tmp_path, never into the working tree."""
    monkeypatch.setenv("MICROREPRO_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("MICROREPRO_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("MICROREPRO_CACHE", str(tmp_path / "download_cache"))
