"""An opened index: its store, its embedder, the settings it was built with, and a live snapshot.

``RagIndex`` is what the CLI commands, the server route and the benchmark hold. Opening is cheap
(the embedder loads on the first query); ``search`` refreshes the snapshot to the latest commit
first, so a long-lived server sees what a concurrent ingest adds.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aiforge.errors import AiforgeError
from aiforge.rag.embed import Embedder, load_embedder
from aiforge.rag.records import display_name
from aiforge.rag.retrieve import Hit, Reranker, Snapshot, fuse, hybrid_search
from aiforge.rag.settings import INDEX_FIELDS, RagSettings
from aiforge.rag.store import ChunkRecord, LocalStore, Store, check_name


def open_store(name: str, settings: RagSettings, create: bool = False) -> Store:
    """The embedded store under ``settings.index_home``, or the server store at ``settings.store_url``."""
    check_name(name)
    url = settings.store_url
    if url and url.startswith(("postgresql://", "postgres://")):
        from aiforge.rag.pgstore import PostgresStore

        return PostgresStore(name, url, create=create)
    if url:
        raise AiforgeError(
            "AF-CONFIG-001",
            f"unsupported store URL '{url}'",
            "use postgresql://user@host:port/database, or leave it empty for the embedded store",
        )
    return LocalStore(name, Path(settings.index_home) / name, create=create)


def check_settings(name: str, stored: dict[str, Any], settings: RagSettings) -> RagSettings:
    """Settings with the index's own shape (embedder, chunking); explicit conflicts are an error."""
    conflicts = {
        k: (v, stored[k])
        for k, v in settings.explicit_index_fields().items()
        if k in stored and stored[k] != v
    }
    if conflicts:
        listing = "; ".join(f"{k}: asked {a!r}, index has {b!r}" for k, (a, b) in conflicts.items())
        raise AiforgeError(
            "AF-RAG-007",
            f"index '{name}' was built with other settings ({listing})",
            "drop those options to use the index as built, or ingest into a new --index name",
        )
    return settings.model_copy(update={k: stored[k] for k in INDEX_FIELDS if k in stored})


@dataclass
class Retrieved:
    """A hit with its chunk record (text, source, offsets)."""

    hit: Hit
    chunk: ChunkRecord
    source: str = ""  # the source's name for clients; the chunk's source_id is the internal path

    def __post_init__(self) -> None:
        self.source = self.source or display_name(self.chunk.source_id)

    @property
    def chunk_ref(self) -> str:
        """The chunk's id as clients see it: ``<source name>@<hash12>:<n>`` (no server path)."""
        c = self.chunk
        if not c.doc_key.startswith(c.source_id + "@"):
            return c.chunk_id
        return f"{self.source}{c.doc_key[len(c.source_id) :]}:{c.ordinal}"

    def to_dict(self) -> dict[str, Any]:
        c, h = self.chunk, self.hit
        out = {
            "chunk_id": self.chunk_ref,
            "source": self.source,
            "page": c.page,
            "heading": c.heading,
            "start": c.start,
            "end": c.end,
            "text": c.text,
            "score": round(h.score, 6),
            "dense_score": round(h.dense, 6),
            "bm25_score": round(h.bm25, 4),
        }
        if h.rerank is not None:
            out["rerank_score"] = round(h.rerank, 6)
        return out


