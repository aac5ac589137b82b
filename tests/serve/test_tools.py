"""OpenAI ``tools`` / ``tool_choice`` on a GGUF chat model whose template has tools: the packaged SmolLM2
with aiforge's ChatML tool template (``chat_template=chatml-tools``), against a real server, through the
official ``openai`` client and LangChain's ``bind_tools``. A forced call (``required`` or a named
function) is grammar-constrained JSON, so even a 135M model calls with arguments that fit the schema."""

from __future__ import annotations

import json
from collections.abc import Iterator

import openai
import pytest

from aiforge.models import PACKAGED
from aiforge.serve import ServeSettings
from tests.serve.conftest import Server, running_server

SMOLLM2 = PACKAGED["smollm2-135m-instruct"]
pytestmark = pytest.mark.skipif(not SMOLLM2.available(), reason=f"needs {SMOLLM2.install_command()}")
PARIS = [{"role": "user", "content": "What is the weather in Paris?"}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"],
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]},
    },
}


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    settings = ServeSettings(
        host="127.0.0.1",
        port=0,
        log_level="warning",
        models=[
            {
                "name": "tools",
                "task": "text-generation",
                "params": {"max_new_tokens": 48, "chat_template": "chatml-tools", "context_size": 2048},
            }
        ],
    )
    with running_server(settings) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base}/v1", api_key="none", max_retries=0, timeout=120)


def _check_weather_call(call) -> dict:
    assert call.type == "function" and call.id.startswith("call_") and call.function.name == "get_weather"
    arguments = json.loads(call.function.arguments)
    assert isinstance(arguments["city"], str) and arguments["unit"] in ("celsius", "fahrenheit")
    return arguments


def test_a_required_call_has_arguments_matching_the_schema(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="tools", messages=PARIS, tools=[WEATHER, TIME], tool_choice="required", temperature=0
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    assert "Paris" in _check_weather_call(choice.message.tool_calls[0])["city"]


def test_a_named_function_streamed_equals_non_streamed(client: openai.OpenAI) -> None:
    named = {"type": "function", "function": {"name": "get_time"}}
    whole = client.chat.completions.create(
        model="tools", messages=PARIS, tools=[WEATHER, TIME], tool_choice=named, temperature=0
    )
    assert whole.choices[0].message.tool_calls[0].function.name == "get_time"
    chunks = list(
        client.chat.completions.create(
            model="tools",
            messages=PARIS,
            tools=[WEATHER, TIME],
            tool_choice=named,
            temperature=0,
            stream=True,
        )
    )
    deltas = [c.choices[0].delta.tool_calls for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    assert len(deltas) == 1 and deltas[0][0].index == 0 and deltas[0][0].function.name == "get_time"
    assert deltas[0][0].function.arguments == whole.choices[0].message.tool_calls[0].function.arguments
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"


def test_a_tool_result_turn_is_answered_in_text(client: openai.OpenAI) -> None:
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "celsius"}'},
    }
    messages = [
        *PARIS,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature": 21, "sky": "sunny"}'},
    ]
    reply = client.chat.completions.create(
        model="tools", messages=messages, tools=[WEATHER], tool_choice="none", max_tokens=24, temperature=0
    )
    assert reply.choices[0].message.content and not reply.choices[0].message.tool_calls


def test_an_unknown_named_function_is_a_clear_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="'get_stock'.*not among the tools"):
        client.chat.completions.create(
            model="tools",
            messages=PARIS,
            tools=[WEATHER],
            tool_choice={"type": "function", "function": {"name": "get_stock"}},
        )


def test_langchain_bind_tools(server: Server) -> None:
    langchain_openai = pytest.importorskip("langchain_openai")
    chat = langchain_openai.ChatOpenAI(
        base_url=f"{server.base}/v1", api_key="none", model="tools", temperature=0, max_retries=0
    )
    bound = chat.bind_tools([WEATHER], tool_choice="get_weather")
    message = bound.invoke("What is the weather in Paris?")
    assert message.tool_calls[0]["name"] == "get_weather" and "city" in message.tool_calls[0]["args"]
    streamed = None
    for chunk in bound.stream("What is the weather in Paris?"):
        streamed = chunk if streamed is None else streamed + chunk
    assert streamed.tool_calls[0]["args"] == message.tool_calls[0]["args"]


def test_the_schema_advertises_tools(server: Server) -> None:
    with server.client() as http:
        tools = http.get("/openapi.json").json()["components"]["schemas"]["ChatCompletionRequest"]
    assert tools["properties"]["tools"].get("description") != "no served model calls tools"


def test_streamed_native_tool_call_pieces_are_joined_by_index() -> None:
    """llama.cpp streams an auto call in pieces (the id and name first, then the arguments)."""
    from aiforge.tasks.generation import ChatUsage
    from aiforge.tasks.llm import _gather_tool_calls

    usage = ChatUsage()
    _gather_tool_calls(usage, [{"index": 0, "id": "call_a", "function": {"name": "get_weather"}}])
    _gather_tool_calls(usage, [{"index": 0, "function": {"arguments": '{"city": '}}])
    _gather_tool_calls(usage, [{"index": 0, "function": {"arguments": '"Paris"}'}}, {"index": 1, "id": "b"}])
    assert usage.tool_calls[0] == {
        "id": "call_a",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
    }
    assert usage.tool_calls[1]["id"] == "b"
