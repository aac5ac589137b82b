"""The one configuration grammar (aiforge.config) end to end: train, serve and rag read the same
override the same way from a file, the environment and --set, in one precedence order, and fail
with one kind of message."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from aiforge.config import env_overrides, parse_value
from aiforge.errors import AiforgeError
from aiforge.rag import RagSettings
from aiforge.serve import load_settings
from aiforge.train.config import load_config

SERVED = ["e5=sentence-embeddings"]


def train_value(file: Path | None, environ: dict[str, str], sets: list[str], key: str) -> Any:
    config = load_config(file, sets, environ=environ)
    return config.flat()[key]


def serve_value(file: Path | None, environ: dict[str, str], sets: list[str], key: str) -> Any:
    settings = load_settings(file, [] if file else SERVED, sets=sets, environ=environ)
    if key.startswith("models."):
        return getattr(settings.models[0], key.removeprefix("models."))
    return getattr(settings, key)


def rag_value(file: Path | None, environ: dict[str, str], sets: list[str], key: str) -> Any:
    return getattr(RagSettings.load(file, sets, environ=environ), key)


# command, its env prefix, a key, the value as YAML text, the value validated, serve.yaml needs models
CASES: list[tuple[str, Callable[..., Any], str, str, Any]] = [
    ("train", train_value, "training.lr", "3e-5", 3e-5),
    ("train", train_value, "tracking.alias", "2024", "2024"),  # a text field keeps the text
    (
        "train",
        train_value,
        "training.freeze",
        "[embeddings, encoder.layer.0]",
        ["embeddings", "encoder.layer.0"],
    ),
    ("serve", serve_value, "port", "9001", 9001),
    ("serve", serve_value, "models.max_batch_size", "16", 16),
    (
        "serve",
        serve_value,
        "models.params",
        "{candidate_labels: [긍정, 부정]}",
        {"candidate_labels": ["긍정", "부정"]},
    ),
    ("rag", rag_value, "top_k", "8", 8),
    ("rag", rag_value, "generator_model", "1.0", "1.0"),
]


def write_file(tmp_path: Path, command: str, key: str, text: str) -> Path:
    """A config file holding ``key: text`` (a serve.yaml also lists the served model)."""
    parts = key.split(".")
    if command == "serve" and parts[0] == "models":
        body = f"models:\n  - {{name: e5, task: sentence-embeddings, {parts[1]}: {text}}}\n"
    else:
        body = "".join(f"{'  ' * depth}{part}:\n" for depth, part in enumerate(parts[:-1]))
        body += f"{'  ' * (len(parts) - 1)}{parts[-1]}: {text}\n"
        if command == "serve":
            body += "models:\n  - {name: e5, task: sentence-embeddings}\n"
    path = tmp_path / f"{command}.yaml"
    path.write_text(body, encoding="utf-8")
    return path


def env_name(command: str, key: str) -> str:
    return f"AIFORGE_{command.upper()}_{key.upper().replace('.', '__')}"


@pytest.mark.parametrize(("command", "value_of", "key", "text", "expected"), CASES)
def test_file_env_and_set_give_the_same_value(
    tmp_path: Path, command: str, value_of: Callable[..., Any], key: str, text: str, expected: Any
) -> None:
    from_file = value_of(write_file(tmp_path, command, key, text), {}, [], key)
    from_env = value_of(None, {env_name(command, key): text}, [], key)
    from_set = value_of(None, {}, [f"{key}={text}"], key)
    assert from_file == from_env == from_set
    assert from_set == (pytest.approx(expected) if isinstance(expected, float) else expected)


@pytest.mark.parametrize(
    ("command", "value_of", "key", "values"),
    [
        ("train", train_value, "training.epochs", (3, 4, 5, 6)),
        ("serve", serve_value, "models.max_queue", (1024, 11, 12, 13)),
        ("rag", rag_value, "candidates", (50, 21, 22, 23)),
    ],
)
def test_precedence_default_file_env_set(
    tmp_path: Path, command: str, value_of: Callable[..., Any], key: str, values: tuple[int, ...]
) -> None:
    default, in_file, in_env, in_set = values
    file = write_file(tmp_path, command, key, str(in_file))
    env = {env_name(command, key): str(in_env)}
    assert value_of(None, {}, [], key) == default
    assert value_of(file, {}, [], key) == in_file
    assert value_of(file, env, [], key) == in_env
    assert value_of(file, env, [f"{key}={in_set}"], key) == in_set


def test_serve_flags_sit_between_env_and_set() -> None:
    env = {"AIFORGE_SERVE_MODELS__TIMEOUT_S": "5"}
    flags = {"models.timeout_s": 6.0}
    assert load_settings(models=SERVED, environ=env).models[0].timeout_s == 5
    assert load_settings(models=SERVED, overrides=flags, environ=env).models[0].timeout_s == 6
    settings = load_settings(models=SERVED, overrides=flags, sets=["models.e5.timeout_s=7"], environ=env)
    assert settings.models[0].timeout_s == 7  # models.NAME.FIELD targets one model


@pytest.mark.parametrize(
    ("build", "suggestion"),
    [
        (lambda: load_config(None, ["training.epoch=3"]), "training.epochs"),
        (
            lambda: load_config(None, [], environ={"AIFORGE_TRAIN_TRAINING__BATCH_SISE": "8"}),
            "training.batch_size",
        ),
        (lambda: load_settings(models=SERVED, sets=["prot=9000"]), "port"),
        (lambda: load_settings(models=SERVED, sets=["models.max_batch_sise=8"]), "models.max_batch_size"),
        (lambda: RagSettings.load(sets=["top_kk=3"]), "top_k"),
    ],
)
def test_a_typo_names_the_closest_field(build: Callable[[], Any], suggestion: str) -> None:
    with pytest.raises(AiforgeError) as err:
        build()
    assert err.value.code == "AF-CONFIG-001"
    assert f"did you mean '{suggestion}'" in err.value.message


def test_a_bad_value_names_the_key_the_value_and_its_origin() -> None:
    with pytest.raises(AiforgeError) as err:
        load_config(None, ["training.freeze=[embeddings, encoder"])
    assert "--set training.freeze" in err.value.message and "not a valid YAML value" in err.value.message
    with pytest.raises(AiforgeError) as err:
        load_config(None, [], environ={"AIFORGE_TRAIN_TRAINING__BATCH_SIZE": "many"})
    message = err.value.message
    assert (
        "training.batch_size" in message
        and "'many'" in message
        and "AIFORGE_TRAIN_TRAINING__BATCH_SIZE" in message
    )
    with pytest.raises(AiforgeError) as err:
        load_settings(models=SERVED, sets=["models.max_wait_ms=-1"])
    assert "models[0].max_wait_ms" in err.value.message and "-1" in err.value.message


def test_values_are_yaml_core_scalars_or_text() -> None:
    assert parse_value("3e-5") == 3e-5 and parse_value(".5") == 0.5 and parse_value("017") == 17
    assert parse_value("true") is True and parse_value("null") is None and parse_value("") == ""
    # YAML 1.1 booleans and plain text stay text (whisper's language "no" is Norwegian)
    assert parse_value("no") == "no" and parse_value("on") == "on" and parse_value("Q: why?") == "Q: why?"
    assert parse_value("[긍정, 부정]") == ["긍정", "부정"] and parse_value('["a", "b"]') == ["a", "b"]
    assert parse_value("'[x'") == "[x"


def test_env_naming() -> None:
    environ = {
        "AIFORGE_TRAIN_TRAINING__LR": "1e-3",
        "AIFORGE_RAG_STORE_URL": "postgresql://x",
        "AIFORGE_HOME": "/tmp/h",
        "AIFORGE_TRAIN_": "ignored: no key",
    }
    assert [(o.key, o.text) for o in env_overrides("train", environ)] == [("training.lr", "1e-3")]
    assert [(o.key, o.origin) for o in env_overrides("rag", environ)] == [
        ("store_url", "AIFORGE_RAG_STORE_URL")
    ]


@pytest.mark.parametrize(
    "args",
    [
        ["train", "{config}", "--set", "training.epoch=3"],
        ["train", "{config}", "--set", "training.freeze=[a"],
        ["serve", "sentence-embeddings", "--set", "models.max_batch_size=0"],
        ["rag", "ask", "q", "--index", "x", "--set", "top_kk=1"],
        ["run", "sentence-embeddings", "x", "-p", "kind=[a"],
    ],
)
def test_cli_config_errors_exit_2_without_a_traceback(args: list[str], tmp_path: Path) -> None:
    config = tmp_path / "train.yaml"
    config.write_text("task: text-classification\n", encoding="utf-8")
    args = [arg.replace("{config}", str(config)) for arg in args]
    result = subprocess.run(
        [sys.executable, "-m", "aiforge.cli", *args], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "AF-CONFIG-001" in result.stderr


def test_run_p_is_short_for_set_params() -> None:
    from aiforge.cli import parse_params

    short = parse_params(["candidate_labels=[긍정, 부정]", "top_k=3", "language=no"])
    long = parse_params(
        None, ["params.candidate_labels=[긍정, 부정]", "params.top_k=3", "params.language=no"]
    )
    assert short == long == {"candidate_labels": ["긍정", "부정"], "top_k": 3, "language": "no"}
    assert parse_params(['candidate_labels=["a", "b"]']) == {"candidate_labels": ["a", "b"]}  # JSON still
    with pytest.raises(AiforgeError, match="params.KEY"):
        parse_params(None, ["top_k=3"])