class RagIndex:
    """``RagIndex.open("manuals")`` -> ``.search(question)``; thread-safe for concurrent queries."""

    def __init__(
        self, name: str, store: Store, settings: RagSettings, embedder: Embedder | None = None
    ) -> None:
        self.name = name
        self.store = store
        self.settings = settings
        self._embedder = embedder
        self._reranker: Reranker | None = None
        self._snapshot: Snapshot | None = None
        self._lock = threading.Lock()
        # an image index (a CLIP embedder): pictures found by the text tower's vector alone, since
        # their only words are file names
        self.images = store.has_config() and store.config().get("modality") == "image"

    @classmethod
    def open(
        cls, name: str, settings: RagSettings | None = None, embedder: Embedder | None = None
    ) -> RagIndex:
        settings = settings or RagSettings()
        store = open_store(name, settings)
        if not store.has_config():
            store.close()
            raise AiforgeError(
                "AF-RAG-002",
                f"index '{name}' was created but never received a document",
                f"ingest documents first: `aiforge rag ingest PATH --index {name}`",
            )
        return cls(name, store, check_settings(name, store.config(), settings), embedder)

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = load_embedder(self.settings.embedder, self.settings.device)
        return self._embedder

    def snapshot(self) -> Snapshot:
        """The latest committed snapshot (refreshed incrementally). A store that searches on its
        server gives one without rows: its ``bm25`` reads term statistics from the server."""
        if self.store.searches_on_server:
            s = self.settings
            return Snapshot.empty(self.store, self.store.keyword_scorer(s.bm25_k1, s.bm25_b, s.bm25_max_df))
        with self._lock:
            if self._snapshot is None:
                self._snapshot = Snapshot.load(self.store, self.settings)
            else:
                self._snapshot = self._snapshot.refresh(self.store, self.settings)
            return self._snapshot

    def ensure_not_empty(self, snapshot: Snapshot) -> None:
        if snapshot.live_count == 0:
            raise AiforgeError(
                "AF-RAG-002",
                f"index '{self.name}' has no chunks",
                f"ingest documents first: `aiforge rag ingest PATH --index {self.name}`",
            )

    def embed_query(self, question: str) -> np.ndarray:
        return self.embedder.embed_queries([question])[0]

    def search(
        self,
        question: str,
        top_k: int | None = None,
        filters: dict[str, Any] | None = None,
        mode: str = "hybrid",
        query_vector: np.ndarray | None = None,
    ) -> list[Retrieved]:
        """Top chunks for ``question``, best first (re-ranked when a cross-encoder is configured)."""
        if not question.strip():
            raise AiforgeError("AF-INPUT-002", "the question is empty", "ask a question in words")
        top_k = top_k or self.settings.top_k
        wanted = max(top_k, self.settings.rerank_candidates) if self.settings.reranker else top_k
        if self.images and mode == "hybrid":
            mode = "dense"
        if self.store.searches_on_server:
            if query_vector is None and mode != "bm25":
                query_vector = self.embed_query(question)
            hits, chunks, names = self._search_on_server(question, query_vector, wanted, filters, mode)
            moved = False
        else:
            snapshot = self.snapshot()
            self.ensure_not_empty(snapshot)
            if query_vector is None and mode != "bm25":
                query_vector = self.embed_query(question)
            hits = hybrid_search(snapshot, query_vector, question, self.settings, wanted, filters, mode)
            with self.store.transaction():
                moved = self.store.state().generation != snapshot.state.generation
                chunks = [] if moved else self.store.chunks_at([h.pos for h in hits])
                names = self.store.source_names([c.source_id for c in chunks])
        if moved:  # compacted since the snapshot: row positions changed, search the new generation
            with self._lock:
                self._snapshot = None
            return self.search(question, top_k, filters, mode, query_vector)
        if self.settings.reranker:
            if self._reranker is None:
                self._reranker = Reranker(self.settings.reranker, self.settings.device)
            hits = self._reranker.rerank(question, hits, [c.text for c in chunks])
            by_pos = {c.pos: c for c in chunks}
            chunks = [by_pos[h.pos] for h in hits]
        return [
            Retrieved(h, c, names[c.source_id]) for h, c in zip(hits[:top_k], chunks[:top_k], strict=True)
        ]

    def _search_on_server(
        self,
        question: str,
        query_vector: np.ndarray | None,
        wanted: int,
        filters: dict[str, Any] | None,
        mode: str,
    ) -> tuple[list[Hit], list[ChunkRecord], dict[str, str]]:
        """Candidates, their fusion and their chunk rows from one read transaction of the server."""
        s = self.settings
        with self.store.transaction():
            candidates = self.store.search(
                query_vector,
                question,
                s.bm25_k1,
                s.bm25_b,
                s.bm25_max_df,
                s.candidates,
                filters,
                mode,
                s.hnsw_ef_search,
            )
            hits = fuse(candidates, s, wanted, mode)
            chunks = self.store.chunks_at([h.pos for h in hits])
            names = self.store.source_names([c.source_id for c in chunks])
            empty = not hits and self.store.live_count() == 0
        if empty:
            raise AiforgeError(
                "AF-RAG-002",
                f"index '{self.name}' has no chunks",
                f"ingest documents first: `aiforge rag ingest PATH --index {self.name}`",
            )
        return hits, chunks, names

    def close(self) -> None:
        self.store.close()
