"""Citations checked against the stored text: the one check every answerer's quotes go through.

A citation names the file, page, heading, chunk id and the character offsets of a *quote* in the
document's stored text. ``cite`` checks it deterministically: ``document[start:end] == quote``, the
quote lies inside the cited chunk, and the quote supports the claim (an extractive claim must be
inside it; a written one must have at least ``MIN_SUPPORT`` of its terms, weighted by idf, and every
one of its numbers in it).
``verified`` says whether all of that holds; nothing is claimed that was not checked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from aiforge.rag.chunk import split_sentences
from aiforge.rag.index import RagIndex, Retrieved

# Idf-weighted (the index's BM25 idf), so "the", "e " and other bigrams every chunk has do not carry a
# claim; 0.5 separates supported from unsupported written claims on the test notes and KorQuAD
# paragraphs: true claims (paraphrased or copied) scored 0.63-1.0, false ones 0.13-0.38 ("The pump
# needs new oil every week" against "The pump starts at 40 degrees.": 0.24). The idf-free share with
# 0.3, used before, passed that false claim (0.31): every English sentence shares bigrams.
MIN_SUPPORT = 0.5
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")


def numbers_agree(claim: str, quote: str) -> bool:
    """Every number of a written claim appears in its quote. Term coverage alone let a planted note
    ("... say that refunds are paid the same day") verify "Refunds are paid within 14 days" at 0.57
    (tests/rag/test_generate.py): numbers are the facts a wrong source most often changes."""
    found = {n.replace(",", "") for n in _NUMBER.findall(quote)}
    return all(n.replace(",", "") in found for n in _NUMBER.findall(claim))


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
    support: float  # share of the claim's terms found in the quote (1.0 for an extractive claim inside it)
    verified: bool


def cite(
    index: RagIndex, n: int, item: Retrieved, start: int, end: int, claim: str, extractive: bool
) -> Citation:
    """A citation of ``document[start:end]`` inside ``item``'s chunk, checked against the stored text."""
    chunk = item.chunk
    document = index.store.document(chunk.doc_key)
    quote = document.text[start:end] if document else ""
    inside = chunk.start <= start < end <= chunk.end
    matches = bool(document) and quote == chunk.text[start - chunk.start : end - chunk.start]
    support = (
        (1.0 if claim.strip() and claim.strip() in quote else 0.0)
        if extractive
        else index.snapshot().bm25.coverage(claim, quote)
    )
    verified = (
        inside
        and matches
        and (support == 1.0 if extractive else support >= MIN_SUPPORT and numbers_agree(claim, quote))
    )
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


def chunk_sentences(item: Retrieved) -> list[tuple[int, int, str]]:
    """Sentences of a chunk as (document start, document end, text)."""
    c = item.chunk
    return [(c.start + s.start, c.start + s.end, c.text[s.start : s.end]) for s in split_sentences(c.text)]
