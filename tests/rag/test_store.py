"""Store consistency: readers keep a consistent snapshot while a writer commits, refresh incrementally to
the same state a fresh load sees, survive compaction; a crash between vector append and commit leaves no
trace. The PostgreSQL store runs the same ingest/search/lock checks against a server this test starts."""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path

import numpy as np
import pytest

from aiforge.errors import AiforgeError
from aiforge.rag import RagIndex, RagSettings, ingest
from aiforge.rag.bm25 import encode_terms
from aiforge.rag.index import open_store
from aiforge.rag.retrieve import Snapshot, hybrid_search
from aiforge.rag.store import ChunkRecord, DocumentRecord, SourceRecord, SourceUpdate, Store

DIM = 8


def update(source_id: str, texts: list[str], seed: int) -> SourceUpdate:
    """A source whose chunks are ``texts`` joined by spaces; vectors are fixed random unit vectors."""
    text = " ".join(texts)
    digest = hashlib.sha256(text.encode()).hexdigest()
    key = f"{source_id}@{digest[:12]}"
    chunks, offset = [], 0
    for i, t in enumerate(texts):
        chunks.append(
            ChunkRecord(
                source_id,
                key,
                i,
                1,
                "",
                "txt",
                offset,
                offset + len(t),
                t,
                hashlib.sha1(t.encode()).hexdigest(),
            )
        )
        offset += len(t) + 1
    vectors = np.random.default_rng(seed).normal(size=(len(texts), DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return SourceUpdate(
        SourceRecord(source_id, digest, "txt"),
        DocumentRecord(key, source_id, text, [0]),
        chunks,
        vectors,
        [encode_terms(t) for t in texts],
    )


def new_store(settings: RagSettings) -> Store:
    store = open_store("s", settings, create=True)
    with store.writer():
        store.initialise({**settings.index_fields(), "dim": DIM})
    return store


def same_view(a: Snapshot, b: Snapshot, query: str, settings: RagSettings) -> None:
    """Same rows, vectors and keyword ranking (BM25 scores may differ slightly: a refreshed snapshot
    still counts deleted rows in document frequencies until the next base rebuild)."""
    assert a.state == b.state
    np.testing.assert_array_equal(a.live, b.live)
    np.testing.assert_allclose(np.asarray(a.vectors), np.asarray(b.vectors))
    ranked = [[h.pos for h in hybrid_search(s, None, query, settings, 10, mode="bm25")] for s in (a, b)]
    assert ranked[0] == ranked[1] and ranked[0]


def test_reader_snapshot_is_stable_and_refreshes_to_the_latest_commit(tmp_path: Path):
    settings = RagSettings(home=tmp_path)
    store = new_store(settings)
    with store.writer():
        store.commit([update("a", ["사과는 빨갛다", "바나나는 노랗다"], 1)])
    reader = Snapshot.load(store, settings)
    with store.writer():
        store.commit([update("b", ["포도는 보라색이다"], 2), update("a", ["사과는 초록색도 있다"], 3)])
    assert reader.state.n_rows == 2 and reader.live.all()  # the old snapshot did not move under the reader
    refreshed = reader.refresh(store, settings)
    assert refreshed.state.n_rows == 4 and refreshed.live.tolist() == [False, False, True, True]
    same_view(refreshed, Snapshot.load(store, settings), "사과 포도", settings)
    assert refreshed.refresh(store, settings) is refreshed  # nothing new: no work


def test_compaction_moves_rows_and_open_readers_still_get_the_right_chunks(tmp_path: Path):
    settings = RagSettings(home=tmp_path, top_k=1)
    store = new_store(settings)
    with store.writer():
        store.commit([update("a", ["old text one", "old text two"], 1), update("b", ["keep this chunk"], 2)])
        store.commit([update("a", ["fresh text"], 3)])
    index = RagIndex(name="s", store=open_store("s", settings), settings=settings)
    before = index.snapshot()
    with store.writer():
        after = store.compact()
    assert (after.generation, after.n_rows) == (before.state.generation + 1, 2)
    vector = np.asarray(before.vectors[2])  # the vector of "keep this chunk" at its old position
    hit = index.search("keep this chunk", query_vector=vector)[0]
    assert hit.chunk.text == "keep this chunk" and hit.chunk.pos == 0
    assert not (tmp_path / "s" / "vectors-0.f32").exists()


def test_vectors_appended_by_a_crashed_writer_are_ignored_then_truncated(tmp_path: Path):
    settings = RagSettings(home=tmp_path)
    store = new_store(settings)
    with store.writer():
        store.commit([update("a", ["one", "two"], 1)])
        store._append_vectors(store.state(), np.ones((5, DIM), np.float32))  # appended, never committed
    snapshot = Snapshot.load(store, settings)
    assert snapshot.state.n_rows == 2 and snapshot.vectors.shape == (2, DIM)
    with store.writer():
        store.commit([update("b", ["three"], 2)])
    assert (tmp_path / "s" / "vectors-0.f32").stat().st_size == 3 * DIM * 4
    np.testing.assert_allclose(
        np.asarray(Snapshot.load(store, settings).vectors[2]), update("b", ["three"], 2).vectors[0]
    )


def test_writes_outside_the_writer_lock_are_refused(tmp_path: Path):
    store = new_store(RagSettings(home=tmp_path))
    with pytest.raises(RuntimeError, match="writer"):
        store.commit([update("a", ["x"], 1)])


# ---- PostgreSQL -------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_postgres_store_ingest_search_reingest_and_lock(postgres_url: str, docs: Path, embedder):
    from aiforge.rag.pgstore import PostgresStore

    settings = RagSettings(store_url=postgres_url, progress=False, chunk_tokens=64, chunk_overlap=8)
    files = [docs / "notes.txt", docs / "install.md"]
    first = ingest(files, "pg-kb", settings, embedder)
    assert len(first.added) == 2 and first.chunks_embedded == first.chunks_total > 0
    index = RagIndex.open("pg-kb", settings, embedder)
    assert Path(index.search("How long is the warranty?", top_k=1)[0].chunk.source_id).name == "notes.txt"

    embedder.reset()
    assert ingest(files, "pg-kb", settings, embedder).unchanged == 2 and embedder.calls == 0
    (docs / "notes.txt").write_text("The warranty lasts five years.\n", encoding="utf-8")
    assert ingest(files, "pg-kb", settings, embedder).updated == [str(docs / "notes.txt")]
    top = index.search("How long is the warranty?", top_k=1)[0]  # the open reader refreshed incrementally
    assert top.chunk.text == "The warranty lasts five years."

    holder = PostgresStore("pg-kb", postgres_url)
    with holder.writer():
        with pytest.raises(AiforgeError) as locked:
            ingest(files, "pg-kb", settings, embedder)
        assert locked.value.code == "AF-RAG-004" and f"pid {os.getpid()}" in locked.value.message
    holder.close()
    with pytest.raises(AiforgeError) as unknown:
        RagIndex.open("pg-missing", settings)
    assert unknown.value.code == "AF-RAG-001" and "pg-kb" in unknown.value.fix.replace("_", "-")
