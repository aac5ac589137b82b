"""Hostile files in `rag ingest`: links out of the folder and ZIP bombs are reported per file, the
ingest goes on, and what the index already holds stays (issue 21 item 2)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from aiforge.rag import RagSettings, ingest
from aiforge.rag import parse as rag_parse


@pytest.fixture
def settings(tmp_path: Path) -> RagSettings:
    return RagSettings(home=tmp_path / "indexes", progress=False, chunk_tokens=64, chunk_overlap=8)


def test_links_out_of_the_folder_are_skipped(docs: Path, settings: RagSettings, embedder, tmp_path: Path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("the root password is hunter2\n", encoding="utf-8")
    (docs / "leak.txt").symlink_to(outside / "secret.txt")
    (docs / "linked").symlink_to(outside, target_is_directory=True)
    (docs / "inside.txt").symlink_to(docs / "notes.txt")  # a link that stays inside is fine
    report = ingest([docs], "kb", settings, embedder)
    refused = sorted((Path(f["source"]).name, f["code"]) for f in report.failed)
    assert ("leak.txt", "AF-INPUT-001") in refused
    assert all("outside" in f["message"] for f in report.failed)
    assert not any("hunter2" in p for p in embedder.passages)
    assert "inside.txt" in {Path(s).name for s in report.added}


def test_a_docx_bomb_fails_alone_and_keeps_the_index(
    docs: Path, settings: RagSettings, embedder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    first = ingest([docs], "kb", settings, embedder)
    monkeypatch.setattr(rag_parse, "MAX_DOCX_UNPACKED_BYTES", 1 << 20)  # the real limit is 256 MiB
    with zipfile.ZipFile(docs / "bomb.docx", "w", zipfile.ZIP_DEFLATED) as bomb:
        bomb.writestr("word/document.xml", b"<w:t>" + b"a" * (8 << 20) + b"</w:t>")
    assert (docs / "bomb.docx").stat().st_size < 100_000
    again = ingest([docs], "kb", settings, embedder)
    assert [(Path(f["source"]).name, f["code"]) for f in again.failed] == [("bomb.docx", "AF-RAG-003")]
    assert "decompression bomb" in again.failed[0]["message"]
    assert again.unchanged == len(first.added) and not again.deleted


def test_not_a_zip_is_a_parse_error(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="not a ZIP archive"):
        rag_parse.refuse_zip_bomb(tmp_path / "x.docx", b"plain bytes", 1 << 20)


def _bomb_pdf(inflated_mb: int) -> bytes:
    """A one-page PDF whose compressed content stream inflates to ``inflated_mb`` MB of text."""
    import io
    import zlib

    line = b"BT /F1 12 Tf 72 712 Td " + b"(AAAAAAAAAAAAAAAAAAAA) Tj " * 40_000 + b" ET\n"
    packer = zlib.compressobj(9)
    stream = b"".join(packer.compress(line) for _ in range(inflated_mb * 2**20 // len(line) + 1))
    stream += packer.flush()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = io.BytesIO(b"%PDF-1.4\n")
    out.seek(0, 2)
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % number + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    out.write(b"".join(b"%010d 00000 n \n" % offset for offset in offsets))
    out.write(b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref))
    return out.getvalue()


def test_a_pdf_bomb_fails_alone_in_bounded_time(docs: Path, settings: RagSettings, embedder) -> None:
    import time

    first = ingest([docs], "kb", settings, embedder)
    (docs / "bomb.pdf").write_bytes(_bomb_pdf(300))  # under 1 MB on disk, 300 MB of text inside
    assert (docs / "bomb.pdf").stat().st_size < 2_000_000
    started = time.perf_counter()
    again = ingest([docs], "kb", settings, embedder)
    assert time.perf_counter() - started < 30
    assert [(Path(f["source"]).name, f["code"]) for f in again.failed] == [("bomb.pdf", "AF-RAG-003")]
    assert "decompression bomb" in again.failed[0]["message"]
    assert again.unchanged == len(first.added) and not again.deleted


def test_a_pdf_with_too_many_pages_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pypdf = pytest.importorskip("pypdf")
    import io

    writer = pypdf.PdfWriter()
    for _ in range(12):
        writer.add_blank_page(width=100, height=100)
    data = io.BytesIO()
    writer.write(data)
    monkeypatch.setattr(rag_parse, "MAX_PDF_PAGES", 10)  # the real limit is 5,000 pages
    with pytest.raises(Exception, match="12 pages, over the limit of 10"):
        rag_parse.parse_pdf(tmp_path / "long.pdf", data.getvalue())
