"""One settings object for every RAG command, the server route and the Python API.

``RagSettings`` holds everything a user can choose; the CLI maps its options onto it, the server
builds one per request from its own settings, tests construct it directly. Fields that shape the
index itself (embedder, chunking) are recorded in the index at creation: reopening the index with
different explicit values is an error rather than a silently mixed index.

Layering (``RagSettings.load``, the grammar of :mod:`aiforge.config`): defaults < a YAML file
(``--config``) < ``AIFORGE_RAG_<FIELD>`` variables (e.g. ``AIFORGE_RAG_STORE_URL``, so a server and a
CLI on the same machine agree on where indexes live without repeating flags) < ``--set FIELD=VALUE``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from aiforge.cache import cache_dir
from aiforge.config import apply, apply_values, build, env_overrides, parse_sets, read_yaml_file

# The PostgreSQL store's HNSW ef_search. At 1,000,000 synthetic 384-d chunks (bench_rag_store.py
# --rows 1000000, m 16, ef_construction 64) recall@10 against exact search was 0.914 / 0.933 / 0.958 /
# 0.960 at 200 / 400 / 800 / 1000, p95 5.0 / 6.1 / 8.2 / 9.8 ms: 800 is the first past 0.95 (pgvector's
# default 40 gave 0.76). At 50,000 chunks 40 already reached 1.00; the wider search costs a smaller
# index less than the 8.2 ms it costs at 1,000,000.
HNSW_EF_SEARCH = 800

CONFIG_HINT = "a RAG config is a YAML mapping of RagSettings fields, e.g. 'top_k: 8'"

# Fields recorded in the index at creation (the index is meaningless with other values).
INDEX_FIELDS = ("embedder", "chunk_tokens", "chunk_overlap", "embed_heading")


class RagSettings(BaseModel):
    """Every knob of ingest, retrieval and answering, with defaults tuned on a KorQuAD dev split."""

    model_config = ConfigDict(extra="forbid")

    # where indexes live
    home: Path | None = Field(None, description="folder of embedded indexes; default $AIFORGE_HOME/rag")
    store_url: str | None = Field(
        None,
        description="server-backed store, e.g. postgresql://user@localhost:5432/db; None = embedded store",
    )
    hnsw_ef_search: int = Field(
        HNSW_EF_SEARCH,
        ge=1,
        le=1000,
        description="PostgreSQL store: HNSW candidates a dense query visits (more: higher recall, slower)",
    )
    # index shape (recorded at creation)
    embedder: str = Field(
        "multilingual-e5-small", description="packaged name, local path or sentence-transformers id"
    )
    chunk_tokens: int = Field(350, ge=16, le=2048, description="target chunk length in embedder tokens")
    chunk_overlap: int = Field(
        48, ge=0, description="tokens repeated between consecutive chunks of a section"
    )
    embed_heading: bool = Field(True, description="prefix each chunk's heading (title path) when embedding")
    # ingest
    batch_size: int = Field(32, ge=1, description="chunks embedded per call")
    prune: bool = Field(True, description="drop chunks of files that disappeared from an ingested folder")
    progress: bool = Field(True, description="show a progress bar on stderr (only on a terminal)")
    device: str = "cpu"
    # retrieval
    top_k: int = Field(5, ge=1, le=100)
    candidates: int = Field(50, ge=1, description="hits taken from each retriever before fusion")
    # Tuned on a dev split of KorQuAD (bench/bench_rag.py): min-max score fusion with the dense side at
    # 0.3 gave the best recall@1; the best weighted RRF (k=5, 0.3) was 1 point lower, plain RRF 1:1 3.5 lower.
    fusion: Literal["rrf", "score"] = Field(
        "score", description="min-max score fusion or weighted reciprocal rank fusion"
    )
    dense_weight: float = Field(0.3, ge=0)
    bm25_weight: float = Field(1.0, ge=0)
    rrf_k: int = Field(60, ge=1)
    bm25_k1: float = Field(1.2, gt=0)
    bm25_b: float = Field(0.75, ge=0, le=1)
    # 0.2 cuts the postings a question reads ~8x at 100k chunks; on the KorQuAD dev split recall@1 was
    # unchanged (hybrid 0.926 either way), 0.1 cost 1 point.
    bm25_max_df: float = Field(
        0.2, gt=0, le=1, description="skip query terms found in more than this share of chunks (speed)"
    )
    reranker: str | None = Field(None, description="cross-encoder model (path or id); None = no re-ranking")
    rerank_candidates: int = Field(20, ge=1)
    # answering
    generate: bool = Field(
        False,
        description="an LLM writes the answers: generator_url, else generator, else text-generation's "
        "default model (the packaged SmolLM2 offline)",
    )
    qa_model: str | None = Field(None, description="extractive QA model for the no-generator answer")
    generator: str | None = Field(None, description="local text-generation model (path, packaged or hub id)")
    generator_url: str | None = Field(
        None, description="OpenAI-compatible base URL, e.g. http://localhost:8000/v1"
    )
    generator_model: str = Field("default", description="model name sent to the OpenAI-compatible endpoint")
    generator_api_key_env: str = Field("OPENAI_API_KEY", description="env var holding the endpoint's API key")
    max_new_tokens: int = Field(256, ge=1)
    context_chunks: int = Field(4, ge=1, description="top chunks given to the answerer")
    # The extractive reader scores each chunk on its own, so a span's probability is not comparable
    # across chunks: a confident wrong span of the second chunk beats a right one of the first.
    # Measured with the 128-token examples/korquad-qa.yaml on 79 held-out questions (answer in the top chunk
    # for 96 %): F1 0.545 reading the top chunk, 0.43 / 0.37 / 0.35 reading 2 / 3 / 4.
    qa_context_chunks: int = Field(1, ge=1, description="top chunks the extractive QA model reads")
    # "Not in the documents" thresholds, chosen on the KorQuAD dev split to keep >= 97% of answerable
    # questions; held out, 95.9% answered when the article is indexed, 3.2% when it is not. The dense one
    # is specific to multilingual-e5-small (cosines of other models live on other scales): recalibrate.
    min_dense_score: float = Field(0.865, description="best dense cosine below this and ...")
    min_coverage: float = Field(
        0.5, ge=0, le=1, description="... best idf-weighted query-term coverage below this: not found"
    )
    # Picked by bench/bench_rag.py --answers-only on validation articles with the finished
    # examples/korquad-qa.yaml model (session 14, 128-token recipe): at 0.6, 95 % of test questions
    # answered when their article is indexed, 10 % when it is not (retrieval signals alone: 90 % / 0 %;
    # 20 questions each). The 256-token recipe's model (session 16): 0.8 picked, 100 % / 10 %.
    min_qa_score: float = Field(
        0.8,
        ge=0,
        le=1,
        description="with qa_model: a span at least this probable is answered even when the two "
        "thresholds above say not found",
    )

    @model_validator(mode="after")
    def _overlap_below_target(self) -> RagSettings:
        if self.chunk_overlap >= self.chunk_tokens:
            raise ValueError(
                f"chunk_overlap ({self.chunk_overlap}) must be below chunk_tokens ({self.chunk_tokens})"
            )
        return self

    @property
    def generates(self) -> bool:
        """Whether answers are written by an LLM (naming a generator implies it)."""
        return self.generate or bool(self.generator or self.generator_url)

    @property
    def index_home(self) -> Path:
        return Path(self.home) if self.home else cache_dir() / "rag"

    def index_fields(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in INDEX_FIELDS}

    def explicit_index_fields(self) -> dict[str, Any]:
        """The index-shaping fields the caller set on purpose (compared with a stored index)."""
        return {name: getattr(self, name) for name in INDEX_FIELDS if name in self.model_fields_set}

    @classmethod
    def from_env(cls, **overrides: Any) -> RagSettings:
        """Settings from ``AIFORGE_RAG_*`` variables, then ``overrides`` (None values are ignored)."""
        return cls.load(overrides=overrides)

    @classmethod
    def load(
        cls,
        config: str | Path | None = None,
        sets: Sequence[str] = (),
        overrides: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> RagSettings:
        """Defaults < ``config`` (a YAML file of these fields) < ``AIFORGE_RAG_*`` variables <
        ``overrides`` (typed values; None = not given) < ``sets`` (``--set KEY=VALUE``), the grammar
        of :mod:`aiforge.config`. Errors raise AF-CONFIG-001 naming the setting and the value."""
        raw: dict[str, Any] = read_yaml_file(config, CONFIG_HINT) if config else {}
        apply(raw, env_overrides("rag", environ))
        apply_values(raw, overrides or {})
        apply(raw, parse_sets(sets, example="top_k=8"))
        return build(cls, raw, "RAG settings", "fix the value; `aiforge rag ask --help`")
