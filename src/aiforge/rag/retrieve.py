"""Hybrid retrieval: exact dense search + BM25 over one consistent snapshot, fused, filtered, re-ranked.

A :class:`Snapshot` is what one reader sees of an index at one version: the vector matrix
(memory-mapped for the embedded store), a live-row mask, per-row metadata for filters and the
BM25 segments. :meth:`Snapshot.refresh` moves it to the store's latest commit reading only the
rows added or deleted since (a full reload only after a compaction), so a server stays current
while a CLI ingests.

Fusion. Plain reciprocal-rank fusion lost to BM25 alone in the issue's measurement (0.843 vs 0.865
recall@1 on KorQuAD), because it gives the weaker retriever an equal vote. Both fusions here are
weighted: ``rrf`` scores ``w_dense / (k + rank_dense) + w_bm25 / (k + rank_bm25)``; ``score``
min-max normalises each retriever's scores over the candidate union and adds them with the same
weights. The default weights were tuned on a dev split of KorQuAD questions (``bench/bench_rag.py``)
and reported on the held-out rest.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from aiforge.errors import AiforgeError
from aiforge.rag.bm25 import BM25, Segment
from aiforge.rag.settings import RagSettings
from aiforge.rag.store import Rows, State, Store

FILTER_KEYS = ("source", "kind", "page", "heading")
MAX_SEGMENTS = 8  # more deltas than this: merge them into one (each query visits every segment)


class _Categories:
    """Strings stored once, rows hold small integer codes (cheap masks over 100k rows)."""

    def __init__(self) -> None:
        self.values: list[str] = []
        self.codes: dict[str, int] = {}

    def encode(self, items: list[str]) -> np.ndarray:
        out = np.empty(len(items), dtype=np.int32)
        for i, item in enumerate(items):
            code = self.codes.get(item)
            if code is None:
                code = self.codes[item] = len(self.values)
                self.values.append(item)
            out[i] = code
        return out

    def matching(self, predicate: Any) -> np.ndarray:
        return np.array([i for i, v in enumerate(self.values) if predicate(v)], dtype=np.int32)


@dataclass
class Snapshot:
    state: State
    vectors: np.ndarray
    live: np.ndarray
    pages: np.ndarray
    source_codes: np.ndarray
    kind_codes: np.ndarray
    heading_codes: np.ndarray
    segments: list[Segment]
    bm25: BM25
    categories: dict[str, _Categories] = field(default_factory=dict)

    @classmethod
    def empty(cls, store: Store, bm25: BM25) -> Snapshot:
        """No rows, only term statistics: what a reader of a server-searched store holds."""
        none = np.zeros(0, dtype=np.int32)
        return cls(
            store.state(),
            np.zeros((0, store.dim()), np.float32),
            none.astype(bool),
            none,
            none,
            none,
            none,
            [],
            bm25,
        )

    @classmethod
    def load(cls, store: Store, settings: RagSettings) -> Snapshot:
        with store.transaction():
            state = store.state()
            base = store.load_bm25_base(state)
            rows = store.rows(0, state.n_rows, terms_from=base.row_end if base else 0)
            vectors = store.vector_matrix(state)
        categories = {"source": _Categories(), "kind": _Categories(), "heading": _Categories()}
        segments = [base] if base else []
        start = base.row_end if base else 0
        if start < state.n_rows:
            segments.append(Segment.build(start, rows.terms[start:]))
        return cls(
            state,
            vectors,
            rows.live.copy(),
            rows.pages,
            categories["source"].encode(rows.source_ids),
            categories["kind"].encode(rows.kinds),
            categories["heading"].encode(rows.headings),
            segments,
            BM25(segments, settings.bm25_k1, settings.bm25_b, settings.bm25_max_df),
            categories,
        )

    def refresh(self, store: Store, settings: RagSettings) -> Snapshot:
        """The snapshot of the store's latest commit (self when nothing changed)."""
        state = store.state()
        if state.version == self.state.version:
            return self
        if state.generation != self.state.generation or state.n_rows < self.state.n_rows:
            return Snapshot.load(store, settings)
        with store.transaction():
            state = store.state()
            if state.generation != self.state.generation:
                return Snapshot.load(store, settings)
            new: Rows = store.rows(self.state.n_rows, state.n_rows)
            dead = store.dead_since(self.state.version)
            vectors = store.vector_matrix(state, previous=self.vectors)
        live = np.concatenate([self.live, new.live])
        live[dead[dead < len(live)]] = False
        segments = list(self.segments)
        if state.n_rows > self.state.n_rows:
            segments.append(Segment.build(self.state.n_rows, new.terms))
        if len(segments) > MAX_SEGMENTS:
            return Snapshot.load(store, settings)
        cats = self.categories
        return replace(
            self,
            state=state,
            vectors=vectors,
            live=live,
            pages=np.concatenate([self.pages, new.pages]),
            source_codes=np.concatenate([self.source_codes, cats["source"].encode(new.source_ids)]),
            kind_codes=np.concatenate([self.kind_codes, cats["kind"].encode(new.kinds)]),
            heading_codes=np.concatenate([self.heading_codes, cats["heading"].encode(new.headings)]),
            segments=segments,
            bm25=BM25(segments, settings.bm25_k1, settings.bm25_b, settings.bm25_max_df),
        )

    @property
    def live_count(self) -> int:
        return int(self.live.sum())

    def mask(self, filters: dict[str, Any] | None) -> np.ndarray:
        """Live rows passing ``filters``: source (glob/list), kind, page (n or [lo, hi]), heading."""
        mask = self.live.copy()
        for key, wanted in (filters or {}).items():
            if wanted is None:
                continue
            if key == "page":
                lo, hi = (wanted, wanted) if isinstance(wanted, int) else (int(wanted[0]), int(wanted[1]))
                mask &= (self.pages >= lo) & (self.pages <= hi)
            elif key in ("source", "kind", "heading"):
                codes = {"source": self.source_codes, "kind": self.kind_codes, "heading": self.heading_codes}[
                    key
                ]
                mask &= np.isin(codes, self.categories[key].matching(_matcher(key, wanted)))
            else:
                raise AiforgeError(
                    "AF-INPUT-002", f"unknown filter '{key}'", f"filters: {', '.join(FILTER_KEYS)}"
                )
        return mask


