import dataclasses

import pytest

from compatctl.config import ConfigError, load_config, option, parse_overrides, to_dict


@dataclasses.dataclass
class Optim:
    lr: float = option(0.1, min=0.0)
    name: str = option("sgd", choices=("sgd", "adamw"))


@dataclasses.dataclass
class Cfg:
    epochs: int = option(3, min=1)
    classes: list[int] | str | None = None
    optim: Optim = dataclasses.field(default_factory=Optim)
    note: str = ""


def test_file_then_overrides_win(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("epochs: 5\noptim:\n  lr: 0.5\n")
    cfg = load_config(Cfg, path, ["optim.lr=0.01", "classes=[0, 1]"])
    assert cfg.epochs == 5 and cfg.optim.lr == 0.01 and cfg.classes == [0, 1]
    assert to_dict(cfg)["optim"] == {"lr": 0.01, "name": "sgd"}


def test_all_errors_reported_at_once(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("epoks: 5\nepochs: zero\noptim:\n  lr: -1\n  name: adam\n")
    with pytest.raises(ConfigError) as err:
        load_config(Cfg, path)
    problems = err.value.problems
    assert len(problems) == 4
    text = str(err.value)
    assert "unknown key 'epoks'" in text and "did you mean 'epochs'" in text
    assert "'epochs' must be an integer" in text
    assert "'optim.lr' must be >= 0.0" in text
    assert "'optim.name' must be one of sgd, adamw" in text


def test_union_and_int_to_float():
    cfg = load_config(Cfg, None, ["classes=first_half", "optim.lr=1"])
    assert cfg.classes == "first_half" and isinstance(cfg.optim.lr, float)


def test_bool_is_not_an_int():
    with pytest.raises(ConfigError, match="'epochs' must be an integer"):
        load_config(Cfg, None, ["epochs=true"])


def test_malformed_override_and_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not of the form key=value"):
        parse_overrides(["epochs"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(Cfg, bad)
