"""The server-backed store: the same tables in PostgreSQL, vectors as bytea rows, scored in numpy.

Use it when several machines share one index or the corpus outgrows one disk's comfort: pass
``store_url="postgresql://user@host:5432/db"`` (CLI: ``--store-url``). Each index is a schema
``rag_<name>``. No extension is needed (pgvector is not required): readers pull the vectors once
into memory and then only the rows changed since their last look, so query latency is the same
numpy search as the embedded store. Needs ``pip install "psycopg[binary]"``.

Concurrency: writers take ``pg_try_advisory_lock`` (released by the server if the writer dies) and
record who they are in the ``state`` table; a second writer gets AF-RAG-004 naming the holder.
Readers read in REPEATABLE READ transactions, so each refresh sees one committed state.

Start a server for a quick try (what the tests do, see :class:`TemporaryPostgres`)::

    initdb -D /tmp/pg --auth=trust -U aiforge
    pg_ctl -D /tmp/pg -o "-p 5433 -k /tmp -c listen_addresses=127.0.0.1" -l /tmp/pg.log -w start
    aiforge rag ingest docs/ --index manuals --store-url postgresql://aiforge@127.0.0.1:5433/postgres
    pg_ctl -D /tmp/pg -m fast stop
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from aiforge.errors import AiforgeError, require
from aiforge.rag.lock import holder_note, locked_error
from aiforge.rag.store import State, Store, not_found


class PostgresStore(Store):
    placeholder = "%s"
    types = {"real": "DOUBLE PRECISION", "blob": "BYTEA"}
    stores_vectors_in_rows = True

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
                "start the server (see `aiforge rag --help`) or check --store-url / AIFORGE_RAG_STORE_URL",
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
        self._conn.execute(f'SET search_path TO "{self.schema}"')
        self._lock_key = zlib.crc32(self.schema.encode())

    def _connection(self) -> Any:
        return self._conn

    def _begin(self, write: bool) -> None:
        self._conn.execute("BEGIN" if write else "BEGIN ISOLATION LEVEL REPEATABLE READ")

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
            yield
        finally:
            with self._mutex:
                self._conn.execute("SELECT pg_advisory_unlock(%s)", (self._lock_key,))

    def _has_table(self, table: str) -> bool:
        return bool(
            self._rows(
                "SELECT 1 FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
                (self.schema, table),
            )
        )

    def initialise(self, config: dict[str, Any]) -> None:
        super().initialise(config)
        with self.transaction(write=True):
            self._put_state({"writer": holder_note()})

    def _append_vectors(self, state: State, vectors: np.ndarray) -> None:
        return None  # vectors travel in the chunk rows, inside the commit's transaction

    def vector_matrix(self, state: State, previous: np.ndarray | None = None) -> np.ndarray:
        have = 0 if previous is None else min(len(previous), state.n_rows)
        data = self._rows(
            "SELECT vector FROM chunk_data WHERE pos >= ? AND pos < ? ORDER BY pos", (have, state.n_rows)
        )
        dim = self.dim()
        new = np.frombuffer(b"".join(bytes(r[0]) for r in data), dtype=np.float32).reshape(-1, dim)
        return new if previous is None or have == 0 else np.concatenate([previous[:have], new])

    def _vector_rows(self, generation: int, positions: np.ndarray) -> np.ndarray:
        wanted = [int(p) for p in positions]
        marks = ",".join("?" * len(wanted))
        data = dict(self._rows(f"SELECT pos, vector FROM chunk_data WHERE pos IN ({marks})", wanted))
        return np.stack([np.frombuffer(bytes(data[p]), dtype=np.float32) for p in wanted])

    def _rewrite_vectors(self, old: State, keep: np.ndarray) -> None:
        return None  # vectors move with their rows

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
    """Where initdb/pg_ctl live: PATH, ``pg_config --bindir``, or Debian's /usr/lib/postgresql/N/bin."""
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

    def __init__(self, port: int = 55432) -> None:
        self.port = port
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
        self._run(
            "pg_ctl", "-D", str(data), "-o", options, "-l", str(self.directory / "server.log"), "-w", "start"
        )
        return f"postgresql://aiforge@127.0.0.1:{self.port}/postgres"

    def __exit__(self, *exc: object) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.directory / "data"), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)
