"""/v1/chat/completions on the llama.cpp runtime: the official ``openai`` client against a real server
running the packaged SmolLM2 GGUF (text-generation's offline default: no model named)."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator

import openai
import pytest

from aiforge.models import PACKAGED
from aiforge.serve import ServeSettings
from tests.serve.conftest import Server, running_server

SMOLLM2 = PACKAGED["smollm2-135m-instruct"]
pytestmark = pytest.mark.skipif(not SMOLLM2.available(), reason=f"needs {SMOLLM2.install_command()}")
FRANCE = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def llm_server() -> Iterator[Server]:
    settings = ServeSettings(
        host="127.0.0.1",
        port=0,
        log_level="warning",
        models=[{"name": "chat", "task": "text-generation", "params": {"max_new_tokens": 24}}],
    )
    with running_server(settings) as server:
        yield server


@pytest.fixture(scope="module")
def client(llm_server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{llm_server.base}/v1", api_key="none", max_retries=0, timeout=120)


def test_the_default_text_generation_model_is_the_packaged_gguf(llm_server: Server) -> None:
    with llm_server.client() as http:
        card = http.get("/v1/models/chat").json()
    assert "smollm2-135m-instruct" in str(card)


def test_chat_answers_paris_with_usage(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="chat", messages=FRANCE, max_tokens=16)
    assert "Paris" in reply.choices[0].message.content
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage.prompt_tokens > 10 and 0 < reply.usage.completion_tokens <= 16


def test_streamed_equals_non_streamed_with_usage(client: openai.OpenAI) -> None:
    full = client.chat.completions.create(model="chat", messages=FRANCE, max_tokens=16)
    chunks = list(
        client.chat.completions.create(
            model="chat", messages=FRANCE, max_tokens=16, stream=True, stream_options={"include_usage": True}
        )
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == full.choices[0].message.content
    assert chunks[-1].usage.prompt_tokens == full.usage.prompt_tokens
    assert chunks[-1].usage.completion_tokens == full.usage.completion_tokens
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]


def test_max_tokens_and_stop_in_both_modes(client: openai.OpenAI) -> None:
    story = [{"role": "user", "content": "Write a long story about a dragon."}]
    short = client.chat.completions.create(model="chat", messages=story, max_tokens=5)
    assert short.choices[0].finish_reason == "length" and short.usage.completion_tokens == 5
    text = (
        client.chat.completions.create(model="chat", messages=story, max_tokens=20).choices[0].message.content
    )
    stop = text.split()[3]
    cut = client.chat.completions.create(model="chat", messages=story, max_tokens=20, stop=[stop])
    assert cut.choices[0].message.content == text[: text.index(stop)]
    assert cut.choices[0].finish_reason == "stop"
    stream = client.chat.completions.create(
        model="chat", messages=story, max_tokens=20, stop=[stop], stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == text[: text.index(stop)]


def test_concurrent_chats_all_answer(client: openai.OpenAI) -> None:
    def ask(_: int) -> str:
        return (
            client.chat.completions.create(model="chat", messages=FRANCE, max_tokens=16)
            .choices[0]
            .message.content
        )

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(ask, range(4)))
    assert all("Paris" in a for a in answers)
