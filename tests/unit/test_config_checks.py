"""Config values are checked by their types: Literal choices and Range bounds, for every paper.

A bad ``--set`` (or YAML, or dataclass default) is a one-line ConfigError naming the key and the
allowed values, raised while the config is resolved, i.e. before any data is read or model built.
"""

# The module is written with postponed annotations on purpose: Range must survive them.
from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Annotated, Literal

import pytest

from microrepro.common import config
from microrepro.common.config import (
    Fraction,
    FractionOrZero,
    NonNegFloat,
    NonNegInt,
    PositiveFloat,
    PositiveInt,
    Probability,
    Range,
)
from microrepro.common.errors import ConfigError
from microrepro.common.registry import PAPERS, get_task

# --------------------------------------------------------------------------------------------
# the Range mechanism on a toy config
# --------------------------------------------------------------------------------------------


@dataclass
class Inner:
    size: PositiveInt = 8
    rate: PositiveFloat = 0.1
    share: Fraction = 0.5


@dataclass
class Toy:
    inner: Inner = field(default_factory=Inner)
    count: NonNegInt = 0
    decay: NonNegFloat = 0.0
    momentum: FractionOrZero = 0.9
    threshold: Probability | None = None
    widths: tuple[PositiveInt, ...] = (4, 8)
    pair: tuple[PositiveInt, Probability] = (2, 0.5)
    anchors: list[list[PositiveFloat]] = field(default_factory=lambda: [[1.0, 2.0]])
    mode: Literal["a", "b"] = "a"
    either: PositiveInt | Literal["auto"] = "auto"


@dataclass
class BadDefault:
    size: PositiveInt = 0  # out of range on purpose: resolve must notice


YAML = """
count: 2
presets:
  paper: {}
schedules:
  short: {}
"""


