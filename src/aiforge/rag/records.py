"""The records an index stores: sources (the manifest), documents (stored text), chunks, and the
state a reader snapshots. Plain dataclasses shared by the stores, ingest and retrieval."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np


@dataclass
class SourceRecord:
    """One ingested file in the manifest: what was read and how it hashed."""

    source_id: str  # the file's absolute path (or a caller-chosen id for in-memory documents)
    content_hash: str  # sha256 of the bytes; unchanged hash -> nothing to do
    kind: str
    title: str = ""
    n_chunks: int = 0
    ingested_at: float = field(default_factory=time.time)


@dataclass
class ChunkRecord:
    source_id: str
    doc_key: str  # which stored document text the offsets refer to
    ordinal: int
    page: int
    heading: str
    kind: str
    start: int  # character offsets into the document text
    end: int
    text: str
    text_hash: str
    pos: int = -1  # row in the vector matrix, assigned at commit

    @property
    def chunk_id(self) -> str:
        return f"{self.doc_key}:{self.ordinal}"


@dataclass
class DocumentRecord:
    doc_key: str  # "<source_id>@<hash12>": an edited file gets a new key, old citations still resolve
    source_id: str
    text: str
    page_starts: list[int]


@dataclass
class SourceUpdate:
    """A parsed, chunked, embedded source, ready to replace whatever the index had for it."""

    source: SourceRecord
    document: DocumentRecord
    chunks: list[ChunkRecord]
    vectors: np.ndarray  # (len(chunks), dim) float32
    terms: list[bytes]  # BM25 term blobs, one per chunk


@dataclass
class State:
    version: int  # bumped by every commit
    generation: int  # bumped by every compaction (row positions change)
    n_rows: int


@dataclass
class Rows:
    """Per-row search metadata (no text) for rows ``[start, start + len)``."""

    start: int
    live: np.ndarray  # bool
    source_ids: list[str]
    kinds: list[str]
    headings: list[str]
    pages: np.ndarray  # int32
    terms: list[bytes | None]
