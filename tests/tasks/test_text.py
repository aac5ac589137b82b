"""Text tasks: classification, entities, fill-mask on tiny random models (plumbing), and
zero-shot / embeddings on the packaged multilingual e5 (real answers)."""

from __future__ import annotations

import numpy as np
import pytest

from aiforge.errors import AiforgeError
from aiforge.tasks import load_pipeline
from aiforge.tasks.text import group_entities
from tests.tiny_models import make_tiny_bert

TEXTS = [
    "이 영화 정말 재밌어요",
    "a much longer English sentence that will need many more tokens than the others in this list",
    "최악",
    "배우들 연기가 훌륭하고 스토리도 탄탄해서 시간 가는 줄 몰랐다",
    "ok",
]


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory):
    return make_tiny_bert(
        tmp_path_factory.mktemp("cls"), head="seq-cls", id2label={0: "negative", 1: "positive"}
    )


@pytest.fixture(scope="module")
def classifier(classifier_dir):
    return load_pipeline("text-classification", str(classifier_dir), device="cpu")


def test_classification_batch_equals_one_by_one_in_input_order(classifier):
    batched = classifier.predict(TEXTS, batch_size=2)  # length sorting reorders batches internally
    single = [classifier(t) for t in TEXTS]
    assert [b["label"] for b in batched] == [s["label"] for s in single]
    np.testing.assert_allclose([b["score"] for b in batched], [s["score"] for s in single], atol=1e-5)


def test_predict_runs_batches_side_by_side_on_a_multicore_cpu(classifier, monkeypatch):
    import threading

    import torch

    threads_of = torch.get_num_threads
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)  # the caller has two torch threads
    meet = threading.Barrier(2, timeout=20)  # two batches must be inside forward at the same time
    seen: list[tuple[str, int]] = []
    forward = classifier.forward

    def side_by_side(batch):
        seen.append((threading.current_thread().name, threads_of()))
        if len(seen) <= 2:
            meet.wait()
        return forward(batch)

    monkeypatch.setattr(classifier, "forward", side_by_side)
    batched = classifier.predict(TEXTS, batch_size=2)  # 3 batches on 2 threads, 1 torch thread each
    assert len({name for name, _ in seen}) == 2 and {threads for _, threads in seen} == {1}
    monkeypatch.undo()
    serial = [classifier(t) for t in TEXTS]
    assert [b["label"] for b in batched] == [s["label"] for s in serial]
    np.testing.assert_allclose([b["score"] for b in batched], [s["score"] for s in serial], atol=1e-5)


def test_classification_scores_are_a_distribution_over_the_model_labels(classifier):
    out = classifier("재밌다")
    assert {s["label"] for s in out["scores"]} == {"negative", "positive"}
    assert abs(sum(s["score"] for s in out["scores"]) - 1) < 1e-5
    assert (
        out["label"] == out["scores"][0]["label"] and out["scores"][0]["score"] >= out["scores"][1]["score"]
    )
    assert out["truncated"] is False


def test_over_long_text_is_truncated_and_says_so(classifier_dir):
    pipe = load_pipeline("text-classification", str(classifier_dir), device="cpu", max_length=16)
    out = pipe("word " * 200)
    assert out["truncated"] is True
    assert pipe("short")["truncated"] is False


def test_top_k_limits_labels(classifier_dir):
    pipe = load_pipeline("text-classification", str(classifier_dir), device="cpu", top_k=1)
    assert len(pipe("hello")["scores"]) == 1


def test_bad_params_and_inputs_are_user_errors(classifier_dir, classifier):
    with pytest.raises(AiforgeError) as exc:
        load_pipeline("text-classification", str(classifier_dir), device="cpu", top_kk=1)
    assert exc.value.code == "AF-INPUT-002" and "top_k" in exc.value.fix
    results = classifier.predict(["fine", {"text": ""}, {"txt": "x"}])
    assert "label" in results[0]
    assert results[1]["error"]["code"] == "AF-INPUT-002" and results[2]["error"]["code"] == "AF-INPUT-002"


def test_token_classification_spans_are_exact_substrings(tmp_path):
    labels = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC"}
    model_dir = make_tiny_bert(tmp_path / "ner", head="token-cls", id2label=labels)
    pipe = load_pipeline("token-classification", str(model_dir), device="cpu", ignore_labels=[])
    for text in ["김철수는 서울에 산다", "John Smith lives in New York City."]:
        out = pipe(text)
        assert out["entities"], "with no ignored labels every token belongs to a span"
        for ent in out["entities"]:
            assert text[ent["start"] : ent["end"]] == ent["word"]
            assert 0 <= ent["score"] <= 1
        starts = [e["start"] for e in out["entities"]]
        assert starts == sorted(starts)