@pytest.fixture
def toy_path(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(YAML)
    return path


def _resolve(path, *assignments, cls=Toy):
    return config.resolve(cls, path, "paper", "short", config.parse_set(list(assignments)))


def test_range_bounds_inclusive_and_exclusive():
    closed, open_ = Range(0, 1), Range(0, 1, min_open=True, max_open=True)
    assert closed.contains(0) and closed.contains(1) and closed.contains(0.5)
    assert not open_.contains(0) and not open_.contains(1) and open_.contains(0.5)
    assert not closed.contains(-1e-9) and not closed.contains(1 + 1e-9)
    assert Range(min=1).contains(10**9) and not Range(min=1).contains(0)
    assert Range(max=2).contains(-5) and not Range(max=2, max_open=True).contains(2)
    assert not closed.contains(math.nan) and not Range(min=0).contains(math.nan)  # NaN is in no range
    assert Range().contains(-math.inf) and Range().describe() == "any number"
    assert closed.describe() == ">= 0 and <= 1"
    assert open_.describe() == "> 0 and < 1"
    assert Range(min=1).describe() == ">= 1"
    assert Range(0, 0.9, min_open=True).describe() == "> 0 and <= 0.9"


def test_aliases_mean_what_the_docstring_says():
    cases = {
        "PositiveInt": (PositiveInt, [1, 7], [0, -1]),
        "NonNegInt": (NonNegInt, [0, 3], [-1]),
        "PositiveFloat": (PositiveFloat, [1e-9, 3.0], [0.0, -1.0]),
        "NonNegFloat": (NonNegFloat, [0.0, 2.5], [-1e-9]),
        "Fraction": (Fraction, [0.01, 0.99], [0.0, 1.0, 1.5]),
        "FractionOrZero": (FractionOrZero, [0.0, 0.99], [1.0, -0.1]),
        "Probability": (Probability, [0.0, 1.0, 0.5], [1.01, -0.01, 5]),
    }
    for name, (tp, good, bad) in cases.items():
        for value in good:
            assert config._coerce(value, tp, name) == value
        for value in bad:
            with pytest.raises(ConfigError, match=rf"^{name}: .* is out of range \(must be "):
                config._coerce(value, tp, name)


def test_out_of_range_set_names_key_and_range(toy_path):
    with pytest.raises(ConfigError, match=r"^--set inner\.size: -1 is out of range \(must be >= 1\)$"):
        _resolve(toy_path, "inner.size=-1")
    with pytest.raises(ConfigError, match=r"^--set inner\.share: 1\.5 is out of range \(must be > 0 and < 1\)$"):
        _resolve(toy_path, "inner.share=1.5")
    with pytest.raises(ConfigError, match=r"--set inner\.rate: 0\.0 is out of range \(must be > 0\)"):
        _resolve(toy_path, "inner.rate=0")
    with pytest.raises(ConfigError, match=r"--set momentum: 1\.0 .*>= 0 and < 1"):
        _resolve(toy_path, "momentum=1")
    with pytest.raises(ConfigError, match=r"--set count: -3 "):
        _resolve(toy_path, "count=-3")
    # the type is still checked before the range
    with pytest.raises(ConfigError, match="--set inner.size: expected an integer"):
        _resolve(toy_path, "inner.size=big")


def test_in_range_values_and_bounds_pass(toy_path):
    cfg = _resolve(toy_path, "inner.size=1", "decay=0", "momentum=0", "threshold=1", "inner.share=0.25")
    assert (cfg.inner.size, cfg.decay, cfg.momentum, cfg.threshold, cfg.inner.share) == (1, 0.0, 0.0, 1.0, 0.25)
    assert cfg.count == 2  # the YAML base


def test_optional_keeps_none_and_reports_the_range(toy_path):
    assert _resolve(toy_path, "threshold=null").threshold is None
    assert _resolve(toy_path, "threshold=0.3").threshold == 0.3
    # X | None: the message is X's own (with its range), not "fits none of typing.Optional[...]"
    with pytest.raises(ConfigError, match=r"^--set threshold: 5\.0 is out of range \(must be >= 0 and <= 1\)$"):
        _resolve(toy_path, "threshold=5")


def test_union_of_several_types_names_them_readably(toy_path):
    assert _resolve(toy_path, "either=3").either == 3
    assert _resolve(toy_path, "either=auto").either == "auto"
    with pytest.raises(ConfigError, match=r"--set either: 0 fits none of int >= 1 \| 'auto'"):
        _resolve(toy_path, "either=0")


def test_tuples_and_nested_lists_check_every_item(toy_path):
    assert _resolve(toy_path, "widths=[1, 2, 3]").widths == (1, 2, 3)
    with pytest.raises(ConfigError, match=r"--set widths\[1\]: 0 is out of range \(must be >= 1\)"):
        _resolve(toy_path, "widths=[4, 0]")
    with pytest.raises(ConfigError, match=r"--set pair\[1\]: 2\.0 is out of range"):
        _resolve(toy_path, "pair=[3, 2]")
    with pytest.raises(ConfigError, match=r"--set anchors\[0\]\[1\]: -1\.0 is out of range \(must be > 0\)"):
        _resolve(toy_path, "anchors=[[1, -1]]")


def test_literal_is_checked(toy_path):
    with pytest.raises(ConfigError, match=r"--set mode: 'c' is not one of \['a', 'b'\]"):
        _resolve(toy_path, "mode=c")


def test_annotated_survives_postponed_annotations():
    # this module uses ``from __future__ import annotations``: the hints are strings until resolved
    assert isinstance(Toy.__dataclass_fields__["count"].type, str)
    hints = config._hints(Toy)
    assert typing.get_origin(hints["count"]) is Annotated
    assert typing.get_args(hints["count"])[1] == Range(min=0)
    with pytest.raises(ConfigError, match="out of range"):
        config.from_dict(Toy, {"inner": {"size": 0}})
    with pytest.raises(ConfigError, match=r"^x\.inner\.size: 0 is out of range"):
        config.merge(Toy(), {"inner": {"size": 0}}, "x")
    assert config.merge(Toy(), {"inner": {"size": 3}}).inner.size == 3


def _write(tmp_path, text: str):
    path = tmp_path / "config.yaml"
    path.write_text(text + "presets: {paper: {}}\nschedules: {short: {}}\n")
    return path


def test_a_default_out_of_range_fails_at_resolve(tmp_path):
    with pytest.raises(ConfigError, match=r"^config\.size: 0 is out of range \(must be >= 1\)$"):
        _resolve(_write(tmp_path, ""), cls=BadDefault)
    assert _resolve(_write(tmp_path, "size: 3\n"), cls=BadDefault).size == 3  # unless a layer overrides it


def test_a_yaml_value_out_of_range_names_its_layer(tmp_path):
    with pytest.raises(ConfigError, match=r"^config\.inner\.share: 0\.0 is out of range"):
        _resolve(_write(tmp_path, "inner: {share: 0}\n"))
    path = tmp_path / "config.yaml"
    path.write_text("presets: {paper: {count: -1}}\nschedules: {short: {}}\n")
    with pytest.raises(ConfigError, match=r"^presets\.paper\.count: -1 is out of range"):
        _resolve(path)


def test_validate_walks_nested_dataclasses():
    config.validate(Toy())
    bad = Toy()
    bad.inner.rate = -1.0  # a value set behind the config's back
    with pytest.raises(ConfigError, match=r"^config\.inner\.rate: -1\.0 is out of range"):
        config.validate(bad)


# --------------------------------------------------------------------------------------------
# the five papers
# --------------------------------------------------------------------------------------------


def _presets_and_schedules(task) -> list[tuple[str, str]]:
    schedules = sorted(config.read_yaml(task.config_path).get("schedules") or {})
    return [(p, s) for p in config.presets_in(task.config_path) for s in schedules]


@pytest.mark.parametrize("paper", list(PAPERS))
def test_every_preset_and_schedule_resolves(paper):
    task = get_task(paper)
    combos = _presets_and_schedules(task)
    assert len(combos) >= 4, combos
    for preset, schedule in combos:
        cfg = task.load_config(preset, schedule)
        config.validate(cfg)  # what resolve did, once more: the resolved values are all in range


# (override, a pattern the message must contain: the key and what is allowed)
BAD_SETS = {
    "spines": [
        ("yolo.train.batch_size=-1", r"yolo\.train\.batch_size: -1 is out of range \(must be >= 1\)"),
        ("sp_cnn.input_size=0", r"sp_cnn\.input_size: 0 is out of range \(must be >= 1\)"),
        ("data.val_fraction=1.5", r"data\.val_fraction: 1\.5 is out of range \(must be > 0 and < 1\)"),
        ("faster_rcnn.score_threshold=5",
         r"faster_rcnn\.score_threshold: 5\.0 is out of range \(must be >= 0 and <= 1\)"),
        ("yolo.threshold_rule=best", r"yolo\.threshold_rule: 'best' is not one of \['fixed', 'train_f1'\]"),
        ("faster_rcnn.train.optimizer=sgd",
         r"faster_rcnn\.train\.optimizer: 'sgd' is not one of \['adam', 'momentum'\]"),
        ("faster_rcnn.feature_endpoint=Mixed_6a", r"faster_rcnn\.feature_endpoint: 'Mixed_6a' is not one of"),
        ("matching.threshold_step=0", r"matching\.threshold_step: 0\.0 is out of range \(must be > 0 and <= 0\.9\)"),
        ("faster_rcnn.bn_momentum=1", r"faster_rcnn\.bn_momentum: 1\.0 is out of range \(must be >= 0 and < 1\)"),
    ],
    "cell_counting": [
        ("train.batch_size=-1", r"train\.batch_size: -1 is out of range \(must be >= 1\)"),
        ("data.crop_size=0", r"data\.crop_size: 0 is out of range \(must be >= 1\)"),
        ("model.filters=[16, 0, 64]", r"model\.filters\[1\]: 0 is out of range \(must be >= 1\)"),
        ("model.bridge_kernel=0", r"model\.bridge_kernel: 0 is out of range \(must be >= 1\)"),
        ("data.val_fraction=1.5", r"data\.val_fraction: 1\.5 is out of range \(must be > 0 and < 1\)"),
        ("postprocess.threshold=5", r"postprocess\.threshold: 5\.0 is out of range \(must be >= 0 and <= 1\)"),
        ("model.activation=relu7", r"model\.activation: 'relu7' is not one of"),
        ("weight_map.kind=gauss", r"weight_map\.kind: 'gauss' is not one of"),
        ("train.plateau_factor=1", r"train\.plateau_factor: 1\.0 is out of range \(must be > 0 and < 1\)"),
        ("postprocess.threshold_grid=[0.5, 0.9, 0]", r"postprocess\.threshold_grid\[2\]: 0\.0 is out of range"),
    ],
    "mitos_rcnn": [
        ("train.batch_size=-1", r"train\.batch_size: -1 is out of range \(must be >= 1\)"),
        ("model.input_size=0", r"model\.input_size: 0 is out of range \(must be >= 32\)"),
        ("data.test_fraction=1.5", r"data\.test_fraction: 1\.5 is out of range \(must be > 0 and < 1\)"),
        ("model.score_threshold=5", r"model\.score_threshold: 5\.0 is out of range \(must be >= 0 and <= 1\)"),
        ("train.optimizer=rmsprop", r"train\.optimizer: 'rmsprop' is not one of \['sgd', 'adam'\]"),
        ("models=[mitos_rcnn, yolo]", r"models\[1\]: 'yolo' is not one of"),
        ("model.roi_op=crop", r"model\.roi_op: 'crop' is not one of \['pool', 'align', 'align_max'\]"),
        ("model.backbone.width_multiplier=2",
         r"model\.backbone\.width_multiplier: 2\.0 is out of range \(must be > 0 and <= 1\)"),
        ("eval.thresholds=[0.5, 2]", r"eval\.thresholds\[1\]: 2\.0 is out of range"),
    ],
    "fcn_segmentation": [
        ("finetune.train.batch_size=-1", r"finetune\.train\.batch_size: -1 is out of range \(must be >= 1\)"),
        ("finetune.crop_size=0", r"finetune\.crop_size: 0 is out of range \(must be >= 1\)"),
        ("finetune.eval_fraction=1.5", r"finetune\.eval_fraction: 1\.5 is out of range \(must be > 0 and < 1\)"),
        ("pretrain.noise_fraction=5", r"pretrain\.noise_fraction: 5\.0 is out of range \(must be >= 0 and <= 1\)"),
        ("eval.select_metric=auc", r"eval\.select_metric: 'auc' is not one of"),
        ("model.kernel_initializer=xavier", r"model\.kernel_initializer: 'xavier' is not one of"),
        ("model.num_classes=1", r"model\.num_classes: 1 is out of range \(must be >= 2\)"),
        ("normalize_high=101", r"normalize_high: 101\.0 is out of range \(must be >= 0 and <= 100\)"),
    ],
    "dwt_mitosis": [
        ("seg_train.batch_size=-1", r"seg_train\.batch_size: -1 is out of range \(must be >= 1\)"),
        ("seg_train.crop_size=0", r"seg_train\.crop_size: 0 is out of range \(must be >= 1\)"),
        ("amibr.val_fraction=1.5", r"amibr\.val_fraction: 1\.5 is out of range \(must be > 0 and < 1\)"),
        ("seg.threshold=5", r"seg\.threshold: 5\.0 is out of range \(must be >= 0 and <= 1\)"),
        ("label_sources=[dwt, boxes]",
         r"label_sources\[1\]: 'boxes' is not one of \['dwt', 'unet', 'manual', 'square'\]"),
        ("synthetic.scanner=leica", r"synthetic\.scanner: 'leica' is not one of \['aperio', 'hamamatsu'\]"),
        ("rcnn.ss_mode=slow", r"rcnn\.ss_mode: 'slow' is not one of"),
        ("amibr.grid=[2, 0]", r"amibr\.grid\[1\]: 0 is out of range \(must be >= 1\)"),
    ],
}


@pytest.mark.parametrize("paper", list(PAPERS))
def test_bad_values_are_one_line_errors_naming_the_key(paper):
    task = get_task(paper)
    assert BAD_SETS[paper], paper
    for assignment, pattern in BAD_SETS[paper]:
        with pytest.raises(ConfigError, match=rf"^--set {pattern}") as err:
            task.load_config("paper", "smoke", overrides=config.parse_set([assignment]))
        assert "\n" not in str(err.value), assignment


def test_dwt_score_threshold_is_an_svm_margin_so_any_number_goes():
    cfg = get_task("dwt_mitosis").load_config("paper", "smoke", overrides=config.parse_set(["rcnn.score_threshold=-3"]))
    assert cfg.rcnn.score_threshold == -3.0


# Fields left as plain str / unbounded numbers on purpose: paths, names, and values whose valid set is open.
FREE_STRINGS = {"name", "pretrained", "dataset", "stardist_dataset"}
FREE_NUMBERS = {
    "dwt_mitosis": {"rcnn.score_threshold"},  # a linear-SVM score, any real number
    "spines": {"sp_cnn.bilateral"},  # cv2.bilateralFilter: d <= 0 means "from sigmaSpace"
}


def _leaves(tp) -> list:
    """The scalar types inside ``tp`` (through Optional, tuple, list), Annotated kept."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType, list, tuple):
        return [leaf for arg in typing.get_args(tp) if arg is not Ellipsis for leaf in _leaves(arg)]
    return [tp]


def _unchecked(cls, where: str = "") -> list[str]:
    out = []
    for f in dataclasses.fields(cls):
        tp, key = config._hints(cls)[f.name], f"{where}{f.name}"
        if dataclasses.is_dataclass(tp):
            out += _unchecked(tp, f"{key}.")
            continue
        for leaf in _leaves(tp):
            if leaf in (int, float):
                out.append(f"{key}: bare {leaf.__name__}")
            elif leaf is str and f.name not in FREE_STRINGS:
                out.append(f"{key}: bare str")
    return out


@pytest.mark.parametrize("paper", list(PAPERS))
def test_every_number_has_a_range_and_every_choice_is_a_literal(paper):
    task = get_task(paper)
    unchecked = [u for u in _unchecked(task.config_cls) if u.split(":")[0] not in FREE_NUMBERS.get(paper, set())]
    assert not unchecked, f"{paper}: give these a Range / Literal (common/config.py): {unchecked}"


def _literal(tp) -> tuple:
    return typing.get_args(tp)


def test_literals_agree_with_the_code_that_uses_them():
    """The Literal choices spelt out in config.py are the ones the code accepts."""
    import keras

    from microrepro.common import metrics
    from microrepro.datasets.synthetic import he_fields
    from microrepro.reproductions.cell_counting import config as cc
    from microrepro.reproductions.dwt_mitosis import config as dwt
    from microrepro.reproductions.fcn_segmentation import config as fcn
    from microrepro.reproductions.mitos_rcnn import config as mitos
    from microrepro.reproductions.mitos_rcnn import model as mitos_model
    from microrepro.reproductions.spines import config as spines
    from microrepro.reproductions.spines import inception_v2

    assert _literal(spines.InceptionEndpoint) == inception_v2.ENDPOINTS
    assert set(_literal(spines.ThresholdRule)) == {"fixed", "train_f1"}  # what the spines evaluation knows
    assert _literal(mitos.ModelKey) == mitos_model.MODEL_KEYS
    hints = config._hints(dwt.SyntheticConfig)
    assert set(_literal(hints["scanner"])) == set(he_fields.SCANNERS)
    sweep = metrics.threshold_sweep([[0.2, 0.8]], [[0, 1]], [0.5])
    assert set(_literal(fcn.SweepMetric)) <= set(sweep)
    for name in _literal(fcn.KernelInitializer):
        keras.initializers.get(name)
    for name in _literal(cc.Activation):
        keras.activations.get(name)
