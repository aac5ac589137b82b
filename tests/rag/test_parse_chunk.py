"""Parsing keeps offsets, pages and headings; chunking respects Korean sentence ends, sizes and breaks;
BM25 tokenisation matches Korean words whatever their particles. No model needed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from aiforge.errors import AiforgeError
from aiforge.rag.bm25 import BM25, Segment, encode_terms, tokenize
from aiforge.rag.chunk import chunk_spans, estimate_tokens, split_sentences
from aiforge.rag.parse import ParsedDocument, parse_file
from tests.rag.helpers import minimal_pdf, write_docx


def sentences(text: str) -> list[str]:
    return [text[s.start : s.end] for s in split_sentences(text)]


def test_korean_sentence_ends_split_even_without_a_space():
    text = "그는 학교에 갔다.그리고 집에 왔어요. 원주율은 3.14이다! 정말요? Dr. Kim은 의사다.\n새 줄"
    assert sentences(text) == [
        "그는 학교에 갔다.",
        "그리고 집에 왔어요.",
        "원주율은 3.14이다!",
        "정말요?",
        "Dr. Kim은 의사다.",
        "새 줄",
    ]


def test_chunks_fit_the_target_overlap_and_never_cross_headings():
    body = " ".join(f"문장 번호 {i}번은 조금 긴 설명을 담고 있다." for i in range(40))
    text = f"# 첫째\n\n{body}\n\n# 둘째\n\n짧은 절이다."
    doc = ParsedDocument(text, "md", headings=[])
    doc.headings = parse_file(Path("x.md"), text.encode()).headings
    spans = chunk_spans(doc, estimate_tokens, target=60, overlap=15)
    second = text.index("# 둘째")
    assert all(s.end <= second or s.start >= second for s in spans), "a chunk spans two sections"
    assert all(estimate_tokens(text[s.start : s.end]) <= 60 + 15 for s in spans)
    first_section = [s for s in spans if s.end <= second]
    assert len(first_section) > 3
    overlaps = [a.end > b.start for a, b in zip(first_section, first_section[1:], strict=False)]
    assert all(overlaps), "consecutive chunks of a section must overlap"
    assert text[spans[-1].start : spans[-1].end] == "# 둘째\n\n짧은 절이다."


def test_an_over_long_sentence_is_cut_into_pieces():
    text = "가나다라 " * 200  # one 'sentence' of ~500 tokens
    spans = chunk_spans(ParsedDocument(text, "txt"), estimate_tokens, target=100, overlap=0)
    assert len(spans) >= 5
    assert all(estimate_tokens(text[s.start : s.end]) <= 110 for s in spans)


def test_markdown_keeps_the_file_text_and_heading_paths():
    raw = "# 설치\n\n내용.\n\n## 리눅스\n\n드라이버.\n\n# 사용\n\n끝."
    doc = parse_file(Path("guide.md"), raw.encode())
    assert doc.text == raw  # offsets are offsets into the file itself
    assert doc.heading_at(raw.index("드라이버")) == "guide > 설치 > 리눅스"
    assert doc.heading_at(raw.index("끝")) == "guide > 사용"


def test_html_text_blocks_headings_and_no_script():
    html = (
        "<html><head><title>안내</title><style>p{}</style></head><body><h2>배송</h2>"
        "<div><p>첫 문단.</p><p>둘째   문단.</p></div><script>alert(1)</script></body></html>"
    )
    doc = parse_file(Path("a.html"), html.encode())
    assert doc.text == "배송\n첫 문단.\n둘째 문단."
    assert doc.title == "안내" and doc.heading_at(doc.text.index("둘째")) == "안내 > 배송"


def test_pdf_pages_are_kept():
    doc = parse_file(Path("m.pdf"), minimal_pdf(["Page one text.", "Page two text."]))
    assert doc.kind == "pdf" and len(doc.page_starts) == 2
    assert doc.page_at(doc.text.index("Page one")) == 1
    assert doc.page_at(doc.text.index("Page two")) == 2
    spans = chunk_spans(doc, estimate_tokens, target=200, overlap=0)
    assert [doc.page_at(s.start) for s in spans] == [1, 2]  # pages are hard breaks


def test_docx_paragraphs_headings_and_tables(tmp_path: Path):
    path = write_docx(
        tmp_path / "p.docx", "환불 규정", ["환불은 14일 안에 처리한다."], [["plan", "price"], ["basic", "10"]]
    )
    doc = parse_file(path, path.read_bytes())
    assert doc.text.splitlines() == ["환불 규정", "환불은 14일 안에 처리한다.", "plan | price", "basic | 10"]
    assert doc.heading_at(doc.text.index("basic")).endswith("환불 규정")


def test_corrupt_and_unsupported_files_are_named():
    with pytest.raises(AiforgeError) as corrupt:
        parse_file(Path("/data/broken.pdf"), b"%PDF-1.4 this is not a pdf")
    assert corrupt.value.code == "AF-RAG-003" and "/data/broken.pdf" in corrupt.value.message
    with pytest.raises(AiforgeError) as unsupported:
        parse_file(Path("/data/photo.png"), b"\x89PNG")
    assert unsupported.value.code == "AF-INPUT-005" and "photo.png" in unsupported.value.message


def test_korean_words_with_different_particles_share_bigrams():
    a, b = set(tokenize("임종석이 말했다")), set(tokenize("임종석은 말했다"))
    assert {"임종", "종석"} <= a & b
    assert "w:gpu" in tokenize("GPU 메모리")  # Latin words keep a whole-word term


def test_bm25_prefers_the_document_with_the_rare_matching_term():
    texts = ["서울은 대한민국의 수도이다.", "부산은 항구 도시이다.", "대한민국의 인구는 많다."]
    bm25 = BM25([Segment.build(0, [encode_terms(t) for t in texts])])
    scores = bm25.search("부산 항구").scores
    assert int(np.argmax(scores)) == 1 and scores[0] == 0


def test_bm25_segments_score_like_one_segment():
    texts = ["사과는 빨갛다.", "바나나는 노랗다.", "사과와 바나나를 샀다.", "포도는 보라색이다."]
    blobs = [encode_terms(t) for t in texts]
    whole = BM25([Segment.build(0, blobs)]).search("사과 바나나").scores
    split = BM25([Segment.build(0, blobs[:2]), Segment.build(2, blobs[2:])]).search("사과 바나나").scores
    np.testing.assert_allclose(whole, split, rtol=1e-6)
