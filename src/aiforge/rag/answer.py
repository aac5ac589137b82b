"""Answers with checked citations, or a plain "the documents do not contain it".

Three answerers, chosen by settings:

* ``generator_url`` - any OpenAI-compatible chat endpoint (vLLM, llama.cpp server, aiforge serve,
  OpenAI), called with httpx; ``generator`` - a local text-generation model through the task
  registry. Both get the top chunks numbered ``[1]..[n]`` and are asked to cite them.
* ``qa_model`` - extractive QA (``load_pipeline("question-answering")``) over the top chunks; the
  answer is a span of a chunk.
* neither - the sentence of the top chunks that covers most of the question's terms.

Every citation names the file, page, heading, chunk id and the character offsets of a *quote* in
the document's stored text, and is checked deterministically: ``document[start:end] == quote``,
the quote lies inside the cited chunk, and the quote supports the answer (an extractive answer
must be inside it; a generated answer must share at least ``MIN_SUPPORT`` of its terms with it).
``verified`` says whether all of that holds; nothing is claimed that was not checked.

"Not found": when no retrieved chunk is close in meaning (dense cosine below ``min_dense_score``)
*and* none contains enough of the question's terms (idf-weighted coverage below ``min_coverage``),
nothing is answered; the reply says plainly that the documents do not contain it.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any

from aiforge.errors import AiforgeError
from aiforge.rag.bm25 import query_coverage
from aiforge.rag.chunk import split_sentences
from aiforge.rag.index import RagIndex, Retrieved
from aiforge.rag.settings import RagSettings

NOT_FOUND_EN = "The documents do not contain an answer to this question."
NOT_FOUND_KO = "문서에 이 질문에 대한 답이 없습니다."
MIN_SUPPORT = 0.3
_HANGUL = re.compile("[\uac00-\ud7a3]")
_MARKER = re.compile(r"\[(\d{1,2})\]")


@dataclass
class Citation:
    n: int  # the [n] the answer refers to
    chunk_id: str  # as clients see it (Retrieved.chunk_ref)
    source: str  # the source's name, never the server's path
    page: int
    heading: str
    start: int  # offsets of ``quote`` in the document's stored text
    end: int
    quote: str
    support: float  # share of the answer's terms found in the quote (1.0 for an extractive answer inside it)
    verified: bool


@dataclass
class Answer:
    question: str
    answer: str
    found: bool
    method: str  # generator | openai | extractive-qa | sentence | none
    citations: list[Citation] = field(default_factory=list)
    retrieved: list[Retrieved] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "question": self.question,
            "answer": self.answer,
            "found": self.found,
            "method": self.method,
            "citations": [asdict(c) for c in self.citations],
            "chunks": [r.to_dict() for r in self.retrieved],
            "seconds": round(self.seconds, 3),
        }


def not_found_message(question: str) -> str:
    return NOT_FOUND_KO if _HANGUL.search(question) else NOT_FOUND_EN


def is_relevant(retrieved: list[Retrieved], settings: RagSettings) -> bool:
    """Whether anything retrieved is close enough to the question to answer from."""
    return any(
        r.hit.dense >= settings.min_dense_score or r.hit.coverage >= settings.min_coverage for r in retrieved
    )


def answer_question(
    index: RagIndex, question: str, top_k: int | None = None, filters: dict[str, Any] | None = None
) -> Answer:
    """Retrieve, decide whether the documents answer it, answer, cite, check the citations."""
    started = time.perf_counter()
    settings = index.settings
    retrieved = index.search(
        question, top_k=max(top_k or settings.top_k, settings.context_chunks), filters=filters
    )
    context = retrieved[: settings.context_chunks]
    if not is_relevant(context, settings):
        result = Answer(question, not_found_message(question), False, "none")
    elif settings.generator_url or settings.generator:
        result = _generate(index, question, context)
    elif settings.qa_model:
        result = _extract(index, question, context)
    else:
        result = _best_sentence(index, question, context)
    result.retrieved = retrieved[: top_k or settings.top_k]
    result.seconds = time.perf_counter() - started
    return result


# ---- citations ------------------------------------------------------------------------------------
def cite(
    index: RagIndex, n: int, item: Retrieved, start: int, end: int, answer: str, extractive: bool
) -> Citation:
    """A citation of ``document[start:end]`` inside ``item``'s chunk, checked against the stored text."""
    chunk = item.chunk
    document = index.store.document(chunk.doc_key)
    quote = document.text[start:end] if document else ""
    inside = chunk.start <= start < end <= chunk.end
    matches = bool(document) and quote == chunk.text[start - chunk.start : end - chunk.start]
    support = (
        (1.0 if answer.strip() and answer.strip() in quote else 0.0)
        if extractive
        else query_coverage(answer, quote)
    )
    verified = inside and matches and (support == 1.0 if extractive else support >= MIN_SUPPORT)
    return Citation(
        n,
        item.chunk_ref,
        item.source,
        chunk.page,
        chunk.heading,
        start,
        end,
        quote,
        round(support, 3),
        verified,
    )


