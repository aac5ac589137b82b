"""Answers with checked citations, or a plain "the documents do not contain it".

Three answerers, chosen by settings (or per call with ``generate``):

* an LLM (``generate``, ``generator`` or ``generator_url``): writes the answer from the top chunks
  numbered ``[1]..[n]``, citing them; each statement is checked (:mod:`aiforge.rag.generate`);
* ``qa_model`` - extractive QA (``load_pipeline("question-answering")``) over the top
  ``qa_context_chunks`` chunks (1: see the setting); the answer is a span of a chunk;
* neither - the sentence of the top chunks that covers most of the question's terms.

Every citation goes through one check, :func:`aiforge.rag.cite.cite` (the quote's offsets in the
stored text, inside the cited chunk, supporting the claim); ``verified`` says whether it holds.

"Not found": when no retrieved chunk is close in meaning (dense cosine below ``min_dense_score``)
*and* none contains enough of the question's terms (idf-weighted coverage below ``min_coverage``),
nothing is answered, not even by an LLM; the reply says plainly that the documents do not contain it.
With a QA model the span's probability is a third signal: a span at least ``min_qa_score`` probable
is answered even when the first two say no.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any

from aiforge.rag import generate as llm
from aiforge.rag.cite import Citation, chunk_sentences, cite
from aiforge.rag.index import RagIndex, Retrieved
from aiforge.rag.settings import RagSettings

NOT_FOUND_EN = "The documents do not contain an answer to this question."
NOT_FOUND_KO = "문서에 이 질문에 대한 답이 없습니다."

__all__ = ["Answer", "Citation", "answer_question", "answer_retrieved", "stream_answer", "retrieve"]


@dataclass
class Answer:
    question: str
    answer: str
    found: bool
    method: str  # generator | openai | extractive-qa | sentence | image-search | none
    citations: list[Citation] = field(default_factory=list)
    retrieved: list[Retrieved] = field(default_factory=list)
    seconds: float = 0.0
    statements: list[llm.Statement] | None = None  # a written answer's claims, each checked
    score: float | None = None  # extractive QA: the span's probability (kept on a refusal too)

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "question": self.question,
            "answer": self.answer,
            "found": self.found,
            "method": self.method,
            "citations": [asdict(c) for c in self.citations],
        }
        if self.statements is not None:
            body["statements"] = [s.to_dict() for s in self.statements]
            body["supported"] = all(s.supported for s in self.statements)
        if self.score is not None:
            body["score"] = round(self.score, 4)
        return {**body, "chunks": [r.to_dict() for r in self.retrieved], "seconds": round(self.seconds, 3)}

    @property
    def plain_answer(self) -> str:
        """The answer ("" when not found), a written one without its ``[n]`` markers: what EM / F1 score."""
        if not self.found:
            return ""
        return self.answer if self.statements is None else llm.strip_markers(self.answer)


def not_found_message(question: str) -> str:
    return NOT_FOUND_KO if llm.HANGUL.search(question) else NOT_FOUND_EN


def is_relevant(retrieved: list[Retrieved], settings: RagSettings) -> bool:
    """Whether anything retrieved is close enough to the question to answer from."""
    return any(
        r.hit.dense >= settings.min_dense_score or r.hit.coverage >= settings.min_coverage for r in retrieved
    )


def retrieve(
    index: RagIndex, question: str, top_k: int | None = None, filters: dict[str, Any] | None = None
) -> list[Retrieved]:
    """The chunks an answer reads and returns: enough for both ``top_k`` and the answerer's context."""
    settings = index.settings
    return index.search(
        question,
        top_k=max(top_k or settings.top_k, settings.context_chunks, settings.qa_context_chunks),
        filters=filters,
    )


def answer_question(
    index: RagIndex,
    question: str,
    top_k: int | None = None,
    filters: dict[str, Any] | None = None,
    generate: bool | None = None,
) -> Answer:
    """Retrieve, decide whether the documents answer it, answer, cite, check the citations.

    ``generate``: True has an LLM write the answer, False extracts it; None follows the settings.
    """
    started = time.perf_counter()
    result = answer_retrieved(index, question, retrieve(index, question, top_k, filters), top_k, generate)
    result.seconds = time.perf_counter() - started
    return result


def answer_retrieved(
    index: RagIndex,
    question: str,
    retrieved: list[Retrieved],
    top_k: int | None = None,
    generate: bool | None = None,
    sentence_only: bool = False,
) -> Answer:
    """The answer from chunks already retrieved (``rag eval`` answers several ways from one retrieval).

    ``sentence_only``: the best sentence even when a QA model is set (``rag eval`` scores both)."""
    settings = index.settings
    context = retrieved[: settings.context_chunks]
    writes = settings.generates if generate is None else generate
    if index.images:
        result = found_pictures(index, question, retrieved[: top_k or settings.top_k])
    elif settings.qa_model and not sentence_only and not writes:
        # the QA model reads the chunks first: a span it is sure of answers even when the retrieval
        # signals alone would have said "not found" (min_qa_score)
        result = _extract(index, question, retrieved[: settings.qa_context_chunks])
        if not is_relevant(context, settings) and (result.score or 0.0) < settings.min_qa_score:
            result = Answer(question, not_found_message(question), False, "none", score=result.score)
    elif not is_relevant(context, settings):
        result = Answer(question, not_found_message(question), False, "none")
    elif writes:
        text = llm.write(settings, llm.build_messages(question, context))
        result = written_answer(index, question, context, text)
    else:
        result = _best_sentence(index, question, context)
    result.retrieved = retrieved[: top_k or settings.top_k]
    return result


