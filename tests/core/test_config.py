"""Tests for interplay.core.config: YAML dataclass configs, dotted overrides, errors, atomic saving."""

from __future__ import annotations

import enum
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml

from interplay.core import config as config_module
from interplay.core.config import (
    apply_overrides,
    from_dict,
    load_config,
    parse_override,
    save_config,
    to_dict,
)
from interplay.core.errors import ConfigError, InterplayError

# Schemas live at module level so that string annotations (from __future__ import annotations) resolve.


class Optim(enum.Enum):
    ADAM = "adam"
    SGD = "sgd"


@dataclass
class ModelConfig:
    name: str
    dims: list[int] = field(default_factory=lambda: [64, 64])
    dropout: float = 0.1
    activation: Literal["relu", "gelu"] = "relu"
    params: dict[str, Any] = field(default_factory=lambda: {"width": 8})
    kernel: tuple[int, ...] = (3, 3)
    weights: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


@dataclass
class TrainerConfig:
    max_epochs: int = 10
    lr: float = 1e-3
    optimizer: Optim = Optim.ADAM
    deterministic: bool = False
    grad_clip: float | None = None


@dataclass
class DataConfig:
    root: Path = Path("data")
    splits: dict[str, float] = field(default_factory=lambda: {"train": 0.8, "val": 0.2})


@dataclass
class Experiment:
    model: ModelConfig
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    seed: int = 0
    tags: list[str] = field(default_factory=list)
    note: str | None = None
    extra: Any = None
    size: int | str = 1


@dataclass
class Window:
    start: int = 0
    stop: int = 1

    def __post_init__(self) -> None:
        if self.stop <= self.start:
            raise TypeError("stop must be greater than start")


@dataclass
class Optional_:
    window: Window | None = None
    pair: tuple[int, str] = (0, "a")


@dataclass
class Anchored:
    trainer: TrainerConfig
    base: Any = None


YAML_TEXT = """\
model:
  name: kgat
  dims: [32, 16, 8]
  dropout: 0.25
  activation: gelu
  params: {depth: 3, heads: 4}
  kernel: [5, 7]
trainer:
  max_epochs: 20
  lr: 1e-3          # YAML 1.1 reads this as the string "1e-3"
  optimizer: sgd
  deterministic: true
data:
  root: /tmp/interplay-data
  splits: {train: 1, test: 0.5}
seed: 7
tags: [a, b]
"""


@pytest.fixture
def cfg_file(tmp_path: Path) -> Path:
    path = tmp_path / "experiment.yaml"
    path.write_text(YAML_TEXT)
    return path


