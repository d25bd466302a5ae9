"""Config: loading from dict/YAML, typed overrides from strings, and clear errors for bad keys or values."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from recsys_tasks.config import (
    ConfigError,
    EvaluateConfig,
    ExtractConfig,
    KGConfig,
    PipelineConfig,
    tracking_uri,
    workdir,
)


# ---------------------------------------------------------------- from_dict / from_yaml
def test_empty_or_missing_dict_gives_the_defaults() -> None:
    assert PipelineConfig.from_dict(None) == PipelineConfig()
    assert PipelineConfig.from_dict({}) == PipelineConfig()


def test_from_dict_sets_given_keys_and_keeps_defaults_elsewhere() -> None:
    cfg = PipelineConfig.from_dict({"kg": {"epochs": 5, "model": "RotatE"}, "extract": {"seed": 7}})
    assert cfg.kg.epochs == 5 and cfg.kg.model == "RotatE"
    assert cfg.extract.seed == 7
    assert cfg.kg.embedding_dim == KGConfig().embedding_dim
    assert cfg.text == PipelineConfig().text


def test_from_dict_coerces_strings_to_the_field_types() -> None:
    """Values from a form or environment arrive as strings; they become the dataclass types."""
    cfg = PipelineConfig.from_dict(
        {
            "kg": {"epochs": "5", "learning_rate": "0.5", "include_freebase": "false"},
            "evaluate": {"support_sizes": "0,5"},
        }
    )
    assert cfg.kg.epochs == 5 and type(cfg.kg.epochs) is int
    assert cfg.kg.learning_rate == 0.5 and type(cfg.kg.learning_rate) is float
    assert cfg.kg.include_freebase is False
    assert cfg.evaluate.support_sizes == (0, 5)


def test_unknown_key_in_a_section_is_an_error_naming_it() -> None:
    with pytest.raises(ConfigError, match=r"kg\.epoch"):
        PipelineConfig.from_dict({"kg": {"epoch": 5}})


def test_unknown_section_is_an_error_naming_it() -> None:
    with pytest.raises(ConfigError, match="kgg"):
        PipelineConfig.from_dict({"kgg": {"epochs": 5}})


def test_section_that_is_not_a_mapping_is_an_error() -> None:
    with pytest.raises(ConfigError, match="'kg'.*must be a mapping"):
        PipelineConfig.from_dict({"kg": 5})


def test_from_yaml_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "pipeline.yaml"
    path.write_text("kg:\n  epochs: 3\nextract:\n  cold_user_frac: 0.1\n")
    cfg = PipelineConfig.from_yaml(path)
    assert cfg.kg.epochs == 3 and cfg.extract.cold_user_frac == 0.1


def test_empty_yaml_file_gives_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert PipelineConfig.from_yaml(path) == PipelineConfig()


# ---------------------------------------------------------------- overrides
def test_override_string_is_parsed_and_typed() -> None:
    base = PipelineConfig()
    cfg = base.with_overrides(["kg.epochs=5"])
    assert cfg.kg.epochs == 5 and type(cfg.kg.epochs) is int
    assert base.kg.epochs == KGConfig().epochs  # the original is unchanged


def test_override_mapping_is_typed() -> None:
    cfg = PipelineConfig().with_overrides({"kg.learning_rate": "0.001", "extract.sample_users": "50"})
    assert cfg.kg.learning_rate == 0.001
    assert cfg.extract.sample_users == 50


@pytest.mark.parametrize("raw, expected", [("0,5", (0, 5)), ("0, 5, 10", (0, 5, 10)), ("[1, 2]", (1, 2)), ("7", (7,))])
def test_tuple_override_from_a_comma_list(raw: str, expected: tuple[int, ...]) -> None:
    cfg = PipelineConfig().with_overrides([f"evaluate.support_sizes={raw}"])
    assert cfg.evaluate.support_sizes == expected
    assert all(type(k) is int for k in cfg.evaluate.support_sizes)


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("true", True),
        ("false", False),
        ("True", True),
        ("False", False),
        ("yes", True),
        ("no", False),
        ("1", True),
        ("0", False),
    ],
)
def test_bool_override_from_strings(raw: str, expected: bool) -> None:
    cfg = PipelineConfig().with_overrides([f"kg.include_freebase={raw}"])
    assert cfg.kg.include_freebase is expected


@pytest.mark.parametrize("raw", ["off", "on", "yes", "No"])
def test_yaml_1_1_boolean_words_stay_words_for_a_string_setting(raw: str) -> None:
    """`text.cache_dir=off` turns the cache off; YAML 1.1 would have made it the string 'False'."""
    assert PipelineConfig().with_overrides([f"text.cache_dir={raw}"]).text.cache_dir == raw


@pytest.mark.parametrize("raw", ["'true'", "'no'", "'0'"])
def test_bool_from_a_quoted_string(raw: str) -> None:
    """A quoted YAML value stays a string and still goes through the bool words."""
    cfg = PipelineConfig().with_overrides([f"kg.include_likes={raw}"])
    assert cfg.kg.include_likes is (raw == "'true'")


@pytest.mark.parametrize("override", ["kg.nope=1", "nope.epochs=1", "kg=1", "kg.=1"])
def test_unknown_override_key_is_an_error_naming_it(override: str) -> None:
    key = override.partition("=")[0]
    with pytest.raises(ConfigError, match=f"unknown config key {key!r}") as info:
        PipelineConfig().with_overrides([override])
    assert "kg.epochs" in str(info.value)  # the message lists the known keys


def test_override_without_equals_sign_is_an_error() -> None:
    with pytest.raises(ConfigError, match="key=value"):
        PipelineConfig().with_overrides(["kg.epochs"])


@pytest.mark.parametrize(
    "override, key",
    [
        ("kg.epochs=abc", "kg.epochs"),
        ("kg.epochs=2.5", "kg.epochs"),
        ("kg.epochs=true", "kg.epochs"),
        ("kg.learning_rate=fast", "kg.learning_rate"),
        ("kg.include_freebase=maybe", "kg.include_freebase"),
        ("kg.include_freebase=5", "kg.include_freebase"),
        ("evaluate.support_sizes=a,b", "evaluate.support_sizes"),
    ],
)
def test_bad_override_value_is_an_error_naming_key_and_value(override: str, key: str) -> None:
    value = override.partition("=")[2]
    with pytest.raises(ConfigError, match=rf"config key {key!r}: cannot use") as info:
        PipelineConfig().with_overrides([override])
    assert value.split(",")[0].lower() in str(info.value).lower()


def test_whole_float_is_accepted_for_an_int() -> None:
    assert PipelineConfig().with_overrides(["kg.epochs=5.0"]).kg.epochs == 5


# ---------------------------------------------------------------- round trip, immutability
def test_to_dict_is_json_and_round_trips() -> None:
    cfg = PipelineConfig().with_overrides(
        ["kg.epochs=3", "evaluate.support_sizes=0,1", "kg.include_likes=false", "text.model=/models/bert"]
    )
    data = cfg.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["evaluate"]["support_sizes"] == [0, 1]
    assert PipelineConfig.from_dict(data) == cfg


def test_configs_are_frozen() -> None:
    cfg = PipelineConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.kg.epochs = 1  # type: ignore[misc]


def test_holdout_is_false_only_when_every_fraction_is_zero() -> None:
    assert ExtractConfig().holdout
    assert ExtractConfig(cold_user_frac=0, cold_item_frac=0, warm_test_frac=0.2).holdout
    assert not ExtractConfig(cold_user_frac=0, cold_item_frac=0, warm_test_frac=0).holdout


def test_default_support_sizes_follow_the_protocol() -> None:
    assert EvaluateConfig().support_sizes == (0, 5, 10, 20)
    assert EvaluateConfig().k == 20


# ---------------------------------------------------------------- environment
def test_workdir_comes_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECSYS_WORKDIR", str(tmp_path / "wd"))
    assert workdir() == (tmp_path / "wd").resolve()


def test_tracking_uri_prefers_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    assert tracking_uri() == "http://mlflow:5000"


def test_tracking_uri_defaults_to_sqlite_in_the_workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    root = tmp_path / "root"
    assert tracking_uri(root) == f"sqlite:///{root / 'mlflow.db'}"
    assert root.is_dir()


def test_finetune_inputs_from_a_list_and_unknown_inputs_are_errors() -> None:
    assert PipelineConfig().with_overrides(["finetune.inputs=text,kg"]).finetune.inputs == ("text", "kg")
    with pytest.raises(ConfigError, match="unknown input.*'pictures'"):
        PipelineConfig().with_overrides(["finetune.inputs=text,pictures"])


# ---------------------------------------------------------------- tuning grids
def test_the_tuning_grids_keep_the_values_the_figures_were_measured_with() -> None:
    """docs/benchmarks.md's figures were measured with these grids: a changed default changes them."""
    from recsys_tasks.config import FinetuneConfig

    cfg = FinetuneConfig()
    assert cfg.map_alphas == tuple(float(a) for a in np.logspace(-2, 3, 16))
    assert (cfg.map_rbf_scale, cfg.map_max_landmarks) == (1.5, 2000)
    assert cfg.profile_weights == (0.0, 2.0, 4.0, 8.0, 16.0, 32.0) and cfg.profile_dims == (16, 32, 64)
    assert cfg.pseudo_new_folds == 5 and cfg.validation_support == (0, 10)
    assert cfg.fusion_prior_grid == (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)
    assert cfg.fusion_ease_grid == (0.0, 0.1, 0.2, 0.4, 0.8, 1.6)
    assert cfg.fusion_taste_grid == (0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0)
    assert cfg.fusion_support == (0, 5, 10, 20) and cfg.fusion_warm_cuts == (0.5, 0.65, 0.8)


