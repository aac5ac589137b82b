"""BM25: aiforge's hand-written postings (``aiforge.rag.bm25``) vs ``bm25s``, on the same terms.

Not a test: prints a side-by-side table (ours / bm25s ratios) from paired rounds.

* Terms: both get exactly aiforge's character-bigram terms (``term_ids``, hashed ids with counts);
  bm25s gets them as token-id lists (hashed ids mapped to its contiguous vocabulary), so only the
  index and the scoring differ.
* Scoring: bm25s ``method="lucene"``: idf ``log(1 + (N - df + 0.5) / (df + 0.5))`` and
  ``tf / (tf + k1 * (1 - b + b * dl / avgdl))``, which is aiforge's formula up to the constant factor
  ``k1 + 1`` (applied to bm25s's scores here so both print the same numbers); a query term that
  occurs twice counts twice in both. Same k1/b (the RAG defaults, 1.2 / 0.75).
* Quality: KorQuAD chunks (the bench_rag corpus: every paragraph of
  ../shared/data/korquad/KorQuAD_v1.0_dev_part_a.json, titled, chunked as ingest does with the
  estimated token count), every question; a hit is relevant when it is a chunk of the question's
  own paragraph. ``max_df=1.0``: exact BM25 on both sides.
* Speed: the chunks copied to ``--rows`` (107k, the size bench_rag's latency index reaches), built
  from the term blobs the store keeps; query latency of a full score vector, with exact BM25 and
  with the RAG default ``bm25_max_df`` skip (the same skip applied to bm25s's query ids).

    flock /tmp/aiforge-cpu.lock .venv/bin/python bench/bench_bm25.py [--rows 107000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
KORQUAD = ROOT.parent / "shared" / "data" / "korquad" / "KorQuAD_v1.0_dev_part_a.json"

import bm25s  # noqa: E402
from bm25s.tokenization import Tokenized  # noqa: E402

from aiforge.rag.bm25 import BM25, SKIP_MIN_DF, Segment, decode_terms, encode_terms, term_ids  # noqa: E402
from aiforge.rag.chunk import chunk_spans, estimate_tokens  # noqa: E402
from aiforge.rag.ingest import embed_text  # noqa: E402
from aiforge.rag.parse import ParsedDocument  # noqa: E402
from aiforge.rag.settings import RagSettings  # noqa: E402

SETTINGS = RagSettings()


def korquad() -> tuple[list[str], list[tuple[str, set[int]]]]:
    """Chunk texts as BM25 sees them, and (question, rows of its paragraph's chunks)."""
    data = json.loads(KORQUAD.read_text(encoding="utf-8"))["data"]
    texts: list[str] = []
    questions: list[tuple[str, set[int]]] = []
    for article in data:
        for paragraph in article["paragraphs"]:
            doc = ParsedDocument(paragraph["context"], "txt", title=article["title"])
            first = len(texts)
            for span in chunk_spans(doc, estimate_tokens, SETTINGS.chunk_tokens, SETTINGS.chunk_overlap):
                texts.append(
                    embed_text(doc.heading_at(span.start), doc.text[span.start : span.end], SETTINGS)
                )
            rows = set(range(first, len(texts)))
            questions.extend((qa["question"], rows) for qa in paragraph["qas"])
    return texts, questions


class Bm25sIndex:
    """bm25s over aiforge's hashed terms: the thin wrapper rag/bm25.py would become."""

    def __init__(self, blobs: list[bytes], k1: float, b: float, max_df: float) -> None:
        decoded = [decode_terms(blob) for blob in blobs]
        vocab = np.unique(np.concatenate([ids for ids, _ in decoded]))
        self.vocab = {int(term): i for i, term in enumerate(vocab)}
        ids = [np.repeat(np.searchsorted(vocab, t), c).tolist() for t, c in decoded]
        self.retriever = bm25s.BM25(k1=k1, b=b, method="lucene")
        self.retriever.index(Tokenized(ids=ids, vocab=self.vocab), show_progress=False)
        indptr = self.retriever.scores["indptr"]
        self.df = np.diff(indptr)
        self.n_docs, self.scale, self.max_df = len(blobs), k1 + 1, max_df

    def scores(self, query: str) -> np.ndarray:
        counts = term_ids(query)
        known = [(self.vocab[t], c) for t, c in counts.items() if t in self.vocab]
        if not known:
            return np.zeros(self.n_docs, np.float32)
        ids = np.array([i for i, _ in known])
        df = self.df[ids]
        keep = df <= max(self.max_df * self.n_docs, SKIP_MIN_DF)  # aiforge's skip of very common terms
        if not keep.any():
            keep = df <= np.sort(df)[:3][-1]
        query_ids = [i for (i, c), k in zip(known, keep, strict=True) if k for _ in range(c)]
        return self.retriever.get_scores_from_ids(query_ids) * self.scale


def ours(blobs: list[bytes], k1: float, b: float, max_df: float) -> BM25:
    return BM25([Segment.build(0, blobs)], k1, b, max_df)


def first_relevant_rank(scores: np.ndarray, relevant: set[int], depth: int = 10) -> int | None:
    top = np.lexsort((np.arange(len(scores)), -scores))[:depth]  # score desc, then row: the same ties
    return next((r for r, row in enumerate(top.tolist(), 1) if row in relevant and scores[row] > 0), None)


def metrics(ranks: list[int | None]) -> dict[str, float]:
    n = len(ranks)
    return {
        "recall@1": sum(r == 1 for r in ranks) / n,
        "recall@5": sum(r is not None and r <= 5 for r in ranks) / n,
        "MRR": sum(1 / r for r in ranks if r) / n,
    }


def quality(texts, questions, k1: float, b: float) -> None:
    blobs = [encode_terms(t) for t in texts]
    ours_index, theirs = ours(blobs, k1, b, 1.0), Bm25sIndex(blobs, k1, b, 1.0)
    ranks: dict[str, list[int | None]] = {"ours": [], "bm25s": []}
    worst = 0.0
    for question, relevant in questions:
        a, c = ours_index.search(question).scores, theirs.scores(question)
        worst = max(worst, float(np.max(np.abs(a - c) / np.maximum(np.abs(a), 1e-3))))
        ranks["ours"].append(first_relevant_rank(a, relevant))
        ranks["bm25s"].append(first_relevant_rank(c, relevant))
    print(f"quality: {len(texts)} chunks, {len(questions)} questions, k1 {k1} b {b}, exact BM25 (lucene idf)")
    for name, r in ranks.items():
        print(f"  {name:6s} " + "  ".join(f"{k} {v:.4f}" for k, v in metrics(r).items()))
    print(f"  largest relative score difference: {worst:.2e}", flush=True)


def speed(texts, questions, rows: int, rounds: int, n_queries: int, k1: float, b: float) -> None:
    base = [encode_terms(t) for t in texts]
    blobs = [base[i % len(base)] for i in range(rows)]
    queries = [q for q, _ in questions[:n_queries]]
    print(f"speed: {rows} chunks, {len(queries)} queries, {rounds} paired rounds (order alternates)")
    header = f"  {'round':5s} {'build ours s':>12s} {'bm25s s':>8s} {'ratio':>6s}"
    for label in ("exact", f"max_df {SETTINGS.bm25_max_df}"):
        header += f" | {label + ' p50/p95 ours ms':>28s} {'bm25s ms':>15s} {'ratio p50/p95':>14s}"
    print(header, flush=True)
    for r in range(rounds):
        built: dict[str, float] = {}
        for name in ("ours", "bm25s") if r % 2 == 0 else ("bm25s", "ours"):
            start = time.perf_counter()
            index = ours(blobs, k1, b, 1.0) if name == "ours" else Bm25sIndex(blobs, k1, b, 1.0)
            built[name] = time.perf_counter() - start
            if name == "ours":
                ours_index = index
            else:
                theirs = index
            del index
        ratio = built["bm25s"] / built["ours"]
        line = f"  {r + 1:5d} {built['ours']:12.2f} {built['bm25s']:8.2f} {ratio:6.2f}"
        for max_df in (1.0, SETTINGS.bm25_max_df):
            ours_index.max_df = theirs.max_df = max_df
            times: dict[str, list[float]] = {"ours": [], "bm25s": []}
            for i, query in enumerate(queries):
                for name in ("ours", "bm25s") if (i + r) % 2 == 0 else ("bm25s", "ours"):
                    start = time.perf_counter()
                    _ = ours_index.search(query).scores if name == "ours" else theirs.scores(query)
                    times[name].append((time.perf_counter() - start) * 1000)
            p = {n: np.percentile(t, [50, 95]) for n, t in times.items()}
            line += (
                f" | {p['ours'][0]:16.2f} / {p['ours'][1]:9.2f} {p['bm25s'][0]:6.2f} / {p['bm25s'][1]:6.2f}"
                f" {p['bm25s'][0] / p['ours'][0]:6.2f} / {p['bm25s'][1] / p['ours'][1]:5.2f}"
            )
        print(line + "   (ratio: bm25s / ours, >1 means ours is faster)", flush=True)
        del ours_index, theirs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=107_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--skip-quality", action="store_true")
    args = parser.parse_args()
    texts, questions = korquad()
    k1, b = SETTINGS.bm25_k1, SETTINGS.bm25_b
    if not args.skip_quality:
        quality(texts, questions, k1, b)
    if args.rows:
        speed(texts, questions, args.rows, args.rounds, args.queries, k1, b)


if __name__ == "__main__":
    main()
