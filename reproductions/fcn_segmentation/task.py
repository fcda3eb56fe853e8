"""fcn_segmentation: FCRN-A cell segmentation, SIMCEP-like pre-training, real fine-tuning, MCC.

Pipeline of ``reproduce`` (Marzo & La Rosa 2016, Sec. 7):

1. pre-train FCRN-A (2-class softmax) on random 128×128 patches of SIMCEP-like synthetic images,
   half of them with simplex/Perlin background noise (Sec. 7.1) → ``fcrn_a_pretrained``;
2. fine-tune it on ~55 real 128×128 fluorescence crops with manual masks, ×8 by the dihedral
   transforms (Sec. 7.1) → ``fcrn_a_finetuned``; the real images (DSB 2018 stage-1 test
   fluorescence + the StarDist tiles) are split BY IMAGE into fine-tune train / val / evaluation;
3. pixel metrics (Sec. 7.2) at the threshold maximising MCC, chosen on validation data
   (synthetic for the pre-trained model, real fine-tune val for the fine-tuned one) and stored
   in ``thresholds.json`` (``common.thresholds``), reported on the real evaluation images (split
   ``real_eval``) and, for the pre-trained model, on synthetic test patches (``synthetic_test``);
   ROC and example figures;
4. the same FCN trained from scratch on the VGG synthetic cells (``fcrn_a_vgg``, split ``test``).

Modules: ``splits`` (which images), ``data`` (arrays and tf.data), ``train`` (model, solver,
fit, timing), ``evaluate`` (thresholds, metrics, figures), ``segment`` (predict one image).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from microrepro.common import thresholds as thresholds_lib
from microrepro.common.data_sources import DataSource
from microrepro.common.predict import Predictor
from microrepro.common.runs import DataInfo, Run
from microrepro.common.task import Task
from microrepro.reproductions.fcn_segmentation import data as fdata
from microrepro.reproductions.fcn_segmentation import evaluate as fevaluate
from microrepro.reproductions.fcn_segmentation import segment, splits
from microrepro.reproductions.fcn_segmentation.config import FcnSegmentationConfig
from microrepro.reproductions.fcn_segmentation.evaluate import FINETUNED, MODELS, PRETRAINED, VGG
from microrepro.reproductions.fcn_segmentation.train import DOWNSAMPLING, build_model, time_model, train

__all__ = ["FINETUNED", "PRETRAINED", "TASK", "VGG", "FcnSegmentationTask"]


def _choose(run: Run, cfg: FcnSegmentationConfig, name: str, model, images: list, targets: list,
            split: str) -> float:
    """Choose ``name``'s MCC-maximising threshold on ``images`` and store it (Sec. 7.2)."""
    probs = fdata.predict_probability(model, images)
    threshold = fevaluate.choose_threshold(probs, targets, cfg, split=split)
    thresholds_lib.save(run.run_dir, name, threshold)
    return threshold.value


def _finetune_validation(real: fdata.RealSplit) -> tuple[list[fdata.Item], str]:
    """The images that choose the fine-tuned model's threshold (and its best checkpoint)."""
    return (real.val, "finetune_val") if real.val else (real.train, "finetune_train")