def write(tmp_path: Path, text: str, name: str = "cfg.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def load_error(path: Path, overrides: tuple[str, ...] = (), schema: type = Experiment) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(schema, path, overrides)
    return str(info.value)


# ---------------------------------------------------------------------------------------------- loading


def test_load_nested_yaml_values_and_types(cfg_file: Path) -> None:
    cfg = load_config(Experiment, cfg_file)
    assert isinstance(cfg.model, ModelConfig)
    assert cfg.model.name == "kgat"
    assert cfg.model.dims == [32, 16, 8]
    assert cfg.model.dropout == 0.25
    assert cfg.model.activation == "gelu"
    assert cfg.model.params == {"depth": 3, "heads": 4}
    assert cfg.model.kernel == (5, 7) and isinstance(cfg.model.kernel, tuple)
    assert cfg.trainer.max_epochs == 20
    assert cfg.trainer.lr == pytest.approx(1e-3) and type(cfg.trainer.lr) is float
    assert cfg.trainer.optimizer is Optim.SGD
    assert cfg.trainer.deterministic is True
    assert cfg.trainer.grad_clip is None
    assert cfg.data.root == Path("/tmp/interplay-data") and isinstance(cfg.data.root, Path)
    assert cfg.data.splits == {"train": 1.0, "test": 0.5}
    assert type(cfg.data.splits["train"]) is float  # int accepted for float, converted
    assert cfg.seed == 7
    assert cfg.tags == ["a", "b"]


def test_defaults_fill_absent_keys_and_empty_sections(tmp_path: Path) -> None:
    cfg = load_config(Experiment, write(tmp_path, "model: {name: m}\ntrainer:\n"))
    assert cfg.model.dims == [64, 64]
    assert cfg.model.params == {"width": 8}
    assert cfg.trainer == TrainerConfig()
    assert cfg.data == DataConfig()
    assert cfg.note is None


def test_load_accepts_a_mapping_and_os_pathlike(cfg_file: Path) -> None:
    from_mapping = load_config(Experiment, yaml.safe_load(cfg_file.read_text()))
    assert from_mapping == load_config(Experiment, str(cfg_file)) == load_config(Experiment, cfg_file)


def test_enum_by_name_and_value() -> None:
    by_name = from_dict(Experiment, {"model": {"name": "m"}, "trainer": {"optimizer": "SGD"}})
    by_value = from_dict(Experiment, {"model": {"name": "m"}, "trainer": {"optimizer": "sgd"}})
    assert by_name.trainer.optimizer is Optim.SGD is by_value.trainer.optimizer


@pytest.mark.parametrize("text", ["1e-3", "1E-3", " 0.001 ", "1.0e-3"])
def test_float_accepts_numeric_strings(text: str) -> None:
    cfg = from_dict(TrainerConfig, {"lr": text})
    assert cfg.lr == pytest.approx(1e-3) and type(cfg.lr) is float


def test_union_first_matching_type_wins_and_optional_section() -> None:
    assert from_dict(Experiment, {"model": {"name": "m"}, "size": 3}).size == 3
    assert from_dict(Experiment, {"model": {"name": "m"}, "size": "big"}).size == "big"
    assert from_dict(Optional_, {}).window is None
    assert from_dict(Optional_, {"window": None}).window is None
    assert from_dict(Optional_, {"window": {"stop": 4}}).window == Window(0, 4)
    assert from_dict(Optional_, {"pair": [2, "b"]}).pair == (2, "b")
    assert from_dict(Experiment, {"model": {"name": "m"}, "extra": {"anything": [1]}}).extra == {
        "anything": [1]
    }


def test_dataclass_instance_is_accepted_for_a_section() -> None:
    model = ModelConfig(name="ready")
    assert from_dict(Experiment, {"model": model}).model is model


# ------------------------------------------------------------------------------------------ key errors


def test_unknown_top_level_key_suggests_and_lists(tmp_path: Path) -> None:
    path = write(tmp_path, "model: {name: m}\nsed: 3\n")
    message = load_error(path)
    assert "unknown key 'sed'" in message
    assert str(path) in message
    assert "did you mean 'seed'?" in message
    for valid in ("model", "trainer", "data", "seed", "tags", "note"):
        assert valid in message


def test_unknown_nested_key_names_dotted_key_and_suggestion(tmp_path: Path) -> None:
    path = write(tmp_path, "model: {name: m}\ntrainer:\n  max_epoch: 3\n")
    message = load_error(path)
    assert f"unknown key 'trainer.max_epoch' in {path}; did you mean 'trainer.max_epochs'?" in message
    assert "valid keys under 'trainer': max_epochs, lr, optimizer, deterministic, grad_clip" in message


def test_unknown_key_without_close_match_has_no_suggestion(tmp_path: Path) -> None:
    message = load_error(write(tmp_path, "model: {name: m, zzzzzz: 1}\n"))
    assert "unknown key 'model.zzzzzz'" in message
    assert "did you mean" not in message


def test_missing_required_section(tmp_path: Path) -> None:
    path = write(tmp_path, "seed: 1\n")
    message = load_error(path)
    assert "missing required value for 'model'" in message and str(path) in message


def test_missing_required_nested_value(tmp_path: Path) -> None:
    path = write(tmp_path, "model:\n  dims: [1]\n")
    message = load_error(path)
    assert "missing required value for 'model.name'" in message and str(path) in message


def test_empty_file_means_all_defaults(tmp_path: Path) -> None:
    assert load_config(TrainerConfig, write(tmp_path, "")) == TrainerConfig()
    assert "missing required value for 'model'" in load_error(write(tmp_path, "# nothing\n"))


# ----------------------------------------------------------------------------------------- type errors


@pytest.mark.parametrize(
    ("yaml_text", "key", "expected", "got"),
    [
        (
            "model: {name: m}\ntrainer: {max_epochs: ten}",
            "trainer.max_epochs",
            "expected int",
            "got 'ten' (str)",
        ),
        (
            "model: {name: m}\ntrainer: {max_epochs: true}",
            "trainer.max_epochs",
            "expected int",
            "got True (bool)",
        ),
        (
            "model: {name: m}\ntrainer: {max_epochs: 3.5}",
            "trainer.max_epochs",
            "expected int",
            "got 3.5 (float)",
        ),
        ("model: {name: m}\ntrainer: {lr: fast}", "trainer.lr", "expected float", "got 'fast' (str)"),
        ("model: {name: m}\ntrainer: {lr: false}", "trainer.lr", "expected float", "got False (bool)"),
        (
            "model: {name: m}\ntrainer: {grad_clip: [1]}",
            "trainer.grad_clip",
            "expected float or None",
            "got [1] (list)",
        ),
        (
            "model: {name: m}\ntrainer: {deterministic: 1}",
            "trainer.deterministic",
            "expected bool",
            "got 1 (int)",
        ),
        (
            "model: {name: m}\ntrainer: {optimizer: adagrad}",
            "trainer.optimizer",
            "expected one of 'adam', 'sgd'",
            "'adagrad'",
        ),
        ("model: {name: 3}", "model.name", "expected str", "got 3 (int)"),
        ("model: {name: m, dims: [1, 2, x]}", "model.dims[2]", "expected int", "got 'x' (str)"),
        ("model: {name: m, dims: 5}", "model.dims", "expected list[int]", "got 5 (int)"),
        ("model: {name: m, weights: [1, a]}", "model.weights[1]", "expected float", "got 'a' (str)"),
        ("model: {name: m, weights: abc}", "model.weights", "expected list[float]", "got 'abc' (str)"),
        (
            "model: {name: m, activation: tanh}",
            "model.activation",
            "expected one of 'relu', 'gelu'",
            "'tanh'",
        ),
        ("model: {name: m, kernel: [3, a]}", "model.kernel[1]", "expected int", "got 'a' (str)"),
        ("model: {name: m, params: [1]}", "model.params", "expected dict[str, Any]", "got [1] (list)"),
        ("model: 5", "model", "expected a mapping (the ModelConfig section)", "got 5 (int)"),
        ("model: {name: m}\ntrainer: fast", "trainer", "the TrainerConfig section", "got 'fast' (str)"),
        ("model: {name: m}\ndata: {splits: {train: x}}", "data.splits.train", "expected float", "'x'"),
        ("model: {name: m}\ndata: {root: 5}", "data.root", "expected Path", "got 5 (int)"),
        ("model: {name: m}\ntags: [a, 1]", "tags[1]", "expected str", "got 1 (int)"),
        ("model: {name: m}\nsize: 1.5", "size", "expected int or str", "got 1.5 (float)"),
    ],
)
def test_wrong_type_names_key_file_expected_and_value(
    tmp_path: Path, yaml_text: str, key: str, expected: str, got: str
) -> None:
    path = write(tmp_path, yaml_text + "\n")
    message = load_error(path)
    assert f"invalid value for '{key}' in {path}" in message
    assert expected in message
    assert got in message


def test_bool_for_text_field_hints_at_quoting(tmp_path: Path) -> None:
    message = load_error(write(tmp_path, "model: {name: yes}\n"))
    assert "'model.name'" in message and "got True (bool)" in message and "quote" in message


def test_fixed_tuple_length_and_dict_key_type() -> None:
    with pytest.raises(
        ConfigError, match=r"'pair' in <dict>: expected tuple\[int, str\].*3 items instead of 2"
    ):
        from_dict(Optional_, {"pair": [1, "a", "b"]})
    with pytest.raises(ConfigError, match=r"invalid key 'data\.splits\.1' in <dict>: keys must be str"):
        from_dict(Experiment, {"model": {"name": "m"}, "data": {"splits": {1: 0.5}}})


def test_nested_error_inside_optional_section_is_reported() -> None:
    with pytest.raises(
        ConfigError, match=r"unknown key 'window\.stp' in cfg\.yaml; did you mean 'window\.stop'"
    ):
        from_dict(Optional_, {"window": {"stp": 3}}, source="cfg.yaml")


def test_from_dict_names_given_source_and_rejects_non_mapping() -> None:
    with pytest.raises(ConfigError, match=r"'seed' in <dict>: expected int"):
        from_dict(Experiment, {"model": {"name": "m"}, "seed": "x"})
    with pytest.raises(ConfigError, match=r"'seed' in run\.yaml: expected int"):
        from_dict(Experiment, {"model": {"name": "m"}, "seed": "x"}, source="run.yaml")
    with pytest.raises(ConfigError, match=r"must be a mapping .*got \[1\] \(list\)"):
        from_dict(Experiment, [1])  # type: ignore[arg-type]


def test_errors_are_interplay_errors_and_value_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(Experiment, tmp_path / "absent.yaml")
    assert isinstance(info.value, InterplayError) and isinstance(info.value, ValueError)


# ------------------------------------------------------------------------------------------ file errors


def test_malformed_yaml_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "model:\n  name: m\n  dims: [1, 2\ntrainer: {}\n")
    message = load_error(path)
    assert f"cannot parse YAML in {path} at line" in message


