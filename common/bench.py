"""Benchmarks: speed and memory of every paper's pipeline, beside the papers' own timings.

Each paper may define ``reproductions/<paper>/bench.py`` with ``benchmarks(config) -> list[BenchCase]``.
Every case runs in its own
subprocess (so peak memory is that case's alone) and measures, with warm-up and repeats (median and
min–max spread):

- the tf.data input pipeline alone (images/s, with the paper's augmentation) and its ratio to what
  training consumes (> 1 means the pipeline is not the bottleneck);
- training: images/s and ms/step at the case's input size and batch;
- inference: ms per image at the paper's input size, and seconds per full field with tiling;
- peak host memory (max RSS) of the process.

Timings are never asserted in tests: a benchmark is not a timed test.
``python -m microrepro.common.bench --case <paper>:<index>`` runs one case and prints JSON.

``results/benchmarks.json`` accumulates: a run replaces only the rows it measured again (same
paper, model, device, backend and precision) and the rows of papers it re-ran on the same device
and backend; rows of other papers and other machines (a GPU run beside the CPU rows) are kept.
Every row carries the commit and date it was measured at.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from microrepro.common.runs import device_name, git_commit, results_root


@dataclass
class BenchCase:
    """One model of one paper to benchmark. Callables are built lazily inside the subprocess."""

    paper: str
    name: str
    build: Callable[[], Any]  # -> compiled keras.Model
    input_shape: tuple  # (H, W, C) of one training/inference image
    batch: int
    make_batch: Callable[[int], tuple]  # batch size -> (x, y) numpy arrays for train_on_batch
    pipeline: Callable[[], Any] | None = None  # -> batched tf.data.Dataset of the real input pipeline
    field_shape: tuple | None = None  # full field (H, W, C) predicted by tiling
    field_predict: Callable[[Any, Any], Any] | None = None  # (model, field image) -> anything
    published: list = field(default_factory=list)  # [{"metric", "value", "hardware", "source"}]
    note: str = ""


def on_cpu() -> bool:
    """No accelerator visible to the Keras backend: a paper's CPU caps (smaller batch/input) apply."""
    from microrepro.common.runs import cpu_name

    return device_name() == cpu_name()


def published_timings(paper: str, model: str, label: str | None = None) -> list[dict]:
    """The paper's timing rows of ``model`` from its ``published.yaml``, in ``BenchCase.published`` form.

    ``label`` is appended to the metric name, for rows of another work shown beside ours.
    """
    from microrepro.common.results import load_published

    out = []
    for table in load_published(paper).get("tables", []):
        for row in table.get("rows", []):
            timing = row["metric"] == "ms_per_image" or row["metric"].startswith("s_per")
            if row["model"] == model and timing and row["published"] is not None:
                metric = f"{row['metric']} ({label})" if label else row["metric"]
                out.append({"metric": metric, "value": row["published"],
                            "hardware": row.get("hardware", "not stated"), "source": row["source"]})
    return out


def _median_spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def _profile_tf(model, x, y, repeats: int, steps: int) -> dict:
    """Where one training step's time goes (TF backend): the forward pass in training mode, the
    forward pass plus the loss (target assignment, sampling and loss terms: ``compute_loss``), and
    the whole step (plus gradients and the optimizer update), each a compiled ``tf.function``
    (XLA when the model's ``jit_compile`` is on) timed like the step; the differences are the parts.
    """
    import tensorflow as tf

    jit = bool(getattr(model, "jit_compile", False))
    forward = tf.function(lambda x: model(x, training=True), jit_compile=jit)

    def _loss(x, y):
        return model.compute_loss(x, y, model(x, training=True), training=True)

    with_loss = tf.function(_loss, jit_compile=jit)

    def timed(fn, *args) -> list[float]:
        fn(*args)  # trace (and compile)
        out = []
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(steps):
                result = fn(*args)
            tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t, result)
            out.append((time.perf_counter() - start) / steps * 1000)
        return out

    return {"forward_ms": _median_spread(timed(forward, x)), "forward_loss_ms": _median_spread(timed(with_loss, x, y))}