class FcnSegmentationTask(Task):
    name = "fcn_segmentation"
    title = "Microscopy cell semantic segmentation with FCNs (Marzo & La Rosa 2016)"
    dataset = "dsb2018_stage1_test"
    config_cls = FcnSegmentationConfig
    models = MODELS
    default_model = FINETUNED

    # -- reproduce ------------------------------------------------------------------------------

    def reproduce(self, run: Run, data: DataSource) -> None:
        from microrepro.common.training import set_seed
        from microrepro.reproductions.fcn_segmentation.own_data import layout

        layout(data.path)  # a --data-dir of neither layout fails here, before pre-training writes anything
        cfg: FcnSegmentationConfig = run.config
        set_seed(run.seed)
        t0 = time.perf_counter()

        # 1. synthetic pre-training (Sec. 7.1)
        synth = splits.synthetic_sets(cfg, run.seed)
        x_tr, y_tr = fdata.stack_pairs(synth["train"])
        x_va, y_va = fdata.stack_pairs(synth["val"])
        opt = cfg.pretrain.train
        pretrained = build_model(cfg.model, opt)
        train(
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
        real, kind, eval_split = splits.real_or_substitute(data.path, cfg, run.seed)
        real.write(run.run_dir / splits.SPLIT_FILE, {"split_seed": cfg.finetune.split_seed,
                                                     "eval_fraction": cfg.finetune.eval_fraction,
                                                     "val_fraction": cfg.finetune.val_fraction,
                                                     "stardist_tiles_as_images": True})

        # 3. fine-tuning (Sec. 7.1): start from the pre-trained weights
        ft_pairs = splits.finetune_pairs(real.train, cfg, run.seed)
        val_items, val_split = _finetune_validation(real)
        if not real.val:
            print("[fcn_segmentation] no fine-tune validation image: threshold chosen on the fine-tune images")
        xf, yf = fdata.stack_pairs(ft_pairs)
        xfv, yfv = fdata.stack_pairs(splits.val_pairs(val_items, cfg.finetune.crop_size, run.seed))
        opt_ft = cfg.finetune.train
        finetuned = build_model(cfg.model, opt_ft)
        finetuned.set_weights(pretrained.get_weights())
        train(
            run, finetuned, opt_ft, FINETUNED,
            fdata.make_dataset(xf, yf, opt_ft.batch_size, shuffle=True, seed=run.seed),
            fdata.make_dataset(xfv, yfv, opt_ft.batch_size, shuffle=False, seed=run.seed),
            n_examples=len(xf),
        )
        n_before = len(ft_pairs) // (8 if cfg.finetune.dihedral else 1)
        print(f"[fcn_segmentation] fine-tuned on {len(xf)} crops ({n_before} before ×8) "
              f"({time.perf_counter() - t0:.0f} s)")

        # 4. thresholds on validation data (Sec. 7.2: the MCC-maximising one), into thresholds.json
        thresholds = {
            PRETRAINED: _choose(run, cfg, PRETRAINED, pretrained, [p[0] for p in synth["val"]],
                                [p[1] for p in synth["val"]], "synthetic_val"),
            FINETUNED: _choose(run, cfg, FINETUNED, finetuned, [it.image for it in val_items],
                               [it.target for it in val_items], val_split),
        }

        # 5. metrics
        syn_test = synth["test"]
        probs = fdata.predict_probability(pretrained, [p[0] for p in syn_test])
        run.add_metrics(
            PRETRAINED, "synthetic_test",
            fevaluate.metrics_at(probs, [p[1] for p in syn_test], thresholds[PRETRAINED], cfg),
            DataInfo(kind="synthetic", dataset="simcep", n_images=len(syn_test),
                     note=f"{cfg.pretrain.patch_size}px patches of unseen SIMCEP-like images"),
        )
        fevaluate.evaluate_real(run, cfg, real, {PRETRAINED: pretrained, FINETUNED: finetuned}, thresholds,
                                kind, eval_split)
        size, repeats = cfg.eval.timing_size, cfg.eval.timing_repeats
        run.add_metrics(FINETUNED, "timing", {"ms_per_image": time_model(finetuned, size, repeats)},
                        DataInfo(kind="synthetic", dataset=f"random {size}x{size} input", n_images=1,
                                 note=f"median of {repeats} after 2 warm-up"))

        # 6. the same FCN on the VGG synthetic cells (a known benchmark beside the paper's)
        if cfg.vgg.enabled:
            vgg_root = splits.vgg_root(data.path, cfg)
            if vgg_root is not None:
                self._vgg(run, cfg, vgg_root)
            else:
                print(f"[fcn_segmentation] {cfg.vgg.dataset} not found beside the real data: {VGG} skipped")
        run.extra["total_seconds"] = round(time.perf_counter() - t0, 1)
        run.save()
        print(f"[fcn_segmentation] done in {time.perf_counter() - t0:.0f} s")

    def _vgg(self, run: Run, cfg: FcnSegmentationConfig, root: Path) -> None:
        """Train FCRN-A from scratch on the VGG cells, choose its threshold, test it."""
        vc, vgg = cfg.vgg, splits.vgg_split(cfg, root)
        opt = vc.train
        model = build_model(cfg.model, opt)
        x_tr = np.stack([p[0] for p in vgg["train"]])
        y_tr = np.stack([p[1] for p in vgg["train"]])
        val_items = [fdata.Item(str(i), *p) for i, p in enumerate(vgg["val"])]
        x_va, y_va = fdata.stack_pairs(splits.val_pairs(val_items, vc.crop_size, run.seed))
        train(
            run, model, opt, VGG,
            fdata.make_crop_dataset(x_tr, y_tr, vc.crop_size, opt.batch_size, seed=run.seed),
            fdata.make_dataset(x_va, y_va, opt.batch_size, shuffle=False, seed=run.seed),
            steps=max(1, vc.crops_per_epoch // opt.batch_size),
        )
        threshold = _choose(run, cfg, VGG, model, [p[0] for p in vgg["val"]], [p[1] for p in vgg["val"]], "vgg_val")
        fevaluate.vgg_metrics(run, cfg, model, threshold, vgg)

    # -- evaluate -------------------------------------------------------------------------------

    @staticmethod
    def _load_model(run_dir: Path, cfg: FcnSegmentationConfig, name: str):
        from microrepro.common.training import load_weights

        model = build_model(cfg.model)
        load_weights(model, run_dir, name, "best")
        return model

    def evaluate(self, run: Run, data: DataSource) -> None:
        """Re-evaluate the stored models: pre-trained and fine-tuned on the evaluation images,
        ``fcrn_a_vgg`` on the VGG test images when they sit beside the data and it was trained.

        The split is rebuilt from the same data and ``finetune.split_seed`` (deterministic); the
        thresholds stored in ``thresholds.json`` are reused, and a missing one is chosen again on
        the same validation data as in ``reproduce`` (and stored).

        Reference: Sec. 7.2, Table 1.
        """
        from microrepro.common.training import train_dir

        cfg: FcnSegmentationConfig = run.config
        stored = thresholds_lib.read_all(run.run_dir)
        models = {name: self._load_model(run.run_dir, cfg, name) for name in (PRETRAINED, FINETUNED)}
        real, kind, split_name = splits.real_or_substitute(data.path, cfg, run.seed)
        thresholds = {name: t.value for name, t in stored.items()}
        if PRETRAINED not in thresholds:
            val = splits.synthetic_part(cfg, "val", run.seed)
            thresholds[PRETRAINED] = _choose(run, cfg, PRETRAINED, models[PRETRAINED], [p[0] for p in val],
                                             [p[1] for p in val], "synthetic_val")
        if FINETUNED not in thresholds:
            items, split = _finetune_validation(real)
            thresholds[FINETUNED] = _choose(run, cfg, FINETUNED, models[FINETUNED], [it.image for it in items],
                                            [it.target for it in items], split)
        fevaluate.evaluate_real(run, cfg, real, models, thresholds, kind, split_name)
        vgg_root = splits.vgg_root(data.path, cfg)
        if vgg_root is not None and (train_dir(run.run_dir, VGG) / "best.weights.h5").is_file():
            model, vgg = self._load_model(run.run_dir, cfg, VGG), splits.vgg_split(cfg, vgg_root)
            if VGG not in thresholds:
                thresholds[VGG] = _choose(run, cfg, VGG, model, [p[0] for p in vgg["val"]],
                                          [p[1] for p in vgg["val"]], "vgg_val")
            fevaluate.vgg_metrics(run, cfg, model, thresholds[VGG], vgg)
        run.save()

    # -- predict (common.predict writes the files) ----------------------------------------------

    def load_predictor(self, run_dir: Path, model: str) -> Predictor:
        """``model`` of the run ``run_dir`` with its stored MCC-maximising threshold.

        ``detect`` takes any grey / RGB / RGBA image (uint8, uint16 or float) as read, segments
        it whole (reflect-padded to a multiple of 8) and returns the 4-connected components of
        ``probability >= threshold`` with their instance labels (``Objects.from_labels``) and
        their mean probability as score.

        Reference: Sec. 7.2.
        """
        run_dir = Path(run_dir)
        cfg: FcnSegmentationConfig = self.config_from_run(run_dir)
        threshold = thresholds_lib.load(run_dir, model).value
        network = self._load_model(run_dir, cfg, model)
        return Predictor(
            paper=self.name, model=model, threshold=threshold, detect=segment.detector(network, cfg),
            noun="cells", min_size=DOWNSAMPLING, score_range=(0.0, 1.0),
        )


TASK = FcnSegmentationTask()
