"""Hostile request bodies against a real server: each gets a 400/413 naming the problem, never a 500,
and the server keeps serving (issue 21 item 2)."""

from __future__ import annotations

import time

import pytest

from aiforge.errors import AiforgeError
from aiforge.serve.jsonbody import MAX_DEPTH, load_request_json, nesting_depth
from tests.serve.conftest import Server

DEEP = b'{"inputs": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
HOSTILE = {
    "nested 50,000 deep": (DEEP, "nested deeper"),
    "a 5,000-digit integer": (b'{"inputs": ["a"], "parameters": {"top_k": ' + b"9" * 5000 + b"}}", "number"),
    "a float overflowing to inf": (b'{"inputs": ["a"], "parameters": {"top_k": 1e999}}', "infinity"),
    "NaN": (b'{"inputs": ["a"], "parameters": {"top_k": NaN}}', "NaN"),
    "-Infinity": (b'{"inputs": ["a"], "parameters": {"top_k": -Infinity}}', "Infinity"),
    "invalid UTF-8": (b'{"inputs": ["\xff\xfe bad"]}', "UTF-8"),
    "an encoded surrogate": (b'{"inputs": ["\xed\xa0\x80"]}', "UTF-8"),
    "an escaped lone surrogate": (b'{"inputs": ["x\\ud800y"]}', "surrogate"),
    "a lone low surrogate as a key": (b'{"inputs": [{"\\udc00": "x"}]}', "surrogate"),
}
# every route that reads request JSON: the fast predict path, FastAPI routes (OpenAI, RAG, admin)
ROUTES = ["/v1/models/clf/predict", "/v1/embeddings", "/v1/chat/completions", "/v1/rag/none/query"]


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_json_is_a_400_naming_the_problem(api: Server, route: str, case: str) -> None:
    body, needle = HOSTILE[case]
    with api.client() as client:
        response = client.post(route, content=body, headers={"content-type": "application/json"})
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["code"] == "AF-SERVE-002" and needle in error["message"] and error["fix"]
        assert client.post("/v1/models/clf/predict", json={"inputs": ["ok"]}).status_code == 200


def test_paired_surrogates_and_brackets_in_strings_are_fine() -> None:
    assert load_request_json(b'{"t": "\\ud83d\\ude00"}') == {"t": "\U0001f600"}
    brackets = b'{"t": "' + b"[" * 1000 + b'"}'
    assert nesting_depth(brackets) == 1 and load_request_json(brackets) == {"t": "[" * 1000}
    ok = b"[" * MAX_DEPTH + b"]" * MAX_DEPTH
    assert nesting_depth(ok) == MAX_DEPTH and load_request_json(ok) is not None
    with pytest.raises(AiforgeError, match="nested deeper"):
        load_request_json(b"[" + ok + b"]")
    assert load_request_json(b'{"n": 123456789012345678901234567890, "f": -1.5e300}')["f"] == -1.5e300


def test_a_bare_string_is_one_input(api: Server) -> None:
    with api.client() as client:
        bare = client.post("/v1/models/clf/predict", json={"inputs": "정말 재미있는 영화였어요"})
        listed = client.post("/v1/models/clf/predict", json={"inputs": ["정말 재미있는 영화였어요"]})
        record = client.post("/v1/models/clf/predict", json={"inputs": {"text": "정말 재미있는 영화였어요"}})
        empty = client.post("/v1/models/clf/predict", json={"inputs": ""})
    assert bare.status_code == listed.status_code == record.status_code == 200, bare.text
    assert bare.json()["outputs"] == listed.json()["outputs"] == record.json()["outputs"]
    assert len(bare.json()["outputs"]) == 1
    assert empty.status_code == 422


def test_zero_width_and_bidi_controls_pass_through(api: Server) -> None:
    controls = "\u200b\u200c\u200d\u2060\ufeff\u202e\u2066\u2069\u200f"
    texts = [f"좋{controls}아요", controls, "\u202egood\u202c fun"]
    with api.client() as client:
        first = client.post("/v1/models/clf/predict", json={"inputs": texts})
        again = client.post("/v1/models/clf/predict", json={"inputs": texts[::-1]})
        embedded = client.post("/v1/embeddings", json={"model": "e5", "input": texts})
    assert first.status_code == again.status_code == embedded.status_code == 200, first.text
    assert first.json()["outputs"] == again.json()["outputs"][::-1]
    assert len(embedded.json()["data"]) == 3


def test_a_10000_item_batch_over_the_queue_is_a_413_naming_the_limit(api: Server) -> None:
    with api.client() as client:
        response = client.post("/v1/models/clf/predict", json={"inputs": ["a"] * 10_000})
        under = client.post("/v1/models/clf/predict", json={"inputs": ["a"] * 1000})
    assert response.status_code == 413, response.text
    error = response.json()["error"]
    assert "10000 items" in error["message"] and "1024" in error["message"]
    assert under.status_code == 200 and len(under.json()["outputs"]) == 1000


def test_a_200000_character_input_does_not_tie_up_the_model(api: Server) -> None:
    """Before the cut, one such text held the packaged e5 for minutes (a 504 after 30 s)."""
    long_text = ("배우들 연기가 정말 훌륭했고 음악도 좋았다. " * 8000)[:200_000]
    with api.client() as client:
        started = time.perf_counter()
        embedded = client.post("/v1/embeddings", json={"model": "e5", "input": long_text})
        predicted = client.post("/v1/models/e5/predict", json={"inputs": "a" * 200_000})
        classified = client.post("/v1/models/clf/predict", json={"inputs": [long_text, "a" * 200_000]})
        seconds = time.perf_counter() - started
    assert embedded.status_code == predicted.status_code == classified.status_code == 200, embedded.text
    assert predicted.json()["outputs"][0]["truncated"] is True
    assert [o["truncated"] for o in classified.json()["outputs"]] == [True, True]
    assert seconds < 10, f"three 200,000-character requests took {seconds:.1f}s"
