"""Crashes and full disks around an index: `rag ingest` killed with SIGKILL, a disk that fills in the
middle of an ingest, index files cut short. The next command finds the last committed index whole, or
names the damaged file and the fix."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aiforge.errors import AiforgeError
from aiforge.rag import RagIndex, RagSettings, ingest
from aiforge.rag.index import open_store
from tests.conftest import fill_disk

REPO = Path(__file__).parents[2]


def write_articles(folder: Path, count: int, start: int = 0) -> Path:
    """``count`` short files, each naming its own number (so a search can ask for any of them)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + count):
        (folder / f"article-{i:03d}.txt").write_text(
            f"Article {i} says the warehouse number {i} opens at {i % 12 + 1} o'clock. " * 3,
            encoding="utf-8",
        )
    return folder


def test_sigkill_during_ingest_leaves_a_consistent_index_that_resumes(tmp_path: Path) -> None:
    docs = write_articles(tmp_path / "docs", 40)
    home = tmp_path / "indexes"
    command = [sys.executable, "-m", "aiforge", "rag", "ingest", str(docs), "--index", "kb"]
    command += ["--set", f"home={home}", "--set", "batch_size=2", "--set", "progress=false"]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "HF_HUB_OFFLINE": "1"}
    child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 180
    committed = 0
    while time.monotonic() < deadline and child.poll() is None:  # kill it once some batches are in
        if (home / "kb" / "meta.sqlite").exists():
            store = open_store("kb", RagSettings(home=home))
            with contextlib.suppress(sqlite3.OperationalError):  # its tables may not exist yet
                committed = len(store.sources())
            store.close()
            if committed >= 4:
                break
        time.sleep(0.2)
    child.send_signal(signal.SIGKILL)
    assert child.wait(30) == -9, "the ingest finished before it could be killed: give it more files"

    settings = RagSettings(home=home, progress=False)
    store = open_store("kb", settings)
    done = store.sources()
    assert 4 <= len(done) < 40
    assert store.live_count() == sum(s.n_chunks for s in done.values())  # no orphan or half sources
    store.close()

    resumed = ingest([docs], "kb", settings)
    assert resumed.unchanged == len(done) and len(resumed.added) == 40 - len(done)
    hit = RagIndex.open("kb", settings).search("When does warehouse number 37 open?", top_k=1)[0]
    assert hit.chunk.source_id.endswith("article-037.txt")


def test_full_disk_during_ingest_keeps_the_index_and_ingests_once_freed(
    small_disk: Path, tmp_path: Path, embedder
) -> None:
    settings = RagSettings(home=small_disk, progress=False, chunk_tokens=64, chunk_overlap=8)
    first = ingest([write_articles(tmp_path / "first", 3)], "kb", settings, embedder)
    assert len(first.added) == 3
    filler = fill_disk(small_disk, leave_bytes=16 * 1024)
    more = write_articles(tmp_path / "more", 60, start=100)
    with pytest.raises(AiforgeError) as err:
        ingest([more], "kb", settings, embedder)
    assert err.value.code == "AF-DISK-002" and "index 'kb'" in err.value.message and "df -h" in err.value.fix

    filler.unlink()  # (SQLite's readers need a little room too: its -shm file)
    index = RagIndex.open("kb", settings, embedder)  # the last commit answers, whole
    assert index.store.live_count() == first.chunks_total
    assert index.search("When does warehouse number 2 open?", top_k=1)[0].chunk.source_id.endswith(
        "article-002.txt"
    )
    again = ingest([more], "kb", settings, embedder)
    assert len(again.added) == 60 and again.chunks_total == first.chunks_total + again.chunks_embedded


@pytest.mark.parametrize("damage", ["vectors", "database"])
def test_cut_index_files_name_the_file_and_the_fix(tmp_path: Path, embedder, damage: str) -> None:
    settings = RagSettings(home=tmp_path / "indexes", progress=False)
    ingest([write_articles(tmp_path / "docs", 4)], "kb", settings, embedder)
    folder = tmp_path / "indexes" / "kb"
    for leftover in folder.glob("meta.sqlite-*"):  # fold the WAL in, as after a clean close
        leftover.unlink()
    target = next(folder.glob("vectors-*.f32")) if damage == "vectors" else folder / "meta.sqlite"
    os.truncate(target, target.stat().st_size // 3)
    with pytest.raises(AiforgeError) as err:
        RagIndex.open("kb", settings, embedder).search("warehouse 2", top_k=1)
    assert err.value.code == "AF-FILE-001" and str(target) in err.value.message
    assert f"delete the folder {folder}" in err.value.fix and "rag ingest" in err.value.fix
