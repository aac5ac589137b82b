"""/v1/chat/completions on the llama.cpp runtime: the official ``openai`` client against a real server
running the packaged SmolLM2 GGUF (text-generation's offline default: no model named)."""

from __future__ import annotations

import concurrent.futures
import json
import time
from collections.abc import Iterator
from typing import Any

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
        models=[
            {
                "name": "chat",
                "task": "text-generation",
                # a small context, so an over-long prompt is cheap to build
                "params": {"max_new_tokens": 24, "context_size": 1024},
            }
        ],
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


PERSON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}
PERSON = [{"role": "user", "content": "Give me a person with name and age as JSON."}]


def validates(instance: Any, schema: dict[str, Any]) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(instance, schema)


def test_json_schema_output_parses_and_validates(client: openai.OpenAI) -> None:
    response_format = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON_SCHEMA}}
    reply = client.chat.completions.create(
        model="chat", messages=PERSON, max_tokens=48, response_format=response_format
    )
    validates(json.loads(reply.choices[0].message.content), PERSON_SCHEMA)
    stream = client.chat.completions.create(
        model="chat", messages=PERSON, max_tokens=48, response_format=response_format, stream=True
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    validates(json.loads(streamed), PERSON_SCHEMA)


def test_json_object_output_is_an_object(client: openai.OpenAI) -> None:
    # Any object is allowed, so its length is the model's choice: here 23 tokens ({"name": "John",
    # "age": 30}); a CI machine's CPU once made it longer than 48 (greedy decoding follows the float
    # kernels). The budget leaves room; the test still fails if the grammar never closes the object.
    reply = client.chat.completions.create(
        model="chat", messages=PERSON, max_tokens=256, response_format={"type": "json_object"}
    )
    content = reply.choices[0].message.content
    assert reply.choices[0].finish_reason == "stop", content  # a grammar cannot help a cut answer
    assert isinstance(json.loads(content), dict)


def test_completions_continue_the_prompt_as_written(client: openai.OpenAI) -> None:
    prompt = "The capital of France is"
    whole = client.completions.create(model="chat", prompt=prompt, max_tokens=4)
    assert whole.object == "text_completion" and whole.choices[0].finish_reason == "length"
    assert "Paris" in whole.choices[0].text
    assert whole.usage.prompt_tokens == 5 and whole.usage.completion_tokens == 4  # no chat template
    stream = client.completions.create(
        model="chat", prompt=prompt, max_tokens=4, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text
    assert chunks[-1].usage.completion_tokens == 4
    two = client.completions.create(
        model="chat", prompt=[prompt, "One, two, three,"], max_tokens=4, stop=["\n"]
    )
    assert [c.index for c in two.choices] == [0, 1] and two.usage.prompt_tokens > 5


def test_tools_on_a_template_without_tools_are_a_clear_400(client: openai.OpenAI) -> None:
    weather = {"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}
    with pytest.raises(
        openai.BadRequestError, match="cannot call tools: the chat template in SmolLM2.* has no tool support"
    ):
        client.chat.completions.create(model="chat", messages=FRANCE, max_tokens=4, tools=[weather])
    with pytest.raises(openai.BadRequestError, match="n must be 1"):
        client.chat.completions.create(model="chat", messages=FRANCE, max_tokens=4, n=2)


def test_fields_that_do_not_change_the_result_are_accepted(client: openai.OpenAI) -> None:
    """What LangChain's ChatOpenAI and LlamaIndex send (langchain_openai _default_params: n, stream,
    stream_options; store, service_tier, metadata when set; parallel_tool_calls with bound tools)."""
    reply = client.chat.completions.create(
        model="chat",
        messages=FRANCE,
        max_completion_tokens=16,
        n=1,
        user="u-1",
        logprobs=False,
        presence_penalty=0,
        frequency_penalty=0,
        logit_bias={},
        metadata={"session": "s"},
        store=False,
        service_tier="auto",
        parallel_tool_calls=False,
        tool_choice="none",
        modalities=["text"],
    )
    assert "Paris" in reply.choices[0].message.content


def test_an_over_long_prompt_is_a_400_naming_the_context_size(client: openai.OpenAI) -> None:
    long = [{"role": "user", "content": "word " * 1500}]
    for stream in (False, True):  # streamed too: refused before the stream starts
        with pytest.raises(openai.BadRequestError, match="context of 1024 tokens"):
            client.chat.completions.create(model="chat", messages=long, max_tokens=4, stream=stream)
    with pytest.raises(openai.BadRequestError, match="context of 1024 tokens"):
        client.completions.create(model="chat", prompt="word " * 1500, max_tokens=4, stream=True)


def metric(server: Server, name: str) -> float:
    """One sample of the model 'chat' from /metrics (0 when absent)."""
    with server.client() as http:
        text = http.get("/metrics").text
    prefix = f'{name}{{model="chat"}} '
    return next((float(line[len(prefix) :]) for line in text.splitlines() if line.startswith(prefix)), 0.0)


def test_metrics_count_tokens_first_token_time_and_busy_slots(
    llm_server: Server, client: openai.OpenAI
) -> None:
    tokens = metric(llm_server, "aiforge_generated_tokens_total")
    firsts = metric(llm_server, "aiforge_time_to_first_token_seconds_count")
    reply = client.chat.completions.create(model="chat", messages=FRANCE, max_tokens=8)
    list(client.chat.completions.create(model="chat", messages=FRANCE, max_tokens=8, stream=True))
    made = metric(llm_server, "aiforge_generated_tokens_total") - tokens
    assert made == 2 * reply.usage.completion_tokens
    assert metric(llm_server, "aiforge_time_to_first_token_seconds_count") == firsts + 2
    assert metric(llm_server, "aiforge_generation_seconds_total") > 0
    assert metric(llm_server, "aiforge_llm_slots_busy") == 0
    assert metric(llm_server, "aiforge_llm_requests_waiting") == 0


def test_a_client_that_disconnects_stops_its_generation(llm_server: Server) -> None:
    """Over real HTTP: close a long stream after its first chunks; the slot frees at once and the
    generation stops far short of max_tokens (counting to 900 tokens takes 7 s or more here)."""
    tokens = metric(llm_server, "aiforge_generated_tokens_total")
    body = {"model": "chat", "prompt": "1, 2, 3, 4, 5, 6, 7, 8,", "max_tokens": 900, "stream": True}
    with llm_server.client() as http, http.stream("POST", "/v1/completions", json=body) as response:
        lines = response.iter_lines()
        received = [next(lines) for _ in range(6)]
        assert all(line.startswith("data: ") or not line for line in received)
        assert metric(llm_server, "aiforge_llm_slots_busy") == 1
    closed = time.monotonic()
    while metric(llm_server, "aiforge_llm_slots_busy") and time.monotonic() - closed < 5:
        time.sleep(0.05)
    assert metric(llm_server, "aiforge_llm_slots_busy") == 0
    made = metric(llm_server, "aiforge_generated_tokens_total") - tokens
    assert 0 < made < 300, f"{made} tokens generated after the client left"


def test_langchain_chat_openai_works_unmodified(llm_server: Server) -> None:
    """ChatOpenAI as a LangChain user writes it: invoke, stream (with its usage request) and
    with_structured_output (its default method: response_format json_schema, strict)."""
    langchain_openai = pytest.importorskip("langchain_openai")
    llm = langchain_openai.ChatOpenAI(
        base_url=f"{llm_server.base}/v1", api_key="none", model="chat", max_tokens=16, max_retries=0
    )
    assert "Paris" in llm.invoke("What is the capital of France?").content
    pieces = list(llm.stream("What is the capital of France?", stream_usage=True))
    assert "Paris" in "".join(p.content for p in pieces)
    assert sum((p.usage_metadata or {}).get("output_tokens", 0) for p in pieces) > 0
    roomy = langchain_openai.ChatOpenAI(
        base_url=f"{llm_server.base}/v1", api_key="none", model="chat", max_tokens=48, max_retries=0
    )
    structured = roomy.with_structured_output(PERSON_SCHEMA | {"title": "person"})
    validates(structured.invoke(PERSON[0]["content"]), PERSON_SCHEMA)
