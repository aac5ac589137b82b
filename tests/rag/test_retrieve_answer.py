"""Hybrid retrieval on KorQuAD paragraphs with the packaged e5, filters, re-ranking, and answers whose
citations are checked against the stored text: sentence, extractive QA, local generator, OpenAI endpoint."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from aiforge.rag import RagIndex, RagSettings, SourceInput, ingest_sources
from aiforge.rag.answer import NOT_FOUND_EN, NOT_FOUND_KO, answer_question
from tests.rag.helpers import korquad_paragraphs


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, e5) -> tuple[RagSettings, list[dict]]:
    paragraphs = korquad_paragraphs(6)
    settings = RagSettings(home=tmp_path_factory.mktemp("rag"), progress=False)
    sources = [
        SourceInput.from_text(f"korquad/{p['title']}/0", p["context"], title=p["title"]) for p in paragraphs
    ]
    ingest_sources(sources, "kq", settings, e5)
    return settings, paragraphs


def open_index(corpus, e5, **changes) -> RagIndex:
    settings, _ = corpus
    return RagIndex.open("kq", settings.model_copy(update=changes), e5)


def test_hybrid_retrieval_ranks_the_gold_paragraph_first(corpus, e5):
    index = open_index(corpus, e5)
    for p in corpus[1]:
        top = index.search(p["question"], top_k=3)
        assert top[0].chunk.source_id == f"korquad/{p['title']}/0", p["question"]
        assert top[0].chunk.heading == p["title"]


def test_sentence_answers_cite_spans_that_match_the_source(corpus, e5):
    index = open_index(corpus, e5)
    for p in corpus[1]:
        result = answer_question(index, p["question"])
        assert result.found and result.method == "sentence"
        citation = result.citations[0]
        assert citation.verified, citation
        assert p["context"][citation.start : citation.end] == citation.quote == result.answer
        assert any(a in result.answer for a in p["answers"]), (p["question"], result.answer)


def test_unrelated_questions_say_the_documents_do_not_contain_it(corpus, e5):
    index = open_index(corpus, e5)
    korean = answer_question(index, "김치찌개를 맛있게 끓이는 방법은?")
    assert (korean.found, korean.answer, korean.citations) == (False, NOT_FOUND_KO, [])
    assert korean.retrieved, "the chunks looked at are still shown"
    english = answer_question(index, "What is the boiling point of mercury?")
    assert (english.found, english.answer) == (False, NOT_FOUND_EN)


def test_metadata_filters_restrict_the_hits(corpus, e5):
    index = open_index(corpus, e5)
    question = corpus[1][0]["question"]
    only = index.search(question, top_k=10, filters={"source": "korquad/체스_규칙/*"})
    assert only and {r.chunk.source_id for r in only} == {"korquad/체스_규칙/0"}
    assert index.search(question, top_k=10, filters={"heading": "반기문"})[0].chunk.heading == "반기문"
    assert index.search(question, filters={"page": 2}) == []
    with pytest.raises(Exception, match="unknown filter"):
        index.search(question, filters={"colour": "red"})


def test_cross_encoder_reranking_orders_by_its_scores(corpus, e5, tmp_path: Path):
    from sentence_transformers import CrossEncoder

    from tests.tiny_models import make_tiny_bert

    model = make_tiny_bert(tmp_path / "ce", head="seq-cls", num_labels=1)
    index = open_index(corpus, e5, reranker=str(model), rerank_candidates=6)
    question = corpus[1][2]["question"]
    hits = index.search(question, top_k=6)
    expected = CrossEncoder(str(model)).predict([(question, h.chunk.text) for h in hits])
    assert [h.hit.rerank for h in hits] == pytest.approx(sorted(expected.tolist(), reverse=True), rel=1e-4)
    assert hits[0].to_dict()["rerank_score"] == pytest.approx(max(expected), rel=1e-4)


def test_extractive_qa_answer_lies_inside_its_checked_citation(corpus, e5, tmp_path: Path):
    from tests.tiny_models import make_tiny_bert

    model = make_tiny_bert(tmp_path / "qa", head="qa")
    index = open_index(corpus, e5, qa_model=str(model))
    result = answer_question(index, corpus[1][3]["question"])
    assert result.method == "extractive-qa" and result.answer
    citation = result.citations[0]
    assert citation.verified and result.answer in citation.quote
    document = index.store.document(citation.chunk_id.rsplit(":", 1)[0])
    assert document.text[citation.start : citation.end] == citation.quote


def test_local_generator_citations_are_all_checked(corpus, e5, tmp_path: Path):
    from tests.tiny_models import make_tiny_gpt2

    model = make_tiny_gpt2(tmp_path / "gpt", n_positions=512)
    index = open_index(corpus, e5, generator=str(model), max_new_tokens=8, context_chunks=2)
    result = answer_question(index, corpus[1][4]["question"])
    assert result.method == "generator"
    for citation in result.citations:  # a random model cites nothing: only sources that truly support it stay
        document = index.store.document(citation.chunk_id.rsplit(":", 1)[0])
        assert citation.verified and document.text[citation.start : citation.end] == citation.quote


class _ChatEndpoint(BaseHTTPRequestHandler):
    """A minimal OpenAI-compatible /chat/completions that replies with a fixed text: it exercises our
    client's wire protocol and citation parsing (request shape, [n] markers), not a model."""

    reply = ""
    requests: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append(
            {"path": self.path, "body": body, "auth": self.headers.get("Authorization")}
        )
        payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": type(self).reply}}]})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(payload.encode())

    def log_message(self, *args: object) -> None:
        return None


