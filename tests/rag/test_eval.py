"""Evaluation: recall@k / MRR from hand-computed ranks, KorQuAD's EM and character F1, both eval-set
formats, relevance by paragraph overlap, and an end-to-end run on a tiny KorQuAD index."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aiforge.errors import AiforgeError
from aiforge.rag import RagIndex, RagSettings, evaluate, ingest
from aiforge.rag.eval import (
    EvalItem,
    RelevanceJudge,
    exact_match,
    f1_score,
    load_eval_set,
    retrieval_metrics,
)
from aiforge.rag.index import Retrieved
from aiforge.rag.retrieve import Hit
from aiforge.rag.store import ChunkRecord
from tests.rag.helpers import korquad_paragraphs


def test_recall_and_mrr_from_known_ranks():
    # first relevant ranks of five questions: 1, 3, none, 2, 11 (beyond the MRR depth of 10)
    metrics = retrieval_metrics([1, 3, None, 2, 11])
    assert metrics["recall@1"] == pytest.approx(1 / 5)
    assert metrics["recall@5"] == pytest.approx(3 / 5)
    assert metrics["recall@10"] == pytest.approx(3 / 5)
    assert metrics["MRR"] == pytest.approx((1 + 1 / 3 + 1 / 2) / 5)


def test_korquad_exact_match_and_character_f1():
    assert exact_match("《서울》", "서울") == 1.0  # quotes and brackets are dropped
    assert exact_match("서울특별시", "서울") == 0.0
    # 2 shared characters: precision 2/5, recall 2/2 -> F1 = 2 * 0.4 * 1 / 1.4
    assert f1_score("서울특별시", "서울") == pytest.approx(0.8 / 1.4)
    assert f1_score("1989년 2월", "1989년 2월 15일") == pytest.approx(2 * 1 * (7 / 10) / (1 + 7 / 10))
    assert f1_score("", "서울") == 0.0


def test_eval_sets_in_both_formats(tmp_path: Path):
    jsonl = tmp_path / "qa.jsonl"
    jsonl.write_text(
        '{"question": "수도는?", "answer": "서울"}\n\n{"question": "q2", "answers": ["a", "b"]}\n',
        encoding="utf-8",
    )
    assert [(i.question, i.answers) for i in load_eval_set(jsonl)] == [
        ("수도는?", ["서울"]),
        ("q2", ["a", "b"]),
    ]
    squad = tmp_path / "squad.json"
    squad.write_text(
        json.dumps(
            {
                "data": [
                    {
                        "title": "t",
                        "paragraphs": [
                            {
                                "context": "서울은 수도다.",
                                "qas": [
                                    {
                                        "id": "1",
                                        "question": "수도는?",
                                        "answers": [{"text": "서울", "answer_start": 0}],
                                    }
                                ],
                            }
                        ],
                    }
                ]
            }
        ),
        encoding="utf-8",
    )
    item = load_eval_set(squad)[0]
    assert (item.question, item.answers, item.context, item.id) == (
        "수도는?",
        ["서울"],
        "서울은 수도다.",
        "1",
    )
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "ok", "answer": "x"}\n{"no_question": 1}\n', encoding="utf-8")
    with pytest.raises(AiforgeError, match="line 2"):
        load_eval_set(bad)


class _Store:
    def __init__(self, text: str) -> None:
        self.text = text

    def document(self, doc_key: str):
        from aiforge.rag.store import DocumentRecord

        return DocumentRecord(doc_key, "s", self.text, [0])


def test_relevance_is_overlap_with_the_gold_paragraph_or_a_gold_answer():
    document = (
        "첫 문단은 다른 이야기다.\n\n서울은 대한민국의 수도이다. 인구가 많다.\n\n셋째 문단에도 서울이 나온다."
    )
    gold = "서울은 대한민국의 수도이다. 인구가 많다."
    at = document.index(gold)

    def chunk(start: int, end: int) -> Retrieved:
        return Retrieved(
            Hit(0, 0, 0, 0, 0), ChunkRecord("s", "k", 0, 1, "", "txt", start, end, document[start:end], "")
        )

    index = type("I", (), {"store": _Store(document)})()
    item = EvalItem("수도는?", ["서울"], gold)
    loose, strict = RelevanceJudge(index), RelevanceJudge(index, strict=True)
    inside = chunk(at + 5, at + 12)  # part of the gold paragraph
    elsewhere = chunk(document.index("셋째"), len(document))  # contains the answer, other paragraph
    unrelated = chunk(0, 12)
    assert loose.relevant(item, inside) and strict.relevant(item, inside)
    assert loose.relevant(item, elsewhere) and not strict.relevant(item, elsewhere)
    assert not loose.relevant(item, unrelated)
    assert strict.first_relevant_rank(item, [unrelated, elsewhere, inside]) == 3


def answers(p: dict) -> list[dict]:
    return [{"text": a} for a in p["answers"]]


def test_squad_file_as_corpus_and_as_eval_set(tmp_path: Path, e5):
    """`aiforge rag ingest kq.json` then `aiforge rag eval kq.json`: the issue's KorQuAD check, in small."""
    paragraphs = korquad_paragraphs(4)
    squad = tmp_path / "mini_korquad.json"
    articles = [
        {
            "title": p["title"],
            "paragraphs": [
                {
                    "context": p["context"],
                    "qas": [{"id": str(i), "question": p["question"], "answers": answers(p)}],
                }
            ],
        }
        for i, p in enumerate(paragraphs)
    ]
    squad.write_text(json.dumps({"data": articles}, ensure_ascii=False), encoding="utf-8")
    settings = RagSettings(home=tmp_path / "idx", progress=False)
    report = ingest([squad], "kq", settings, e5)
    assert len(report.added) == 4 and report.added[0] == f"{squad.resolve()}#{paragraphs[0]['title']}/0"
    metrics = evaluate(squad, RagIndex.open("kq", settings, e5), strict=True)
    assert metrics["questions"] == 4
    assert metrics["recall@1"] == metrics["recall@5"] == metrics["MRR"] == 1.0
    assert 0.0 < metrics["F1"] <= 1.0  # the supporting-sentence answer contains each gold answer
    assert 0.0 <= metrics["EM"] <= metrics["F1"]
    assert metrics["answerers"] == {"sentence": {"EM": metrics["EM"], "F1": metrics["F1"]}}

    from tests.tiny_models import make_tiny_bert

    qa_settings = RagSettings(
        home=tmp_path / "idx", progress=False, qa_model=str(make_tiny_bert(tmp_path / "qa"))
    )
    both = evaluate(squad, RagIndex.open("kq", qa_settings, e5), strict=True)
    # the span answerer and the sentence answerer, side by side on the same questions and retrieval
    assert set(both["answerers"]) == {"extractive-qa", "sentence"}
    assert both["answerers"]["sentence"] == metrics["answerers"]["sentence"]
    assert both["answerers"]["extractive-qa"]["F1"] == both["F1"]
