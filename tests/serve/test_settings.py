"""serve.yaml + model specs + flags -> ServeSettings: the layering and the error messages users see."""

from __future__ import annotations

from pathlib import Path

import pytest

from aiforge.errors import AiforgeError
from aiforge.serve import is_config_file, load_settings, parse_model_spec


def test_model_spec_forms(model_dirs: dict[str, Path]) -> None:
    clf = str(model_dirs["clf"])
    assert parse_model_spec("sentence-embeddings") == {
        "name": "sentence-embeddings",
        "task": "sentence-embeddings",
        "model": None,
    }
    assert parse_model_spec(f"text-classification:{clf}") == {
        "name": "clf",
        "task": "text-classification",
        "model": clf,
    }
    assert parse_model_spec("nsmc=text-classification:registry:nsmc-sentiment@production") == {
        "name": "nsmc",
        "task": "text-classification",
        "model": "registry:nsmc-sentiment@production",
    }
    assert (
        parse_model_spec("text-classification:registry:nsmc-sentiment@production")["name"] == "nsmc-sentiment"
    )
    # an alias names the task; a bare model dir has its task read from config.json
    assert parse_model_spec("embeddings:packaged:multilingual-e5-small")["name"] == "multilingual-e5-small"
    assert parse_model_spec(clf)["task"] == "text-classification"
    assert parse_model_spec(str(model_dirs["gpt"]))["task"] == "text-generation"


def test_task_of_an_unrecognisable_model_is_asked_for(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"architectures": ["SomethingNew"]}')
    with pytest.raises(AiforgeError) as err:
        parse_model_spec(str(tmp_path))
    assert err.value.code == "AF-CONFIG-001"
    assert f"TASK:{tmp_path}" in err.value.fix


def test_misspelt_task_gets_a_suggestion() -> None:
    with pytest.raises(AiforgeError) as err:
        parse_model_spec("text-clasification")
    assert err.value.code == "AF-TASK-001" and "text-classification" in err.value.fix


def test_yaml_then_specs_then_flags(tmp_path: Path, model_dirs: dict[str, Path]) -> None:
    config = tmp_path / "serve.yaml"
    config.write_text(
        "port: 9000\nmax_body_bytes: 4096\nmodels:\n"
        "  - {name: a, task: sentiment-analysis, model: " + str(model_dirs["clf"]) + ", max_wait_ms: 20}\n"
    )
    settings = load_settings(
        config,
        ["e5=sentence-embeddings"],
        overrides={"port": 9100, "host": None, "models.max_queue": 7, "models.max_batch_size": None},
    )
    assert settings.port == 9100  # the flag beats the file
    assert settings.max_body_bytes == 4096  # the file beats the default
    assert settings.host == "127.0.0.1"  # an unset flag changes nothing
    assert [m.name for m in settings.models] == ["a", "e5"]
    assert settings.model("a").task == "text-classification"  # alias resolved
    assert settings.model("a").max_wait_ms == 20
    assert {m.max_queue for m in settings.models} == {7}  # model flags apply to every model
    assert settings.model("a").request_params == ["top_k", "multi_label"]
    assert is_config_file("serve.yml") and not is_config_file("text-classification")


@pytest.mark.parametrize(
    ("models", "message"),
    [
        (["sentence-embeddings", "sentence-embeddings"], "model names must be unique"),
        (["x=sentence-embeddings"], None),
    ],
)
def test_duplicate_names_are_refused(models: list[str], message: str | None) -> None:
    if message is None:
        assert load_settings(models=models).models[0].name == "x"
        return
    with pytest.raises(AiforgeError) as err:
        load_settings(models=models)
    assert message in err.value.message


def test_bad_values_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(AiforgeError) as err:
        load_settings(models=["sentence-embeddings"], overrides={"models.max_batch_size": 0})
    assert "max_batch_size" in err.value.message
    with pytest.raises(AiforgeError) as err:
        load_settings(models=["sentence-embeddings"], overrides={"api_key_file": tmp_path / "missing.txt"})
    assert "api_key_file" in err.value.message
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [{name: a, task: not-a-task}]\n")
    with pytest.raises(AiforgeError) as err:
        load_settings(bad)
    assert "unknown task 'not-a-task'" in err.value.message
