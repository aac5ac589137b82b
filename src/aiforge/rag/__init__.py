"""RAG over your own documents: ingest, hybrid retrieval, cited answers, evaluation.

The four calls the CLI and the server use::

    from aiforge.rag import RagSettings, ingest, ask, query, evaluate

    settings = RagSettings()                                   # or RagSettings.from_env(top_k=8)
    report = ingest(["docs/"], "manuals", settings)            # IngestReport (.to_dict())
    answer = ask("설치 방법은?", "manuals", settings)            # Answer (.to_dict()), citations checked
    body = query("manuals", "설치 방법은?", top_k=5)              # JSON body of POST /v1/rag/{index}/query
    metrics = evaluate("qa.jsonl", "manuals", settings)        # {"recall@1": ..., "MRR": ..., "EM": ...}

Importing this package is light (numpy only); models load on first use.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aiforge.rag.answer import Answer, Citation, answer_question, stream_answer
from aiforge.rag.eval import evaluate
from aiforge.rag.index import RagIndex
from aiforge.rag.ingest import IngestReport, SourceInput, ingest, ingest_sources
from aiforge.rag.settings import RagSettings

__all__ = [
    "compact",
    "index_info",
    "Answer",
    "Citation",
    "IngestReport",
    "RagIndex",
    "RagSettings",
    "SourceInput",
    "ask",
    "evaluate",
    "ingest",
    "ingest_sources",
    "list_indexes",
    "query",
    "stream_query",
    "get_index",
    "close_indexes",
]

_OPEN: dict[tuple[str, str], RagIndex] = {}
_OPEN_LOCK = threading.Lock()


def get_index(name: str, settings: RagSettings | None = None) -> RagIndex:
    """An opened index, kept open per (name, settings) so a server reuses snapshots and models."""
    settings = settings or RagSettings.from_env()
    key = (name, settings.model_dump_json())
    with _OPEN_LOCK:
        if key not in _OPEN:
            _OPEN[key] = RagIndex.open(name, settings)
        return _OPEN[key]


def close_indexes() -> None:
    """Close every index :func:`get_index` opened (server shutdown, tests)."""
    with _OPEN_LOCK:
        for index in _OPEN.values():
            index.close()
        _OPEN.clear()


def ask(
    question: str,
    index: str,
    settings: RagSettings | None = None,
    top_k: int | None = None,
    filters: dict[str, Any] | None = None,
    generate: bool | None = None,
) -> Answer:
    """Answer ``question`` from ``index`` with checked citations (or say the documents do not contain it).

    ``generate=True`` has an LLM write the answer (``settings.generator``, else text-generation's
    default model), each statement checked; None follows ``settings``."""
    return answer_question(
        get_index(index, settings), question, top_k=top_k, filters=filters, generate=generate
    )


def query(
    index: str,
    question: str,
    top_k: int = 5,
    filters: dict[str, Any] | None = None,
    answer: bool = True,
    settings: RagSettings | None = None,
    generate: bool | None = None,
) -> dict[str, Any]:
    """The body of ``POST /v1/rag/{index}/query``: answer, citations and the retrieved chunks, JSON-ready.

    ``answer=False`` skips answering and returns only the chunks; ``generate`` as in :func:`ask`.
    Raises ``AiforgeError`` (AF-RAG-001 unknown index -> 404, AF-RAG-002 empty index, AF-INPUT-002
    bad filter) for the server to map.
    """
    rag = get_index(index, settings)
    if answer:
        body = answer_question(rag, question, top_k=top_k, filters=filters, generate=generate).to_dict()
    else:
        body = {"question": question, "chunks": [r.to_dict() for r in rag.search(question, top_k, filters)]}
    return {"index": index, **body}


def stream_query(
    index: str,
    question: str,
    top_k: int | None = None,
    filters: dict[str, Any] | None = None,
    settings: RagSettings | None = None,
) -> Iterator[dict[str, Any]]:
    """``query`` with an LLM-written answer, as events (:func:`aiforge.rag.answer.stream_answer`):
    the retrieved chunks, the answer's pieces as they are written, then the checked answer."""
    rag = get_index(index, settings)
    for event in stream_answer(rag, question, top_k=top_k, filters=filters):
        yield {"index": index, **event} if event["event"] == "answer" else event


def index_info(index: str, settings: RagSettings | None = None) -> dict[str, Any]:
    """What ``aiforge rag info`` prints: where the index is, what it holds, how it was built."""
    from aiforge.rag.index import open_store

    settings = settings or RagSettings.from_env()
    store = open_store(index, settings)
    try:
        state = store.state()
        where = "postgresql" if settings.store_url else str(settings.index_home / index)
        return {
            "index": index,
            "store": where,
            "sources": len(store.sources()),
            "chunks": store.live_count(),
            "rows": state.n_rows,
            "version": state.version,
            "config": store.config(),
        }
    finally:
        store.close()


def compact(index: str, settings: RagSettings | None = None) -> dict[str, Any]:
    """Drop deleted chunks and unused document texts now (ingest also does it when they dominate)."""
    from aiforge.rag.index import open_store

    store = open_store(index, settings or RagSettings.from_env())
    try:
        with store.writer():
            before = store.state().n_rows
            after = store.compact()
        return {"index": index, "rows_before": before, "rows_after": after.n_rows}
    finally:
        store.close()


def list_indexes(settings: RagSettings | None = None) -> list[str]:
    """Names of the embedded indexes under ``settings.index_home``."""
    settings = settings or RagSettings.from_env()
    home = Path(settings.index_home)
    return sorted(p.name for p in home.glob("*") if (p / "meta.sqlite").exists()) if home.exists() else []