def test_malformed_yaml_line_number_is_right(tmp_path: Path) -> None:
    path = write(tmp_path, "seed: 1\nmodel:\n  name: m\n bad: indent\n")
    message = load_error(path)
    assert str(path) in message and "line 4" in message


def test_duplicate_key_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "model: {name: m}\nseed: 1\nseed: 2\n")
    message = load_error(path)
    assert str(path) in message and "line 3" in message and "duplicate key 'seed'" in message


def test_yaml_merge_keys_are_not_duplicate_keys(tmp_path: Path) -> None:
    text = "base: &b {max_epochs: 3, lr: 0.5}\ntrainer:\n  <<: *b\n  lr: 0.1\n"
    cfg = load_config(Anchored, write(tmp_path, text))
    assert (cfg.trainer.max_epochs, cfg.trainer.lr) == (3, 0.1)


def test_missing_file_names_path(tmp_path: Path) -> None:
    path = tmp_path / "nope" / "missing.yaml"
    message = load_error(path)
    assert "not found" in message and str(path) in message


def test_directory_instead_of_file(tmp_path: Path) -> None:
    assert "is a directory" in load_error(tmp_path)


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    message = load_error(path)
    assert f"config in {path} must be a mapping" in message


# ------------------------------------------------------------------------------------------ post_init


