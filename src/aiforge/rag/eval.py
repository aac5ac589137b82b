"""Evaluation: retrieval recall@k and MRR, answer exact match and F1 (KorQuAD's official definitions).

Eval sets: ``QA.jsonl`` (one ``{"question", "answers": [...] | "answer", "context"?, "id"?}`` per line)
or SQuAD / KorQuAD JSON (``data[].paragraphs[].qas[]``; the paragraph is the gold context).

A retrieved chunk is *relevant* when it overlaps the gold paragraph (the paragraph's position is
found in the chunk's stored document text, so partial chunks of a long paragraph count) or
contains a gold answer string. ``strict=True`` counts only the paragraph overlap when a context is
known: an answer like "1989년" occurs in many unrelated chunks, so strict numbers are the honest
ones for retrieval quality; the benchmark reports those.

recall@k: share of questions with a relevant chunk in the top k. MRR: mean of 1 / rank of the first
relevant chunk within the top 10 (0 when none).

``generate=True`` answers each question twice from the same retrieved chunks, extracted (EM, F1) and
written by the LLM (under ``generated``: EM and F1 of the answer without its ``[n]`` markers, the
share of questions it answered and of its statements a checked citation supports, seconds per
answer). EM and F1 compare with short gold spans, so a correct answer written as a sentence scores
F1 below 1 and EM 0: read the two side by side, not against each other's scale.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiforge.errors import AiforgeError
from aiforge.rag.index import RagIndex, Retrieved
from aiforge.tasks.qa import best_over_truths, exact_match, f1_score, normalize_answer

__all__ = ["best_over_truths", "evaluate", "exact_match", "f1_score", "load_eval_set", "normalize_answer"]

KS = (1, 5, 10)
MRR_DEPTH = 10


@dataclass
class EvalItem:
    question: str
    answers: list[str]
    context: str | None = None
    id: str = ""


def load_eval_set(path: str | Path) -> list[EvalItem]:
    """Read QA.jsonl or SQuAD-format JSON; AF-INPUT-001/002 name the file and the bad line."""
    path = Path(path)
    try:
        raw = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise AiforgeError(
            "AF-INPUT-001", f"cannot read eval set '{path}': {exc.strerror}", "check the path"
        ) from None
    if path.suffix.lower() == ".jsonl":
        return [_jsonl_item(path, n, line) for n, line in enumerate(raw.splitlines(), 1) if line.strip()]
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise AiforgeError(
            "AF-INPUT-002", f"'{path}' is not valid JSON: {exc}", "use QA.jsonl or SQuAD JSON"
        ) from None
    if not isinstance(data, dict) or "data" not in data:
        raise AiforgeError(
            "AF-INPUT-002",
            f"'{path}' has no 'data' list (SQuAD format expected)",
            "use SQuAD JSON (data/paragraphs/qas) or QA.jsonl",
        )
    return [
        EvalItem(
            qa["question"],
            [a["text"] for a in qa.get("answers", [])],
            paragraph["context"],
            str(qa.get("id", "")),
        )
        for article in data["data"]
        for paragraph in article["paragraphs"]
        for qa in paragraph["qas"]
    ]


def _jsonl_item(path: Path, n: int, line: str) -> EvalItem:
    try:
        record = json.loads(line)
        answers = record.get("answers", record.get("answer", []))
        answers = (
            [answers]
            if isinstance(answers, str)
            else [a["text"] if isinstance(a, dict) else a for a in answers]
        )
        return EvalItem(record["question"], answers, record.get("context"), str(record.get("id", n)))
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise AiforgeError(
            "AF-INPUT-002",
            f"{path}, line {n}: not a QA record ({type(exc).__name__}: {exc})",
            'each line: {"question": "...", "answers": ["..."], "context": "..."}',
        ) from None


# ---- relevance and ranks --------------------------------------------------------------------------
class RelevanceJudge:
    """Decides relevance of retrieved chunks; caches where each gold paragraph sits in each document."""

    def __init__(self, index: RagIndex, strict: bool = False) -> None:
        self.index = index
        self.strict = strict
        self._documents: dict[str, str] = {}
        self._positions: dict[tuple[str, str], int] = {}

    def _document(self, doc_key: str) -> str:
        if doc_key not in self._documents:
            document = self.index.store.document(doc_key)
            self._documents[doc_key] = document.text if document else ""
        return self._documents[doc_key]

    def relevant(self, item: EvalItem, retrieved: Retrieved) -> bool:
        chunk = retrieved.chunk
        if item.context:
            key = (chunk.doc_key, item.context)
            if key not in self._positions:
                self._positions[key] = self._document(chunk.doc_key).find(item.context)
            at = self._positions[key]
            if at >= 0 and chunk.start < at + len(item.context) and at < chunk.end:
                return True
            if self.strict:
                return False
        return any(a and a in chunk.text for a in item.answers)

    def first_relevant_rank(self, item: EvalItem, retrieved: list[Retrieved]) -> int | None:
        """1-based rank of the first relevant chunk, None when none is."""
        return next((rank for rank, r in enumerate(retrieved, 1) if self.relevant(item, r)), None)


def retrieval_metrics(ranks: list[int | None], ks: tuple[int, ...] = KS) -> dict[str, float]:
    """recall@k and MRR from the first-relevant ranks of each question."""
    n = max(len(ranks), 1)
    out = {f"recall@{k}": sum(1 for r in ranks if r is not None and r <= k) / n for k in ks}
    out["MRR"] = sum(1 / r for r in ranks if r is not None and r <= MRR_DEPTH) / n
    return out


# ---- answer metrics: KorQuAD 1.0's official evaluation, shared with training (aiforge.tasks.qa) ----


def evaluate(
    qa_file: str | Path,
    index: str | RagIndex,
    settings: Any = None,
    answers: bool = True,
    limit: int | None = None,
    strict: bool = False,
    mode: str = "hybrid",
    generate: bool = False,
) -> dict[str, Any]:
    """Run the eval set against the index: recall@1/5/10, MRR and (with ``answers``) EM and F1;
    ``generate`` adds the scores of LLM-written answers to the same questions (``generated``)."""
    from aiforge.rag.answer import answer_retrieved, retrieve

    items = load_eval_set(qa_file)[:limit]
    if not items:
        raise AiforgeError("AF-DATA-003", f"eval set '{qa_file}' has no questions", "add QA records")
    rag = index if isinstance(index, RagIndex) else RagIndex.open(index, settings)
    judge = RelevanceJudge(rag, strict=strict)
    ranks: list[int | None] = []
    extracted, written, sentences = AnswerScores(), AnswerScores(), AnswerScores()
    # with a QA model, the sentence answerer is scored too, on the same retrieval: what the span adds
    both_extractors = bool(rag.settings.qa_model) and answers and mode == "hybrid"
    for item in items:
        if answers and mode == "hybrid":
            retrieved = retrieve(rag, item.question, top_k=max(KS))
            # with generate, the first answer is extracted whatever the settings name as generator
            extracted.add(
                item, answer_retrieved(rag, item.question, retrieved, max(KS), False if generate else None)
            )
            if both_extractors:
                sentences.add(item, answer_retrieved(rag, item.question, retrieved, max(KS), False, True))
            if generate:
                started = time.perf_counter()
                result = answer_retrieved(rag, item.question, retrieved, max(KS), True)
                written.add(item, result, time.perf_counter() - started)
            retrieved = retrieved[: max(KS)]
        else:
            retrieved = rag.search(item.question, top_k=max(KS), mode=mode)
        ranks.append(judge.first_relevant_rank(item, retrieved))
    report: dict[str, Any] = {
        "questions": len(items),
        "mode": mode,
        "strict": strict,
        **retrieval_metrics(ranks),
    }
    if extracted.em:
        report.update(extracted.summary())
    if written.em:
        report["generated"] = written.summary(written=True)
    if extracted.em:  # every answerer's EM / F1 side by side, on the same questions and retrieval
        first = "extractive-qa" if both_extractors else "sentence"
        report["answerers"] = {
            first: extracted.summary(),
            **({"sentence": sentences.summary()} if sentences.em else {}),
            **({"generator": {k: report["generated"][k] for k in ("EM", "F1")}} if written.em else {}),
        }
    return report


@dataclass
class AnswerScores:
    """EM and F1 of one answerer over the eval set (and, for written answers, how well supported)."""

    em: list[float] = field(default_factory=list)
    f1: list[float] = field(default_factory=list)
    answered: int = 0
    statements: int = 0
    supported: int = 0
    seconds: float = 0.0

    def add(self, item: EvalItem, result: Any, seconds: float = 0.0) -> None:
        prediction = result.plain_answer
        self.em.append(best_over_truths(exact_match, prediction, item.answers))
        self.f1.append(best_over_truths(f1_score, prediction, item.answers))
        self.answered += bool(result.found)
        self.statements += len(result.statements or ())
        self.supported += sum(s.supported for s in result.statements or ())
        self.seconds += seconds

    def summary(self, written: bool = False) -> dict[str, float]:
        n = len(self.em)
        scores = {"EM": sum(self.em) / n, "F1": sum(self.f1) / n}
        if written:
            scores.update(
                {
                    "answered": self.answered / n,
                    "supported_statements": self.supported / self.statements if self.statements else 0.0,
                    "seconds_per_answer": round(self.seconds / n, 2),
                }
            )
        return scores