def stream_answer(
    index: RagIndex,
    question: str,
    top_k: int | None = None,
    filters: dict[str, Any] | None = None,
) -> Iterator[dict[str, Any]]:
    """An LLM-written answer as events: ``{"event": "chunks"}`` (what was retrieved), then
    ``{"event": "delta", "text"}`` as the model writes, then ``{"event": "answer", ...}``: the whole
    answer with every statement checked (the same body as :func:`answer_question`'s ``to_dict``)."""
    started = time.perf_counter()
    settings = index.settings
    retrieved = retrieve(index, question, top_k, filters)
    shown = retrieved[: top_k or settings.top_k]
    yield {"event": "chunks", "chunks": [r.to_dict() for r in shown]}
    context = retrieved[: settings.context_chunks]
    if index.images:
        result = found_pictures(index, question, shown)
    elif not is_relevant(context, settings):
        result = Answer(question, not_found_message(question), False, "none")
    else:
        pieces = []
        for piece in llm.write_stream(settings, llm.build_messages(question, context)):
            pieces.append(piece)
            yield {"event": "delta", "text": piece}
        result = written_answer(index, question, context, "".join(pieces))
    result.retrieved = shown
    result.seconds = time.perf_counter() - started
    yield {"event": "answer", **result.to_dict()}


def found_pictures(index: RagIndex, question: str, retrieved: list[Retrieved]) -> Answer:
    """An image index's answer: the pictures closest to the question, best first, each cited by its
    file. No "not found" cut-off: CLIP cosines have no scale shared across models (0.2-0.35 for a
    matching photo with openai/clip-vit-base-patch32), so the ranking is the answer."""
    citations = [
        cite(index, n, item, item.chunk.start, item.chunk.end, item.chunk.text, True)
        for n, item in enumerate(retrieved, 1)
    ]
    answer = ", ".join(item.source for item in retrieved)
    return Answer(question, answer or not_found_message(question), bool(retrieved), "image-search", citations)


def written_answer(index: RagIndex, question: str, context: list[Retrieved], text: str) -> Answer:
    """An LLM's answer with each statement checked; "not in the documents" when it says so."""
    method = llm.generator_method(index.settings)
    text = text.strip()
    if llm.says_not_in_documents(text):
        return Answer(question, not_found_message(question), False, method, statements=[])
    statements = llm.check_statements(index, text, context)
    citations = [c for s in statements for c in s.citations]
    return Answer(question, text, bool(statements), method, citations, statements=statements)


# ---- extracted answers ----------------------------------------------------------------------------
def _best_sentence(index: RagIndex, question: str, context: list[Retrieved]) -> Answer:
    bm25 = index.snapshot().bm25
    best: tuple[float, int, tuple[int, int, str]] | None = None
    for rank, item in enumerate(context):
        for sentence in chunk_sentences(item):
            # every sentence of a chunk shares its heading: terms the heading covers do not pick a sentence
            score = bm25.coverage(question, f"{item.chunk.heading} {sentence[2]}") - 0.02 * rank
            if best is None or score > best[0]:
                best = (score, rank, sentence)
    if best is None:
        return Answer(question, not_found_message(question), False, "none")
    _, rank, (start, end, text) = best
    return Answer(question, text, True, "sentence", [cite(index, 1, context[rank], start, end, text, True)])


def _extract(index: RagIndex, question: str, context: list[Retrieved]) -> Answer:
    """The most probable span over the chunks, cited by the sentence that contains it, with its
    probability as ``score`` (0 when no chunk gave a span: then the best sentence answers)."""
    pipe = _pipeline("question-answering", index.settings.qa_model, index.settings.device)
    outputs = pipe.predict([{"question": question, "context": item.chunk.text} for item in context])
    scored = [(o["score"], i, o) for i, o in enumerate(outputs) if "answer" in o and o["answer"].strip()]
    if not scored:
        fallback = _best_sentence(index, question, context)
        fallback.score = 0.0
        return fallback
    score, i, best = max(scored, key=lambda entry: entry[0])
    item = context[i]
    start, end = item.chunk.start + best["start"], item.chunk.start + best["end"]
    sentence = next(((s, e) for s, e, _ in chunk_sentences(item) if s <= start and end <= e), (start, end))
    return Answer(
        question,
        best["answer"],
        True,
        "extractive-qa",
        [cite(index, 1, item, sentence[0], sentence[1], best["answer"], True)],
        score=float(score),
    )


@lru_cache(maxsize=4)
def _pipeline(task: str, model: str | None, device: str, **params: Any) -> Any:
    from aiforge.tasks import load_pipeline

    return load_pipeline(task, model=model, device=device, **params)
