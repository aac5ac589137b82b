"""BM25 over character bigrams and words: keyword search that works for Korean without a morphology analyser.

Korean attaches particles and endings to words (임종석이, 임종석은, 임종석의), so whole-word matching
misses most hits. Character bigrams (임종, 종석, 석이) match the stem whatever the ending; whole
words are added for Latin text, numbers and codes. On the KorQuAD part used by the benchmark
(575 paragraphs, 3,316 questions) this BM25 alone reaches paragraph recall@1 0.911, recall@5 0.990.

Terms are hashed (CRC-32, 22 bits) to integer ids, so no vocabulary has to be stored or kept in
sync between writer and readers; collisions at 4M buckets are negligible for bigrams.

The index is term-major postings (rows sorted by term) in *segments*: one base segment built at the
end of an ingest and saved beside the index, plus a delta segment for rows added since, so a reader
refreshes in time proportional to what changed. BM25 weights are computed at query time from term
frequency, document length and global document frequency, so adding a segment never rewrites the
others. Rows deleted since a segment was built are masked by the caller; they still count in the
document frequencies until the next rebuild (a small, bounded skew).

Why not ``bm25s`` (measured with ``flock /tmp/aiforge-cpu.lock python bench/bench_bm25.py``, 2-core
box, 3 paired rounds, the same hashed bigram terms fed to both, bm25s ``method="lucene"``, which is
this formula up to the factor ``k1 + 1``; k1 1.2, b 0.75): the results are the same (658 KorQuAD
chunks, 3,316 questions: recall@1 0.9210, recall@5 0.9928, MRR 0.9537 for both, scores equal to
5e-7). At 107k chunks bm25s scores a query 3-5x faster (p50 with the default ``bm25_max_df`` 0.2:
0.40 / 0.45 / 0.39 ms vs 1.36 / 2.07 / 1.31 ms here; p95 1.03 / 4.80 / 0.80 vs 6.28 / 9.76 / 5.87
ms), because it stores each posting's final score, and builds 3.3-5.8x slower (45-76 s vs 8-17 s).
It stays hand-written because that precomputed score bakes the corpus-wide idf and average length
into every posting: a delta segment (rows committed since the base was built) cannot be scored
against global document frequencies without rebuilding the whole index, which is what lets a
reader refresh in time proportional to what changed; and bm25s returns no per-row ``coverage``
(the idf-weighted share of query terms, used for "not found" and sentence support), which needs
these postings anyway. Either side's BM25 share of a query is a few ms of the RAG query's p95.
"""

from __future__ import annotations

import re
import unicodedata
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HASH_BITS = 22
SKIP_MIN_DF = 1000  # never skip a query term that occurs in fewer chunks than this
_MASK = (1 << HASH_BITS) - 1
_WORD = re.compile(r"\w+")
_HANGUL = re.compile("[\uac00-\ud7a3\u3131-\u318e]")


def tokenize(text: str) -> list[str]:
    """Character bigrams over the words joined by single spaces, plus whole words that have no Hangul.

    Bigrams cross word boundaries (``"서울 대"``), so compounds written with or without a space
    (서울대학교, 서울 대학교) still share most terms. Whole Korean words are left out: with particles
    attached they rarely repeat (on KorQuAD they lowered recall@1 from 0.911 to 0.907); Latin words,
    numbers and codes keep their whole-word term.
    """
    words = _WORD.findall(unicodedata.normalize("NFKC", text).lower())
    joined = " ".join(words)
    tokens = ["w:" + word for word in words if not _HANGUL.search(word)]
    if len(joined) == 1:
        tokens.append(joined)
    tokens.extend(joined[i : i + 2] for i in range(len(joined) - 1))
    return tokens


def term_ids(text: str) -> Counter[int]:
    """Hashed term id -> count."""
    return Counter(zlib.crc32(token.encode("utf-8")) & _MASK for token in tokenize(text))


def encode_terms(text: str) -> bytes:
    """A chunk's term counts as bytes (stored per chunk): int32 pairs (term id, count)."""
    counts = term_ids(text)
    pairs = np.array(sorted(counts.items()), dtype=np.int32).reshape(-1, 2)
    return pairs.tobytes()