def test_post_init_value_error_is_wrapped_with_section_and_file(tmp_path: Path) -> None:
    path = write(tmp_path, "model: {name: m, dropout: 1.5}\n")
    with pytest.raises(ConfigError) as info:
        load_config(Experiment, path)
    message = str(info.value)
    assert f"invalid section 'model' in {path}: dropout must be in [0, 1), got 1.5" == message
    assert isinstance(info.value.__cause__, ValueError)


def test_post_init_type_error_is_wrapped_nested_and_top_level(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"invalid section 'window' in x\.yaml: stop must be greater"):
        from_dict(Optional_, {"window": {"start": 5, "stop": 1}}, source="x.yaml")
    path = write(tmp_path, "start: 5\nstop: 1\n")
    with pytest.raises(
        ConfigError, match=re.escape(f"invalid config in {path}: stop must be greater than start")
    ):
        load_config(Window, path)


def test_post_init_error_caused_by_override_mentions_command_line(cfg_file: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(Experiment, cfg_file, ["model.dropout=2"])
    message = str(info.value)
    assert "invalid section 'model'" in message and str(cfg_file) in message and "<command line>" in message


# ------------------------------------------------------------------------------------------ overrides


def test_overrides_nested_values_lists_and_new_dict_keys(cfg_file: Path) -> None:
    cfg = load_config(
        Experiment,
        cfg_file,
        [
            "trainer.max_epochs=50",
            "trainer.lr=1e-4",
            "model.dims=[1, 2]",
            "model.params.depth=9",
            "model.params.new_key=hello",
            "data.root=/elsewhere",
            "tags=[]",
            "trainer.grad_clip=0.5",
            "seed=11",
        ],
    )
    assert cfg.trainer.max_epochs == 50
    assert cfg.trainer.lr == pytest.approx(1e-4)
    assert cfg.model.dims == [1, 2]
    assert cfg.model.params == {"depth": 9, "heads": 4, "new_key": "hello"}
    assert cfg.data.root == Path("/elsewhere")
    assert cfg.tags == []
    assert cfg.trainer.grad_clip == 0.5
    assert cfg.seed == 11
    assert cfg.model.name == "kgat"  # untouched values survive


def test_override_creates_sections_absent_from_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "model: {name: m}\n")
    cfg = load_config(
        Experiment, path, ["trainer.optimizer=sgd", "data.splits.extra=0.1", "model.params.d=2"]
    )
    assert cfg.trainer.optimizer is Optim.SGD
    assert cfg.trainer.max_epochs == 10
    assert cfg.data.splits == {"train": 0.8, "val": 0.2, "extra": 0.1}  # merged into the field default
    assert cfg.model.params == {"width": 8, "d": 2}