def test_openai_compatible_endpoint_answer_and_citation_markers(corpus, e5, monkeypatch):
    server = HTTPServer(("127.0.0.1", 0), _ChatEndpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("MY_KEY", "secret")
    try:
        url = f"http://127.0.0.1:{server.server_port}/v1"
        index = open_index(corpus, e5, generator_url=url, generator_model="m", generator_api_key_env="MY_KEY")
        p = corpus[1][4]
        retrieved = index.search(p["question"], top_k=4)
        _ChatEndpoint.reply = "각 선수는 16개의 기물로 시작한다 [1]."
        result = answer_question(index, p["question"])
        sent = _ChatEndpoint.requests[-1]
        assert sent["path"] == "/v1/chat/completions" and sent["auth"] == "Bearer secret"
        prompt = sent["body"]["messages"][-1]["content"]
        assert p["question"] in prompt and f"[1] {retrieved[0].chunk.text}" in prompt
        assert result.method == "openai" and [c.n for c in result.citations] == [1]
        assert result.citations[0].chunk_id == retrieved[0].chunk.chunk_id and result.citations[0].verified
        _ChatEndpoint.reply = "NOT IN DOCUMENTS"
        assert answer_question(index, p["question"]).found is False
    finally:
        server.shutdown()


def test_query_returns_the_json_body_of_the_server_route(corpus, e5):
    from aiforge.errors import AiforgeError
    from aiforge.rag import close_indexes, query

    settings, paragraphs = corpus
    try:
        body = json.loads(json.dumps(query("kq", paragraphs[0]["question"], top_k=3, settings=settings)))
        assert body["index"] == "kq" and body["found"] is True and len(body["chunks"]) == 3
        citation = body["citations"][0]
        assert citation["verified"] and citation["source"] == f"korquad/{paragraphs[0]['title']}/0"
        assert paragraphs[0]["context"][citation["start"] : citation["end"]] == citation["quote"]
        only_chunks = query("kq", paragraphs[0]["question"], top_k=2, answer=False, settings=settings)
        assert set(only_chunks) == {"index", "question", "chunks"} and len(only_chunks["chunks"]) == 2
        with pytest.raises(AiforgeError) as unknown:
            query("no-such-index", "질문", settings=settings)
        assert (unknown.value.code, unknown.value.status) == ("AF-RAG-001", 404)
    finally:
        close_indexes()


def test_a_confident_qa_span_answers_where_the_retrieval_gate_alone_would_refuse(corpus, e5, tmp_path: Path):
    from tests.tiny_models import make_tiny_bert

    model = make_tiny_bert(tmp_path / "qa", head="qa")
    # retrieval thresholds no chunk can reach: only the QA score can let an answer through
    unreachable = {"qa_model": str(model), "min_dense_score": 1.01, "min_coverage": 1.0}
    question = corpus[1][0]["question"]
    confident = answer_question(open_index(corpus, e5, **unreachable, min_qa_score=0.0), question)
    assert confident.found and confident.method == "extractive-qa"
    assert confident.citations[0].verified and confident.answer in confident.citations[0].quote
    assert confident.to_dict()["score"] == pytest.approx(confident.score, abs=1e-4)
    # the untrained model spreads its probability over hundreds of spans: far below 0.5
    unsure = answer_question(open_index(corpus, e5, **unreachable, min_qa_score=0.5), question)
    assert not unsure.found and unsure.answer == NOT_FOUND_KO and unsure.score is not None
    assert unsure.score < 0.5


def test_the_qa_model_reads_the_top_chunk_unless_told_more(corpus, e5, tmp_path: Path, monkeypatch):
    """Per-chunk span probabilities are not comparable across chunks (F1 0.545 reading the top chunk,
    0.35 reading four, 79 held-out KorQuAD questions): the reader gets ``qa_context_chunks`` chunks."""
    from aiforge.rag import answer as answer_module
    from tests.tiny_models import make_tiny_bert

    model = str(make_tiny_bert(tmp_path / "qa", head="qa"))
    real = answer_module._pipeline("question-answering", model, "auto")
    read: list[list[str]] = []

    class Recording:
        def predict(self, records):
            read.append([r["context"] for r in records])
            return real.predict(records)

    monkeypatch.setattr(answer_module, "_pipeline", lambda *args, **kwargs: Recording())
    question = corpus[1][2]["question"]
    for chunks in (1, 3):
        index = open_index(corpus, e5, qa_model=model, qa_context_chunks=chunks, context_chunks=4)
        result = answer_question(index, question)
        assert result.method == "extractive-qa"
        assert read[-1] == [r.chunk.text for r in result.retrieved[:chunks]]
        assert result.citations[0].chunk_id in {r.chunk_ref for r in result.retrieved[:chunks]}