def decode_terms(blob: bytes) -> tuple[np.ndarray, np.ndarray]:
    pairs = np.frombuffer(blob, dtype=np.int32).reshape(-1, 2)
    return pairs[:, 0], pairs[:, 1]


@dataclass
class Segment:
    """Postings of rows ``[row_start, row_end)``: for each distinct term, its rows and counts."""

    row_start: int
    row_end: int
    terms: np.ndarray  # (T,) int32 sorted distinct term ids
    offsets: np.ndarray  # (T + 1,) int64 start of each term's postings
    rows: np.ndarray  # (P,) int32 row ids
    tfs: np.ndarray  # (P,) uint16 term counts
    doc_len: np.ndarray  # (row_end - row_start,) float32 terms per row

    @classmethod
    def build(cls, row_start: int, blobs: list[bytes | None]) -> Segment:
        """From per-row term blobs (None for a row that has none, e.g. deleted and vacuumed)."""
        ids, counts, rows, lengths = [], [], [], np.zeros(len(blobs), dtype=np.float32)
        for i, blob in enumerate(blobs):
            if not blob:
                continue
            term, count = decode_terms(blob)
            ids.append(term)
            counts.append(count)
            rows.append(np.full(len(term), row_start + i, dtype=np.int32))
            lengths[i] = count.sum()
        if not ids:
            empty = np.zeros(0, dtype=np.int32)
            return cls(
                row_start,
                row_start + len(blobs),
                empty,
                np.zeros(1, np.int64),
                empty,
                np.zeros(0, np.uint16),
                lengths,
            )
        all_ids, all_counts, all_rows = np.concatenate(ids), np.concatenate(counts), np.concatenate(rows)
        order = np.argsort(all_ids, kind="stable")  # stable: rows stay ascending within a term
        sorted_ids = all_ids[order]
        terms, starts = np.unique(sorted_ids, return_index=True)
        offsets = np.append(starts, len(sorted_ids)).astype(np.int64)
        return cls(
            row_start,
            row_start + len(blobs),
            terms.astype(np.int32),
            offsets,
            all_rows[order],
            np.minimum(all_counts[order], 65535).astype(np.uint16),
            lengths,
        )

    def df(self, query_terms: np.ndarray) -> np.ndarray:
        """Document frequency of each query term in this segment."""
        if not len(self.terms):
            return np.zeros(len(query_terms), dtype=np.int64)
        pos = np.minimum(np.searchsorted(self.terms, query_terms), len(self.terms) - 1)
        return np.where(self.terms[pos] == query_terms, self.offsets[pos + 1] - self.offsets[pos], 0)

    def postings(self, term: int) -> tuple[np.ndarray, np.ndarray]:
        i = int(np.searchsorted(self.terms, term))
        if i >= len(self.terms) or self.terms[i] != term:
            return self.rows[:0], self.tfs[:0]
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        return self.rows[a:b], self.tfs[a:b]

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp.npz")
        np.savez(
            tmp,
            bounds=np.array([self.row_start, self.row_end]),
            terms=self.terms,
            offsets=self.offsets,
            rows=self.rows,
            tfs=self.tfs,
            doc_len=self.doc_len,
        )
        tmp.replace(path)  # atomic: a reader never sees half a file

    @classmethod
    def load(cls, path: Path) -> Segment:
        data = np.load(path)
        start, end = (int(x) for x in data["bounds"])
        return cls(start, end, data["terms"], data["offsets"], data["rows"], data["tfs"], data["doc_len"])


@dataclass
class BM25Hits:
    scores: np.ndarray  # (n_rows,) float32 BM25 score of every row (0 when no term matches)
    coverage: np.ndarray  # (n_rows,) float32 idf-weighted share of the query terms a row contains


