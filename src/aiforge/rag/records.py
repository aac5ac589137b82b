"""The records an index stores: sources (the manifest), documents (stored text), chunks, and the
state a reader snapshots. Plain dataclasses shared by the stores, ingest and retrieval."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

import numpy as np


@dataclass
class SourceRecord:
    """One ingested file in the manifest: what was read and how it hashed."""

    source_id: str  # the file's absolute path (or a caller-chosen id for in-memory documents): internal
    content_hash: str  # sha256 of the bytes; unchanged hash -> nothing to do
    kind: str
    title: str = ""
    n_chunks: int = 0
    ingested_at: float = field(default_factory=time.time)
    name: str = ""  # what clients see (path relative to the ingested folder); "" -> display_name(source_id)


def display_name(source_id: str) -> str:
    """A source's name for clients when the index stored none (indexes built before names were
    stored, in-memory documents): a file path becomes its file name, never the server's folders;
    any other id is shown as given. ``/srv/docs/a.json#Title/0`` -> ``a.json#Title/0``."""
    path, hash_mark, part = source_id.partition("#")
    if not (path.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:[\\/]", path)):
        return source_id
    return re.split(r"[\\/]", path)[-1] + hash_mark + part


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
