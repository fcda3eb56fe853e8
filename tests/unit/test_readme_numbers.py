"""Every result quoted in a paper's README comes from a committed run summary (results/runs).

A number written with two or three decimals in ``reproductions/<paper>/README.md`` must be one of:
a value in one of the paper's run summaries (``results/runs/<paper>/*.json``, rounded as written),
a mean or sd over the published seeds of one (model, split, metric, preset, schedule), a published
number (``published.yaml``) or a config value (``config.yaml``). The few that are arithmetic or
code constants are listed in ``NOT_RESULTS`` with where they come from, so a result typed from a
run that was never committed fails here.
"""

import json
import re
import statistics
from collections import defaultdict
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PAPERS = sorted(p.parent.name for p in (ROOT / "reproductions").glob("*/README.md"))
NUMBER = re.compile(r"(?<![\w.])\d\.(\d{2,3})(?![\d])")
# Numbers that are not results: arithmetic in the text or constants of the code, with their source.
NOT_RESULTS = {
    "spines": {
        "0.33": "IoU arithmetic 37²/64² (anchors section)",
        "0.75": "IoU arithmetic of a 32 px anchor with a 37 px spine",
        "0.055": "IoU arithmetic at the original 15 px",
        "0.99": "darknet's BN momentum / tiny-YOLO parameter count in millions (model summary)",
        "0.075": "second value of the threshold grid 0.05, 0.075, ..., 0.95",
        "0.997": "the TF OD API's BN momentum (faster_rcnn.bn_momentum default in config.py)",
        "1.64": "ratio of two results/benchmarks.md rows: Faster R-CNN short 110.2 / 67.4 ms per step (XLA)",
        "1.15": "ratio of two results/benchmarks.md rows: SP-CNN short 649.5 / 565.5 ms per step (bfloat16)",
    },
    "fcn_segmentation": {
        "1.37": "FCRN-A parameter count in millions (model summary)",
        "1.22": "ratio of two results/benchmarks.md rows: FCRN-A short 323.0 / 263.9 ms per step (XLA)",
        "1.21": "ratio of two results/benchmarks.md rows: FCRN-A short 323.0 / 267.5 ms per step (bfloat16)",
    },
    "cell_counting": {
        "0.011": "Gaussian mass outside 3 sigma (weight-map truncation arithmetic)",
        "1.09": "ratio of two results/benchmarks.md rows: c-ResUNet short 221.7 / 204.3 ms per step (bfloat16)",
    },
    "mitos_rcnn": {
        "1.16": "ratio of two results/benchmarks.md rows: conv5 short 81.2 / 70.3 ms per step (XLA)",
        "1.07": "ratio of two results/benchmarks.md rows: MITOS-RCNN short 81.3 / 75.7 ms per step (XLA)",
        "1.14": "ratio of two results/benchmarks.md rows: conv5 short 81.2 / 71.1 ms per step (bfloat16)",
        "1.57": "ratio of two results/benchmarks.md rows: conv4 short 97.3 / 62.0 ms per step (bfloat16)",
    },
}


def _numbers(value, out: list) -> None:
    if isinstance(value, dict):
        for v in value.values():
            _numbers(v, out)
    elif isinstance(value, list):
        for v in value:
            _numbers(v, out)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        out.append(float(value))


def _sources(paper: str) -> list[float]:
    values: list[float] = []
    folder = ROOT / "results" / "runs" / paper
    runs = [json.loads(p.read_text()) for p in folder.glob("*.json")]
    for run in runs + [json.loads(p.read_text()) for p in folder.glob("choices/*.json")]:  # trials: their own values
        _numbers(run, values)
    groups = defaultdict(list)
    for run in runs:  # seed means over the published runs only
        prov = run["provenance"]
        for model, splits in run["metrics"].items():
            for split, metrics in splits.items():
                for name, v in metrics.items():
                    if isinstance(v, (int, float)):
                        groups[(model, split, name, prov.get("preset"), prov.get("schedule"))].append(v)
    for group in groups.values():
        if len(group) > 1:
            values += [statistics.mean(group), statistics.stdev(group)]
    for name in ("published.yaml", "config.yaml"):
        _numbers(yaml.safe_load((ROOT / "reproductions" / paper / name).read_text()), values)
    return values


@pytest.mark.parametrize("paper", PAPERS)
def test_every_readme_number_comes_from_a_committed_run(paper):
    text = (ROOT / "reproductions" / paper / "README.md").read_text()
    values = _sources(paper)
    allowed = NOT_RESULTS.get(paper, {})
    missing = []
    for match in NUMBER.finditer(text):
        written, decimals = match.group(0), len(match.group(1))
        if written in allowed:
            continue
        found = {round(abs(v), decimals) for v in values}
        if round(float(written), decimals) not in found:
            line = text[: match.start()].count("\n") + 1
            missing.append(f"README.md:{line}: {written}")
    assert not missing, f"{paper}: numbers in no committed run summary, published.yaml or config.yaml: {missing}"


def test_the_not_results_list_has_no_stale_entries():
    for paper, numbers in NOT_RESULTS.items():
        text = (ROOT / "reproductions" / paper / "README.md").read_text()
        assert all(n in text for n in numbers), paper
