"""Typed configuration: dataclasses hold every default, YAML only overrides.

A paper's ``config.yaml`` has this shape::

    name: c_resunet_fnc            # base values, overriding the dataclass defaults
    model: {...}
    train: {...}
    presets:                       # "paper" (as written) and, where the code differs, "released"
      paper: {}
      released: {train: {lr: 1.0e-3}}
    schedules:                     # how long to train: smoke (seconds), short (CPU, default), paper
      smoke: {train: {epochs: 1}}
      short: {...}
      paper: {...}

Resolution order: dataclass defaults < base < preset < schedule < ``--set key=value``.
Unknown keys are an error that names the key and lists the known ones (CSBDeep-style).

Valid values live in the field types, so a bad value is a one-line ``ConfigError`` naming the key
before any work starts: an enumerated string is a ``typing.Literal``, and a number carries its range
as ``typing.Annotated[int, Range(min=1)]``. The aliases below cover the common cases::

    PositiveInt     int >= 1          sizes, batch sizes, epochs, steps, counts
    NonNegInt       int >= 0          "0 = all / none / off" counts, seeds (numpy wants >= 0)
    PositiveFloat   float > 0         learning rates, scales, sigmas, physical sizes
    NonNegFloat     float >= 0        weight decay, min_lr, loss weights, "0 = off" strengths
    Fraction        float in (0, 1)   shares of a data set that must leave both parts non-empty
    FractionOrZero  float in [0, 1)   BatchNorm momentum, shares that may be 0
    Probability     float in [0, 1]   score thresholds, probabilities, IoUs

They compose: ``PositiveInt | None``, ``tuple[PositiveInt, ...]``, ``list[list[PositiveFloat]]``.
Every value is checked when it is merged in (``--set``, YAML) and the whole resolved config once
more at the end of ``resolve``, so a dataclass default out of range fails too.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml

from microrepro.common.errors import ConfigError

RESERVED = ("presets", "schedules")


@dataclasses.dataclass(frozen=True)
class Range:
    """Bounds of a number, read by ``_coerce`` from ``Annotated[int | float, Range(...)]``.

    Attributes:
        min: lower bound, None for none.
        max: upper bound, None for none.
        min_open: the lower bound itself is excluded (``> min`` rather than ``>= min``).
        max_open: the upper bound itself is excluded (``< max`` rather than ``<= max``).
    """

    min: float | None = None
    max: float | None = None
    min_open: bool = False
    max_open: bool = False

    def contains(self, value: float) -> bool:
        # Written as "is inside" so that NaN, which compares False with everything, is outside.
        if self.min is not None and not (value > self.min if self.min_open else value >= self.min):
            return False
        if self.max is not None and not (value < self.max if self.max_open else value <= self.max):
            return False
        return True

    def describe(self) -> str:
        """``">= 1"``, ``"> 0 and < 1"``...: the allowed values, for error messages."""
        parts = []
        if self.min is not None:
            parts.append(f"{'>' if self.min_open else '>='} {self.min:g}")
        if self.max is not None:
            parts.append(f"{'<' if self.max_open else '<='} {self.max:g}")
        return " and ".join(parts) or "any number"


PositiveInt = Annotated[int, Range(min=1)]
NonNegInt = Annotated[int, Range(min=0)]
PositiveFloat = Annotated[float, Range(min=0, min_open=True)]
NonNegFloat = Annotated[float, Range(min=0)]
Fraction = Annotated[float, Range(min=0, max=1, min_open=True, max_open=True)]
FractionOrZero = Annotated[float, Range(min=0, max=1, max_open=True)]
Probability = Annotated[float, Range(min=0, max=1)]


@dataclasses.dataclass
class RuntimeConfig:
    """Where and in which precision a paper trains: the ``runtime`` section every paper's config has.

    One section for every model of a paper (``--set runtime.strategy=mirrored`` applies to all of
    them), read by ``common.training.runtime_scope``, which the CLI wraps around ``reproduce`` and
    ``evaluate``. The batch sizes a config names are GLOBAL batches: under a strategy each step
    splits them over the replicas (2 GPUs, batch 8: 4 images per GPU), so the schedule and the
    learning rate mean the same on one device and on many.

    Attributes:
        strategy: ``none`` (the default device), ``mirrored`` (tf.distribute.MirroredStrategy: all
            local GPUs, TensorFlow backend), ``multiworker`` (tf.distribute.MultiWorkerMirroredStrategy,
            one process per machine with TF_CONFIG set, TensorFlow backend), ``data_parallel``
            (keras.distribution.DataParallel over all local devices, JAX backend).
        precision: the Keras dtype policy models are built under: ``float32``, ``mixed_bfloat16``
            (bf16 compute, float32 weights; CPUs, TPUs, Ampere+ GPUs) or ``mixed_float16`` (GPUs; Keras
            scales the loss).
        inter_op_threads: TensorFlow's inter-op thread pool (independent ops of one graph run side by
            side); None = TensorFlow's default. 1 runs the ops of a step one after another: a model
            whose graph-mode training step is otherwise not repeatable across processes (dwt_mitosis'
            DWT-net) then repeats bit for bit. Set before TensorFlow starts; other backends ignore it.
    """

    strategy: Literal["none", "mirrored", "multiworker", "data_parallel"] = "none"
    precision: Literal["float32", "mixed_bfloat16", "mixed_float16"] = "float32"
    inter_op_threads: PositiveInt | None = None


def sections(cls: type) -> type:
    """``@dataclass`` for a config whose fields typed by another config dataclass default to a fresh one.

    ``model: ModelConfig`` in the class body means ``model: ModelConfig = field(default_factory=
    ModelConfig)``: every paper's top-level config is a list of such sections, declared by type only.
    A field with a default of its own keeps it.
    """
    hints = typing.get_type_hints(cls)
    for name in cls.__dict__.get("__annotations__", {}):
        if name not in cls.__dict__ and _is_dataclass_type(hints[name]):
            setattr(cls, name, dataclasses.field(default_factory=hints[name]))
    return dataclasses.dataclass(cls)


def _join(where: str, key: str) -> str:
    """``config.train.lr`` for config files, ``--set train.lr`` for command-line overrides."""
    return f"{where} {key}" if where == "--set" else f"{where}.{key}"


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


_EXACT = {bool: "true/false", str: "a string"}  # types taken as they are, never converted


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert a YAML value to the annotated type ``tp``, or raise ConfigError naming ``where``."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin is Annotated:
        inner, *metadata = typing.get_args(tp)
        value = _coerce(value, inner, where)
        for meta in metadata:
            if isinstance(meta, Range) and not meta.contains(value):
                raise ConfigError(f"{where}: {value!r} is out of range (must be {meta.describe()})")
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        options = [arg for arg in args if arg is not type(None)]
        errors = []
        for arg in options:
            try:
                return _coerce(value, arg, where)
            except ConfigError as err:
                errors.append(err)
        if len(errors) == 1:  # ``X | None``: X's own message says more (its range, its choices)
            raise errors[0]
        raise ConfigError(f"{where}: {value!r} fits none of {_type_name(tp)}")
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{where}: {value!r} is not one of {list(allowed)}")
        return value
    if _is_dataclass_type(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
            return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
        item = args[0] if args else Any
        out = [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp in _EXACT:  # bool and str: no conversion
        if not isinstance(value, tp):
            raise ConfigError(f"{where}: expected {_EXACT[tp]}, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    return value


def _type_name(tp: Any) -> str:
    """A readable name of a field type for error messages (``int >= 1 | None``, not ``typing.Optional[...]``)."""
    origin = typing.get_origin(tp)
    if tp is type(None):
        return "None"
    if origin is Annotated:
        inner, *metadata = typing.get_args(tp)
        ranges = [f" {m.describe()}" for m in metadata if isinstance(m, Range)]
        return _type_name(inner) + "".join(ranges)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(arg) for arg in typing.get_args(tp))
    if origin is typing.Literal:
        return " | ".join(repr(arg) for arg in typing.get_args(tp))
    if origin is not None:
        args = ", ".join("..." if arg is Ellipsis else _type_name(arg) for arg in typing.get_args(tp))
        return f"{origin.__name__}[{args}]"
    return getattr(tp, "__name__", str(tp))


def _hints(cls: type) -> dict:
    # include_extras keeps Annotated (and so the Range) instead of stripping it to the bare type.
    return typing.get_type_hints(cls, include_extras=True)


def validate(cfg: Any, where: str = "config") -> None:
    """Check every value of dataclass instance ``cfg`` against its field type (Literal, Range...).

    ``merge`` checks the values it is given; this also catches the dataclass defaults nobody
    overrode. Raises ConfigError naming the first bad key; returns None and changes nothing.
    """
    hints = _hints(type(cfg))
    for field in dataclasses.fields(cfg):
        value = getattr(cfg, field.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            validate(value, _join(where, field.name))
        else:
            _coerce(value, hints[field.name], _join(where, field.name))


def from_dict(cls: type, data: dict, where: str = "config") -> Any:
    """Build dataclass ``cls`` from ``data``; unknown keys raise ConfigError naming the key."""
    hints = _hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"unknown key '{_join(where, unknown[0])}'" + f" (known keys of {where}: {', '.join(sorted(names))})"
        )
    kwargs = {}
    for field in dataclasses.fields(cls):
        if field.name in data:
            kwargs[field.name] = _coerce(data[field.name], hints[field.name], _join(where, field.name))
    return cls(**kwargs)


def merge(base: Any, overrides: dict, where: str = "config") -> Any:
    """Return a copy of dataclass instance ``base`` with ``overrides`` (nested dict) applied."""
    if not overrides:
        return copy.deepcopy(base)
    if not isinstance(overrides, dict):
        raise ConfigError(f"{where}: expected a mapping, got {overrides!r}")
    hints = _hints(type(base))
    names = {f.name for f in dataclasses.fields(base)}
    changes = {}
    for key, value in overrides.items():
        if key not in names:
            raise ConfigError(f"unknown key '{_join(where, key)}' (known keys of {where}: {', '.join(sorted(names))})")
        current = getattr(base, key)
        if dataclasses.is_dataclass(current) and isinstance(value, dict):
            changes[key] = merge(current, value, _join(where, key))
        else:
            changes[key] = _coerce(value, hints[key], _join(where, key))
    return dataclasses.replace(copy.deepcopy(base), **changes)


def parse_set(assignments: list[str] | None) -> dict:
    """Turn ``["train.lr=1e-3", "model.filters=[8,16]"]`` into a nested override dict."""
    out: dict = {}
    for item in assignments or []:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw)
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def read_yaml(path: Path, missing: str = "config file not found") -> dict:
    """Read a YAML mapping with a clear error for a missing (``path: missing``) or malformed file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: {missing}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def presets_in(path: Path) -> list[str]:
    return sorted((read_yaml(path).get("presets") or {}).keys())