class BM25:
    """BM25 over segments that together cover rows ``[0, n_rows)``."""

    def __init__(
        self, segments: list[Segment], k1: float = 1.2, b: float = 0.75, max_df: float = 1.0
    ) -> None:
        self.segments = segments
        self.k1, self.b = k1, b
        self.max_df = max_df
        self.n_rows = segments[-1].row_end if segments else 0
        doc_len = np.concatenate([s.doc_len for s in segments]) if segments else np.zeros(0, np.float32)
        indexed = max(int((doc_len > 0).sum()), 1)
        avgdl = float(doc_len.sum()) / indexed if doc_len.size else 1.0
        # per-row length normalisation of BM25's denominator: k1 * (1 - b + b * dl / avgdl)
        self.norm = (k1 * (1 - b + b * doc_len / max(avgdl, 1e-9))).astype(np.float32)
        self.n_docs = indexed

    def idf(self, query_terms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(idf, df) of each query term over all segments."""
        df = sum((s.df(query_terms) for s in self.segments), np.zeros(len(query_terms), np.int64))
        return np.log1p((self.n_docs - df + 0.5) / (df + 0.5)).astype(np.float32), df

    def search(self, query: str) -> BM25Hits:
        counts = term_ids(query)
        scores = np.zeros(self.n_rows, dtype=np.float32)
        coverage = np.zeros(self.n_rows, dtype=np.float32)
        if not counts or not self.n_rows:
            return BM25Hits(scores, coverage)
        terms = np.fromiter(counts.keys(), dtype=np.int32, count=len(counts))
        qtf = np.fromiter(counts.values(), dtype=np.float32, count=len(counts))
        idf, df = self.idf(terms)
        total_idf = float((idf * qtf).sum()) or 1.0
        keep = self._scored_terms(df)
        rows_parts, weight_parts, cover_parts = [], [], []
        for term, w_idf, w_q in zip(terms[keep], idf[keep], qtf[keep], strict=True):
            for segment in self.segments:
                rows, tfs = segment.postings(int(term))
                if not len(rows):
                    continue
                tf = tfs.astype(np.float32)
                rows_parts.append(rows)
                weight_parts.append(w_q * w_idf * tf * (self.k1 + 1) / (tf + self.norm[rows]))
                cover_parts.append(np.full(len(rows), w_q * w_idf / total_idf, dtype=np.float32))
        if rows_parts:
            rows = np.concatenate(rows_parts)
            scores = np.bincount(rows, np.concatenate(weight_parts), minlength=self.n_rows).astype(np.float32)
            coverage = np.bincount(rows, np.concatenate(cover_parts), minlength=self.n_rows).astype(
                np.float32
            )
        return BM25Hits(scores, coverage)

    def _scored_terms(self, df: np.ndarray) -> np.ndarray:
        """Query terms worth scoring: present, and in at most ``max_df`` of the chunks.

        Bigrams of particles and spaces ("은 ", "는 ", "이 ") occur in most Korean chunks; their idf is
        low but their postings are most of the work (at 100k chunks, ~800k postings per question, 94%
        of them from terms in more than 10% of chunks). Skipping them keeps latency flat as the
        corpus grows; the rarest few terms are always kept, so a query of common terms still scores.
        A term is only skipped when it is also frequent in absolute terms (``SKIP_MIN_DF`` chunks): in
        a small index every term is cheap and all of them help.
        """
        present = df > 0
        keep = present & (df <= max(self.max_df * self.n_docs, SKIP_MIN_DF))
        if not keep.any() and present.any():
            keep = present & (df <= np.sort(df[present])[:3][-1])
        return keep

    def coverage(self, query: str, text: str) -> float:
        """Idf-weighted share of the query's terms that occur in ``text`` (rare terms count most)."""
        counts = term_ids(query)
        if not counts:
            return 0.0
        present = term_ids(text)
        terms = np.fromiter(counts.keys(), dtype=np.int32, count=len(counts))
        idf, _ = self.idf(terms)
        hit = np.array([int(t) in present for t in terms], dtype=np.float32)
        return float((idf * hit).sum() / max(float(idf.sum()), 1e-9))


def query_coverage(query: str, text: str) -> float:
    """Idf-free share of the query's terms found in ``text`` (used to pick a supporting sentence)."""
    q = term_ids(query)
    if not q:
        return 0.0
    t = term_ids(text)
    return sum(min(c, t[k]) for k, c in q.items()) / sum(q.values())
