"""Answers written by an LLM from numbered sources, every statement checked against them.

The model gets the top chunks numbered ``[1]..[n]`` and is asked to answer in short sentences, each
followed by the number of its source. The answer is then cut into *statements* (a sentence, or the
part of one that ends at a ``[n]`` marker: "A [1] and B [2]." is two) and each is checked with
:func:`aiforge.rag.cite.cite`, the check extractive answers go through:

* a statement with a quotation ("..." or “...”) is supported only if every quotation occurs verbatim
  in a source it cites (the citation's offsets are the quotation's own);
* otherwise the sentence of its cited sources that shares most of its terms (idf-weighted) is the
  quote, and the statement is supported when that share reaches ``MIN_SUPPORT``.

A statement without a marker is checked against every source; the supporting quote is kept only if
it verifies (so an uncited answer is attributed only where a source really supports it). A statement
whose check fails is ``supported: false``: nothing is claimed that was not checked.

Two generators: ``generator_url`` (any OpenAI-compatible chat endpoint: vLLM, llama.cpp's server,
aiforge serve, OpenAI) or a local text-generation model (``generator``; with ``generate`` and no
generator, text-generation's default, the packaged SmolLM2 GGUF when offline).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any

from aiforge.errors import AiforgeError
from aiforge.rag.chunk import split_sentences
from aiforge.rag.cite import Citation, chunk_sentences, cite
from aiforge.rag.index import RagIndex, Retrieved
from aiforge.rag.settings import RagSettings

NOT_IN_DOCUMENTS = "NOT IN DOCUMENTS"
HANGUL = re.compile("[\uac00-\ud7a3]")
_MARKERS = re.compile(r"((?:\s*\[\d{1,2}\])+)")
_LEADING_MARKERS = re.compile(r"^(?:\s*\[\d{1,2}\])+")
_NUMBER = re.compile(r"\[(\d{1,2})\]")
_SPACED_NUMBER = re.compile(r"\s*\[\d{1,2}\]")
_QUOTE = re.compile(r"\"([^\"]{4,})\"|“([^”]{4,})”")
# A small model (SmolLM2-135M) that has answered goes on to recite the sources or invent the next
# question; these end the answer there.
STOPS = ["\n\nSources:", "\nQuestion:", "\n\n[", "\n[1]"]

SYSTEM = (
    "Answer the question in one or two short sentences using only the numbered sources. "
    "After each sentence write the number of the source it comes from in square brackets, like [2]. "
    f"If the sources do not contain the answer, reply exactly: {NOT_IN_DOCUMENTS}"
)
# One worked example, in the question's language. Measured with SmolLM2-135M on three English
# questions: without it the model answered but cited nothing (or recited the sources after its
# answer); with it, it cited a source number after each sentence in all three.
EXAMPLES = {
    "en": (
        ["The museum opens at 9 am.", "Tickets cost 12 euros for adults."],
        "How much is an adult ticket?",
        "An adult ticket costs 12 euros [2].",
    ),
    "ko": (
        ["박물관은 오전 9시에 문을 연다.", "성인 입장권은 12유로이다."],
        "성인 입장권은 얼마인가?",
        "성인 입장권은 12유로이다 [2].",
    ),
}


@dataclass
class Statement:
    text: str  # one claim of the answer, its markers removed
    markers: list[int]  # the sources the model cited for it
    supported: bool  # checked quotes from the sources support it
    citations: list[Citation] = field(default_factory=list)
    cites_its_source: bool = False  # the support is in a source the model cited for it

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "markers": self.markers,
            "supported": self.supported,
            "cites_its_source": self.cites_its_source,
            "citations": [asdict(c) for c in self.citations],
        }


# ---- the prompt -----------------------------------------------------------------------------------
def sources_block(sources: list[str]) -> str:
    return "Sources:\n" + "\n\n".join(f"[{n}] {text}" for n, text in enumerate(sources, 1))


def build_messages(question: str, context: list[Retrieved]) -> list[dict[str, str]]:
    """System instruction, one worked example in the question's language, then the real sources."""
    shown, example_question, example_answer = EXAMPLES["ko" if HANGUL.search(question) else "en"]
    # the chunks' text only: with "(file, page N)" before each, SmolLM2 copied those labels into its
    # answer in a loop ("[refunds.txt, page 1] [14 days] [refunds.txt, page 1] ..."); the citations
    # name file and page anyway
    sources = [r.chunk.text for r in context]
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": f"{sources_block(shown)}\n\nQuestion: {example_question}"},
        {"role": "assistant", "content": example_answer},
        {"role": "user", "content": f"{sources_block(sources)}\n\nQuestion: {question}"},
    ]


# ---- writing ----------------------------------------------------------------------------------------
def generator_method(settings: RagSettings) -> str:
    return "openai" if settings.generator_url else "generator"


def write(settings: RagSettings, messages: list[dict[str, str]]) -> str:
    """The generator's whole answer."""
    if settings.generator_url:
        return openai_chat(settings, messages)
    return str(local_generator(settings).chat(messages, **_generation_params(settings))["generated_text"])


def write_stream(settings: RagSettings, messages: list[dict[str, str]]) -> Iterator[str]:
    """The generator's answer piece by piece (an OpenAI endpoint's answer comes as one piece)."""
    if settings.generator_url:
        yield openai_chat(settings, messages)
        return
    yield from local_generator(settings).stream_chat(messages, **_generation_params(settings))