def _matcher(key: str, wanted: Any) -> Any:
    options = [str(w) for w in (wanted if isinstance(wanted, list | tuple) else [wanted])]
    if key == "heading":
        return lambda value: any(o.lower() in value.lower() for o in options)
    if key == "kind":
        return lambda value: value in {o.lower().lstrip(".") for o in options}
    # sources are stored by absolute path but named by their path in the ingested folder:
    # "guide/*.md" matches /srv/docs/guide/install.md
    return lambda value: any(
        value == o or fnmatch.fnmatch(value, o) or value.endswith("/" + o) or fnmatch.fnmatch(value, "*/" + o)
        for o in options
    )


@dataclass
class Hit:
    pos: int
    score: float
    dense: float  # cosine similarity
    bm25: float
    coverage: float  # idf-weighted share of the query's terms found in the chunk
    dense_rank: int | None = None  # 1-based rank in each retriever's candidates
    bm25_rank: int | None = None
    rerank: float | None = None


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` highest finite scores, best first."""
    k = min(k, len(scores))
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    part = np.argpartition(-scores, k - 1)[:k]
    part = part[np.isfinite(scores[part])]
    return part[np.argsort(-scores[part], kind="stable")]


def hybrid_search(
    snapshot: Snapshot,
    query_vector: np.ndarray | None,
    query: str,
    settings: RagSettings,
    top_k: int,
    filters: dict[str, Any] | None = None,
    mode: str = "hybrid",
) -> list[Hit]:
    """Fused top ``top_k`` rows; ``mode`` "dense" or "bm25" runs one retriever alone (for evaluation)."""
    mask = snapshot.mask(filters)
    n = settings.candidates
    dense = np.full(len(mask), -np.inf, dtype=np.float32)
    if query_vector is not None and mode != "bm25" and len(mask):
        dense = np.asarray(snapshot.vectors @ query_vector, dtype=np.float32)
        dense[~mask] = -np.inf
    keyword = snapshot.bm25.search(query) if mode != "dense" else None
    bm25 = keyword.scores if keyword is not None else np.zeros(len(mask), np.float32)
    bm25 = np.where(mask & (bm25 > 0), bm25, -np.inf)
    dense_top = _top(dense, n) if mode != "bm25" else np.zeros(0, np.int64)
    bm25_top = _top(bm25, n) if mode != "dense" else np.zeros(0, np.int64)
    union = np.array(sorted(set(dense_top.tolist()) | set(bm25_top.tolist())), dtype=np.int64)
    coverage = keyword.coverage if keyword is not None else np.zeros(len(mask), np.float32)
    return fuse(
        Candidates(
            union,
            dense[union],
            bm25[union],
            coverage[union],
            [int(p) for p in dense_top],
            [int(p) for p in bm25_top],
        ),
        settings,
        top_k,
        mode,
    )


@dataclass
class Candidates:
    """Each retriever's top rows and both scores of every row in their union, whoever found them.

    ``dense`` is the cosine similarity, ``bm25`` the keyword score (-inf where no query term
    matches), ``coverage`` the idf-weighted share of query terms present; the local snapshot and
    the server store (:meth:`Store.search`) both produce this, and :func:`fuse` ranks it.
    """

    union: np.ndarray  # row positions, int64
    dense: np.ndarray
    bm25: np.ndarray
    coverage: np.ndarray
    dense_top: list[int]  # best first
    bm25_top: list[int]


def fuse(candidates: Candidates, settings: RagSettings, top_k: int, mode: str = "hybrid") -> list[Hit]:
    """The fused top ``top_k`` of the candidates (weighted RRF or min-max score fusion)."""
    if not len(candidates.union):
        return []
    dense_rank = {p: r for r, p in enumerate(candidates.dense_top, 1)}
    bm25_rank = {p: r for r, p in enumerate(candidates.bm25_top, 1)}
    union, dense, bm25 = candidates.union, candidates.dense, candidates.bm25
    fused = _fuse(union, dense, bm25, dense_rank, bm25_rank, settings, mode)
    order = np.argsort(-fused, kind="stable")[:top_k]
    return [
        Hit(
            int(union[i]),
            float(fused[i]),
            _finite(dense[i]),
            _finite(bm25[i]),
            float(candidates.coverage[i]),
            dense_rank.get(int(union[i])),
            bm25_rank.get(int(union[i])),
        )
        for i in order
    ]


def _finite(value: float) -> float:
    return float(value) if np.isfinite(value) else 0.0


def _fuse(
    union: np.ndarray,
    dense: np.ndarray,  # scores of the union's rows
    bm25: np.ndarray,
    dense_rank: dict[int, int],
    bm25_rank: dict[int, int],
    settings: RagSettings,
    mode: str,
) -> np.ndarray:
    wd = settings.dense_weight if mode != "bm25" else 0.0
    wb = settings.bm25_weight if mode != "dense" else 0.0
    if mode == "dense":
        return dense.astype(np.float64)
    if mode == "bm25":
        return bm25.astype(np.float64)
    if settings.fusion == "rrf":
        k = settings.rrf_k
        return np.array(
            [wd / (k + dense_rank[p]) if p in dense_rank else 0.0 for p in union.tolist()]
        ) + np.array([wb / (k + bm25_rank[p]) if p in bm25_rank else 0.0 for p in union.tolist()])
    return wd * _minmax(dense) + wb * _minmax(bm25)


def _minmax(values: np.ndarray) -> np.ndarray:
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros(len(values))
    lo, hi = float(values[finite].min()), float(values[finite].max())
    out = (values - lo) / (hi - lo) if hi > lo else np.ones(len(values))
    return np.where(finite, out, 0.0)


class Reranker:
    """A sentence-transformers cross-encoder; scores (question, chunk) pairs, higher is more relevant."""

    def __init__(self, model: str, device: str = "cpu") -> None:
        from sentence_transformers import CrossEncoder

        from aiforge.models import resolve

        self.model = CrossEncoder(resolve(model).location, device=device)

    def rerank(self, question: str, hits: list[Hit], texts: list[str]) -> list[Hit]:
        if not hits:
            return hits
        scores = np.asarray(self.model.predict([(question, t) for t in texts], show_progress_bar=False))
        scores = scores.reshape(len(hits), -1)[:, -1]  # one logit, or the "relevant" class of two
        for hit, score in zip(hits, scores, strict=True):
            hit.rerank = float(score)
        return sorted(hits, key=lambda h: -(h.rerank or 0.0))
