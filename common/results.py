"""Render ``results/<paper>.md`` from the paper's ``published.yaml`` and the published run summaries.

Nobody types a reproduced number into a table: every value comes from a run summary
(``results/runs/<paper>/<run>.json``, written by ``Run.publish``), and every published value from
``reproductions/<paper>/published.yaml``. Each row carries its data (real or synthetic) and the
run it came from; the provenance section lists commit, config hash, schedule actually run,
backend, device and date per run.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from microrepro.common import config as config_lib
from microrepro.common.errors import ConfigError, DataError
from microrepro.common.runs import REPO_ROOT, read_json, results_root

SCHEDULE_RANK = {"paper": 4, "long": 3, "short": 2, "smoke": 0}


def published_path(paper: str) -> Path:
    """``reproductions/<paper>/published.yaml``, or ``TASK.published_path`` of a paper added with
    ``registry.register`` (its folder may be anywhere)."""
    from microrepro.common import registry

    if registry.is_registered(paper):
        return Path(registry.get_task(paper).published_path)
    return REPO_ROOT / "reproductions" / paper / "published.yaml"


def load_published(paper: str) -> dict:
    path = published_path(paper)
    data = config_lib.read_yaml(path, missing="missing (each paper types its published numbers there, once)")
    for table in data.get("tables", []):
        for row in table.get("rows", []):
            for key in ("model", "metric", "published", "source"):
                if key not in row:
                    raise ConfigError(f"{path}: a row of table '{table.get('id')}' lacks '{key}': {row}")
    return data


def load_runs(paper: str, root: Path | None = None) -> list[dict]:
    """Published run summaries of ``paper``, newest first.

    Raises:
        DataError: a summary that is not valid JSON or lacks its provenance, naming the file.
    """
    folder = (root or results_root()) / "runs" / paper
    runs = []
    for path in sorted(folder.glob("*.json")):
        summary = read_json(path, fix=f"restore it (e.g. git checkout -- {path.name}) or move it out of {folder}")
        if not isinstance(summary, dict) or not isinstance(summary.get("provenance"), dict):
            raise DataError(f"{path}: not a run summary (no provenance); move it out of {folder}")
        summary.setdefault("metrics", {})
        summary["_file"] = path.name
        runs.append(summary)
    runs.sort(key=lambda r: r["provenance"].get("date", ""), reverse=True)
    return runs


def load_choices(paper: str, root: Path | None = None) -> list[dict]:
    """Model-selection trials of ``paper`` (``results/runs/<paper>/choices/*.json``), by name."""
    folder = (root or results_root()) / "runs" / paper / "choices"
    return sorted(load_runs(f"{paper}/choices", root) if folder.is_dir() else [], key=lambda r: r["_file"])


def _choices_section(trials: list[dict]) -> list[str]:
    """One row per (trial, model): its ``--set`` values and F1 on the validation split."""
    lines = [
        "## Choices made on the validation split (never reported above)",
        "",
        "Model-selection trials (`data.evaluate_on: val`): each is a run scored on the split carved from training "
        "for choices only; the config values they decided are the ones the runs above use.",
        "",
        "| trial | `--set` | model | F1 [95 % interval] | mAP@0.5 | data | run |",
        "|---|---|---|---|---|---|---|",
    ]
    for trial in trials:
        prov = trial["provenance"]
        overrides = ", ".join(f"`{o}`" for o in prov.get("overrides") or []) or "(none)"
        for model, splits in sorted(trial["metrics"].items()):
            for split, values in sorted(splits.items()):
                if "f1" not in values:
                    continue
                lines.append(f"| {Path(trial['_file']).stem} | {overrides} | {model} | {value_text(values, 'f1')} | "
                             f"{value_text(values, 'map50') if 'map50' in values else '–'} | "
                             f"{data_label(trial, split)} | {run_label(trial)}, commit `{prov.get('commit')}` |")
    return lines + [""]


def select_runs(runs: list[dict]) -> list[dict]:
    """The newest run of each (preset, schedule, seed), best schedule first, smoke runs left out."""
    chosen: dict[tuple, dict] = {}
    for run in runs:
        prov = run["provenance"]
        if prov.get("schedule") == "smoke":
            continue
        chosen.setdefault((prov.get("preset"), prov.get("schedule"), prov.get("seed")), run)
    return sorted(
        chosen.values(),
        key=lambda r: (-SCHEDULE_RANK.get(r["provenance"].get("schedule"), 1), r["provenance"].get("preset") != "paper",
                       r["provenance"].get("seed") or 0),
    )


def group_runs(runs: list[dict]) -> list[list[dict]]:
    """``select_runs``' runs grouped by (preset, schedule): one table row per group, seeds together."""
    groups: dict[tuple, list[dict]] = {}
    for run in runs:
        prov = run["provenance"]
        groups.setdefault((prov.get("preset"), prov.get("schedule")), []).append(run)
    return list(groups.values())


CI_LOW, CI_HIGH = "_ci_low", "_ci_high"
PAIRED = "paired"


def _is_interval_key(metric: str) -> bool:
    return metric.endswith((CI_LOW, CI_HIGH))


def value_text(values: dict, metric: str) -> str:
    """``0.850 [0.800, 0.900]``: the value and, when stored, its 95 % bootstrap interval over images."""
    text = _fmt(values.get(metric))
    low, high = values.get(metric + CI_LOW), values.get(metric + CI_HIGH)
    if metric + CI_LOW in values:
        text += f" [{_fmt(low)}, {_fmt(high)}]"
    return text


def seed_values(group: list[dict], model: str, split: str, metric: str) -> list[float]:
    """The metric's value in each run of the group that has it (finite numbers only)."""
    values = [run["metrics"].get(model, {}).get(split, {}).get(metric) for run in group]
    return [v for v in values if isinstance(v, (int, float)) and not math.isnan(v)]


def seeds_text(group: list[dict], model: str, split: str, metric: str) -> str | None:
    """``0.850 ± 0.020 (3 seeds) [0.780, 0.910]`` over the group's seeds that have the metric, or None
    (fewer than 2). The brackets span the seeds' own 95 % bootstrap intervals (lowest low, highest
    high) when every seed has one."""
    values = seed_values(group, model, split, metric)
    if len(values) < 2:
        return None
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    text = f"{_fmt(mean)} ± {_fmt(sd)} ({len(values)} seeds)"
    lows = seed_values(group, model, split, metric + CI_LOW)
    highs = seed_values(group, model, split, metric + CI_HIGH)
    if len(lows) == len(highs) == len(values):
        text += f" [{_fmt(min(lows))}, {_fmt(max(highs))}]"
    return text


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, (int, float)):
        magnitude = abs(value)
        if magnitude != 0 and (magnitude >= 1000 or magnitude < 0.001):
            return f"{value:.3g}"
        if magnitude >= 100:
            return f"{value:.1f}"
        return f"{value:.3f}".rstrip("0").rstrip(".") if magnitude >= 10 else f"{value:.3f}"
    return str(value)


def run_label(run: dict, seeds: list | None = None) -> str:
    prov = run["provenance"]
    text = f"{prov.get('preset')}/{prov.get('schedule')}"
    if prov.get("schedule") != "paper":
        text += " (shortened schedule)"
    seeds = seeds if seeds is not None else [prov.get("seed")]
    text += f", seed{'s' if len(seeds) > 1 else ''} {','.join(str(s) for s in seeds)}"
    strategy = (prov.get("distribution") or {}).get("strategy") if isinstance(prov.get("distribution"), dict) else None
    if strategy and strategy != "none":
        text += f", {strategy}"
    return text


def data_label(run: dict, split: str) -> str:
    info = run["provenance"].get("splits", {}).get(split)
    if not info:
        return f"{split}: ?"
    # The table cell says what a reader must not miss (real or synthetic, which set, how many
    # images); the split's full note and checksum are listed under Provenance.
    kind = info.get("kind", "?")
    kind = "**synthetic**" if kind == "synthetic" else kind
    if "dataset" in info and "n_images" in info:
        return f"{split} — {kind}: {info['dataset']}, {info['n_images']} img"
    return f"{split} — {info.get('label', kind)}"


def _has(run: dict, model: str, split: str, metric: str) -> bool:
    return metric in run["metrics"].get(model, {}).get(split, {})


def _seeds_having(group: list[dict], model: str, split: str, metric: str) -> list:
    """The seeds of the group's runs that recorded ``metric`` of ``model`` on ``split``."""
    return [r["provenance"].get("seed") for r in group if _has(r, model, split, metric)]


def _paired_over_seeds(group: list[dict], split: str, metric: str) -> str:
    """One summary row of a paired difference over a group's seeds: mean and how many seeds'
    intervals put A above B, B above A, or include 0."""
    above = below = level = 0
    values = []
    for run in group:
        own = run["metrics"].get(PAIRED, {}).get(split, {})
        if metric not in own:
            continue
        values.append(own[metric])
        low, high = own.get(metric + CI_LOW), own.get(metric + CI_HIGH)
        if low is not None and low > 0:
            above += 1
        elif high is not None and high < 0:
            below += 1
        else:
            level += 1
    n = len(values)
    mean = sum(values) / n if n else None
    having = _seeds_having(group, PAIRED, split, metric)
    return (f"| {metric} | {_fmt(mean)} | {above}/{n} | {below}/{n} | {level}/{n} | {data_label(group[0], split)} | "
            f"{run_label(group[0], having)} |")


def _arithmetic_table(table: dict, runs: list[dict], covered: set[tuple[str, str]]) -> list[str]:
    """A table of values recomputed from the paper's own numbers (``kind: paper_arithmetic``).

    Not a reproduction: no data is run, so the value sits in its own column with no seeds, data or
    run; it is the same in every run (checked: a disagreement is shown, not hidden).
    """
    lines = ["_Arithmetic on the paper's own published numbers, not a reproduction: nothing was trained or "
             "evaluated for these rows._", "",
             "| model | metric | published | recomputed from the paper's numbers | Δ | source |",
             "|---|---|---|---|---|---|"]
    for row in table["rows"]:
        model, metric, pub = row["model"], row["metric"], row["published"]
        covered.add((model, metric))
        found = [split[metric] for run in runs for split in run["metrics"].get(model, {}).values() if metric in split]
        value = found[0] if found else None
        shown = sorted({_fmt(v) for v in found})
        text = " / ".join(shown) if len(shown) > 1 else _fmt(value)
        delta = value - pub if isinstance(pub, (int, float)) and isinstance(value, (int, float)) else None
        lines.append(f"| {model} | {metric} | {_fmt(pub)} | {text} | {_fmt(delta)} | {row['source']} |")
    return lines + [""]


def render(paper: str, root: Path | None = None) -> Path:
    """Write ``results/<paper>.md`` and return its path."""
    root = root or results_root()
    published = load_published(paper)
    runs = select_runs(load_runs(paper, root))
    groups = group_runs(runs)
    source = published_path(paper)
    source = source.relative_to(REPO_ROOT).as_posix() if source.is_relative_to(REPO_ROOT) else str(source)
    lines = [
        f"# {paper}: published vs reproduced",
        "",
        f"_Generated by `microrepro results` from `{source}` and "
        f"`results/runs/{paper}/*.json`; do not edit by hand._",
        "",
        f"Paper: {published.get('paper', '?')}",
        "",
    ]
    if not runs:
        lines += ["**No run has been published yet**: run `make reproduce PAPER=" + paper + "`.", ""]
    covered: set[tuple[str, str]] = set()
    for table in published.get("tables", []):
        lines += [f"## {table.get('caption', table.get('id'))}", ""]
        if table.get("kind") == "paper_arithmetic":
            lines += _arithmetic_table(table, runs, covered)
            continue
        lines += [
            "| model | metric | published | reproduced | Δ | data | run | source |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for row in table["rows"]:
            model, metric = row["model"], row["metric"]
            covered.add((model, metric))
            pub = row["published"]
            pub_text = _fmt(pub) + (f" ({row['hardware']})" if row.get("hardware") else "")
            found = False
            for group in groups:
                splits = {s for r in group for s in r["metrics"].get(model, {}) if _has(r, model, s, metric)}
                for split in sorted(splits):
                    run = next(r for r in group if _has(r, model, split, metric))
                    values, seeds = run["metrics"][model][split], _seeds_having(group, model, split, metric)
                    found = True
                    ours = values[metric]
                    several = seed_values(group, model, split, metric)
                    if len(several) > 1:
                        ours = sum(several) / len(several)
                    delta = ours - pub if isinstance(pub, (int, float)) and ours is not None else None
                    ours_text = seeds_text(group, model, split, metric) or value_text(values, metric)
                    if metric.startswith(("ms_", "s_per")):
                        ours_text += f" ({run['provenance'].get('device', '?')})"
                    lines.append(
                        f"| {model} | {metric} | {pub_text} | {ours_text} | {_fmt(delta)} | "
                        f"{data_label(run, split)} | {run_label(run, seeds)} | {row['source']} |"
                    )
            if not found:
                lines.append(f"| {model} | {metric} | {pub_text} | not run | – | – | – | {row['source']} |")
        lines.append("")
    if any(len(group) > 1 for group in groups):
        lines += ["With several seeds, _reproduced_ is mean ± sd over the seeds, in brackets the span of the seeds' "
                  "own 95 % bootstrap intervals (lowest low, highest high), and Δ = mean − published.", ""]
    extra, paired, summary = [], [], []
    for group in groups:
        # every (model, split, metric) of any seed: a later seed may have models an earlier one lacks
        found = sorted({(model, split, metric) for r in group for model, splits in r["metrics"].items()
                        for split, metrics in splits.items() for metric in metrics})
        for model, split, metric in found:
            if _is_interval_key(metric) or (model, metric) in covered:
                continue
            if model == PAIRED:  # one row per seed: each has its own paired interval
                if len(group) > 1:
                    summary.append(_paired_over_seeds(group, split, metric))
                for each in group:
                    own = each["metrics"].get(model, {}).get(split, {})
                    if metric not in own:
                        continue
                    low, high = own.get(metric + CI_LOW), own.get(metric + CI_HIGH)
                    supported = low is not None and high is not None and (low > 0 or high < 0)
                    paired.append(f"| {metric} | {value_text(own, metric)} | {data_label(each, split)} | "
                                  f"{run_label(each)} | {'yes' if supported else 'no'} |")
                continue
            run = next(r for r in group if _has(r, model, split, metric))
            text = seeds_text(group, model, split, metric) or value_text(run["metrics"][model][split], metric)
            where = f"{data_label(run, split)} | {run_label(run, _seeds_having(group, model, split, metric))}"
            extra.append(f"| {model} | {metric} | {text} | {where} |")
    if any(any(_is_interval_key(m) for v in r["metrics"].values() for s in v.values() for m in s) for r in runs):
        lines += ["Intervals in brackets: 95 % bootstrap over images (1000 resamples of the evaluation images, "
                  "each metric recomputed as the paper computes it).", ""]
    if paired:
        lines += [
            "## Paired comparisons (same images resampled for both models)",
            "",
            "`<metric>_diff__A__vs__B` = A − B with its 95 % paired bootstrap interval; an ordering is claimed "
            "only where the interval excludes 0.",
            "",
            *([
                "Over the published seeds (each seed's own paired interval; an ordering holds across seeds only "
                "where every seed supports it in the same direction):",
                "",
                "| comparison | mean A − B | A > B | B > A | not separated | data | run |",
                "|---|---|---|---|---|---|---|",
                *summary,
                "",
                "Each seed:",
                "",
            ] if summary else []),
            "| comparison | A − B [95 % interval] | data | run | ordering supported |",
            "|---|---|---|---|---|",
            *paired,
            "",
        ]
    if extra:
        lines += [
            "## Further measurements (no published counterpart: ablations, released-code rules, timings)",
            "",
            "| model | metric | value | data | run |",
            "|---|---|---|---|---|",
            *extra,
            "",
        ]
    trials = load_choices(paper, root)
    if trials:
        lines += _choices_section(trials)
    notes = published.get("notes") or []
    if notes:
        lines += ["## Notes", ""] + [f"- {note}" for note in notes] + [""]
    if runs:
        lines += ["## Provenance", ""]
        for run in runs:
            prov = run["provenance"]
            run_id = f", run id `{prov['run_id']}`" if prov.get("run_id") else ""
            lines += [
                f"### {prov.get('run')} ({run_label(run)}{run_id})",
                "",
                f"- commit `{prov.get('commit')}`, config hash `{prov.get('config_hash')}`, seed {prov.get('seed')}, "
                f"date {prov.get('date')}",
                f"- backend {prov.get('backend')} on {prov.get('device')}; versions "
                + ", ".join(f"{k} {v}" for k, v in sorted((prov.get("versions") or {}).items())),
                f"- schedule actually run: `{json.dumps(prov.get('schedule_run') or {}, sort_keys=True)}`",
            ]
            for key in ("commit_note", "resumed_from_commit"):
                if prov.get(key):
                    lines.append(f"- {key.replace('_', ' ')}: {prov[key]}")
            for split, info in sorted((prov.get("splits") or {}).items()):
                checksum = f", checksum `{info['checksum']}`" if info.get("checksum") else ""
                lines.append(f"- split `{split}`: {info.get('label', info.get('kind'))}{checksum}")
            for figure in run.get("figures", []):
                lines.append(f"\n![{Path(figure).stem}]({figure})")
            lines.append("")
    out = root / f"{paper}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines).rstrip() + "\n")
    return out


def render_all(root: Path | None = None) -> list[Path]:
    from microrepro.common.registry import PAPERS

    written = []
    for paper in PAPERS:
        if published_path(paper).is_file():
            written.append(render(paper, root))
    return written
