"""Clients see sources by their path in the ingested folder (or the name given at ingest), never by
the server's absolute path; an index built before names were stored still answers, and a re-ingest
names its sources without embedding anything again."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from aiforge.errors import AiforgeError
from aiforge.rag import RagIndex, RagSettings, ingest
from aiforge.rag.answer import answer_question
from aiforge.rag.records import display_name

QUESTION = "리눅스에서는 CUDA 드라이버 몇 버전이 필요해?"


@pytest.fixture
def settings(tmp_path: Path) -> RagSettings:
    return RagSettings(home=tmp_path / "indexes", progress=False, chunk_tokens=64, chunk_overlap=8)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "server" / "docs"
    (root / "guide").mkdir(parents=True)
    (root / "guide" / "install.md").write_text(
        "# 설치\n\n리눅스에서는 CUDA 드라이버 535 이상이 필요하다.\n", encoding="utf-8"
    )
    (root / "notes.txt").write_text("The warranty lasts two years.\n", encoding="utf-8")
    return root


def answer_body(settings: RagSettings, question: str = QUESTION) -> dict:
    index = RagIndex.open("kb", settings)
    try:
        return answer_question(index, question, top_k=3).to_dict()
    finally:
        index.close()


def assert_named(body: dict, tmp_path: Path, source: str) -> None:
    assert str(tmp_path) not in json.dumps(body, ensure_ascii=False)
    assert body["citations"][0]["source"] == source
    assert body["chunks"][0]["source"] == source and body["chunks"][0]["chunk_id"].startswith(source + "@")
    assert body["citations"][0]["chunk_id"] == body["chunks"][0]["chunk_id"]


def test_sources_are_named_relative_to_the_ingested_folder(
    folder: Path, settings: RagSettings, embedder, tmp_path: Path
) -> None:
    ingest([folder], "kb", settings, embedder)
    body = answer_body(settings)
    assert "535" in body["answer"]
    assert_named(body, tmp_path, "guide/install.md")
    index = RagIndex.open("kb", settings, embedder)
    try:  # the absolute path stays internal, and clients filter by the names they see
        hits = index.search(QUESTION, top_k=3, filters={"source": "guide/*.md"})
        assert {r.chunk.source_id for r in hits} == {str(folder / "guide" / "install.md")}
    finally:
        index.close()


def test_a_name_given_at_ingest_names_a_file_or_prefixes_a_folder(
    folder: Path, settings: RagSettings, embedder, tmp_path: Path
) -> None:
    ingest([folder], "kb", settings, embedder, name="manual")
    assert_named(answer_body(settings), tmp_path, "manual/guide/install.md")
    ingest([folder / "guide" / "install.md"], "kb", settings, embedder, name="설치 안내.md")
    assert answer_body(settings)["citations"][0]["source"] == "설치 안내.md"  # renamed, not re-embedded
    with pytest.raises(AiforgeError) as error:
        ingest([folder, folder / "notes.txt"], "kb", settings, embedder, name="x")
    assert error.value.code == "AF-CONFIG-001"


def test_an_index_built_before_names_still_answers_and_a_reingest_names_it(
    folder: Path, settings: RagSettings, embedder, tmp_path: Path
) -> None:
    ingest([folder], "kb", settings, embedder)
    with sqlite3.connect(settings.index_home / "kb" / "meta.sqlite") as db:  # the schema before this change
        db.execute("ALTER TABLE sources DROP COLUMN name")
    old = answer_body(settings)
    assert "535" in old["answer"]
    assert_named(old, tmp_path, "install.md")  # derived from the path: the file name, not the folders
    before = len(embedder.passages)
    report = ingest([folder], "kb", settings, embedder)
    assert report.unchanged == 2 and len(embedder.passages) == before  # named without re-embedding
    assert_named(answer_body(settings), tmp_path, "guide/install.md")


@pytest.mark.parametrize(
    ("source_id", "name"),
    [
        ("/srv/docs/guide/install.md", "install.md"),
        ("C:\\docs\\install.md", "install.md"),
        ("/data/korquad.json#체스/0", "korquad.json#체스/0"),
        ("korquad/체스_규칙/0", "korquad/체스_규칙/0"),
    ],
)
def test_display_name_never_shows_the_servers_folders(source_id: str, name: str) -> None:
    assert display_name(source_id) == name