def measure(case: BenchCase, repeats: int = 5, steps: int = 5, jit: bool = False, profile: bool = False) -> dict:
    """Measure one case in this process (call it in a fresh subprocess for clean peak memory).

    ``jit``: compile the training and inference steps with XLA (``model.jit_compile``; the row
    says whether the model accepted it). ``profile``: add :func:`_profile_tf`'s breakdown of a
    training step (TF backend only). ``first_step_s`` is the first training step's wall time:
    tracing (and with XLA, compilation) included, what a schedule pays once.
    """
    import keras
    import numpy as np

    out: dict = {
        "paper": case.paper,
        "model": case.name,
        "input": "x".join(str(v) for v in case.input_shape),
        "batch": case.batch,
        "backend": keras.backend.backend(),
        "device": device_name(),
        "precision": keras.config.dtype_policy().name,
        "note": case.note,
        "published": case.published,
    }
    model = case.build()
    if jit:
        model.jit_compile = True  # Keras falls back to False (with a warning) where the model cannot
    out["xla"] = bool(model.jit_compile) if jit else False
    out["parameters"] = int(model.count_params())
    x, y = case.make_batch(case.batch)
    start = time.perf_counter()
    model.train_on_batch(x, y)  # warm-up: tracing / compilation
    out["first_step_s"] = time.perf_counter() - start
    model.train_on_batch(x, y)
    step_times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            model.train_on_batch(x, y)
        step_times.append((time.perf_counter() - start) / steps)
    out["train_ms_per_step"] = _median_spread([t * 1000 for t in step_times])
    out["train_images_per_s"] = _median_spread([case.batch / t for t in step_times])

    if profile and keras.backend.backend() == "tensorflow":
        out["profile"] = _profile_tf(model, x, y, repeats, steps)
    single = x[:1] if not isinstance(x, dict) else {k: v[:1] for k, v in x.items()}
    model.predict_on_batch(single)
    infer = []
    for _ in range(repeats * 2):
        start = time.perf_counter()
        model.predict_on_batch(single)
        infer.append((time.perf_counter() - start) * 1000)
    out["infer_ms_per_image"] = _median_spread(infer)

    if case.pipeline is not None and importlib.util.find_spec("tensorflow") is None:
        # The lent GPU machine runs Keras on JAX without TensorFlow: no tf.data there.
        missing = "pipeline not measured (no TensorFlow for tf.data here)"
        out["note"] = (out["note"] + "; " if out["note"] else "") + missing
    elif case.pipeline is not None:
        from microrepro.common.pipeline import pipeline_throughput

        rates = [pipeline_throughput(case.pipeline(), n_batches=10, warmup=2)["images_per_s"] for _ in range(3)]
        out["pipeline_images_per_s"] = _median_spread(rates)
        out["pipeline_to_training_ratio"] = out["pipeline_images_per_s"]["median"] / out["train_images_per_s"]["median"]

    if case.field_shape is not None and case.field_predict is not None:
        rng = np.random.default_rng(0)
        image = rng.random(case.field_shape).astype("float32")
        case.field_predict(model, image)
        fields = []
        for _ in range(max(2, repeats // 2)):
            start = time.perf_counter()
            case.field_predict(model, image)
            fields.append(time.perf_counter() - start)
        out["field"] = "x".join(str(v) for v in case.field_shape)
        out["s_per_field"] = _median_spread(fields)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def cases_for(paper: str, schedule: str = "paper") -> list[BenchCase]:
    """The cases of ``reproductions/<paper>/bench.py:benchmarks(config)`` at the paper's own config
    (``schedule`` "paper"), or at another schedule's (e.g. "short": what the CPU runs train)."""
    import importlib

    from microrepro.common.registry import get_task

    task = get_task(paper)
    # bench.py beside the paper's task module (reproductions/<paper>/, or a registered paper's own package)
    name = type(task).__module__.rsplit(".", 1)[0] + ".bench"
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name and name.startswith(err.name):
            return []
        raise
    return module.benchmarks(task.load_config("paper", schedule))


PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


@dataclass(frozen=True)
class Levers:
    """How a case is run: the config schedule its models come from, the dtype policy, XLA, the
    TensorFlow thread pools (0 = TF's default), and whether the step is profiled."""

    schedule: str = "paper"
    precision: str = "float32"
    xla: bool = False
    threads: tuple[int, int] = (0, 0)  # (intra-op, inter-op)
    profile: bool = False

    def args(self) -> list[str]:
        out = ["--schedule", self.schedule, "--precision", self.precision]
        out += ["--xla"] * self.xla + ["--profile"] * self.profile
        return out + (["--threads", f"{self.threads[0]},{self.threads[1]}"] if any(self.threads) else [])

    def label(self) -> str:
        parts = [self.schedule, self.precision] + ["xla"] * self.xla
        return ", ".join(parts + ([f"threads {self.threads[0]}/{self.threads[1]}"] if any(self.threads) else []))


def parse_threads(text: str) -> tuple[int, int]:
    """``"2,1"`` -> (2, 1): intra-op and inter-op thread pool sizes (0 = TensorFlow's default)."""
    from microrepro.common.errors import UserError

    try:
        intra, inter = (int(v) for v in text.split(","))
    except ValueError:
        raise UserError(f"--threads takes INTRA,INTER (two whole numbers, 0 = default), got {text!r}") from None
    if intra < 0 or inter < 0:
        raise UserError(f"--threads must not be negative, got {text!r}")
    return intra, inter


def run(papers: list[str] | None = None, repeats: int = 5, out_dir: Path | None = None,
        precision: str = "float32", levers: Levers | None = None) -> Path:
    """Run every case in a subprocess; write results/benchmarks.{json,md}.

    ``precision``: the Keras dtype policy the models are built under (``mixed_bfloat16``: float32
    variables, bfloat16 compute). ``levers``: schedule, XLA, threads and profiling (its precision
    wins over ``precision``).
    """
    levers = levers or Levers(precision=precision)
    precision = levers.precision
    from tqdm import tqdm

    from microrepro.common.errors import UserError
    from microrepro.common.registry import PAPERS
    from microrepro.common.runs import check_writable

    if precision not in PRECISIONS:
        raise UserError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    unknown = [paper for paper in papers or [] if paper not in PAPERS]
    if unknown:
        raise UserError(f"bench: unknown paper '{unknown[0]}'; choose any of {', '.join(PAPERS)} (default: all)")
    out_dir = Path(out_dir or results_root())
    check_writable(out_dir, "results folder")
    old_rows = _load_rows(out_dir / "benchmarks.json")  # a damaged file stops us before measuring
    jobs, skipped = [], []
    for paper in papers or list(PAPERS):
        try:
            n = len(cases_for(paper, levers.schedule))
        except UserError as err:
            print(f"[bench] {paper}: skipped ({err})")
            skipped.append(paper)
            continue
        jobs += [(paper, i) for i in range(n)]
    if not jobs:
        raise UserError(
            f"bench: nothing to measure ({', '.join(skipped or papers or PAPERS)} has no benchmark cases); "
            f"{out_dir / 'benchmarks.md'} is left as it was"
        )
    rows = []
    for paper, index in tqdm(jobs, desc="benchmarks", unit="case"):
        cmd = [sys.executable, "-m", "microrepro.common.bench", "--case", f"{paper}:{index}", "--repeats", str(repeats),
               *levers.args()]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
        if proc.returncode != 0:
            rows.append({"paper": paper, "case": index, "error": proc.stderr.strip().splitlines()[-1:]})
            continue
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    meta = {"commit": git_commit(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    for row in rows:
        row.update(meta)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = merge_rows(old_rows, rows, [paper for paper, _ in jobs])
    (out_dir / "benchmarks.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    return render(rows, meta, out_dir / "benchmarks.md")


def _load_rows(path: Path) -> list[dict]:
    """Rows of an earlier ``benchmarks.json`` (each given the file's commit/date if it has none)."""
    if not path.exists():
        return []
    try:
        data = json.loads(path.read_text())
        old_meta, old_rows = data.get("meta", {}), list(data["rows"])
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise SystemExit(f"[bench] {path} is not a benchmarks file ({err}); move it away and run again") from None
    return [{"commit": old_meta.get("commit", "?"), "date": old_meta.get("date", "?"), **row} for row in old_rows]


def _levers_of(row: dict) -> Levers:
    """The levers a row was measured with (rows from before levers existed: the plain ones)."""
    return Levers(row.get("schedule", "paper"), row.get("precision", "float32"), bool(row.get("xla")),
                  tuple(row.get("threads", (0, 0))))


def _row_key(row: dict) -> tuple:
    return (row["paper"], row.get("model", f"case {row.get('case')}"), row.get("device"), row.get("backend"),
            _levers_of(row))


def _machine(row: dict) -> tuple:
    """(paper, device, backend, levers): rows of one bench run of a paper on one machine."""
    return (row["paper"], row.get("device"), row.get("backend"), _levers_of(row))


def merge_rows(old: list[dict], new: list[dict], papers_run: list[str]) -> list[dict]:
    """``old`` rows still valid beside ``new``, ordered by paper then old-before-new.

    Dropped: an old row measured again (same paper, model, device, backend and levers), an old
    error row of a paper run again, and an old row of a paper run again on the same device and
    backend with the same levers (schedule, precision, XLA, threads) whose case no longer exists.
    Rows of other levers are kept: each lever is a row beside the plain one.
    """
    from microrepro.common.registry import PAPERS

    new_keys = {_row_key(row) for row in new}
    machines = {_machine(row) for row in new if "error" not in row}
    kept = []
    for row in old:
        if _row_key(row) in new_keys:
            continue
        measured_here = _machine(row) in machines
        if row["paper"] in papers_run and ("error" in row or measured_here):
            continue
        kept.append(row)
    order = {paper: i for i, paper in enumerate(PAPERS)}
    return sorted(kept + new, key=lambda row: order.get(row["paper"], len(order)))


def _m(entry: dict | None, fmt: str = "{:.1f}") -> str:
    if not entry:
        return "–"
    return f"{fmt.format(entry['median'])} ({fmt.format(entry['min'])}–{fmt.format(entry['max'])})"


def render(rows: list[dict], meta: dict, path: Path) -> Path:
    lines = [
        "# Benchmarks",
        "",
        f"_Generated by `microrepro bench` (last run: commit `{meta['commit']}`, {meta['date']}; each row's own "
        "commit is in its last column); median (min–max) of repeats after warm-up; do not edit by hand._",
        "",
        "| paper | model | params | input × batch | backend / precision | device | train img/s | train ms/step | "
        "pipeline img/s (ratio) | infer ms/img | field s (size) | peak RSS MB | commit |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    published, profiles = [], []
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['paper']} | case {row['case']} | error: {' '.join(row['error'])} |" + " |" * 9
                         + f" {row.get('commit', '?')} |")
            continue
        ratio = f" ({row['pipeline_to_training_ratio']:.1f}×)" if "pipeline_to_training_ratio" in row else ""
        field = f"{_m(row.get('s_per_field'), '{:.2f}')} ({row.get('field', '–')})" if row.get("s_per_field") else "–"
        levers = _levers_of(row).label()  # e.g. short, float32, xla, threads 2/1
        if "profile" in row:
            step, fwd, loss = (row["train_ms_per_step"]["median"], row["profile"]["forward_ms"]["median"],
                               row["profile"]["forward_loss_ms"]["median"])
            parts = " | ".join(f"{ms:.1f} ({ms / step:.0%})" for ms in (fwd, loss - fwd, step - loss))
            profiles.append(f"| {row['paper']} | {row['model']} | {row['input']} × {row['batch']} | {levers} | "
                            f"{step:.1f} | {parts} | {row.get('first_step_s', 0):.1f} |")
        lines.append(
            f"| {row['paper']} | {row['model']} | {row['parameters'] / 1e6:.2f} M | {row['input']} × {row['batch']} | "
            f"{row['backend']} / {levers} | {row['device']} | {_m(row['train_images_per_s'])} | "
            f"{_m(row['train_ms_per_step'])} | {_m(row.get('pipeline_images_per_s'))}{ratio} | "
            f"{_m(row['infer_ms_per_image'])} | {field} | {row['peak_rss_mb']:.0f} | "
            f"{row.get('commit', meta['commit'])} |"
        )
        for pub in row.get("published", []):
            ours = row.get("s_per_field") if pub["metric"].startswith("s_per") else row.get("infer_ms_per_image")
            published.append(
                f"| {row['paper']} | {row['model']} | {pub['metric']} | "
                f"{pub['value']} ({pub['hardware']}, {pub['source']}) | "
                f"{_m(ours, '{:.2f}')} ({row['device']}, {row['backend']}) |"
            )
    if published:
        lines += [
            "",
            "## The papers' timings beside ours",
            "",
            "| paper | model | metric | published (hardware) | ours (hardware, backend) |",
            "|---|---|---|---|---|",
            *published,
        ]
    if profiles:
        lines += [
            "",
            "## Where a training step's time goes",
            "",
            "Median ms per step of three compiled functions on the same batch: the forward pass in training mode, "
            "forward + loss (target assignment, sampling, loss terms: the model's `compute_loss`), and the whole "
            "training step; the parts are their differences (gradients + optimizer = step − forward+loss), so a "
            "part within the timing noise can come out slightly negative. "
            "First step: the first training step's wall time (tracing, and compilation with XLA), paid once per "
            "model and schedule.",
            "",
            "| paper | model | input × batch | levers | step ms | forward ms | loss ms | gradients + update ms | "
            "first step s |",
            "|---|---|---|---|---|---|---|---|---|",
            *profiles,
        ]
    notes = [row["note"] for row in rows if row.get("note")]
    if notes:
        lines += ["", "## Notes", "", *[f"- {n}" for n in dict.fromkeys(notes)]]
    path.write_text("\n".join(lines) + "\n")
    return path


def _main() -> int:
    parser = argparse.ArgumentParser(description="run one benchmark case and print its JSON")
    parser.add_argument("--case", required=True, help="<paper>:<index>")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--precision", choices=PRECISIONS, default="float32")
    parser.add_argument("--schedule", default="paper")
    parser.add_argument("--xla", action="store_true")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--threads", default="0,0")
    args = parser.parse_args()
    import keras

    threads = parse_threads(args.threads)
    if any(threads) and keras.backend.backend() == "tensorflow":
        import tensorflow as tf  # before any op runs: the pools are fixed at the first one

        tf.config.threading.set_intra_op_parallelism_threads(threads[0])
        tf.config.threading.set_inter_op_parallelism_threads(threads[1])
    keras.config.set_dtype_policy(args.precision)
    paper, index = args.case.split(":")
    case = cases_for(paper, args.schedule)[int(index)]
    out = measure(case, repeats=args.repeats, jit=args.xla, profile=args.profile)
    out.update(schedule=args.schedule, threads=list(threads))
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(_main())
