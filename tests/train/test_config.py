"""The config schema: layering, overrides, typo errors, the --init template."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from aiforge.errors import AiforgeError
from aiforge.tasks.card import trainable_tasks
from aiforge.train.config import init_template, load_config


def test_layering_defaults_file_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("model: x\ntraining:\n  lr: 0.001\n  epochs: 4\n", encoding="utf-8")
    overrides = ["training.lr=3e-5", "data.input_column=document", "tracking.alias=production"]
    config = load_config(path, overrides)
    assert config.training.lr == pytest.approx(3e-5)  # the override beats the file
    assert config.training.epochs == 4  # the file beats the default
    assert config.training.batch_size == 32  # untouched default
    assert config.data.input_column == "document"
    assert config.flat()["tracking.alias"] == "production"


def test_base_layer_sits_under_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("training:\n  epochs: 1\n", encoding="utf-8")
    config = load_config(path, base={"model": "from-run", "training": {"epochs": 9, "lr": 0.5}})
    assert (config.model, config.training.epochs, config.training.lr) == ("from-run", 1, 0.5)


def test_typo_names_the_path_and_the_closest_field() -> None:
    with pytest.raises(AiforgeError) as err:
        load_config(None, ["training.learning_rat=0.1"])
    assert err.value.code == "AF-CONFIG-001"
    assert "training.learning_rat" in err.value.message
    with pytest.raises(AiforgeError) as err:
        load_config(None, ["training.epoch=3"])
    assert "did you mean 'training.epochs'" in err.value.message


def test_wrong_type_names_the_field() -> None:
    with pytest.raises(AiforgeError) as err:
        load_config(None, ["training.batch_size=many"])
    assert err.value.code == "AF-CONFIG-001"
    assert "training.batch_size" in err.value.message


def test_override_must_be_key_value() -> None:
    with pytest.raises(AiforgeError, match="KEY=VALUE"):
        load_config(None, ["training.lr"])


def test_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(AiforgeError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize("task", trainable_tasks())
def test_template_is_valid_commented_yaml(task: str, tmp_path: Path) -> None:
    text = init_template(task)
    assert text.count("#") > 20  # every field is explained
    path = tmp_path / "t.yaml"
    path.write_text(text, encoding="utf-8")
    config = load_config(path)
    assert config.task == task
    assert yaml.safe_load(text)["training"]["lr"] == config.training.lr


def test_template_for_unknown_task_suggests() -> None:
    with pytest.raises(AiforgeError) as err:
        init_template("text-clasification")
    assert "text-classification" in err.value.message


def test_shipped_quickstart_config_validates() -> None:
    config = load_config(Path(__file__).parents[2] / "examples" / "nsmc-sentiment.yaml")
    assert config.tracking.model_name == "nsmc-sentiment"
    assert config.tracking.alias == "production"
    assert config.data.train.startswith("packaged:")


def test_text_column_is_a_deprecated_alias_of_input_column(tmp_path: Path) -> None:
    """Configs written before the rename (files, --set, a saved run's config) keep loading."""
    path = tmp_path / "old.yaml"
    path.write_text("data:\n  text_column: review\n", encoding="utf-8")
    with pytest.warns(DeprecationWarning, match="data.input_column"):
        from_file = load_config(path)
    with pytest.warns(DeprecationWarning):
        from_set = load_config(None, ["data.text_column=review"])
    for config in (from_file, from_set):
        assert config.data.input_column == config.data.text_column == "review"
        saved = config.model_dump(mode="json")["data"]
        assert saved["input_column"] == "review" and "text_column" not in saved  # new runs save the new name
        assert "data.text_column" not in config.flat()
    with pytest.warns(DeprecationWarning):
        same = load_config(None, ["data.text_column=review", "data.input_column=review"])
    assert same.data.input_column == "review"


def test_input_column_and_text_column_that_disagree_are_an_error() -> None:
    with pytest.raises(AiforgeError) as err:
        load_config(None, ["data.input_column=review", "data.text_column=document"])
    assert err.value.code == "AF-CONFIG-001"
    assert "input_column ('review')" in err.value.message and "text_column ('document')" in err.value.message


@pytest.mark.parametrize("task", trainable_tasks())
def test_template_names_the_input_column(task: str) -> None:
    text = init_template(task)
    assert "  input_column: " in text and "text_column" not in text
