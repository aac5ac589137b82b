"""Generation plumbing on tiny random GPT-2 and T5 models: greedy determinism, left padding (batch ==
one by one), token budgets, truncation, streaming, chat prompts and seq2seq task prefixes.

No real causal-LM-in-transformers-format or seq2seq weights install offline, so the texts themselves
are meaningless here; only what callers rely on (shapes, counts, reasons, equalities) is checked.
"""

from __future__ import annotations

import json
import threading

import pytest
import torch

from aiforge.errors import AiforgeError
from aiforge.tasks import load_pipeline
from aiforge.tasks.generation import t5_translation_prefix
from tests.tiny_models import make_tiny_gpt2, make_tiny_t5

GPT2_POSITIONS = 128
T5_MAX_INPUT = 64
PROMPTS = [
    "hello world",
    "the quick brown fox jumps over the lazy dog and keeps running far away from the farm",
    "안녕하세요, 오늘 날씨가 좋네요",
    "a",
]


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    return make_tiny_gpt2(tmp_path_factory.mktemp("gpt2"), n_positions=GPT2_POSITIONS)


@pytest.fixture(scope="module")
def gen(gpt2_dir):
    return load_pipeline("text-generation", str(gpt2_dir), device="cpu", max_new_tokens=8)


@pytest.fixture(scope="module")
def t5_dir(tmp_path_factory):
    return make_tiny_t5(tmp_path_factory.mktemp("t5"), max_input_tokens=T5_MAX_INPUT)


# ---- causal LM ---------------------------------------------------------------------------------------
def test_greedy_is_deterministic_and_batch_equals_one_by_one(gen):
    batched = gen.predict(PROMPTS, batch_size=4)  # very different lengths: left padding must not leak in
    again = gen.predict(PROMPTS, batch_size=4)
    single = [gen(p) for p in PROMPTS]
    assert batched == again == single
    assert all(r["generated_text"] for r in batched)


def greedy(model_dir, max_new_tokens: int):
    return load_pipeline("text-generation", str(model_dir), device="cpu", max_new_tokens=max_new_tokens)


@pytest.mark.parametrize("n", [1, 5])
def test_max_new_tokens_is_respected_and_the_reason_matches(gpt2_dir, n):
    for result in greedy(gpt2_dir, n).predict(PROMPTS, batch_size=2):
        assert 1 <= result["completion_tokens"] <= n
        if result["finish_reason"] == "length":
            assert result["completion_tokens"] == n


def test_too_long_prompt_keeps_its_end_and_says_truncated(gen):
    prompt = "alpha " * 300 + "omega"
    result = gen(prompt)
    assert result["truncated"] is True
    assert result["prompt_tokens"] == GPT2_POSITIONS - 8  # room left for max_new_tokens
    features = gen.preprocess(gen.parse_input(prompt))
    tokens = gen.tokenizer.convert_ids_to_tokens(features.ids)
    assert tokens[0] == "[CLS]" and tokens[-1] == "omega", "left truncation keeps BOS and the prompt's end"
    assert gen("short prompt")["truncated"] is False
    assert gen.length(features) == len(features.ids)


def test_generation_stops_at_the_models_eos_token(gpt2_dir, tmp_path):
    first = load_pipeline("text-generation", str(gpt2_dir), device="cpu", max_new_tokens=1)
    [completion] = first.forward([first.preprocess(first.parse_input("hello world"))])
    # Make the token this model greedily produces first its end-of-sequence token: it must then stop.
    model_dir = make_tiny_gpt2(tmp_path / "eos", n_positions=GPT2_POSITIONS)
    config_path = model_dir / "generation_config.json"
    config = json.loads(config_path.read_text())
    config["eos_token_id"] = [completion.ids[0], 102]
    config_path.write_text(json.dumps(config))
    stopping = load_pipeline("text-generation", str(model_dir), device="cpu", max_new_tokens=8)
    result = stopping("hello world")
    assert (result["finish_reason"], result["completion_tokens"]) == ("stop", 1)
    batched = stopping.predict(["hello world", "the quick brown fox"], batch_size=2)
    assert batched[0] == result, "padding after an early stop is cut off, not counted"


def test_return_full_text_prepends_the_prompt(gpt2_dir, gen):
    full = load_pipeline("text-generation", str(gpt2_dir), device="cpu", max_new_tokens=8,
                         return_full_text=True)
    assert full("hello world")["generated_text"] == "hello world" + gen("hello world")["generated_text"]


def test_sampling_with_a_seed_is_reproducible_and_leaves_global_rng_alone(gpt2_dir):
    sampler = load_pipeline("text-generation", str(gpt2_dir), device="cpu", max_new_tokens=8,
                            do_sample=True, temperature=0.9, top_p=0.95, seed=7)
    state = torch.random.get_rng_state()
    assert sampler("hello world") == sampler("hello world")
    assert torch.equal(state, torch.random.get_rng_state())


