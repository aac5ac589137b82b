"""``aiforge rag ingest ... --backend ray``: parsing and embedding on Ray, the index written here.

The ingest is :func:`aiforge.rag.ingest.ingest` itself (manifest, change detection, chunking,
vector reuse, one atomic commit per batch), with two of its steps moved to the cluster:

* parsing: every file that needs (re-)ingesting is parsed by a Ray task, ``PARSE_AHEAD`` files ahead
  of the writer, so PDFs and DOCX files parse in parallel while earlier batches are embedded;
* embedding: :class:`RayEmbedder` splits each batch of passages over a pool of embedding actors
  (each holds the embedder once) and puts the vectors back in order.

Chunking needs the embedder's tokenizer, so the driver loads the embedder too (for
``count_tokens``); the single writer (SQLite/memmap or PostgreSQL) stays in the driver.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from aiforge.rag.embed import load_embedder
from aiforge.rag.ingest import IngestReport, SourceInput
from aiforge.rag.ingest import ingest as local_ingest
from aiforge.rag.settings import RagSettings

PARSE_AHEAD = 32  # files parsed ahead of the writer


class EmbedActor:
    def __init__(self, model: str, device: str, env: dict[str, str]) -> None:
        import os

        os.environ.update(env)
        self.embedder = load_embedder(model, device)

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        return self.embedder.embed_passages(texts)


class RayEmbedder:
    """An :class:`~aiforge.rag.embed.Embedder` whose ``embed_passages`` runs on a pool of actors."""

    def __init__(self, model: str, device: str, workers: int) -> None:
        import ray

        from aiforge.scale.cluster import worker_env

        self.local = load_embedder(model, device)
        self.name = self.local.name
        remote = ray.remote(num_cpus=1)(EmbedActor)
        self.actors = [remote.remote(model, device, worker_env()) for _ in range(max(1, workers))]

    @property
    def dim(self) -> int:
        return self.local.dim

    def count_tokens(self, text: str) -> int:
        return self.local.count_tokens(text)

    def embed_queries(self, texts: list[str]) -> np.ndarray:
        return self.local.embed_queries(texts)

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        import ray

        share = -(-len(texts) // len(self.actors))  # ceil: one contiguous slice per actor
        parts = [texts[i : i + share] for i in range(0, len(texts), share)]
        # Ray types a method without @ray.method as the plain function (no ``.remote``); decorating it
        # would need ray imported at module load, and this module must import without ray (AF-RAY-001).
        refs = [
            actor.embed_passages.remote(part)  # type: ignore[union-attr]
            for actor, part in zip(self.actors, parts, strict=False)
        ]
        return np.concatenate(ray.get(refs)) if refs else np.zeros((0, self.dim), np.float32)


def _parse(source: SourceInput) -> Any:
    from aiforge.errors import AiforgeError

    try:
        return source.load()
    except AiforgeError as exc:
        return exc


def parse_ahead(sources: list[SourceInput]) -> list[SourceInput]:
    """The same sources, each parsed by a Ray task started ``PARSE_AHEAD`` files before it is needed."""
    import ray

    task = ray.remote(num_cpus=1)(_parse)
    refs: dict[int, Any] = {}

    def start(i: int) -> None:
        if i < len(sources) and i not in refs:
            refs[i] = task.remote(sources[i])

    def loader(i: int) -> Any:
        def load() -> Any:
            for j in range(i, i + PARSE_AHEAD):
                start(j)
            parsed = ray.get(refs.pop(i))
            if isinstance(parsed, Exception):
                raise parsed
            return parsed

        return load

    for j in range(PARSE_AHEAD):
        start(j)
    return [SourceInput(s.source_id, s.content_hash, loader(i), s.name) for i, s in enumerate(sources)]


def ingest(
    paths: Iterable[str | Path],
    index: str,
    settings: RagSettings | None = None,
    *,
    workers: int = 2,
    address: str | None = None,
    name: str | None = None,
) -> IngestReport:
    """:func:`aiforge.rag.ingest.ingest` with parsing and embedding on Ray (see the module doc)."""
    from aiforge.scale.cluster import connect

    connect(address)
    settings = settings or RagSettings()
    embedder = RayEmbedder(settings.embedder, settings.device, workers)
    return local_ingest(paths, index, settings, embedder, parse_ahead=parse_ahead, name=name)
