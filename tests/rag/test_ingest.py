"""Ingest: every file type, re-ingest embeds only changes, deleted files leave the index, a corrupt
file is named and skipped, an interrupted ingest resumes, a second writer is told who holds the lock.
Real packaged e5 embeddings on a handful of short documents."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aiforge.errors import AiforgeError
from aiforge.rag import RagIndex, RagSettings, ingest
from aiforge.rag.index import open_store


@pytest.fixture
def settings(tmp_path: Path) -> RagSettings:
    return RagSettings(home=tmp_path / "indexes", progress=False, chunk_tokens=64, chunk_overlap=8)


def sources_of(index: RagIndex, question: str, top_k: int = 10, **filters) -> list[str]:
    return [
        Path(r.chunk.source_id).name for r in index.search(question, top_k=top_k, filters=filters or None)
    ]


def test_ingest_all_types_then_reingest_only_changes(docs: Path, settings: RagSettings, embedder):
    (docs / "broken.pdf").write_bytes(b"%PDF-1.4 garbage")
    first = ingest([docs], "kb", settings, embedder)
    assert sorted(Path(s).name for s in first.added) == [
        "install.md",
        "manual.pdf",
        "notes.txt",
        "page.html",
        "policy.docx",
    ]
    assert [(Path(f["source"]).name, f["code"]) for f in first.failed] == [("broken.pdf", "AF-RAG-003")]
    assert first.chunks_embedded == len(embedder.passages) == first.chunks_total

    index = RagIndex.open("kb", settings, embedder)
    hit = index.search("filter replacement interval", top_k=1)[0]
    assert Path(hit.chunk.source_id).name == "manual.pdf" and hit.chunk.page == 2

    embedder.reset()
    again = ingest([docs], "kb", settings, embedder)
    assert (again.unchanged, again.chunks_embedded, embedder.calls) == (5, 0, 0)

    (docs / "notes.txt").write_text("The warranty lasts five years.\n", encoding="utf-8")
    (docs / "page.html").unlink()
    changed = ingest([docs], "kb", settings, embedder)
    assert [Path(s).name for s in changed.updated] == ["notes.txt"]
    assert [Path(s).name for s in changed.deleted] == ["page.html"]
    assert embedder.passages == ["notes\nThe warranty lasts five years."]  # only the edited file's new chunk
    assert "page.html" not in sources_of(index, "제주도 배송은 며칠 걸리나요?")
    assert (
        index.search("How long is the warranty?", top_k=1)[0].chunk.text == "The warranty lasts five years."
    )
    assert set(index.store.sources()) == {str(p) for p in docs.iterdir() if p.name != "broken.pdf"}


def test_unsupported_named_file_and_missing_path_are_reported(docs: Path, settings: RagSettings, embedder):
    (docs / "image.png").write_bytes(b"\x89PNG")
    report = ingest([docs / "image.png", docs / "nope.txt", docs / "notes.txt"], "kb", settings, embedder)
    assert [(Path(f["source"]).name, f["code"]) for f in report.failed] == [
        ("nope.txt", "AF-INPUT-001"),
        ("image.png", "AF-INPUT-005"),
    ]
    assert [Path(s).name for s in report.added] == ["notes.txt"]


def test_interrupted_ingest_is_consistent_and_resumes(docs: Path, settings: RagSettings, embedder):
    small_batches = settings.model_copy(update={"batch_size": 1})
    embedder.fail_after = 2  # the third embedding call dies
    with pytest.raises(KeyboardInterrupt):
        ingest([docs], "kb", small_batches, embedder)
    store = open_store("kb", small_batches)
    done = store.sources()
    assert 1 <= len(done) < 5
    assert store.live_count() == sum(s.n_chunks for s in done.values())  # no orphan chunks, no half files
    store.close()

    embedder.reset()
    resumed = ingest([docs], "kb", small_batches, embedder)
    assert resumed.unchanged == len(done) and len(resumed.added) == 5 - len(done)
    assert (
        resumed.chunks_embedded
        == len(embedder.passages)
        == resumed.chunks_total - sum(s.n_chunks for s in done.values())
    )


def test_second_writer_gets_the_holders_pid_and_command(
    docs: Path, settings: RagSettings, embedder, tmp_path
):
    ingest([docs / "notes.txt"], "kb", settings, embedder)
    ready = tmp_path / "ready"
    script = (
        "import sys, time, pathlib\n"
        "from aiforge.rag import RagSettings\nfrom aiforge.rag.index import open_store\n"
        f"store = open_store('kb', RagSettings(home={str(settings.home)!r}))\n"
        "with store.writer():\n"
        f"    pathlib.Path({str(ready)!r}).touch()\n"
        "    time.sleep(60)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", script, "--ingest-docs"], env={**os.environ})
    try:
        deadline = time.time() + 30
        while not ready.exists() and time.time() < deadline:
            time.sleep(0.1)
        with pytest.raises(AiforgeError) as locked:
            ingest([docs / "install.md"], "kb", settings, embedder)
        assert locked.value.code == "AF-RAG-004"
        assert f"pid {holder.pid}" in locked.value.message and "--ingest-docs" in locked.value.message
        # readers are not blocked by the writer
        assert RagIndex.open("kb", settings, embedder).search("warranty", top_k=1)
    finally:
        holder.kill()
        holder.wait()
    assert ingest([docs / "install.md"], "kb", settings, embedder).added  # lock released with the process


def test_index_errors_are_clear(settings: RagSettings, docs: Path, embedder):
    with pytest.raises(AiforgeError) as unknown:
        RagIndex.open("nothing-here", settings)
    assert unknown.value.code == "AF-RAG-001" and "aiforge rag ingest" in unknown.value.fix
    folder = docs / "only"
    folder.mkdir()
    (docs / "notes.txt").rename(folder / "notes.txt")
    ingest([folder], "kb", settings, embedder)
    with pytest.raises(AiforgeError) as other:
        ingest([folder], "kb", settings.model_copy(update={"chunk_tokens": 128}), embedder)
    assert other.value.code == "AF-RAG-007" and "chunk_tokens" in other.value.message
    (folder / "notes.txt").unlink()
    ingest([folder], "kb", settings, embedder)  # the folder no longer has notes.txt: its chunks go
    with pytest.raises(AiforgeError) as empty:
        RagIndex.open("kb", settings, embedder).search("warranty")
    assert empty.value.code == "AF-RAG-002"
