"""RAG test helpers: an embedder wrapper that counts calls, hand-made PDF/DOCX files, KorQuAD paragraphs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from aiforge.rag.embed import PipelineEmbedder

ROOT = Path(__file__).resolve().parents[2]
KORQUAD = ROOT.parent / "shared" / "data" / "korquad" / "KorQuAD_v1.0_dev_part_a.json"


class CountingEmbedder:
    """The real e5 embedder, counting the passages it is asked to embed (re-ingest must embed only changes).

    ``fail_after`` makes the n-th passage call raise, to simulate a crash in the middle of an ingest.
    """

    def __init__(self, inner: PipelineEmbedder) -> None:
        self.inner = inner
        self.name = inner.name
        self.passages: list[str] = []
        self.calls = 0
        self.fail_after: int | None = None

    @property
    def dim(self) -> int:
        return self.inner.dim

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise KeyboardInterrupt("simulated crash during ingest")
        self.passages.extend(texts)
        return self.inner.embed_passages(texts)

    def embed_queries(self, texts: list[str]) -> np.ndarray:
        return self.inner.embed_queries(texts)

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def reset(self) -> None:
        self.passages, self.calls, self.fail_after = [], 0, None


def minimal_pdf(pages: list[str]) -> bytes:
    """A valid PDF with one line of Helvetica text per page (xref offsets computed, no library needed)."""
    objects = ["<< /Type /Catalog /Pages 2 0 R >>", ""]
    kids = []
    for text in pages:
        stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET"
        page_id, content_id = len(objects) + 1, len(objects) + 2
        kids.append(f"{page_id} 0 R")
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {content_id} 0 R "
            "/Resources << /Font << /F1 999 0 R >> >> >>"
        )
        objects.append(f"<< /Length {len(stream)} >>\nstream\n{stream}\nendstream")
    font_id = len(objects) + 1
    objects.append("<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    objects[1] = f"<< /Type /Pages /Kids [{' '.join(kids)}] /Count {len(pages)} >>"
    objects = [o.replace("999 0 R", f"{font_id} 0 R") for o in objects]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{body}\nendobj\n".encode("latin-1")
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += "".join(f"{o:010d} 00000 n \n" for o in offsets).encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def write_docx(path: Path, heading: str, paragraphs: list[str], table: list[list[str]] | None = None) -> Path:
    docx = pytest.importorskip("docx")
    document = docx.Document()
    document.add_heading(heading, level=1)
    for text in paragraphs:
        document.add_paragraph(text)
    if table:
        grid = document.add_table(rows=len(table), cols=len(table[0]))
        for r, row in enumerate(table):
            for c, value in enumerate(row):
                grid.cell(r, c).text = value
    document.save(path)
    return path


def korquad_paragraphs(n_articles: int = 6) -> list[dict]:
    """The first paragraph of the first ``n_articles`` KorQuAD articles, with its first question."""
    if not KORQUAD.exists():
        pytest.skip(f"KorQuAD not found at {KORQUAD}")
    data = json.loads(KORQUAD.read_text(encoding="utf-8"))["data"][:n_articles]
    return [
        {
            "title": a["title"],
            "context": a["paragraphs"][0]["context"],
            "question": a["paragraphs"][0]["qas"][0]["question"],
            "answers": [x["text"] for x in a["paragraphs"][0]["qas"][0]["answers"]],
        }
        for a in data
    ]