def resolve(
    cls: type,
    path: Path,
    preset: str = "paper",
    schedule: str = "short",
    overrides: dict | None = None,
) -> Any:
    """Resolve a paper config: dataclass defaults < YAML base < preset < schedule < overrides."""
    data = read_yaml(path)
    presets = data.get("presets") or {}
    schedules = data.get("schedules") or {}
    if preset not in presets:
        raise ConfigError(f"{path}: no preset '{preset}' (available: {', '.join(sorted(presets)) or 'none'})")
    if schedule not in schedules:
        raise ConfigError(
            f"{path}: no schedule '{schedule}' (available: {', '.join(sorted(schedules)) or 'none'})"
        )
    base = {k: v for k, v in data.items() if k not in RESERVED}
    cfg = merge(cls(), base, "config")
    cfg = merge(cfg, presets[preset] or {}, f"presets.{preset}")
    for name in _schedule_chain(schedules, schedule, path):
        cfg = merge(cfg, {k: v for k, v in (schedules[name] or {}).items() if k != "extends"}, f"schedules.{name}")
    cfg = merge(cfg, overrides or {}, "--set")
    validate(cfg)  # the defaults no layer overrode have not been checked yet
    return cfg


def _schedule_chain(schedules: dict, name: str, path: Path) -> list[str]:
    """``name`` and the schedules it ``extends:``, base first (``long: {extends: short, ...}``)."""
    chain = [name]
    while (parent := (schedules[chain[-1]] or {}).get("extends")) is not None:
        if parent not in schedules:
            raise ConfigError(f"{path}: schedule '{chain[-1]}' extends unknown schedule '{parent}'")
        if parent in chain:
            raise ConfigError(f"{path}: schedules extend each other in a loop: {' -> '.join([*chain, parent])}")
        chain.append(parent)
    return chain[::-1]


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def config_hash(cfg: Any) -> str:
    """A short stable hash of the resolved config (for provenance and run names)."""
    blob = json.dumps(to_dict(cfg), sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:10]