def _generation_params(settings: RagSettings) -> dict[str, Any]:
    return {"max_new_tokens": settings.max_new_tokens, "stop": STOPS}


def local_generator(settings: RagSettings) -> Any:
    return _pipeline(settings.generator, settings.device)


@lru_cache(maxsize=4)
def _pipeline(model: str | None, device: str) -> Any:
    from aiforge.tasks import load_pipeline

    return load_pipeline("text-generation", model=model, device=device)


def openai_chat(settings: RagSettings, messages: list[dict[str, str]]) -> str:
    import httpx

    url = settings.generator_url.rstrip("/") + "/chat/completions"  # type: ignore[union-attr]
    key = os.environ.get(settings.generator_api_key_env)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    body = {
        "model": settings.generator_model,
        "messages": messages,
        "max_tokens": settings.max_new_tokens,
        "temperature": 0,
        "stop": STOPS,
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


# ---- checking ---------------------------------------------------------------------------------------
def strip_markers(text: str) -> str:
    """The text without its ``[n]`` markers."""
    return _SPACED_NUMBER.sub("", text).strip()


def says_not_in_documents(text: str) -> bool:
    return not text.strip() or NOT_IN_DOCUMENTS in text


def split_statements(text: str) -> list[tuple[str, list[int]]]:
    """The answer's claims with the source numbers cited for each: a sentence, or the part of one
    that ends at a marker group. Markers right after a full stop ("... years. [1]") belong to the
    sentence before."""
    claims: list[tuple[str, list[int]]] = []
    for span in split_sentences(text):
        sentence = text[span.start : span.end]
        leading = _LEADING_MARKERS.match(sentence)
        if leading and claims:
            claims[-1][1].extend(_numbers(leading.group()))
            sentence = sentence[leading.end() :]
        pieces = _MARKERS.split(sentence)  # text, markers, text, markers, ..., trailing text
        sentence_claims = [(pieces[i], _numbers(pieces[i + 1])) for i in range(0, len(pieces) - 1, 2)]
        trailing = pieces[-1]
        if sentence_claims and not re.search(r"\w", trailing):
            pass  # only the full stop after the last marker
        elif sentence_claims:  # "A [1] per year." : the words after the marker finish its claim
            last, numbers = sentence_claims[-1]
            sentence_claims[-1] = (last + trailing, numbers)
        else:
            sentence_claims = [(trailing, [])]
        claims.extend(
            (claim.strip(), numbers) for claim, numbers in sentence_claims if re.search(r"\w", claim)
        )
    return claims


def _numbers(markers: str) -> list[int]:
    return [int(n) for n in _NUMBER.findall(markers)]


def check_statements(index: RagIndex, text: str, context: list[Retrieved]) -> list[Statement]:
    """Each claim of ``text`` checked against the numbered ``context`` it was written from."""
    statements = []
    for claim, numbers in split_statements(text):
        markers = sorted({n for n in numbers if 1 <= n <= len(context)})
        statements.append(check_statement(index, claim, markers, context))
    return statements


def check_statement(index: RagIndex, claim: str, markers: list[int], context: list[Retrieved]) -> Statement:
    """The claim checked against the sources it cites; when they do not support it, against the
    others (a small model often writes the right fact with the wrong number): the statement is then
    ``supported`` but not ``cites_its_source``, and its failed check stays in ``citations``."""
    every = list(range(1, len(context) + 1))
    own = _quotes(index, claim, markers or every, context)
    if all(c.verified for c in own) and own:
        return Statement(claim, markers, True, own, cites_its_source=bool(markers))
    others = [n for n in every if n not in markers] if markers else []
    elsewhere = _quotes(index, claim, others, context) if others else []
    supported = bool(elsewhere) and all(c.verified for c in elsewhere)
    # an uncited claim keeps a quote only where it verifies; a cited one shows its failed check too
    shown = [c for c in own if markers or c.verified] + (elsewhere if supported else [])
    return Statement(claim, markers, supported, shown)


def _quotes(index: RagIndex, claim: str, candidates: list[int], context: list[Retrieved]) -> list[Citation]:
    """The checked quote of each quotation in ``claim`` (none if one is missing from the candidates),
    or, without quotations, of the candidates' sentence that shares most of its terms."""
    quotations = [a or b for a, b in _QUOTE.findall(claim)]
    if quotations:
        found = [_quotation_citation(index, q, candidates, context) for q in quotations]
        return [c for c in found if c is not None] if all(found) else []
    bm25 = index.snapshot().bm25
    scored = [
        (bm25.coverage(claim, sentence[2]), n, sentence)
        for n in candidates
        for sentence in chunk_sentences(context[n - 1])
    ]
    if not scored:
        return []
    _, n, (start, end, _) = max(scored, key=lambda entry: entry[0])
    return [cite(index, n, context[n - 1], start, end, claim, False)]


def _quotation_citation(
    index: RagIndex, quotation: str, candidates: list[int], context: list[Retrieved]
) -> Citation | None:
    for n in candidates:
        item = context[n - 1]
        at = item.chunk.text.find(quotation)
        if at >= 0:
            start = item.chunk.start + at
            return cite(index, n, item, start, start + len(quotation), quotation, True)
    return None