def test_override_whole_section_and_null(cfg_file: Path) -> None:
    cfg = load_config(
        Experiment, cfg_file, ["trainer={max_epochs: 2}", "note=null", "trainer.grad_clip=null"]
    )
    assert cfg.trainer == TrainerConfig(max_epochs=2)
    assert cfg.note is None


def test_override_keeps_text_for_text_fields(cfg_file: Path) -> None:
    cfg = load_config(Experiment, cfg_file, ["model.name=123", "note=yes", "data.root=2024"])
    assert cfg.model.name == "123"
    assert cfg.note == "yes"
    assert cfg.data.root == Path("2024")
    # without a schema the YAML value is kept as parsed
    assert apply_overrides({}, ["note=yes"]) == {"note": True}


def test_override_on_mapping_source(cfg_file: Path) -> None:
    data = yaml.safe_load(cfg_file.read_text())
    cfg = load_config(Experiment, data, ["seed=3"])
    assert cfg.seed == 3
    assert data["seed"] == 7  # the caller's mapping is not mutated


def test_override_of_unknown_key_names_command_line(cfg_file: Path) -> None:
    message = load_error(cfg_file, ("trainer.max_epoch=5",))
    assert message.startswith(
        "unknown key 'trainer.max_epoch' (from <command line>); did you mean 'trainer.max_epochs'?"
    )
    assert str(cfg_file) not in message


def test_override_of_unknown_top_level_key(cfg_file: Path) -> None:
    message = load_error(cfg_file, ("sed=1",))
    assert "unknown key 'sed' (from <command line>); did you mean 'seed'?" in message


def test_override_unknown_key_inside_new_sub_dict_of_dataclass_in_mapping(cfg_file: Path) -> None:
    # the key is only caught at validation (the override goes inside a dict[str, Any] field first)
    cfg = load_config(Experiment, cfg_file, ["extra.anything.deep=1"])
    assert cfg.extra == {"anything": {"deep": 1}}


def test_override_wrong_type_names_key_and_command_line(cfg_file: Path) -> None:
    message = load_error(cfg_file, ("trainer.max_epochs=many",))
    assert "invalid value for 'trainer.max_epochs' (from <command line>): expected int, got 'many'" in message
    message = load_error(cfg_file, ("model.dims=[1, two]",))
    assert "invalid value for 'model.dims[1]' (from <command line>)" in message
    message = load_error(cfg_file, ("model.params.depth=1", "model.dims=[1, x]"))
    assert "'model.dims[1]' (from <command line>)" in message
    # a value that came from the file still names the file even when other overrides were given
    path = write(cfg_file.parent, "model: {name: m, dims: [x]}\n", "other.yaml")
    assert f"'model.dims[0]' in {path}" in load_error(path, ("seed=1",))


def test_override_without_equals_sign(cfg_file: Path) -> None:
    message = load_error(cfg_file, ("trainer.max_epochs",))
    assert "invalid override 'trainer.max_epochs' (from <command line>): expected key=value" in message


@pytest.mark.parametrize("text", ["=3", ".a=1", "a..b=1", "a.=1", " =1"])
def test_override_with_bad_key(text: str) -> None:
    with pytest.raises(ConfigError, match=r"\(from <command line>\).*not a dotted key"):
        parse_override(text)


def test_override_with_unparsable_value() -> None:
    with pytest.raises(ConfigError, match=r"cannot parse the value of 'model\.dims' \(from <command line>\)"):
        parse_override("model.dims=[1, 2")


def test_override_into_a_scalar_or_list_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"cannot set 'seed\.x' \(from <command line>\): 'seed' holds 3"):
        apply_overrides({"seed": 3}, ["seed.x=1"])
    with pytest.raises(ConfigError, match=r"'model\.dims' holds \[1\] \(list\).*set the whole list"):
        apply_overrides({"model": {"dims": [1]}}, ["model.dims.0=5"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a.b=1", ("a.b", 1)),
        ("a.b=1e-3", ("a.b", "1e-3")),
        ("a.b=1.5e-3", ("a.b", 1.5e-3)),
        ("a=[1, 2]", ("a", [1, 2])),
        ("a={x: 1}", ("a", {"x": 1})),
        ("a=", ("a", None)),
        ("a=null", ("a", None)),
        ("a=true", ("a", True)),
        ("a='007'", ("a", "007")),
        (" a.b = hello world ", ("a.b", "hello world")),
        ("x=a=b", ("x", "a=b")),
        ("path=/data/x:y", ("path", "/data/x:y")),
    ],
)
def test_parse_override(text: str, expected: tuple[str, object]) -> None:
    assert parse_override(text) == expected