def test_a_grid_is_set_from_an_override_and_round_trips() -> None:
    cfg = PipelineConfig().with_overrides(
        ["finetune.profile_weights=0,4", "finetune.map_alphas=[0.5, 2]", "finetune.pseudo_new_folds=3"]
    )
    assert cfg.finetune.profile_weights == (0.0, 4.0) and type(cfg.finetune.profile_weights[1]) is float
    assert cfg.finetune.map_alphas == (0.5, 2.0) and cfg.finetune.pseudo_new_folds == 3
    assert PipelineConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert PipelineConfig.from_dict(PipelineConfig().to_dict()) == PipelineConfig()  # floats survive JSON exactly


@pytest.mark.parametrize(
    "override, key",
    [
        ("finetune.profile_weights=2,4", "finetune.profile_weights"),  # no 0: nothing to compare with
        ("finetune.fusion_prior_grid=0,-1", "finetune.fusion_prior_grid"),
        ("finetune.fusion_ease_grid=0.5", "finetune.fusion_ease_grid"),
        ("finetune.fusion_taste_grid=1,2", "finetune.fusion_taste_grid"),
        ("finetune.map_alphas=0,1", "finetune.map_alphas"),
        ("finetune.map_alphas=[]", "finetune.map_alphas"),
        ("finetune.map_rbf_scale=0", "finetune.map_rbf_scale"),
        ("finetune.map_max_landmarks=0", "finetune.map_max_landmarks"),
        ("finetune.profile_dims=0,16", "finetune.profile_dims"),
        ("finetune.pseudo_new_folds=0", "finetune.pseudo_new_folds"),
        ("finetune.validation_support=[]", "finetune.validation_support"),
        ("finetune.fusion_support=-1", "finetune.fusion_support"),
        ("finetune.fusion_warm_cuts=0.5,1", "finetune.fusion_warm_cuts"),
    ],
)
def test_a_bad_tuning_grid_is_an_error_naming_its_key(override: str, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"config key '{key}'"):
        PipelineConfig().with_overrides([override])
