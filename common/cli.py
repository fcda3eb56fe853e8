"""Command line: ``microrepro <command>`` (or ``python -m microrepro <command>``).

Errors a user can fix are printed on one line (``error: ...``) with exit code 2, never as a
traceback; ``--debug`` shows the traceback when you need it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from microrepro.common.errors import UserError

EPILOG = """examples:
  microrepro list
  microrepro reproduce cell_counting                      # default: preset paper, short schedule
  microrepro reproduce spines --preset released --schedule paper --data-dir ~/data
  microrepro evaluate runs/spines/<run> --data-dir ~/data/spines
  microrepro predict runs/cell_counting/<run> my_images/*.png --out predictions/
  microrepro results                                      # re-render every results/<paper>.md
  microrepro fetch all                                    # download every public data set ahead of time

data: --data-dir, else $MICROREPRO_DATA/<dataset> (unset: ../shared/data/<dataset> beside the checkout, as
`make` does), else the download cache ($MICROREPRO_CACHE, default ~/.cache/microrepro), where a data set with
a public source is downloaded on first use (pinned, checksummed, resumable; `microrepro fetch`). The paper's
synthetic generator is used only for a data set without a public source or with --synthetic (announced, and
every number of that run is labelled "synthetic"); offline without a cached copy is an error that says where
to put the data by hand. Every command resolves data in this order.

errors you can fix (a bad option, file or folder) are one line `error: ...` with exit code 2; nothing is
written or overwritten before such an error."""

RUN_FOLDERS = """run folders (--out):
  a new or empty folder        starts a new run
  an unfinished run            (interrupted or failed) is continued from its checkpoints by running the same
                               command again, with or without --resume; other settings are refused
  a finished run               is refused unless --resume (trained models kept, evaluation redone)
  anything else                is refused: nothing is overwritten
  --resume only continues a run folder; it refuses a missing, empty or non-run folder.

results: the run's summary goes to results/runs/<paper>/<name>.json; when that file holds another run's
summary (e.g. the shipped result) it goes beside it as <name>-<run id>.json and nothing is replaced,
unless --replace."""


MAX_PREVIEW = 24


def _paper_list() -> str:
    from microrepro.common.registry import paper_list

    return paper_list()


def _dataset_list() -> str:
    from microrepro.datasets import download

    lines = []
    for name, remote in download.REGISTRY.items():
        how = remote.source if remote.automatic else f"by hand ({remote.note}): {remote.source}"
        lines.append(f"  {name:<20} {how}")
    return "\n".join(lines)


def _data_args(parser, data_help: str, synthetic_help: str) -> None:
    """``--data-dir`` and ``--synthetic`` (reproduce and evaluate)."""
    parser.add_argument("--data-dir", type=Path, help=data_help)
    parser.add_argument("--synthetic", action="store_true", help=synthetic_help)


def _publish_args(parser) -> None:
    """``--no-publish`` and ``--replace`` (reproduce and evaluate)."""
    parser.add_argument("--no-publish", action="store_true", help="do not copy the run summary into results/")
    parser.add_argument("--replace", action="store_true",
                        help="let the run's summary replace another run's results/runs/<paper>/<name>.json")


def build_parser() -> argparse.ArgumentParser:
    from microrepro.common.bench import PRECISIONS

    parser = argparse.ArgumentParser(
        prog="microrepro",
        description="Reproductions of deep-learning papers on microscopy object detection and counting.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="command")

    sub.add_parser(
        "list",
        help="list the papers, their data sets and whether the data is found",
        description="List the five reproduced papers with the data set each uses by default and where "
        "that data was found ($MICROREPRO_DATA or ../shared/data, download cache) or that the synthetic "
        "generator will be used.",
    )

    rep = sub.add_parser(
        "reproduce",
        help="train and evaluate a paper's models, write its run folder and results/<paper>.md",
        description="Train and evaluate every model of a paper's result table on its default data, then "
        "render results/<paper>.md beside the published numbers.",
        epilog="papers:\n" + _paper_list() + "\n\n" + RUN_FOLDERS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    rep.add_argument("paper", nargs="?", help="paper name (see `microrepro list`)")
    _data_args(rep, "the data set folder, or a folder of data sets",
               "train and evaluate on the paper's synthetic generator, even when real data can be found")
    rep.add_argument("--preset", default="paper", help="'paper' (as written) or 'released' (authors' code)")
    rep.add_argument(
        "--schedule",
        default="short",
        help="smoke (seconds, checks the plumbing), short (default; < 30 min on a 2-core CPU), "
        "long (spines only: the short models trained ~3x longer, ~65 min on a 2-core CPU), paper (full)",
    )
    rep.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    rep.add_argument("--seeds", metavar="N,N,...",
                     help="several seeds, one run each (e.g. 0,1,2); the table shows mean ± sd over the seeds "
                     "published for a preset and schedule. With --out, each seed's run goes to <out>/s<seed>")
    rep.add_argument("--out", type=Path, help="run folder (default runs/<paper>/<name>_<preset>_<schedule>_s<seed>)")
    rep.add_argument("--resume", action="store_true",
                     help="continue the run in --out (refused when it is not a run folder; see below)")
    rep.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value, e.g. train.lr=1e-3")
    _publish_args(rep)

    ev = sub.add_parser(
        "evaluate",
        help="evaluate a trained run on a data set (its test split if it has one, else validation)",
        description="Re-load the models of a finished run folder and evaluate them on a data set: its "
        "held-out test split when the folder has one (e.g. spines test/ + test_labels.csv), otherwise the "
        "validation split carved from train. Metrics are added to the run's metrics.json and the table.",
    )
    ev.add_argument("run_dir", type=Path)
    _data_args(ev, "data set folder (default: as for reproduce)", "evaluate on the paper's synthetic generator")
    _publish_args(ev)

    pr = sub.add_parser(
        "predict",
        help="detect / count objects in your images with a trained run (CSV per image + overlay PNG)",
        description="Use a trained run to detect or count objects in your own images. Every paper writes the "
        "same files: per image <name>.csv (id,x,y,x1,y1,x2,y2,score,class,area_px; empty = not applicable), "
        "<name>_overlay.png and, for pipelines that segment, <name>_labels.tif (uint16 instance labels for "
        "Fiji / napari); plus counts.csv (image,count,model,threshold,...) with one row per input. Output "
        "names keep the inputs' relative folders. Large images are predicted tile by tile.",
    )
    pr.add_argument("run_dir", type=Path)
    pr.add_argument("images", nargs="+", type=Path, help="image files (png, jpg, tif, bmp) or folders of them")
    pr.add_argument("--out", type=Path, default=Path("predictions"), help="output folder (default ./predictions)")
    pr.add_argument("--threshold", type=float, help="score / probability threshold (default: the run's own)")
    pr.add_argument("--model", help="which of the run's models to use (default: the paper's main model)")
    pr.add_argument("--plane", type=int, help="which plane of multi-plane (z-stack) TIFFs to use, from 0")
    pr.add_argument("--overwrite", action="store_true", help="allow writing into a non-empty output folder")
    pr.add_argument("--resume", action="store_true",
                    help="continue an interrupted predict into the same --out (images already done are kept)")

    res = sub.add_parser(
        "results",
        help="re-render results/<paper>.md from the stored run summaries",
        description="Re-render results/<paper>.md (published numbers beside reproduced ones, with data and "
        "provenance per row) from reproductions/<paper>/published.yaml and results/runs/<paper>/*.json.",
    )
    res.add_argument("paper", nargs="?", help="one paper (default: all)")

    pv = sub.add_parser(
        "preview",
        help="write a montage PNG of a synthetic generator (beside real images)",
        description="Draw a montage of a synthetic generator's images with their ground truth (points, "
        "boxes, mask outlines), with real images of the matching data set below when they are found, so "
        "realism can be judged by eye.",
    )
    pv.add_argument("generator", help="simcep, neurons, spines or he")
    pv.add_argument("--out", type=Path, help="PNG path (default results/previews/<generator>.png)")
    pv.add_argument("-n", type=int, default=6, help=f"number of synthetic images (1-{MAX_PREVIEW})")
    pv.add_argument("--seed", type=int, default=0)

    fe = sub.add_parser(
        "fetch",
        help="download real data sets into the cache ahead of time (checksummed, resumable)",
        description="Download data sets that have a public source into the download cache ($MICROREPRO_CACHE, "
        "default ~/.cache/microrepro), with a progress bar; an interrupted download is resumed by running the "
        "same command again. reproduce/evaluate do the same on first use. A data set already found in "
        "--data-dir's place ($MICROREPRO_DATA or ../shared/data) is used from there and not downloaded.",
        epilog="data sets:\n" + _dataset_list(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    fe.add_argument("datasets", nargs="+", metavar="dataset", help="data set name(s), or 'all'")
    fe.add_argument("--force", action="store_true",
                    help="download into the cache even when $MICROREPRO_DATA (or ../shared/data) holds the data set")

    bench = sub.add_parser(
        "bench",
        help="benchmark speed and memory of every pipeline (results/benchmarks.md)",
        description="Measure tf.data throughput, training images/s, inference ms per image and per full "
        "field, and peak memory for each paper's models on this machine, with warm-up and repeats; writes "
        "results/benchmarks.md and .json beside the papers' own timings.",
    )
    bench.add_argument("papers", nargs="*", help="papers to benchmark (default: all that are built)")
    bench.add_argument("--repeats", type=int, default=5,
                       help="timed repeats after warm-up (median and spread; default 5)")
    bench.add_argument("--precision", default="float32", choices=PRECISIONS,
                       help="Keras dtype policy of the models (default float32; mixed_bfloat16: bfloat16 compute, "
                       "fast on GPUs and on CPUs with AVX-512 BF16 / AMX)")
    bench.add_argument("--schedule", default="paper",
                       help="which schedule's models (default paper: the full-size ones; short: what the CPU "
                       "runs train)")
    bench.add_argument("--xla", action="store_true", help="compile training and inference steps with XLA")
    bench.add_argument("--threads", metavar="INTRA,INTER", default="0,0",
                       help="TensorFlow intra-op and inter-op thread pools (default 0,0: TensorFlow's choice)")
    bench.add_argument("--profile", action="store_true",
                       help="also break a training step into forward / loss / gradients + update (TF backend)")
    return parser


def _check_paper(name: str | None) -> str:
    from microrepro.common.registry import PAPERS

    if not name or name not in PAPERS:
        what = f"unknown paper '{name}'" if name else "no paper given"
        raise UserError(f"{what}; choose one of {', '.join(PAPERS)} (`microrepro list` describes them; "
                        "e.g. make reproduce PAPER=cell_counting)")
    return name


def cmd_list(args) -> int:
    from microrepro.common import data_sources
    from microrepro.common.registry import PAPERS, get_task

    root = data_sources.data_root()
    print(f"papers (real data looked up in {root or 'no data folder: set $MICROREPRO_DATA'}, "
          f"then the download cache):")
    for name, text in PAPERS.items():
        try:
            task = get_task(name)
            status = f"data: {task.dataset} -> {_data_status(task.dataset)}"
        except UserError as err:
            status = str(err)
        print(f"  {name:<18} {text}\n  {'':<18} {status}")
    return 0


def _data_status(dataset: str) -> str:
    """Where ``dataset`` would come from, without downloading anything."""
    from microrepro.common import data_sources
    from microrepro.datasets import download

    local = data_sources.resolve(dataset)
    if local.path is not None:
        return str(local.path)
    remote = download.REGISTRY.get(dataset)
    if remote is None or not remote.automatic:
        return "synthetic (not found; no public source to download)"
    hit = download.cached(dataset)
    if hit is not None:
        return f"{hit} (download cache)"
    return f"not here yet: downloaded on first use from {remote.url} (now: microrepro fetch {dataset})"


def _announce_data(task, data) -> None:
    from microrepro.common import data_sources

    if data.path is None and data.how.endswith("(--synthetic)"):
        print(f"[data] --synthetic: using the synthetic generator instead of '{task.dataset}'; every number it "
              "gives is labelled 'synthetic'.")
    elif data.path is None:
        print(
            f"[data] no real '{task.dataset}' data found ({data_sources.ORDER}) and no public source to download: "
            "using the synthetic generator; every number it gives is labelled 'synthetic'."
        )
    else:
        print(f"[data] {task.dataset}: {data.path} ({data.how})")


def _parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"--seeds {text!r}: expected whole numbers separated by commas, e.g. 0,1,2") from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise UserError(f"--seeds {text!r}: give distinct non-negative seeds, e.g. 0,1,2")
    return seeds


def _without(argv: list[str], option: str) -> list[str]:
    """``argv`` without ``option VALUE`` / ``option=VALUE``."""
    out, skip = [], False
    for item in argv:
        if skip:
            skip = False
        elif item == option:
            skip = True
        elif not item.startswith(option + "="):
            out.append(item)
    return out


def cmd_reproduce(args) -> int:
    """One run, or with ``--seeds`` one run per seed, each in a fresh process.

    A fresh process per seed makes ``--seeds 0,1`` give exactly the runs ``--seed 0`` and
    ``--seed 1`` give: nothing of one seed's run (TensorFlow state, caches) leaks into the next.
    """
    if not args.seeds:
        return _reproduce_one(args, args.seed)
    seeds = _parse_seeds(args.seeds)
    if any(a == "--seed" or a.startswith("--seed=") for a in args.argv):
        raise UserError("give either --seed or --seeds, not both")
    base = _without(_without(args.argv, "--seeds"), "--out")
    for i, seed in enumerate(seeds):
        print(f"[seeds] seed {seed} ({i + 1} of {len(seeds)})", flush=True)
        child = [*base, "--seed", str(seed)]
        if args.out is not None:
            child += ["--out", str(Path(args.out) / f"s{seed}")]
        code = subprocess.run([sys.executable, "-m", "microrepro", *child]).returncode
        if code != 0:
            raise UserError(f"seed {seed} stopped (exit {code}); run the same command again to continue it "
                            f"and the seeds after it")
    return 0


def _reproduce_one(args, seed: int) -> int:
    from microrepro.common import config as config_lib
    from microrepro.common import data_sources, results, runs, training
    from microrepro.common.registry import get_task
    from microrepro.common.runs import Run
    from microrepro.common.task import run_in_runtime

    paper = _check_paper(args.paper)
    task = get_task(paper)
    cfg = task.load_config(args.preset, args.schedule, config_lib.parse_set(args.set))
    # Every check that needs no data comes first: nothing is written before it passes.
    out = runs.default_run_dir(paper, cfg, args.preset, args.schedule, seed) if args.out is None else args.out
    runs.check_folder_name(getattr(cfg, "name", paper), "--set name")
    runs.check_run_target(out, cfg, args.preset, args.schedule, seed, resume=args.resume)
    publish = args.schedule != "smoke" and not args.no_publish
    if publish:
        runs.check_results_writable(paper)
    data = data_sources.resolve(task.dataset, args.data_dir, fetch=task.fetch, synthetic=args.synthetic)
    _announce_data(task, data)
    training.set_seed(seed)
    created = next((p for p in reversed([Path(out), *Path(out).parents]) if not p.exists()), None)
    run = Run.create(paper, cfg, args.preset, args.schedule, seed, out=out, resume=args.resume)
    run.extra["overrides"] = list(args.set or [])  # the --set values, in the summary (choice trials name them)
    what = "continuing the unfinished run in " if run.continued and not args.resume else ""
    print(f"[run] {what}{run.run_dir}  (preset {args.preset}, schedule {args.schedule}, seed {seed})")
    try:
        run_in_runtime(run, task.reproduce, data)  # the config's runtime: strategy, precision
    except BaseException:
        if not run.continued:  # failed before producing anything (bad data...): leave nothing behind
            runs.discard_if_untouched(run.run_dir, created)
        raise
    run.finish()
    if publish:
        summary = run.publish(replace=args.replace)
        table = results.render(paper)
        print(f"[results] {summary}\n[results] {table}")
    else:
        print(f"[results] smoke/unpublished run: metrics in {run.run_dir / 'metrics.json'}")
    return 0


def _task_for_run(run_dir: Path):
    from microrepro.common.registry import PAPERS, get_task
    from microrepro.common.runs import load_run

    _, prov, _ = load_run(run_dir)
    if "paper" not in prov:
        raise UserError(f"{run_dir}: provenance.json names no paper; is this a finished run folder?")
    if prov["paper"] not in PAPERS:
        raise UserError(f"{run_dir / 'provenance.json'}: unknown paper {prov['paper']!r}")
    return get_task(prov["paper"]), prov


def cmd_evaluate(args) -> int:
    from microrepro.common import data_sources, results, runs
    from microrepro.common.runs import Run
    from microrepro.common.task import run_in_runtime

    task, prov = _task_for_run(args.run_dir)
    cfg = task.config_from_run(args.run_dir)
    runs.check_writable(args.run_dir, "run folder",
                        fix="evaluate adds its metrics there: make it writable, or evaluate a copy of it")
    runs.check_run_files(args.run_dir)
    run = Run.open(task.name, args.run_dir, cfg)
    publish = run.schedule != "smoke" and not args.no_publish
    if publish:
        runs.check_results_writable(task.name)
    data = data_sources.resolve(task.dataset, args.data_dir, fetch=task.fetch, synthetic=args.synthetic)
    _announce_data(task, data)
    run_in_runtime(run, task.evaluate, data, "evaluate_distribution")
    run.save()
    if publish:
        summary = run.publish(replace=args.replace)
        print(f"[results] {summary}\n[results] {results.render(task.name)}")
    print(f"[evaluate] metrics in {args.run_dir / 'metrics.json'}")
    return 0


def _expand_images(paths: list[Path]) -> list[Path]:
    """Image files of ``paths`` (folders expanded, sorted), each given once, else a UserError."""
    from microrepro.common.imageio import IMAGE_SUFFIXES

    images = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise UserError(f"{path}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder")
            images += found
        elif path.is_file():
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                raise UserError(f"{path}: not an image file name (expected {', '.join(IMAGE_SUFFIXES)})")
            images.append(path)
        else:
            raise UserError(f"{path}: no such image file or folder")
    seen: dict[Path, Path] = {}
    for image in images:
        key = image.resolve()
        if key in seen:
            also = "" if seen[key] == image else f" (also as {seen[key]})"
            raise UserError(f"{image}: given more than once{also}; give each image once")
        seen[key] = image
    return images


def _check_images(images: list[Path], plane: int | None) -> None:
    """Read each image's header: unreadable files and plane choices fail before the model loads."""
    from microrepro.common.imageio import image_shape, planes_in

    if plane is not None and plane < 0:
        raise UserError(f"--plane {plane}: planes are numbered from 0")
    for path in images:
        shape = image_shape(path)
        planes = planes_in(shape)
        if planes > 1 and plane is None:
            raise UserError(f"{path}: {planes} planes (shape {shape}); pick one with --plane N (0..{planes - 1})")
        if planes > 1 and plane >= planes:
            raise UserError(f"{path}: --plane {plane} is outside 0..{planes - 1}")
        if planes == 1 and plane not in (None, 0):
            raise UserError(f"{path}: a single-plane image has no --plane {plane}")


def _check_outputs_spare_inputs(images: list[Path], out: Path) -> None:
    """Refuse an --out where an output file (``<stem>.csv``, ``_overlay.png``...) would be an input image."""
    from microrepro.common.predict import output_names

    inputs = {p.resolve() for p in images}
    outputs = [out / "counts.csv"]
    for _, stem in output_names(images):
        base = out / stem
        outputs += [base.with_name(base.name + suffix) for suffix in (".csv", "_overlay.png", "_labels.tif")]
    for path in outputs:
        if path.resolve() in inputs:
            raise UserError(f"--out {out}: writing {path.name} there would overwrite the input image {path}; "
                            "choose another --out")


def cmd_predict(args) -> int:
    from microrepro.common import runs

    task, _ = _task_for_run(args.run_dir)
    if args.model is not None and hasattr(task, "check_model"):
        task.check_model(args.model)
    if args.threshold is not None and not -1e300 < args.threshold < 1e300:
        raise UserError(f"--threshold {args.threshold}: not a finite number")
    runs.check_run_files(args.run_dir)
    images = _expand_images(args.images)
    _check_images(images, args.plane)
    out = args.out
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: is a file, not a folder; choose another --out")
    if out.exists() and any(out.iterdir()) and not (args.overwrite or args.resume):
        raise UserError(f"--out {out} is not empty; choose another --out, continue it with --resume, "
                        "or pass --overwrite")
    runs.check_writable(out, "--out")
    _check_outputs_spare_inputs(images, out)
    written = task.predict(args.run_dir, images, out, model=args.model, threshold=args.threshold,
                           plane=args.plane, resume=args.resume)
    print(f"[predict] {len(images)} image(s) -> {out} ({len(written)} files; counts in {out / 'counts.csv'})")
    return 0


def cmd_results(args) -> int:
    from microrepro.common import results

    if args.paper:
        paths = [results.render(_check_paper(args.paper))]
    else:
        paths = results.render_all()
    for path in paths:
        print(f"[results] {path}")
    return 0


PREVIEW_SUFFIXES = (".png", ".pdf", ".svg", ".jpg")


def cmd_preview(args) -> int:
    from microrepro.common import data_sources
    from microrepro.common.runs import check_writable, results_root
    from microrepro.datasets.synthetic.preview import REAL_IMAGES

    if args.generator not in REAL_IMAGES:
        raise UserError(f"unknown generator '{args.generator}'; choose one of {', '.join(sorted(REAL_IMAGES))}")
    if not 1 <= args.n <= MAX_PREVIEW:
        raise UserError(f"-n {args.n}: the number of synthetic images must be 1..{MAX_PREVIEW}")
    out = args.out or results_root() / "previews" / f"{args.generator}.png"
    if out.is_dir():
        example = out / f"{args.generator}.png"
        raise UserError(f"--out {out}: is a folder; give the image file to write, e.g. {example}")
    if out.suffix.lower() not in PREVIEW_SUFFIXES:
        raise UserError(f"--out {out}: name a {', '.join(PREVIEW_SUFFIXES)} file")
    check_writable(out.parent, "--out")
    from microrepro.datasets.synthetic import preview

    path = preview.preview_with_real(args.generator, out, n=args.n, seed=args.seed, data_root=data_sources.data_root())
    print(f"[preview] {path}")
    return 0


def cmd_fetch(args) -> int:
    from microrepro.common import data_sources
    from microrepro.common.errors import DataError
    from microrepro.datasets import download

    if "all" in args.datasets:
        names = list(download.REGISTRY)
    else:
        names = list(dict.fromkeys(args.datasets))
        for name in names:
            if name not in download.REGISTRY:
                raise UserError(f"fetch: unknown data set '{name}'; choose any of {', '.join(download.REGISTRY)} "
                                "or 'all'")
    failed = []
    for name in names:
        remote = download.REGISTRY[name]
        folder = data_sources.manual_folder(name)
        if not remote.automatic:
            where = f"{remote.page}; " if remote.page else ""
            message = f"{name}: no automatic download ({remote.note or remote.source}): {where}place it in {folder}"
            if len(names) == 1:
                raise UserError(f"{message} or pass --data-dir")
            print(f"[fetch] {message}")
            continue
        local = data_sources.resolve(name)
        if local.path is not None and not args.force:
            print(f"[fetch] {name}: found in {local.how}, used from there (--force downloads it into the cache too)")
            continue
        before = download.cached(name)
        try:
            path = download.fetch(name)
        except DataError as err:
            if len(names) == 1:
                raise UserError(f"{name}: {_one_line(err)}; run the same command again to retry (a partial download "
                                f"resumes), or place it by hand in {folder}") from None
            print(f"[fetch] {name}: not fetched: {_one_line(err)}")
            failed.append(name)
            continue
        how = "already in the cache" if before is not None else "downloaded"
        digest = download.recorded_hash(name) or "?"
        check = "published hash" if remote.known_hash else "SHA-256 recorded on first download"
        print(f"[fetch] {name}: {path} ({how}; {check} {digest[:12]}...)")
    if failed:
        raise UserError(f"not fetched: {', '.join(failed)}; run `microrepro fetch {' '.join(failed)}` again "
                        "(partial downloads resume)")
    return 0


def cmd_bench(args) -> int:
    from microrepro.common import bench
    from microrepro.common.registry import PAPERS

    for paper in args.papers:
        if paper not in PAPERS:
            raise UserError(f"bench: unknown paper '{paper}'; choose any of {', '.join(PAPERS)} (default: all)")
    if args.repeats < 1:
        raise UserError(f"--repeats {args.repeats}: must be at least 1")
    levers = bench.Levers(args.schedule, args.precision, args.xla, bench.parse_threads(args.threads), args.profile)
    path = bench.run(args.papers or None, repeats=args.repeats, levers=levers)
    print(f"[bench] {path}")
    return 0


COMMANDS = {
    "list": cmd_list,
    "reproduce": cmd_reproduce,
    "evaluate": cmd_evaluate,
    "predict": cmd_predict,
    "results": cmd_results,
    "preview": cmd_preview,
    "bench": cmd_bench,
    "fetch": cmd_fetch,
}


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (2 for an error the user can fix)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if not args.command:
        parser.print_help()
        return 2
    try:
        return COMMANDS[args.command](args)
    except UserError as err:
        if args.debug:
            raise
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: the run folder keeps its checkpoints; run the same command again (or with --resume) "
              "to continue", file=sys.stderr)
        return 130


def _one_line(err: Exception) -> str:
    """The error's message on one line (a multi-line message has its lines joined with '; ')."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return "; ".join(lines) or type(err).__name__


if __name__ == "__main__":
    sys.exit(main())