@pytest.mark.parametrize("prompt", ["hello world", "안녕하세요, 오늘 날씨가 좋네요"])
def test_streamed_pieces_join_to_the_non_streamed_text(gpt2_dir, gen, prompt):
    pieces = list(gen.stream_tokens(prompt))
    assert len(pieces) > 1, "text arrives in several pieces"
    assert "".join(pieces) == gen(prompt)["generated_text"]
    # per-call parameters override the pipeline's
    streamed = "".join(gen.stream_tokens(prompt, max_new_tokens=3))
    assert streamed == greedy(gpt2_dir, 3)(prompt)["generated_text"]


def test_stop_sequences_cut_plain_and_streamed_text_the_same_way(gen):
    text = gen("hello world")["generated_text"]
    stop = text[len(text) // 2 : len(text) // 2 + 2]
    expected = text[: text.find(stop)]
    cut = gen.chat([{"role": "user", "content": "x"}], stop=[stop])  # per-call parameters
    assert gen.predict(["hello world"])[0]["generated_text"] == text  # the pipeline's own: no stop
    stopped = load_pipeline(
        "text-generation", gen.model_ref.location, device="cpu", max_new_tokens=8, stop=[stop]
    )
    out = stopped("hello world")
    assert out["generated_text"] == expected and out["finish_reason"] == "stop"
    assert "".join(gen.stream_tokens("hello world", stop=[stop])) == expected
    assert cut["finish_reason"] in ("stop", "length")


def test_stream_errors_surface_and_closing_early_ends_the_generate_thread(gen):
    with pytest.raises(AiforgeError):  # no room for a prompt in a 128-token model
        next(gen.stream_tokens("hello world", max_new_tokens=GPT2_POSITIONS))
    stream = gen.stream_tokens("hello world", max_new_tokens=100)
    next(stream)
    stream.close()  # sets the cancel event and joins the generate() thread
    assert not [t for t in threading.enumerate() if t.name == "aiforge-generate"]


def test_chat_prompt_uses_the_template_or_a_plain_transcript(gen):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert gen.apply_chat_template(messages) == "system: Be brief.\nuser: Hi\nassistant:"
    gen.tokenizer.chat_template = "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}"
    gen.tokenizer.chat_template += "<assistant>"
    try:
        assert gen.apply_chat_template(messages) == "<system>Be brief.<user>Hi<assistant>"
    finally:
        gen.tokenizer.chat_template = None
    with pytest.raises(AiforgeError) as err:
        gen.apply_chat_template([{"role": "user"}])
    assert err.value.code == "AF-INPUT-002"


def test_a_token_budget_larger_than_the_context_is_an_input_error(gpt2_dir):
    greedy = load_pipeline("text-generation", str(gpt2_dir), device="cpu", max_new_tokens=GPT2_POSITIONS)
    [result] = greedy.predict(["hello"])
    assert result["error"]["code"] == "AF-INPUT-002"
    assert "max_new_tokens" in result["error"]["message"]


# ---- seq2seq -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("task", "params", "prefix"),
    [
        ("text2text-generation", {}, ""),
        ("summarization", {}, "summarize: "),
        ("translation", {"src_lang": "en", "tgt_lang": "de"}, "translate English to German: "),
    ],
)
def test_seq2seq_tasks_prefix_truncate_and_batch(t5_dir, task, params, prefix):
    pipe = load_pipeline(task, str(t5_dir), device="cpu", max_new_tokens=6, **params)
    texts = ["The weather is nice today.", "word " * 200, "짧은 문장"]
    batched = pipe.predict(texts, batch_size=3)
    assert batched == [pipe(t) for t in texts]
    for text, result in zip(texts, batched, strict=True):
        assert isinstance(result["generated_text"], str)
        assert 1 <= result["completion_tokens"] <= 6
        expected_ids = pipe.tokenizer(prefix + text)["input_ids"]
        assert result["truncated"] is (len(expected_ids) > T5_MAX_INPUT)
        assert result["prompt_tokens"] == min(len(expected_ids), T5_MAX_INPUT)
    features = pipe.preprocess(pipe.parse_input(texts[0]))
    assert features.ids == pipe.tokenizer(prefix + texts[0])["input_ids"], "T5 models get their task prefix"


def test_t5_translation_needs_both_languages(t5_dir):
    with pytest.raises(AiforgeError) as err:
        load_pipeline("translation", str(t5_dir), device="cpu", tgt_lang="de")
    assert err.value.code == "AF-INPUT-002"
    assert "src_lang" in err.value.message


def test_t5_translation_prefix_names_languages():
    assert t5_translation_prefix("en", "ro") == "translate English to Romanian: "
    assert t5_translation_prefix("English", "Klingon") == "translate English to Klingon: "


def test_unknown_parameters_are_refused(gpt2_dir):
    with pytest.raises(AiforgeError) as err:
        load_pipeline("text-generation", str(gpt2_dir), device="cpu", max_tokens=5)
    assert err.value.code == "AF-INPUT-002"
