"""Hostile files in `rag ingest`: links out of the folder and ZIP bombs are reported per file, the
ingest goes on, and what the index already holds stays (issue 21 item 2)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from aiforge.rag import RagSettings, ingest
from aiforge.rag import parse as rag_parse


@pytest.fixture
def settings(tmp_path: Path) -> RagSettings:
    return RagSettings(home=tmp_path / "indexes", progress=False, chunk_tokens=64, chunk_overlap=8)


def test_links_out_of_the_folder_are_skipped(docs: Path, settings: RagSettings, embedder, tmp_path: Path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("the root password is hunter2\n", encoding="utf-8")
    (docs / "leak.txt").symlink_to(outside / "secret.txt")
    (docs / "linked").symlink_to(outside, target_is_directory=True)
    (docs / "inside.txt").symlink_to(docs / "notes.txt")  # a link that stays inside is fine
    report = ingest([docs], "kb", settings, embedder)
    refused = sorted((Path(f["source"]).name, f["code"]) for f in report.failed)
    assert ("leak.txt", "AF-INPUT-001") in refused
    assert all("outside" in f["message"] for f in report.failed)
    assert not any("hunter2" in p for p in embedder.passages)
    assert "inside.txt" in {Path(s).name for s in report.added}


def test_a_docx_bomb_fails_alone_and_keeps_the_index(
    docs: Path, settings: RagSettings, embedder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    first = ingest([docs], "kb", settings, embedder)
    monkeypatch.setattr(rag_parse, "MAX_DOCX_UNPACKED_BYTES", 1 << 20)  # the real limit is 256 MiB
    with zipfile.ZipFile(docs / "bomb.docx", "w", zipfile.ZIP_DEFLATED) as bomb:
        bomb.writestr("word/document.xml", b"<w:t>" + b"a" * (8 << 20) + b"</w:t>")
    assert (docs / "bomb.docx").stat().st_size < 100_000
    again = ingest([docs], "kb", settings, embedder)
    assert [(Path(f["source"]).name, f["code"]) for f in again.failed] == [("bomb.docx", "AF-RAG-003")]
    assert "decompression bomb" in again.failed[0]["message"]
    assert again.unchanged == len(first.added) and not again.deleted


def test_not_a_zip_is_a_parse_error(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="not a ZIP archive"):
        rag_parse.refuse_zip_bomb(tmp_path / "x.docx", b"plain bytes", 1 << 20)
