"""The packaged Gemma 3 270M (a base model, Gemma terms of use) on llama.cpp: joined once from its four
wheels into the cache, continues text, and refuses a conversation with the reason (it has no chat
template). Decodes about 14-77 tokens/s on 2 shared cores: generations stay short."""

from __future__ import annotations

import json
import re
import time

import httpx
import pytest
from typer.testing import CliRunner

from aiforge.cli import app
from aiforge.errors import AiforgeError
from aiforge.models import PACKAGED, resolve
from aiforge.serve import ServeSettings
from aiforge.tasks import load_pipeline
from tests.serve.conftest import running_server

GEMMA = PACKAGED["gemma-3-270m"]
pytestmark = pytest.mark.skipif(not GEMMA.available(), reason=f"needs {GEMMA.install_command()}")


@pytest.fixture(scope="module")
def pipe():
    return load_pipeline("text-generation", "packaged:gemma-3-270m", max_new_tokens=12, slots=2)


def test_the_parts_are_joined_once_into_the_cache():
    ref = resolve("packaged:gemma-3-270m", task="text-generation")
    assert ref.format == "gguf" and ref.path.name == "gemma-3-270m-q4_k_m.gguf"
    assert "packaged" in ref.path.parts and ref.path.stat().st_size > 250e6
    mtime = ref.path.stat().st_mtime_ns
    started = time.monotonic()
    again = resolve("packaged:gemma-3-270m")
    assert again.path.stat().st_mtime_ns == mtime  # not rewritten
    assert time.monotonic() - started < 0.5  # nor re-hashed (253 MB of sha256 takes about 1 s)


def test_models_shows_the_gemma_terms_and_offline_availability():
    result = CliRunner().invoke(app, ["models", "--json"])
    assert result.exit_code == 0, result.output
    listing = json.loads(result.stdout)
    gemma = next(p for p in listing["packaged"] if p["name"] == "gemma-3-270m")
    assert gemma["installed"] is True and gemma["tasks"] == ["text-generation"]
    assert gemma["licence"].startswith("Gemma Terms of Use") and "base model" in gemma["description"]
    with open(gemma["terms_file"], encoding="utf-8") as terms:
        assert "Gemma Terms of Use" in terms.read()
    smollm2 = next(p for p in listing["packaged"] if p["name"] == "smollm2-135m-instruct")
    assert smollm2["terms_file"] is None  # an SPDX licence needs no copy


def test_a_base_model_continues_text_even_korean(pipe):
    out = pipe("The capital of France is")
    assert out["generated_text"].strip() and out["completion_tokens"] <= 12
    assert out["prompt_tokens"] < 10  # the text as written: no chat template wrapped around it
    korean = pipe("대한민국의 수도는")["generated_text"]
    assert re.search("[가-힣]", korean)


def test_a_conversation_is_refused_with_the_reason(pipe):
    with pytest.raises(AiforgeError, match="no chat template .*base model") as exc:
        pipe.chat([{"role": "user", "content": "Hi"}])
    assert "/v1/completions" in exc.value.fix and "smollm2" in exc.value.fix
    terminal = CliRunner().invoke(app, ["chat", "--model", "packaged:gemma-3-270m"], input="Hi\n")
    assert terminal.exit_code != 0 and "cannot chat" in terminal.output


@pytest.mark.slow  # a server of its own: about 10 s
def test_served_chat_is_a_400_and_completions_work():
    settings = ServeSettings(
        host="127.0.0.1",
        port=0,
        log_level="warning",
        models=[
            {
                "name": "gemma",
                "task": "text-generation",
                "model": "packaged:gemma-3-270m",
                "params": {"max_new_tokens": 8, "slots": 1, "context_size": 512},
            }
        ],
    )
    with running_server(settings) as server:
        base = f"{server.base}/v1"
        chat = httpx.post(
            f"{base}/chat/completions",
            json={"model": "gemma", "messages": [{"role": "user", "content": "Hi"}]},
            timeout=60,
        )
        assert chat.status_code == 400
        assert "cannot chat" in chat.text and "no chat template" in chat.text
        completion = httpx.post(
            f"{base}/completions",
            json={"model": "gemma", "prompt": "Once upon a time", "max_tokens": 6},
            timeout=60,
        ).json()
        assert completion["usage"]["completion_tokens"] == 6 and completion["choices"][0]["text"]
