"""Extractive QA: offsets, windows and batching on a tiny random BERT (plumbing, not accuracy), the
span selection on hand-made logits, and the offset invariant on real KorQuAD questions and contexts.

No real QA weights install offline (none ship in a PyPI package), so answer quality is not tested here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from aiforge.errors import AiforgeError
from aiforge.tasks import load_pipeline
from aiforge.tasks.qa import particle_free_ends, rank_spans, span_candidates
from tests.tiny_models import make_tiny_bert

KORQUAD = Path(os.environ.get("KORQUAD_DEV_JSON", "/work/shared/data/korquad/KorQuAD_v1.0_dev_part_a.json"))

LONG_CONTEXT = " ".join(
    f"Sentence {i} says that the river number {i} flows through city {i * 7} in the year {1900 + i}."
    for i in range(40)
)
KOREAN = "대한민국의 수도는 서울이다. 서울의 인구는 약 940만 명이다."
ACCENTS = "  Café   naïve\tcrème brûlée,\nand ÉCOLE (école) 😀 emoji 😀 end. "
KOREAN_LONG = "이순신(李舜臣, 1545년 4월 28일 ~ 1598년 12월 16일)은 조선의 무신이다. " * 6
PAIRS = [
    {"question": "Where does the river flow?", "context": LONG_CONTEXT},
    {"question": "대한민국의 수도는?", "context": KOREAN},
    {"question": "Who met whom?", "context": "Alice met Bob in Paris."},
    {"question": "What is naïve?", "context": ACCENTS},
    {"question": "이순신은 언제 태어났나?", "context": KOREAN_LONG},
    {"question": "x", "context": "y"},
]


@pytest.fixture(scope="module")
def qa_dir(tmp_path_factory):
    return make_tiny_bert(tmp_path_factory.mktemp("qa"), head="qa")


@pytest.fixture(scope="module")
def qa(qa_dir):
    # Small windows so modest contexts already need several of them.
    return load_pipeline("question-answering", str(qa_dir), device="cpu", max_length=64, stride=16, top_k=3)


def assert_offsets_hold(result: dict, context: str) -> None:
    """What every caller relies on: each answer is exactly the context between its offsets."""
    assert "error" not in result, result
    assert result["answers"], "a context with text always yields a span"
    assert result["answers"][0] == {k: result[k] for k in ("answer", "score", "start", "end")}
    for ans in result["answers"]:
        assert 0 <= ans["start"] < ans["end"] <= len(context)
        assert context[ans["start"] : ans["end"]] == ans["answer"]
        assert ans["answer"] == ans["answer"].strip(), "token offsets never include surrounding whitespace"
        assert 0.0 < ans["score"] <= 1.0
    scores = [a["score"] for a in result["answers"]]
    assert scores == sorted(scores, reverse=True)
    spans = {(a["start"], a["end"]) for a in result["answers"]}
    assert len(spans) == len(result["answers"]), "no duplicate spans"


def test_every_answer_is_exactly_the_context_slice(qa):
    results = qa.predict(PAIRS)
    for pair, result in zip(PAIRS, results, strict=True):
        assert_offsets_hold(result, pair["context"])
        assert result["truncated"] is False
    assert results[0]["windows"] > 1 and results[4]["windows"] > 1
    assert results[2]["windows"] == 1 and results[5]["windows"] == 1
    assert results[5]["answer"] == "y"


def test_batch_results_equal_one_by_one(qa):
    batched = qa.predict(PAIRS, batch_size=4)  # windows of several items share one forward pass
    single = [qa(pair) for pair in PAIRS]
    for b, s in zip(batched, single, strict=True):
        assert [(a["answer"], a["start"], a["end"]) for a in b["answers"]] == [
            (a["answer"], a["start"], a["end"]) for a in s["answers"]
        ]
        scores = [[a["score"] for a in r["answers"]] for r in (b, s)]
        np.testing.assert_allclose(scores[0], scores[1], rtol=1e-4)
        assert b["windows"] == s["windows"]


def test_windows_overlap_and_cover_the_whole_context(qa):
    item = qa.parse_input(PAIRS[0])
    features = qa.preprocess(item)
    assert features.windows > 1
    covered = np.zeros(len(item.context), dtype=bool)
    for w in range(features.windows):
        for start, end in features.offsets[w][features.context_mask[w]]:
            covered[start:end] = True
    uncovered = [c for c, hit in zip(item.context, covered, strict=True) if not hit and not c.isspace()]
    assert uncovered == [], "windowing must never drop part of the context"
    for w in range(features.windows - 1):  # stride: the next window starts before this one ends
        this_end = features.offsets[w][features.context_mask[w]][-1, 1]
        next_start = features.offsets[w + 1][features.context_mask[w + 1]][0, 0]
        assert next_start < this_end
    assert qa.length(features) == int(features.inputs["attention_mask"].sum())


def test_long_question_is_cut_and_says_so(qa):
    question = "what is the meaning of this very long question " * 10
    result = qa({"question": question, "context": "Alice met Bob in Paris."})
    assert result["truncated"] is True
    assert_offsets_hold(result, "Alice met Bob in Paris.")


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ("just a string", "record"),
        ({"question": "q"}, "context"),
        ({"question": "q", "context": "   "}, "context"),
    ],
)
def test_bad_records_are_input_errors_naming_the_field(qa, raw, field):
    [result] = qa.predict([raw])
    assert result["error"]["code"] == "AF-INPUT-002"
    assert field in result["error"]["message"]


def test_model_without_a_qa_head_is_refused(tmp_path):
    model_dir = make_tiny_bert(tmp_path / "mlm", head="mlm")
    with pytest.raises(AiforgeError) as err:
        load_pipeline("question-answering", str(model_dir), device="cpu")
    assert err.value.code == "AF-MODEL-003"
    assert "qa_outputs" in err.value.message


# ---- span selection on hand-made logits ----------------------------------------------------------
def _window(n: int, context_from: int = 3):
    """One window of n tokens: [CLS], question tokens, then context tokens; token t covers chars 2t..2t+1."""
    offsets = np.stack([np.arange(n) * 2, np.arange(n) * 2 + 1], axis=1)[None]
    mask = np.zeros((1, n), dtype=bool)
    mask[0, context_from:-1] = True  # last token is [SEP]
    return offsets, mask


def test_span_candidates_are_ordered_short_enough_and_inside_the_context():
    start = np.zeros(8)
    mask = np.array([0, 0, 1, 1, 1, 1, 0, 0], dtype=bool)
    starts, ends, _ = span_candidates(start, start, mask, max_answer_len=2)
    pairs = set(zip(starts.tolist(), ends.tolist(), strict=True))
    assert pairs == {(2, 2), (2, 3), (3, 3), (3, 4), (4, 4), (4, 5), (5, 5)}


def test_best_span_is_the_highest_start_plus_end():
    offsets, mask = _window(10)
    start, end = np.zeros((1, 10)), np.zeros((1, 10))
    start[0, 4], end[0, 6] = 5.0, 4.0
    [best] = rank_spans(start, end, offsets, mask)
    assert (best.start, best.end) == (8, 13)  # token 4 starts at char 8, token 6 ends at char 13
    assert best.logit == pytest.approx(9.0)


def test_inverted_too_long_and_question_spans_are_never_chosen():
    offsets, mask = _window(12)
    offsets, mask = np.repeat(offsets, 4, axis=0), np.repeat(mask, 4, axis=0)
    start, end = np.full((4, 12), -100.0), np.full((4, 12), -100.0)  # one trap per window, no cross pairs
    start[0, 1], end[0, 2] = 50.0, 50.0  # question tokens: highest logits, not allowed
    start[1, 8], end[1, 5] = 20.0, 20.0  # end before start
    start[2, 3], end[2, 10] = 10.0, 10.0  # 8 tokens long > max_answer_len
    start[3, 6], end[3, 7] = 3.0, 3.0  # the best valid span
    [best] = rank_spans(start, end, offsets, mask, max_answer_len=4)
    assert (best.start, best.end) == (12, 15)
    [best] = rank_spans(start, end, offsets, mask, max_answer_len=8)
    assert (best.start, best.end) == (6, 21), "allowed once max_answer_len covers its 8 tokens"


def test_spans_are_compared_across_windows_and_duplicates_collapse():
    offsets, mask = _window(10)
    offsets = np.concatenate([offsets, offsets + 6])  # window 2 starts 3 tokens later (overlap)
    mask = np.concatenate([mask, mask])
    start, end = np.zeros((2, 10)), np.zeros((2, 10))
    start[1, 7], end[1, 8] = 6.0, 6.0  # best span, only in window 2: chars 20..23
    start[0, 5], end[0, 5] = 4.0, 4.0  # chars 10..11, seen in window 1 ...
    start[1, 3], end[1, 3] = 1.0, 1.0  # ... and again in window 2 with a lower logit
    spans = rank_spans(start, end, offsets, mask, top_k=3)
    assert [(s.start, s.end) for s in spans[:2]] == [(20, 23), (10, 11)]
    assert spans[1].logit == pytest.approx(8.0), "a duplicate span keeps its best logit"
    assert len({(s.start, s.end) for s in spans}) == 3


def test_scores_are_a_softmax_over_distinct_candidate_spans():
    offsets = np.array([[[0, 0], [0, 1], [2, 3], [0, 0]]])  # [CLS] a b [SEP]
    mask = np.array([[False, True, True, False]])
    start, end = np.array([[0.0, 1.0, 0.0, 0.0]]), np.array([[0.0, 0.0, 2.0, 0.0]])
    spans = rank_spans(start, end, offsets, mask, top_k=5)
    logits = {(0, 1): 1.0, (0, 3): 3.0, (2, 3): 2.0}  # a, "a b", b
    total = sum(np.exp(v) for v in logits.values())
    assert {(s.start, s.end): round(s.score, 6) for s in spans} == {
        k: round(float(np.exp(v) / total), 6) for k, v in logits.items()
    }
    assert sum(s.score for s in spans) == pytest.approx(1.0)


def test_null_answer_wins_only_when_allowed_and_its_score_is_higher():
    offsets, mask = _window(8)
    start, end = np.zeros((2, 8)), np.zeros((2, 8))
    offsets, mask = np.concatenate([offsets, offsets]), np.concatenate([mask, mask])
    start[:, 0], end[:, 0] = [9.0, 6.0], [9.0, 6.0]  # null logit = min over windows = 12
    start[0, 4], end[0, 4] = 5.0, 5.0  # best span logit 10
    [best] = rank_spans(start, end, offsets, mask, handle_impossible_answer=True)
    assert (best.start, best.end) == (0, 0)
    [best] = rank_spans(start, end, offsets, mask, handle_impossible_answer=False)
    assert (best.start, best.end) == (8, 9)
    start[0, 4] = 8.0  # span logit 13 now beats the null
    [best] = rank_spans(start, end, offsets, mask, handle_impossible_answer=True)
    assert (best.start, best.end) == (8, 9)


# ---- Korean particles glued to a word's last token -------------------------------------------------
GLUED = "하석주의 골로 이겼다. 민주주의자 의"
# XLM-R-like pieces: 하 석 주의 | 골로 | 이겼다 | . | 민주 주의 자 | 의
GLUED_TOKENS = [(0, 1), (1, 2), (2, 4), (5, 7), (8, 11), (11, 12), (13, 15), (15, 17), (17, 18), (19, 20)]


def test_a_particle_glued_to_a_words_last_token_is_left_out_of_the_span():
    offsets = np.array([GLUED_TOKENS])
    mask = np.ones((1, len(GLUED_TOKENS)), dtype=bool)
    ends = particle_free_ends(GLUED, offsets, mask)[0].tolist()
    # 주의 -> 주 and 골로 -> 골 at a word's end; 주의 before 자 is inside a word; a lone 의 is a whole token
    assert ends == [1, 2, 3, 6, 11, 12, 15, 17, 18, 20]
    start, end = np.zeros((1, 10)), np.zeros((1, 10))
    start[0, 0], end[0, 2] = 5.0, 5.0  # the model can only point at the token "주의"
    [best] = rank_spans(start, end, offsets, mask, context=GLUED)
    assert GLUED[best.start : best.end] == "하석주"
    [untrimmed] = rank_spans(start, end, offsets, mask)
    assert GLUED[untrimmed.start : untrimmed.end] == "하석주의"


def test_korquad_gold_answers_become_reachable_spans():
    """On the bundled KorQuAD articles with the packaged e5's XLM-R tokenizer: the best span a
    token-level model can give equals the gold answer for 89 % of questions, 99.6 % once glued particles
    are left out (measured on the 3,316 questions; asserted on every 4th article)."""
    from transformers import AutoTokenizer

    from aiforge.io import resolve_data_path
    from aiforge.models import resolve
    from aiforge.tasks.qa import exact_match

    tokenizer = AutoTokenizer.from_pretrained(resolve("packaged:multilingual-e5-small-hf").path)
    data = json.loads(resolve_data_path("packaged:korquad/KorQuAD_v1.0_dev_part_a.json").read_text("utf-8"))
    plain, trimmed, total = 0, 0, 0
    for article in data["data"][::4]:
        for paragraph in article["paragraphs"]:
            context = paragraph["context"]
            offsets = np.array([tokenizer(context, return_offsets_mapping=True)["offset_mapping"]])
            mask = offsets[..., 1] > offsets[..., 0]
            ends = particle_free_ends(context, offsets, mask)[0]
            for qa_item in paragraph["qas"]:
                gold = qa_item["answers"][0]
                start, stop = gold["answer_start"], gold["answer_start"] + len(gold["text"])
                covering = np.nonzero(mask[0] & (offsets[0, :, 0] < stop) & (offsets[0, :, 1] > start))[0]
                first, last = covering[0], covering[-1]
                begin = int(offsets[0, first, 0])
                while context[begin].isspace():
                    begin += 1
                total += 1
                plain += exact_match(context[begin : offsets[0, last, 1]], gold["text"])
                trimmed += exact_match(context[begin : ends[last]], gold["text"])
    assert total > 500
    assert plain / total < 0.93 and trimmed / total > 0.98


# ---- real Korean data ----------------------------------------------------------------------------
@pytest.mark.skipif(not KORQUAD.exists(), reason="KorQuAD dev file not present on this machine")
def test_korquad_offsets_hold_on_real_korean_contexts(qa_dir):
    """KorQuAD 1.0 (CC BY-ND) is read in place. Default window settings (384 / 128)."""
    data = json.loads(KORQUAD.read_text(encoding="utf-8"))
    paragraphs = [p for article in data["data"] for p in article["paragraphs"]][:3]
    pairs = [(p["context"], qa_item) for p in paragraphs for qa_item in p["qas"]]
    records = [{"question": qa_item["question"], "context": context} for context, qa_item in pairs]
    golds = [qa_item["answers"][0] for _, qa_item in pairs]
    pipe = load_pipeline("question-answering", str(qa_dir), device="cpu")
    results = pipe.predict(records, batch_size=8)
    assert any(r["windows"] > 1 for r in results), "jamo-split Korean contexts need several 384-token windows"
    for record, result, gold in zip(records, results, golds, strict=True):
        assert_offsets_hold(result, record["context"])
        # The gold answer must lie wholly inside at least one window, or no model could ever find it.
        features = pipe.preprocess(pipe.parse_input(record))
        g_start, g_end = gold["answer_start"], gold["answer_start"] + len(gold["text"])
        assert any(
            features.offsets[w][features.context_mask[w]][0, 0] <= g_start
            and g_end <= features.offsets[w][features.context_mask[w]][-1, 1]
            for w in range(features.windows)
        )
