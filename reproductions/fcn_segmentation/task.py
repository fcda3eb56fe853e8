"""fcn_segmentation: FCRN-A cell segmentation, SIMCEP-like pre-training, real fine-tuning, MCC.

Pipeline of ``reproduce`` (Marzo & La Rosa 2016, Sec. 7):

1. pre-train FCRN-A (2-class softmax) on random 128×128 patches of SIMCEP-like synthetic images,
   half of them with simplex/Perlin background noise (Sec. 7.1) → ``fcrn_a_pretrained``;
2. fine-tune it on ~55 real 128×128 fluorescence crops with manual masks, ×8 by the dihedral
   transforms (Sec. 7.1) → ``fcrn_a_finetuned``; the real images (DSB 2018 stage-1 test
   fluorescence + the StarDist tiles) are split BY IMAGE into fine-tune train / val / evaluation;
3. pixel metrics (Sec. 7.2) at the threshold maximising MCC, chosen on validation data
   (synthetic for the pre-trained model, real fine-tune val for the fine-tuned one), reported
   on the real evaluation images (split ``real_eval``) and, for the pre-trained model, on
   synthetic test patches (``synthetic_test``); ROC and example figures;
4. the same FCN trained from scratch on the VGG synthetic cells (``fcrn_a_vgg``, split ``test``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from microrepro.common.data_sources import DataSource
from microrepro.common.errors import DataError, UserError
from microrepro.common.runs import DataInfo, Run, checksum_files
from microrepro.common.task import Task
from microrepro.reproductions.fcn_segmentation import data as fdata
from microrepro.reproductions.fcn_segmentation.config import (
    FcnSegmentationConfig,
    ModelConfig,
    OptimConfig,
    PretrainConfig,
)
from microrepro.reproductions.fcn_segmentation.model import build_fcrn_a

PRETRAINED, FINETUNED, VGG = "fcrn_a_pretrained", "fcrn_a_finetuned", "fcrn_a_vgg"
METRIC_KEYS = ("specificity", "precision", "recall", "accuracy", "f1", "mcc")
THRESHOLDS_FILE = "thresholds.json"
SPLIT_FILE = "split.json"


# ----------------------------------------------------------------------------------------------
# model and optimiser
# ----------------------------------------------------------------------------------------------


def build_model(cfg: ModelConfig, optim: OptimConfig | None = None, input_size: int | None = None):
    """FCRN-A from the config; the L2 kernel penalty comes from ``optim`` (Caffe weight decay).

    Caffe's ``weight_decay: wd`` adds ``wd * w`` to each gradient, the derivative of
    ``wd / 2 * ||w||²``, hence ``l2 = wd / 2`` (Sec. 7.1: weight decay 0.001).
    """
    l2 = optim.weight_decay / 2 if optim is not None and optim.weight_decay_mode == "l2" else 0.0
    return build_fcrn_a(
        cfg.input_channels,
        cfg.num_classes,
        encoder_filters=tuple(cfg.encoder_filters),
        bottleneck_filters=cfg.bottleneck_filters,
        decoder_filters=tuple(cfg.decoder_filters),
        batch_norm=cfg.batch_norm,
        kernel_initializer=cfg.kernel_initializer,
        l2=l2,
        upsampling=cfg.upsampling,
        input_size=input_size,
    )


def compile_model(model, optim: OptimConfig) -> None:
    """SGD with momentum (Sec. 7.1) and per-pixel softmax cross-entropy (Caffe SoftmaxWithLoss)."""
    import keras

    decay = optim.weight_decay if optim.weight_decay_mode == "decoupled" else None
    optimizer = keras.optimizers.SGD(
        learning_rate=optim.lr, momentum=optim.momentum, nesterov=optim.nesterov, weight_decay=decay
    )
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(),
        jit_compile=optim.jit_compile,
    )


def lr_schedule(optim: OptimConfig) -> dict:
    """The step schedule of Sec. 7.1: lr ÷ 10 every 20 epochs (values from the config)."""
    return {"kind": "step", "every_epochs": optim.lr_step_epochs, "factor": optim.lr_step_factor}


# ----------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------


def simcep_config(cfg: PretrainConfig):
    """The generator config: SimcepConfig defaults < ``pretrain.generator`` < noise fraction."""
    from microrepro.common import config as config_lib
    from microrepro.datasets.synthetic.simcep import SimcepConfig

    gen = config_lib.merge(SimcepConfig(), dict(cfg.generator), "pretrain.generator")
    return config_lib.merge(gen, {"background_noise_fraction": cfg.noise_fraction}, "pretrain")


def synthetic_patches(cfg: FcnSegmentationConfig, n_images: int, n_patches: int, seed: int) -> list[tuple]:
    """``n_patches`` random ``patch_size``² patches of ``n_images`` SIMCEP-like images.

    Returns:
        list of ``(image (S, S) float32 [0, 1], target (S, S) uint8)``; patches are spread
        evenly over the images (Sec. 7.1: "patches randomly sampled from computer generated
        images").
    """
    from microrepro.datasets.synthetic import simcep

    pre = cfg.pretrain
    samples = simcep.generate(n_images, seed, simcep_config(pre))
    rng = np.random.default_rng(seed)
    pairs = []
    for sample, k in zip(samples, fdata.crops_per_image(len(samples), n_patches)):
        image = fdata.prepare_image(sample.image, cfg.normalize_low, cfg.normalize_high)
        target = (sample.mask > 0).astype(np.uint8)
        pairs += fdata.random_crops(image, target, k, pre.patch_size, rng)
    order = rng.permutation(len(pairs))[:n_patches]
    return [pairs[i] for i in order]


def synthetic_sets(cfg: FcnSegmentationConfig, seed: int) -> dict[str, list[tuple]]:
    """Disjoint synthetic train / val / test patch sets (different generator seeds)."""
    pre = cfg.pretrain
    n_small = max(2, pre.n_images // 5)
    return {
        "train": synthetic_patches(cfg, pre.n_images, pre.n_patches, 1000 * seed + 1),
        "val": synthetic_patches(cfg, n_small, pre.n_val_patches, 1000 * seed + 2),
        "test": synthetic_patches(cfg, n_small, pre.n_test_patches, 1000 * seed + 3),
    }


def _split_items(items: list[fdata.Item], cfg: FcnSegmentationConfig, salt: int) -> tuple[list, list, list]:
    ft = cfg.finetune
    by_id = {item.id: item for item in items}
    rest, eval_ids = fdata.split_by_image(list(by_id), ft.eval_fraction, ft.split_seed + salt)
    train_ids, val_ids = fdata.split_by_image(rest, ft.val_fraction, ft.split_seed + salt + 1)
    return [by_id[i] for i in train_ids], [by_id[i] for i in val_ids], [by_id[i] for i in eval_ids]


def load_real(data_path: Path, cfg: FcnSegmentationConfig) -> fdata.RealSplit:
    """Real fluorescence images with manual masks, split by image (fixed ``finetune.split_seed``).

    DSB 2018 stage-1 test (fluorescence only) from ``data_path``; the StarDist pair from
    ``data_path.parent / finetune.stardist_dataset`` when present, cut into non-overlapping
    ``crop_size`` tiles that are split as separate images (the tiles do not overlap, so no pixel
    is both trained on and evaluated).
    """
    from microrepro.datasets import dsb2018, stardist_nuclei

    ft = cfg.finetune
    prep = lambda image: fdata.prepare_image(image, cfg.normalize_low, cfg.normalize_high)  # noqa: E731
    split = fdata.RealSplit()
    dsb_items = [
        fdata.Item(s.id, prep(s.image), (s.mask > 0).astype(np.uint8), "dsb2018_stage1_test", str(s.image_path))
        for s in dsb2018.load(data_path, modality="fluorescence")
    ]
    if not dsb_items:
        raise DataError(f"{data_path}: no fluorescence image found in the DSB 2018 layout")
    parts = _split_items(dsb_items, cfg, salt=0)
    split.datasets.append("dsb2018_stage1_test")
    stardist_root = Path(data_path).parent / ft.stardist_dataset
    if ft.use_stardist and stardist_root.is_dir():
        sample = stardist_nuclei.load(stardist_root)[0]
        tiles = stardist_nuclei.tiles(sample, ft.crop_size)
        st_items = [
            fdata.Item(t.id, prep(t.image), (t.mask > 0).astype(np.uint8), ft.stardist_dataset, str(sample.image_path))
            for t in tiles
        ]
        st_parts = _split_items(st_items, cfg, salt=100)
        parts = tuple(a + b for a, b in zip(parts, st_parts))
        split.datasets.append(ft.stardist_dataset)
    split.train, split.val, split.eval = parts
    if ft.max_eval_images > 0:
        split.eval = split.eval[: ft.max_eval_images]
    if not split.train:
        raise DataError(f"{data_path}: too few real images to fine-tune ({len(dsb_items)} found)")
    return split


def synthetic_real_substitute(cfg: FcnSegmentationConfig, seed: int) -> fdata.RealSplit:
    """Stand-in for the real images when none is found: SIMCEP-like images of another seed,
    all with background noise, at twice the patch size (split by image like the real ones)."""
    from microrepro.common import config as config_lib
    from microrepro.datasets.synthetic import simcep

    size = 2 * cfg.pretrain.patch_size
    gen = config_lib.merge(
        simcep_config(cfg.pretrain),
        {"background_noise_fraction": 1.0, "image_size": [size, size], "n_cells_mean": 36.0},
        "substitute",
    )
    samples = simcep.generate(max(10, cfg.finetune.n_crops // 2), 1000 * seed + 7, gen)
    items = [
        fdata.Item(s.id, fdata.prepare_image(s.image, cfg.normalize_low, cfg.normalize_high),
                   (s.mask > 0).astype(np.uint8), "simcep_substitute")
        for s in samples
    ]
    split = fdata.RealSplit(datasets=["simcep_substitute"])
    split.train, split.val, split.eval = _split_items(items, cfg, salt=0)
    return split


def finetune_pairs(items: list[fdata.Item], cfg: FcnSegmentationConfig, seed: int) -> list[tuple]:
    """``finetune.n_crops`` random crops of the fine-tune images, ×8 by dihedral transforms.

    With fewer crops than images, a seeded random subset of images gives one crop each;
    otherwise images exactly one crop large give one crop and the others share the rest
    evenly (>= 1 each).

    Reference: Sec. 7.1 (55 real 128×128 images, ×8 by rotations and mirroring).
    """
    ft = cfg.finetune
    rng = np.random.default_rng(seed)
    if ft.n_crops < 1:
        raise ValueError(f"finetune.n_crops must be >= 1, got {ft.n_crops}")
    if ft.n_crops < len(items):
        chosen = sorted(rng.choice(len(items), size=ft.n_crops, replace=False))
        items, counts = [items[i] for i in chosen], [1] * ft.n_crops
    else:
        exact = [it for it in items if it.image.shape == (ft.crop_size, ft.crop_size)]
        larger = [it for it in items if it.image.shape != (ft.crop_size, ft.crop_size)]
        items = exact + larger
        counts = [1] * len(exact) + fdata.crops_per_image(len(larger), ft.n_crops - len(exact))
    crops = []
    for item, k in zip(items, counts):
        crops += fdata.random_crops(item.image, item.target, k, ft.crop_size, rng)
    if not ft.dihedral:
        return crops
    return [pair for image, target in crops for pair in fdata.dihedral8(image, target)]


def val_pairs(items: list[fdata.Item], crop: int, seed: int, per_image: int = 4) -> list[tuple]:
    rng = np.random.default_rng(seed)
    pairs = []
    for item in items:
        n = 1 if item.image.shape == (crop, crop) else per_image
        pairs += fdata.random_crops(item.image, item.target, n, crop, rng)
    return pairs


# ----------------------------------------------------------------------------------------------
# evaluation
# ----------------------------------------------------------------------------------------------


def threshold_grid(cfg: FcnSegmentationConfig) -> np.ndarray:
    return np.linspace(0.0, 1.0, cfg.eval.n_thresholds)


def choose_threshold(probs: list[np.ndarray], targets: list[np.ndarray], cfg: FcnSegmentationConfig) -> float:
    """The threshold maximising ``eval.select_metric`` (MCC, Sec. 7.2) over the grid."""
    from microrepro.common.metrics import best_threshold, threshold_sweep

    sweep = threshold_sweep(probs, targets, threshold_grid(cfg))
    return best_threshold(sweep, cfg.eval.select_metric)[0]


def metrics_at(probs: list[np.ndarray], targets: list[np.ndarray], threshold: float, cfg) -> dict:
    """Table 1 metrics at ``threshold`` (``prob >= t`` is cell), plus ROC AUC and the
    eval-set-optimal MCC and threshold (``mcc_oracle``, ``threshold_oracle``) for context."""
    from microrepro.common.metrics import best_threshold, pixel_metrics, roc_curve, threshold_sweep

    values = pixel_metrics([p >= threshold for p in probs], targets)
    out = {k: values[k] for k in METRIC_KEYS}
    out["threshold"] = float(threshold)
    try:
        out["auc"] = roc_curve(probs, targets, threshold_grid(cfg))[3]
    except ValueError:  # no positive or no negative pixel: AUC undefined
        out["auc"] = None
    oracle_t, oracle_mcc = best_threshold(threshold_sweep(probs, targets, threshold_grid(cfg)), "mcc")
    out["mcc_oracle"], out["threshold_oracle"] = oracle_mcc, oracle_t
    return out


def time_model(model, size: int, repeats: int) -> float:
    """Median milliseconds to segment one ``size``² image (after two warm-up calls)."""
    x = np.random.default_rng(0).random((1, size, size, 1), dtype=np.float32)
    for _ in range(2):
        model.predict_on_batch(x)
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        model.predict_on_batch(x)
        times.append((time.perf_counter() - start) * 1000.0)
    return float(np.median(times))


def _real_info(split: fdata.RealSplit, items: list[fdata.Item], kind: str, what: str) -> DataInfo:
    files = sorted({Path(it.path) for it in items if it.path})
    by_source: dict[str, int] = {}
    for it in items:
        by_source[it.source] = by_source.get(it.source, 0) + 1
    note = ", ".join(f"{n} {src}" for src, n in sorted(by_source.items())) + f"; {what}; ids in {SPLIT_FILE}"
    return DataInfo(kind=kind, dataset="+".join(split.datasets), n_images=len(items),
                    checksum=checksum_files(files) if files else "", note=note)


# ----------------------------------------------------------------------------------------------
# the task
# ----------------------------------------------------------------------------------------------


class FcnSegmentationTask(Task):
    name = "fcn_segmentation"
    title = "Microscopy cell semantic segmentation with FCNs (Marzo & La Rosa 2016)"
    dataset = "dsb2018_stage1_test"
    config_cls = FcnSegmentationConfig
    folder = Path(__file__).parent

    # -- training ------------------------------------------------------------------------------

    def _train(self, run: Run, model, optim: OptimConfig, name: str, train_ds, val_ds, steps=None,
               n_examples: int | None = None) -> dict:
        """Compile, fit (resumable, best checkpoint on val_loss), reload the best weights, plot the
        loss and record the schedule actually run. ``steps``: steps per epoch of an endless
        dataset; ``n_examples``: size of a finite one (to report the steps run)."""
        from microrepro.common.training import fit, load_weights, plot_history

        compile_model(model, optim)
        result = fit(
            model, train_ds, val_ds, run_dir=run.run_dir, name=name, epochs=optim.epochs,
            steps_per_epoch=steps, lr_schedule=lr_schedule(optim), monitor="val_loss", verbose="auto",
        )
        load_weights(model, run.run_dir, name, "best")
        plot_history(run.run_dir, name, run.figure_path(f"loss_{name}"), f"{name}: training loss")
        history = result["history"]
        per_epoch = steps or (-(-n_examples // optim.batch_size) if n_examples else None)
        run.schedule_run[name] = {
            "epochs": result["epochs_run"],
            "steps": int(per_epoch * result["epochs_run"]) if per_epoch else None,
            "batch": optim.batch_size,
            "seconds": round(result["seconds"], 1),
            "loss_first": history.get("loss", [None])[0],
            "loss_last": history.get("loss", [None])[-1],
        }
        return result

    def reproduce(self, run: Run, data: DataSource) -> None:
        from microrepro.common.training import set_seed

        cfg: FcnSegmentationConfig = run.config
        set_seed(run.seed)
        t0 = time.perf_counter()

        # 1. synthetic pre-training (Sec. 7.1)
        synth = synthetic_sets(cfg, run.seed)
        x_tr, y_tr = fdata.stack_pairs(synth["train"])
        x_va, y_va = fdata.stack_pairs(synth["val"])
        opt = cfg.pretrain.train
        pretrained = build_model(cfg.model, opt)
        self._train(
            run, pretrained, opt, PRETRAINED,
            fdata.make_dataset(x_tr, y_tr, opt.batch_size, shuffle=True, seed=run.seed),
            fdata.make_dataset(x_va, y_va, opt.batch_size, shuffle=False, seed=run.seed),
            n_examples=len(x_tr),
        )
        print(f"[fcn_segmentation] pre-trained on {len(x_tr)} synthetic patches ({time.perf_counter() - t0:.0f} s)")

        # 2. real data, split by image
        if data.path is None:
            print("[fcn_segmentation] no real images found: fine-tuning and evaluating on a SIMCEP-like "
                  "substitute (synthetic, all with background noise); numbers are NOT the paper's real-image ones")
            real = synthetic_real_substitute(cfg, run.seed)
            kind, eval_split = "synthetic", "synthetic_eval"
        else:
            real = load_real(Path(data.path), cfg)
            kind, eval_split = "real", "real_eval"
        real.write(run.run_dir / SPLIT_FILE, {"split_seed": cfg.finetune.split_seed,
                                              "eval_fraction": cfg.finetune.eval_fraction,
                                              "val_fraction": cfg.finetune.val_fraction,
                                              "stardist_tiles_as_images": True})

        # 3. fine-tuning (Sec. 7.1): start from the pre-trained weights
        ft_pairs = finetune_pairs(real.train, cfg, run.seed)
        val_items = real.val or real.train
        if not real.val:
            print("[fcn_segmentation] no fine-tune validation image: threshold chosen on the fine-tune images")
        xf, yf = fdata.stack_pairs(ft_pairs)
        xfv, yfv = fdata.stack_pairs(val_pairs(val_items, cfg.finetune.crop_size, run.seed))
        opt_ft = cfg.finetune.train
        finetuned = build_model(cfg.model, opt_ft)
        finetuned.set_weights(pretrained.get_weights())
        self._train(
            run, finetuned, opt_ft, FINETUNED,
            fdata.make_dataset(xf, yf, opt_ft.batch_size, shuffle=True, seed=run.seed),
            fdata.make_dataset(xfv, yfv, opt_ft.batch_size, shuffle=False, seed=run.seed),
            n_examples=len(xf),
        )
        print(f"[fcn_segmentation] fine-tuned on {len(xf)} crops ({len(ft_pairs) // (8 if cfg.finetune.dihedral else 1)} "
              f"before ×8) ({time.perf_counter() - t0:.0f} s)")

        # 4. thresholds on validation data (Sec. 7.2: the MCC-maximising one)
        syn_val_probs = fdata.predict_probability(pretrained, [p[0] for p in synth["val"]])
        thresholds = {
            PRETRAINED: choose_threshold(syn_val_probs, [p[1] for p in synth["val"]], cfg),
            FINETUNED: choose_threshold(fdata.predict_probability(finetuned, [it.image for it in val_items]),
                                        [it.target for it in val_items], cfg),
        }
        (run.run_dir / THRESHOLDS_FILE).write_text(json.dumps(thresholds, indent=2))

        # 5. metrics
        syn_test = synth["test"]
        probs = fdata.predict_probability(pretrained, [p[0] for p in syn_test])
        run.add_metrics(
            PRETRAINED, "synthetic_test", metrics_at(probs, [p[1] for p in syn_test], thresholds[PRETRAINED], cfg),
            DataInfo(kind="synthetic", dataset="simcep", n_images=len(syn_test),
                     note=f"{cfg.pretrain.patch_size}px patches of unseen SIMCEP-like images"),
        )
        self._evaluate_real(run, cfg, real, {PRETRAINED: pretrained, FINETUNED: finetuned}, thresholds,
                            kind, eval_split)
        run.add_metrics(FINETUNED, "timing", {"ms_per_image": time_model(finetuned, cfg.eval.timing_size,
                                                                          cfg.eval.timing_repeats)},
                        DataInfo(kind="synthetic", dataset=f"random {cfg.eval.timing_size}x{cfg.eval.timing_size} input",
                                 n_images=1, note=f"median of {cfg.eval.timing_repeats} after 2 warm-up"))

        # 6. the same FCN on the VGG synthetic cells (a known benchmark beside the paper's)
        if cfg.vgg.enabled:
            vgg_root = Path(data.path).parent / cfg.vgg.dataset if data.path is not None else None
            if vgg_root is not None and vgg_root.is_dir():
                self._vgg(run, cfg, vgg_root)
            else:
                print(f"[fcn_segmentation] {cfg.vgg.dataset} not found beside the real data: {VGG} skipped")
        run.extra["total_seconds"] = round(time.perf_counter() - t0, 1)
        run.save()
        print(f"[fcn_segmentation] done in {time.perf_counter() - t0:.0f} s")

    # -- evaluation -----------------------------------------------------------------------------

    def _evaluate_real(self, run: Run, cfg, real: fdata.RealSplit, models: dict, thresholds: dict,
                       kind: str, split_name: str) -> dict:
        targets = [it.target for it in real.eval]
        info = _real_info(real, real.eval, kind, "whole images (StarDist: 128 px tiles), never trained on")
        probs = {}
        for name, model in models.items():
            probs[name] = fdata.predict_probability(model, [it.image for it in real.eval])
            run.add_metrics(name, split_name, metrics_at(probs[name], targets, thresholds[name], cfg), info)
        if PRETRAINED in probs and FINETUNED in probs:
            # The paper's claim (Sec. 8, Table 1): fine-tuning improves MCC on the real images.
            gain = run.metrics[FINETUNED][split_name]["mcc"] - run.metrics[PRETRAINED][split_name]["mcc"]
            run.add_metrics(FINETUNED, split_name, {"mcc_gain_over_pretrained": gain}, info)
        self._figures(run, cfg, real.eval, probs, thresholds)
        return probs

    def _figures(self, run: Run, cfg, items: list[fdata.Item], probs: dict, thresholds: dict) -> None:
        from microrepro.common.figures import montage, plot_curves
        from microrepro.common.metrics import roc_curve

        targets = [it.target for it in items]
        curves = {}
        for name, label in ((PRETRAINED, "before fine-tuning"), (FINETUNED, "after fine-tuning")):
            if name in probs:
                try:
                    fpr, tpr, _, auc = roc_curve(probs[name], targets, threshold_grid(cfg))
                except ValueError:
                    continue
                curves[f"{label} (AUC {auc:.3f})"] = (fpr[::-1], tpr[::-1])
        if curves:
            curves["chance"] = ([0.0, 1.0], [0.0, 1.0])
            plot_curves(curves, "false positive rate", "true positive rate (recall)",
                        "ROC on the evaluation images (one point per threshold)", run.figure_path("roc"))
        rng = np.random.default_rng(0)
        chosen = sorted(rng.choice(len(items), size=min(cfg.eval.n_examples, len(items)), replace=False))
        tiles, titles = [], []
        for i in chosen:
            tiles += [items[i].image, items[i].target.astype(np.float32)]
            titles += [items[i].id[:12], "ground truth"]
            for name, label in ((PRETRAINED, "before"), (FINETUNED, "after")):
                if name in probs:
                    tiles.append((probs[name][i] >= thresholds[name]).astype(np.float32))
                    titles.append(f"{label} (t={thresholds[name]:.2f})")
        if tiles:
            montage(tiles, titles, run.figure_path("examples"), ncols=len(tiles) // len(chosen))

    @staticmethod
    def _vgg_data(cfg: FcnSegmentationConfig, root: Path) -> dict:
        """VGG cells split (first ``n_train`` train, of which the last ``n_val`` validate; last
        ``n_test`` test), each image prepared with its segmentation target (Otsu or discs)."""
        from microrepro.datasets import vgg_cells

        vc = cfg.vgg
        samples = vgg_cells.load(root)
        if len(samples) < vc.n_train + 1:
            raise DataError(f"{root}: {len(samples)} VGG images, need more than vgg.n_train = {vc.n_train}")
        train_all, test = vgg_cells.conventional_split(samples, vc.n_train)
        test = test[-vc.n_test:] if vc.n_test > 0 else test
        n_val = min(vc.n_val, len(train_all) - 1)
        parts = {"train": train_all[: len(train_all) - n_val], "val": train_all[len(train_all) - n_val:], "test": test}

        def prepare(sample):
            grey = fdata.to_grey(sample.image)
            if vc.target == "otsu":
                target = fdata.otsu_target(grey, vc.smooth_sigma)
            else:
                target = fdata.disc_target(sample.points, grey.shape, vc.disc_radius)
            return fdata.prepare_image(grey, cfg.normalize_low, cfg.normalize_high), target

        out = {name: [prepare(s) for s in part] for name, part in parts.items()}
        out["samples"] = parts
        return out

    def _vgg_metrics(self, run: Run, cfg, model, threshold: float, vgg: dict) -> None:
        test = vgg["samples"]["test"]
        probs = fdata.predict_probability(model, [p[0] for p in vgg["test"]])
        files = [s.image_path for s in test] + [s.meta["dots_path"] for s in test]
        run.add_metrics(
            VGG, "test", metrics_at(probs, [p[1] for p in vgg["test"]], threshold, cfg),
            DataInfo(kind="synthetic", dataset="vgg_cells", n_images=len(test), checksum=checksum_files(files),
                     note=f"VGG synthetic cells, last {len(test)} images (trained on the first "
                          f"{len(vgg['train'])}, threshold on the next {len(vgg['val'])}); "
                          f"target: {cfg.vgg.target} of the cell image"),
        )

    def _vgg(self, run: Run, cfg: FcnSegmentationConfig, root: Path) -> None:
        """Train FCRN-A from scratch on the VGG cells, choose its threshold, test it."""
        vc, vgg = cfg.vgg, self._vgg_data(cfg, root)
        opt = vc.train
        model = build_model(cfg.model, opt)
        x_tr = np.stack([p[0] for p in vgg["train"]])
        y_tr = np.stack([p[1] for p in vgg["train"]])
        x_va, y_va = fdata.stack_pairs(val_pairs([fdata.Item(str(i), *p) for i, p in enumerate(vgg["val"])],
                                                 vc.crop_size, run.seed))
        steps = max(1, vc.crops_per_epoch // opt.batch_size)
        self._train(
            run, model, opt, VGG,
            fdata.make_crop_dataset(x_tr, y_tr, vc.crop_size, opt.batch_size, seed=run.seed),
            fdata.make_dataset(x_va, y_va, opt.batch_size, shuffle=False, seed=run.seed),
            steps=steps,
        )
        threshold = choose_threshold(fdata.predict_probability(model, [p[0] for p in vgg["val"]]),
                                     [p[1] for p in vgg["val"]], cfg)
        path = run.run_dir / THRESHOLDS_FILE
        stored = json.loads(path.read_text()) if path.is_file() else {}
        stored[VGG] = threshold
        path.write_text(json.dumps(stored, indent=2))
        self._vgg_metrics(run, cfg, model, threshold, vgg)

    def _load_models(self, run_dir: Path, cfg: FcnSegmentationConfig, names) -> dict:
        from microrepro.common.training import load_weights

        models = {}
        for name in names:
            model = build_model(cfg.model)
            load_weights(model, run_dir, name, "best")
            models[name] = model
        return models

    @staticmethod
    def _thresholds(run_dir: Path) -> dict:
        path = Path(run_dir) / THRESHOLDS_FILE
        if not path.is_file():
            raise UserError(f"{path}: missing; this run did not finish choosing its thresholds")
        return json.loads(path.read_text())

    def evaluate(self, run: Run, data: DataSource) -> None:
        """Re-evaluate the stored models: pre-trained and fine-tuned on the evaluation images,
        ``fcrn_a_vgg`` on the VGG test images when they sit beside the data.

        The split is rebuilt from the same data and ``finetune.split_seed`` (deterministic), and
        the thresholds chosen on validation data during ``reproduce`` are reused.
        """
        cfg: FcnSegmentationConfig = run.config
        thresholds = self._thresholds(run.run_dir)
        models = self._load_models(run.run_dir, cfg, (PRETRAINED, FINETUNED))
        if data.path is None:
            real, kind, split_name = synthetic_real_substitute(cfg, run.seed), "synthetic", "synthetic_eval"
        else:
            real, kind, split_name = load_real(Path(data.path), cfg), "real", "real_eval"
        self._evaluate_real(run, cfg, real, models, thresholds, kind, split_name)
        vgg_root = Path(data.path).parent / cfg.vgg.dataset if data.path is not None else None
        if VGG in thresholds and vgg_root is not None and vgg_root.is_dir():
            model = self._load_models(run.run_dir, cfg, (VGG,))[VGG]
            self._vgg_metrics(run, cfg, model, thresholds[VGG], self._vgg_data(cfg, vgg_root))
        run.save()

    # -- prediction -----------------------------------------------------------------------------

    def predict(self, run_dir: Path, images: list[Path], out_dir: Path, **options) -> list[Path]:
        """Segment ``images`` with a trained run.

        Options:
            model: "fcrn_a_finetuned" (default), "fcrn_a_pretrained" or "fcrn_a_vgg".
            threshold: probability threshold (default: the one chosen on validation data).

        Writes per image ``<stem>_mask.png`` (0/255 foreground), ``<stem>_overlay.png``
        (contours on the image) and ``<stem>.csv`` (one row per connected component:
        x, y centroid, x1, y1, x2, y2 box (x2/y2 exclusive), area_px, score = mean probability);
        and ``counts.csv`` (image, count of components, foreground area in px, threshold).
        """
        import csv

        from skimage.measure import regionprops
        from skimage.measure import label as cc_label
        from skimage.segmentation import find_boundaries

        from microrepro.common.imageio import read_image, write_image

        run_dir, out_dir = Path(run_dir), Path(out_dir)
        cfg: FcnSegmentationConfig = self.config_from_run(run_dir)
        name = options.get("model", FINETUNED)
        if name not in (PRETRAINED, FINETUNED, VGG):
            raise UserError(f"--model {name!r}: choose {PRETRAINED}, {FINETUNED} or {VGG}")
        threshold = options.get("threshold")
        if threshold is None:
            stored = self._thresholds(run_dir)
            if name not in stored:
                raise UserError(f"{run_dir / THRESHOLDS_FILE}: no threshold for {name}; pass threshold=")
            threshold = stored[name]
        threshold = float(threshold)
        model = self._load_models(run_dir, cfg, (name,))[name]
        out_dir.mkdir(parents=True, exist_ok=True)
        written, rows = [], []
        for path in images:
            path = Path(path)
            raw = read_image(path)
            image = fdata.prepare_image(raw, cfg.normalize_low, cfg.normalize_high)
            prob = fdata.predict_probability(model, image)
            mask = prob >= threshold
            labels = cc_label(mask, connectivity=1)
            written.append(write_image(out_dir / f"{path.stem}_mask.png", (mask * 255).astype(np.uint8)))
            grey = (image * 255).astype(np.uint8)
            overlay = np.repeat(grey[..., None], 3, axis=-1)
            overlay[find_boundaries(labels, mode="inner")] = (255, 64, 0)
            written.append(write_image(out_dir / f"{path.stem}_overlay.png", overlay))
            csv_path = out_dir / f"{path.stem}.csv"
            with open(csv_path, "w", newline="") as fh:
                writer = csv.writer(fh)
                writer.writerow(["x", "y", "x1", "y1", "x2", "y2", "area_px", "score"])
                for region in regionprops(labels, intensity_image=prob):
                    cy, cx = region.centroid
                    y1, x1, y2, x2 = region.bbox
                    writer.writerow([f"{cx:.1f}", f"{cy:.1f}", x1, y1, x2, y2, int(region.area),
                                     f"{float(region.intensity_mean):.4f}"])
            written.append(csv_path)
            rows.append([path.name, int(labels.max()), int(mask.sum()), f"{threshold:.3f}"])
        counts = out_dir / "counts.csv"
        with open(counts, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["image", "count", "area_px", "threshold"])
            writer.writerows(rows)
        written.append(counts)
        return written


TASK = FcnSegmentationTask()
