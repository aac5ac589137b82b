"""Causal LM fine-tuning (task text-generation) on a tiny Llama: answer-only loss masks, packing that
keeps examples apart, LoRA training that changes the answers, merged weights served by the chat
route over HTTP, registration, resume after SIGKILL, the dry run and bad conversations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from aiforge import registry
from aiforge.errors import AiforgeError
from aiforge.train import load_config, train
from aiforge.train.config import dump_yaml
from aiforge.train.data import read_chat_split
from aiforge.train.dryrun import dry_run
from aiforge.train.loop import prepare
from tests.train.test_loop import _run, _script

# Every answer is the same word, so a few LoRA steps on a random model are enough to learn it.
ANSWER = "banana"


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tiny_models import make_tiny_llama

    return make_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def chat_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """48 training and 8 test conversations (two of them two-turn), and 8 prompt / completion rows, all
    answered ANSWER."""
    root = tmp_path_factory.mktemp("chat")
    rows = []
    for i in range(48):
        messages = [{"role": "user", "content": f"question number {i} about fruit"}]
        if i % 24 == 0:
            messages = [
                {"role": "system", "content": "answer in one word"},
                *messages,
                {"role": "assistant", "content": ANSWER},
                {"role": "user", "content": "again please"},
            ]
        rows.append({"messages": [*messages, {"role": "assistant", "content": ANSWER}]})
    (root / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    test = [
        {
            "messages": [
                {"role": "user", "content": f"another question {i}"},
                {"role": "assistant", "content": ANSWER},
            ]
        }
        for i in range(8)
    ]
    (root / "test.jsonl").write_text("\n".join(json.dumps(r) for r in test), encoding="utf-8")
    (root / "pairs.csv").write_text(
        "prompt,completion\n" + "\n".join(f"question {i},{ANSWER}" for i in range(8)), encoding="utf-8"
    )
    return {"train": root / "train.jsonl", "test": root / "test.jsonl", "pairs": root / "pairs.csv"}


@pytest.fixture
def sft_config(tiny_llama: Path, chat_files: dict[str, Path], tmp_path: Path):
    def build(*overrides: str):
        base = [
            "task=text-generation",
            f"model={tiny_llama}",
            f"output_dir={tmp_path / 'run'}",
            f"data.train={chat_files['train']}",
            "data.input_column=messages",
            "data.validation_split=0.25",
            "training.epochs=3",
            "training.batch_size=4",
            "training.lr=0.01",
            "training.num_threads=1",
            "sft.eval_rows=8",
            "sft.max_new_tokens=4",
            "tracking.enabled=false",
        ]
        return load_config(None, [*base, *overrides])

    return build


def test_loss_covers_the_answer_tokens_only(sft_config) -> None:
    prep = prepare(sft_config("sft.packing=false"))
    task, tokenizer = prep.task, prep.task.tokenizer  # type: ignore[attr-defined]
    assert prep.dataset.label_counts() == {}  # answers are free text: the dry run counts no classes
    two_turns = next(m for m in prep.dataset.train.inputs if len(m) == 5)
    ids, targets = task.render(two_turns)  # type: ignore[attr-defined]
    trained = [t for t in targets if t != -100]
    # both assistant turns are learnt, each with its end-of-turn token; no user, system or template text
    assert (
        tokenizer.decode(trained) == f"{ANSWER}[SEP] {ANSWER}[SEP]"
        or trained == tokenizer(f"{ANSWER}[SEP]{ANSWER}[SEP]", add_special_tokens=False)["input_ids"]
    )
    assert tokenizer.decode(ids).count("assistant") == 2
    masked = tokenizer.decode([i for i, t in zip(ids, targets, strict=True) if t == -100])
    assert "again please" in masked and "answer in one word" in masked and ANSWER not in masked
    # collated batches project only positions whose next token is an answer token: never padding
    assert task.answer_logits  # type: ignore[attr-defined]  # Llama takes a boolean logits_to_keep
    batch = task.collate(prep.validation, [0, 1], "cpu")
    keep = batch["logits_to_keep"]
    assert not keep[batch["attention_mask"] == 0].any()
    assert len(batch["labels"]) == int(keep.sum()) and batch["labels"].ne(-100).all()
    # ... and the loss is the one over the full logits, answer tokens only
    model = prep.model.eval()
    with torch.inference_mode():
        kept_loss = model(**batch).loss
        full = {k: v for k, v in batch.items() if k not in ("labels", "shift_labels", "logits_to_keep")}
        full_labels = torch.full_like(batch["input_ids"], -100)
        full_labels[:, 1:][keep[:, :-1]] = batch["labels"]
        full_loss = model(**full, labels=full_labels).loss
    torch.testing.assert_close(kept_loss, full_loss, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "markers", [(), ("<start_of_turn>", "<end_of_turn>"), ("<|im_start|>", "<|im_end|>")]
)
def test_a_base_model_gets_a_template_whose_turns_end_with_one_token(tiny_llama: Path, markers) -> None:
    """A tokenizer without a chat template gets one whose end of turn is one token of its own vocabulary
    (Gemma's markers, ChatML's, else end-of-text), and that token stops generation."""
    from transformers import AutoTokenizer

    from aiforge.train.causal import fallback_template, stop_ids

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    tokenizer.chat_template = None
    if markers:
        tokenizer.add_special_tokens({"additional_special_tokens": list(markers)})
    tokenizer.chat_template = fallback_template(tokenizer)
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": ANSWER}]
    rendered = tokenizer.apply_chat_template(chat, tokenize=False)
    end_of_turn = markers[1] if markers else tokenizer.eos_token
    assert rendered.rstrip().endswith(f"{ANSWER}{end_of_turn}")
    assert stop_ids(tokenizer) == list(
        dict.fromkeys([tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids(end_of_turn)])
    )


def test_packing_keeps_examples_apart(sft_config) -> None:
    prep = prepare(sft_config("training.max_length=64"))
    task, model, packed = prep.task, prep.model, prep.train
    assert packed.position_ids is not None and len(packed) < len(prep.dataset.train)
    row = packed.position_ids[0]
    starts = [i for i, p in enumerate(row) if p == 0]
    assert len(starts) >= 2  # several examples in one row
    second = slice(starts[1], starts[2] if len(starts) > 2 else len(row))
    model.eval()
    with torch.inference_mode():
        batch = task.collate(packed, [0], "cpu")
        together = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits[0, second]
        alone_ids = torch.tensor([packed.input_ids[0][second]])
        alone = model(input_ids=alone_ids).logits[0]
    torch.testing.assert_close(together, alone, atol=1e-4, rtol=1e-4)  # the block mask holds


def test_prompt_completion_columns_and_bad_conversations(tmp_path: Path, sft_config, chat_files) -> None:
    config = sft_config("data.input_column=prompt", "data.label_column=completion")
    split, _ = read_chat_split("train", str(chat_files["pairs"]), config.data, strict=True)
    assert split.inputs[3] == [
        {"role": "user", "content": "question 3"},
        {"role": "assistant", "content": ANSWER},
    ]
    assert split.labels == [ANSWER] * 8
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        json.dumps({"messages": [{"role": "user", "content": "no answer"}]}) + "\n", encoding="utf-8"
    )
    with pytest.raises(AiforgeError) as info:
        read_chat_split("train", str(bad), sft_config().data, strict=True)
    assert info.value.code == "AF-DATA-003" and "assistant" in str(info.value)


def test_lora_sft_learns_registers_and_is_served_by_the_chat_route(sft_config, chat_files) -> None:
    from aiforge.serve import ServeSettings
    from aiforge.tasks import load_pipeline
    from tests.serve.conftest import running_server

    config = sft_config(
        f"data.test={chat_files['test']}",
        "tracking.enabled=true",
        "tracking.model_name=tiny-sft",
        "tracking.experiment=tests",
    )
    result = train(config, progress=False)

    before, after = result.baseline["test"], result.metrics["test"]  # type: ignore[index]
    assert before["exact_match"] == 0.0 and after["exact_match"] == 1.0  # the random model learnt it
    assert after["loss"] < before["loss"]
    verdict = result.comparison["test"]  # paired over the same questions, with intervals
    assert verdict["verdict"] == "beats" and after["ci"]["exact_match"][0] > before["ci"]["exact_match"][1]
    assert (result.model_dir / "lora-adapter" / "adapter_config.json").exists()
    saved = json.loads((result.model_dir / "config.json").read_text())
    assert saved["architectures"] == ["LlamaForCausalLM"]  # merged: a plain model, no peft needed
    meta = json.loads((result.model_dir / "aiforge.json").read_text(encoding="utf-8"))
    assert meta["task"] == "text-generation" and meta["metrics"]["test"]["exact_match"] == 1.0
    assert any(line.startswith("baseline") and "before fine-tuning" in line for line in result.lines())
    run = registry.client().get_run(result.run_id)
    assert (
        run.data.metrics["test_exact_match"] == 1.0 and run.data.metrics["baseline_test_exact_match"] == 0.0
    )
    assert (result.registered_name, result.registered_version) == ("tiny-sft", "1")

    local = load_pipeline("text-generation", model="registry:tiny-sft/1", device="cpu", max_new_tokens=4)
    messages = [{"role": "user", "content": "a question never seen"}]
    assert local.chat(messages)["generated_text"].strip() == ANSWER
    settings = ServeSettings(
        host="127.0.0.1",
        port=0,
        log_level="warning",
        models=[{"name": "sft", "task": "text-generation", "model": str(result.model_dir), "device": "cpu"}],
    )
    with running_server(settings) as server, server.client() as http:
        body = {"model": "sft", "messages": messages, "max_tokens": 4, "temperature": 0}
        response = http.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"].strip() == ANSWER


@pytest.mark.slow
def test_full_fine_tuning_dry_run_and_resume_after_sigkill(sft_config, tmp_path: Path) -> None:
    report = dry_run(sft_config("sft.method=full"), measure_steps=2)
    assert report.parameters["trainable"] == report.parameters["total"]  # full: every weight trains
    lora = dry_run(sft_config(), measure_steps=1)
    assert 0 < lora.parameters["trainable"] < lora.parameters["total"] / 10
    assert report.length_unit == "tokens" and report.max_length > 0

    # 36 training conversations packed into rows, batch 2; checkpoints every 2 steps; killed at step 3
    common = [
        "training.batch_size=2",
        "training.checkpoint_every_steps=2",
        "training.epochs=1",
        "sft.eval_rows=4",
    ]
    reference = sft_config(*common, f"output_dir={tmp_path / 'reference'}")
    crashed = sft_config(*common, f"output_dir={tmp_path / 'crashed'}")
    crash_cfg = tmp_path / "crashed.yaml"
    crash_cfg.write_text(dump_yaml(crashed), encoding="utf-8")
    train(reference, progress=False)  # in this process: one interpreter start less (~15 s)
    killed = _run(_script(tmp_path, 3, resume=False), crash_cfg)
    assert killed.returncode == -9
    resumed = _run(_script(tmp_path, None, resume=True), crash_cfg)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    want = json.loads((tmp_path / "reference" / "metrics.json").read_text(encoding="utf-8"))
    got = json.loads((tmp_path / "crashed" / "metrics.json").read_text(encoding="utf-8"))
    assert got["metrics"]["validation"] == want["metrics"]["validation"]  # bit for bit
    assert got["history"]["evals"] == want["history"]["evals"]


def test_korquad_example_builds_its_data_and_config(tmp_path: Path) -> None:
    import runpy

    repo = Path(__file__).parents[2]
    runpy.run_path(str(repo / "examples" / "make_korquad_sft.py"), run_name="example")["main"](tmp_path)
    train_rows = [
        json.loads(line) for line in (tmp_path / "train.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    test_rows = (tmp_path / "test.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(train_rows) == 294 and len(test_rows) == 80  # test articles are never trained on
    assert train_rows[0]["messages"][1]["content"] in train_rows[0]["messages"][0]["content"]  # extractive
    config = load_config(repo / "examples" / "korquad-sft.yaml", [f"data.train={tmp_path / 'train.jsonl'}"])
    assert config.task == "text-generation" and config.sft.method == "lora"
