"""common/config.py: defaults < YAML base < preset < schedule < --set; unknown keys are errors."""

from dataclasses import dataclass, field

import pytest

from microrepro.common import config
from microrepro.common.errors import ConfigError


@dataclass
class Train:
    lr: float = 0.1
    epochs: int = 10
    schedule: dict = field(default_factory=lambda: {"kind": "constant"})


@dataclass
class Cfg:
    name: str = "toy"
    filters: tuple[int, ...] = (16, 32)
    pretrained: str | None = None
    train: Train = field(default_factory=Train)


YAML = """
name: toy_net
train: {lr: 0.006}
presets:
  paper: {}
  released: {train: {lr: 1.0e-3}}
schedules:
  smoke: {train: {epochs: 1}}
  short: {train: {epochs: 5}}
"""


@pytest.fixture
def path(tmp_path):
    p = tmp_path / "config.yaml"
    p.write_text(YAML)
    return p


def test_resolution_order(path):
    cfg = config.resolve(Cfg, path, "released", "smoke", config.parse_set(["train.epochs=3", "filters=[8, 16, 32]"]))
    assert cfg.name == "toy_net"
    assert cfg.train.lr == 1e-3
    assert cfg.train.epochs == 3
    assert cfg.filters == (8, 16, 32)
    assert config.resolve(Cfg, path, "paper", "short").train.lr == 0.006


def test_unknown_key_names_the_key(path):
    with pytest.raises(ConfigError, match=r"unknown key '--set train.lrr'.*known keys of --set train: epochs, lr"):
        config.resolve(Cfg, path, "paper", "short", config.parse_set(["train.lrr=1"]))


def test_wrong_type_and_missing_preset(path):
    with pytest.raises(ConfigError, match="expected an integer"):
        config.resolve(Cfg, path, "paper", "short", {"train": {"epochs": "many"}})
    with pytest.raises(ConfigError, match="no preset 'fancy'.*paper, released"):
        config.resolve(Cfg, path, "fancy", "short")
    with pytest.raises(ConfigError, match="key=value"):
        config.parse_set(["train.lr"])


def test_malformed_yaml_is_a_clear_error(tmp_path):
    bad = tmp_path / "config.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        config.resolve(Cfg, bad)
    with pytest.raises(ConfigError, match="config file not found"):
        config.resolve(Cfg, tmp_path / "missing.yaml")


def test_hash_is_stable_and_sensitive(path):
    a = config.resolve(Cfg, path, "paper", "short")
    b = config.resolve(Cfg, path, "paper", "short")
    c = config.resolve(Cfg, path, "released", "short")
    assert config.config_hash(a) == config.config_hash(b) != config.config_hash(c)
    assert config.from_dict(Cfg, config.to_dict(a)) == a


def test_a_schedule_extends_another(tmp_path):
    p = tmp_path / "config.yaml"
    p.write_text(YAML + "  long: {extends: short, train: {lr: 0.5}}\n  longer: {extends: long, filters: [4]}\n")
    cfg = config.resolve(Cfg, p, "paper", "longer")
    assert (cfg.train.epochs, cfg.train.lr, cfg.filters) == (5, 0.5, (4,))
    p.write_text(YAML + "  long: {extends: nope}\n")
    with pytest.raises(ConfigError, match="extends unknown schedule 'nope'"):
        config.resolve(Cfg, p, "paper", "long")
    p.write_text(YAML + "  a: {extends: b}\n  b: {extends: a}\n")
    with pytest.raises(ConfigError, match="loop: a -> b -> a"):
        config.resolve(Cfg, p, "paper", "a")