def test_group_entities_merges_bio_spans_and_subwords():
    text = "John Smith visited Seoul"
    tokens = [  # (index, start, end, label, score)
        (1, 0, 4, "B-PER", 0.9),
        (2, 5, 10, "I-PER", 0.8),
        (3, 11, 18, "O", 0.99),
        (4, 19, 22, "B-LOC", 0.7),
        (5, 22, 24, "I-LOC", 0.5),
    ]
    groups = group_entities(tokens, text, "simple")
    named = [(g["entity_group"], g["word"]) for g in groups]
    assert named == [("PER", "John Smith"), ("O", "visited"), ("LOC", "Seoul")]
    assert groups[0]["score"] == pytest.approx(0.85)
    # a new B- tag starts a new entity even when the type repeats
    tokens2 = [(1, 0, 4, "B-PER", 0.9), (2, 5, 10, "B-PER", 0.8)]
    assert [g["word"] for g in group_entities(tokens2, text, "simple")] == ["John", "Smith"]


def test_fill_mask_accepts_either_mask_spelling(tmp_path):
    model_dir = make_tiny_bert(tmp_path / "mlm", head="mlm")
    pipe = load_pipeline("fill-mask", str(model_dir), device="cpu", top_k=3)
    a, b = pipe("paris is the [MASK] of france"), pipe("paris is the <mask> of france")
    assert [p["token_str"] for p in a["predictions"]] == [p["token_str"] for p in b["predictions"]]
    assert len(a["predictions"]) == 3
    assert all("[MASK]" not in p["sequence"] and p["token_str"] in p["sequence"] for p in a["predictions"])
    with pytest.raises(AiforgeError, match="exactly one mask"):
        pipe("no mask here")


def test_zero_shot_korean_sentiment_with_packaged_e5():
    pipe = load_pipeline(
        "zero-shot-classification", device="cpu", candidate_labels=["긍정적인 리뷰", "부정적인 리뷰"]
    )
    assert pipe.model_ref.kind == "packaged"
    pos = pipe("이 영화 정말 최고였어요, 배우들 연기가 훌륭함")
    neg = pipe("시간 낭비였다. 지루하고 재미없음")
    assert pos["labels"][0] == "긍정적인 리뷰" and neg["labels"][0] == "부정적인 리뷰"
    assert abs(sum(pos["scores"]) - 1) < 1e-5


def test_zero_shot_needs_labels():
    pipe = load_pipeline("zero-shot-classification", device="cpu")
    with pytest.raises(AiforgeError) as exc:
        pipe("text")
    assert "candidate_labels" in exc.value.fix


def test_korean_embeddings_rank_paraphrase_above_unrelated():
    pipe = load_pipeline("sentence-embeddings", device="cpu")
    vecs = np.array(
        [
            o["embedding"]
            for o in pipe.predict(
                ["오늘 날씨가 정말 좋네요", "날씨가 맑고 화창한 하루입니다", "주식 시장이 크게 하락했다"]
            )
        ]
    )
    assert vecs.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-4)
    assert vecs[0] @ vecs[1] > vecs[0] @ vecs[2] + 0.05


def test_english_minilm_embeddings_via_sentence_transformers():
    pipe = load_pipeline("sentence-embeddings", "packaged:all-minilm-l6-v2", device="cpu")
    a, b, c = (
        np.array(o["embedding"])
        for o in pipe.predict(
            [
                "A man is playing a guitar.",
                "Someone plays an acoustic guitar.",
                "The stock market fell sharply.",
            ]
        )
    )
    assert a @ b > a @ c + 0.2


def test_a_bare_encoder_is_refused_for_classification_instead_of_a_random_head():
    # all-MiniLM ships without a classification head: its "predictions" would be coin flips
    with pytest.raises(AiforgeError) as exc:
        load_pipeline("text-classification", "packaged:all-minilm-l6-v2", device="cpu").ensure_setup()
    assert exc.value.code == "AF-MODEL-003"
    assert "no trained text-classification head" in exc.value.message
    assert "aiforge train" in exc.value.fix