def test_apply_overrides_returns_new_dict_and_does_not_mutate() -> None:
    data = {"model": {"name": "m", "params": {"a": 1}}, "seed": 1}
    snapshot = {"model": {"name": "m", "params": {"a": 1}}, "seed": 1}
    out = apply_overrides(data, ["model.params.b=2", "seed=5", "new.section.key=x"])
    assert data == snapshot
    assert out == {
        "model": {"name": "m", "params": {"a": 1, "b": 2}},
        "seed": 5,
        "new": {"section": {"key": "x"}},
    }
    assert out is not data and out["model"] is not data["model"]


def test_apply_overrides_with_schema_checks_keys() -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'model\.nam' \(from <command line>\); did you mean"):
        apply_overrides({}, ["model.nam=x"], schema=Experiment)
    assert apply_overrides({}, ["model.params.any.depth=1"], schema=Experiment) == {
        "model": {"params": {"width": 8, "any": {"depth": 1}}}
    }


def test_a_single_override_string_is_not_split_into_characters(cfg_file: Path) -> None:
    assert load_config(Experiment, cfg_file, "seed=4").seed == 4  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------- to_dict / save


def test_to_dict_is_plain_yaml_safe_data(cfg_file: Path) -> None:
    cfg = load_config(Experiment, cfg_file)
    data = to_dict(cfg)
    assert data["data"]["root"] == "/tmp/interplay-data"
    assert data["model"]["kernel"] == [5, 7]
    assert data["trainer"]["optimizer"] == "sgd"
    assert isinstance(data["model"], dict) and isinstance(data["trainer"], dict)
    assert yaml.safe_load(yaml.safe_dump(data)) == data
    assert from_dict(Experiment, data) == cfg


def test_to_dict_rejects_unserialisable_values_and_non_configs() -> None:
    cfg = Experiment(model=ModelConfig(name="m"), extra=object())
    with pytest.raises(ConfigError, match=r"cannot write 'extra' as YAML: object"):
        to_dict(cfg)
    with pytest.raises(TypeError):
        to_dict(3)


def test_save_and_load_round_trip(tmp_path: Path, cfg_file: Path) -> None:
    cfg = load_config(Experiment, cfg_file, ["model.params.nested={a: [1, 2]}", "note=hi"])
    out = tmp_path / "run" / "sub" / "config.yaml"  # parent directories are created
    save_config(cfg, out)
    assert load_config(Experiment, out) == cfg
    assert to_dict(load_config(Experiment, out)) == to_dict(cfg)
    assert sorted(os.listdir(out.parent)) == ["config.yaml"]


def test_save_config_failed_serialisation_leaves_previous_file(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "config.yaml"
    save_config(Experiment(model=ModelConfig(name="first")), path)
    before = path.read_text()

    def boom(*args: object, **kwargs: object) -> str:
        raise RuntimeError("serialiser exploded")

    monkeypatch.setattr(yaml, "safe_dump", boom)
    with pytest.raises(RuntimeError, match="serialiser exploded"):
        save_config(Experiment(model=ModelConfig(name="second")), path)
    assert path.read_text() == before
    assert os.listdir(tmp_path) == ["config.yaml"]


def test_save_config_failed_write_removes_temp_file(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "config.yaml"
    save_config(Experiment(model=ModelConfig(name="first")), path)
    before = path.read_text()

    def failing_replace(src: str, dst: str) -> None:
        assert Path(src).parent == tmp_path and Path(src).exists()  # the temp file lives beside the target
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(config_module.os, "replace", failing_replace)
    with pytest.raises(
        ConfigError, match=r"cannot write config file .*config\.yaml: No space left on device"
    ):
        save_config(Experiment(model=ModelConfig(name="second")), path)
    assert path.read_text() == before
    assert os.listdir(tmp_path) == ["config.yaml"]