def _sentences(item: Retrieved) -> list[tuple[int, int, str]]:
    """Sentences of a chunk as (document start, document end, text)."""
    c = item.chunk
    return [(c.start + s.start, c.start + s.end, c.text[s.start : s.end]) for s in split_sentences(c.text)]


def _best_sentence(index: RagIndex, question: str, context: list[Retrieved]) -> Answer:
    bm25 = index.snapshot().bm25
    best: tuple[float, int, tuple[int, int, str]] | None = None
    for rank, item in enumerate(context):
        for sentence in _sentences(item):
            # every sentence of a chunk shares its heading: terms the heading covers do not pick a sentence
            score = bm25.coverage(question, f"{item.chunk.heading} {sentence[2]}") - 0.02 * rank
            if best is None or score > best[0]:
                best = (score, rank, sentence)
    if best is None:
        return Answer(question, not_found_message(question), False, "none")
    _, rank, (start, end, text) = best
    return Answer(question, text, True, "sentence", [cite(index, 1, context[rank], start, end, text, True)])


def _extract(index: RagIndex, question: str, context: list[Retrieved]) -> Answer:
    pipe = _pipeline("question-answering", index.settings.qa_model, index.settings.device)
    outputs = pipe.predict([{"question": question, "context": item.chunk.text} for item in context])
    scored = [(o["score"], i, o) for i, o in enumerate(outputs) if "answer" in o and o["answer"].strip()]
    if not scored:
        return _best_sentence(index, question, context)
    _, i, best = max(scored, key=lambda entry: entry[0])
    item = context[i]
    start, end = item.chunk.start + best["start"], item.chunk.start + best["end"]
    sentence = next(((s, e) for s, e, _ in _sentences(item) if s <= start and end <= e), (start, end))
    return Answer(
        question,
        best["answer"],
        True,
        "extractive-qa",
        [cite(index, 1, item, sentence[0], sentence[1], best["answer"], True)],
    )


# ---- generation -----------------------------------------------------------------------------------
def build_prompt(question: str, context: list[Retrieved]) -> str:
    sources = "\n\n".join(
        f"[{n}] ({r.source}, page {r.chunk.page}) {r.chunk.text}" for n, r in enumerate(context, 1)
    )
    return (
        "Answer the question using only the numbered sources. Cite each fact with its source number in "
        "square brackets, e.g. [1]. If the sources do not contain the answer, reply exactly: "
        f"NOT IN DOCUMENTS\n\nSources:\n{sources}\n\nQuestion: {question}\nAnswer:"
    )


def _generate(index: RagIndex, question: str, context: list[Retrieved]) -> Answer:
    settings = index.settings
    prompt = build_prompt(question, context)
    if settings.generator_url:
        text, method = _openai_chat(settings, prompt), "openai"
    else:
        pipe = _pipeline(
            "text-generation", settings.generator, settings.device, max_new_tokens=settings.max_new_tokens
        )
        text, method = pipe({"text": prompt})["generated_text"], "generator"
    text = text.strip()
    if not text or "NOT IN DOCUMENTS" in text:
        return Answer(question, not_found_message(question), False, method)
    cited = sorted({int(m) for m in _MARKER.findall(text) if 1 <= int(m) <= len(context)})
    plain = _MARKER.sub("", text).strip()
    citations = []
    for n in cited or range(1, len(context) + 1):
        start, end, _ = max(_sentences(context[n - 1]), key=lambda s: query_coverage(plain, s[2]))
        citation = cite(index, n, context[n - 1], start, end, plain, False)
        if cited or citation.verified:  # uncited answer: keep only sources that really support it
            citations.append(citation)
    return Answer(question, text, True, method, citations)


def _openai_chat(settings: RagSettings, prompt: str) -> str:
    import httpx

    url = settings.generator_url.rstrip("/") + "/chat/completions"  # type: ignore[union-attr]
    key = os.environ.get(settings.generator_api_key_env)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    body = {
        "model": settings.generator_model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": settings.max_new_tokens,
        "temperature": 0,
    }
    try:
        response = httpx.post(url, json=body, headers=headers, timeout=120)
        response.raise_for_status()
        return str(response.json()["choices"][0]["message"]["content"] or "")
    except (httpx.HTTPError, KeyError, IndexError, ValueError) as exc:
        raise AiforgeError(
            "AF-RAG-006",
            f"the generator at {url} failed: {type(exc).__name__}: {exc}",
            "check --generator-url (an OpenAI-compatible /v1 base URL), the model name and the key",
            status=502,
        ) from exc


@lru_cache(maxsize=4)
def _pipeline(task: str, model: str | None, device: str, **params: Any) -> Any:
    from aiforge.tasks import load_pipeline

    return load_pipeline(task, model=model, device=device, **params)
