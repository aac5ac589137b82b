"""Tuned weights written back as GGUF (train/gguf.py): the packaged SmolLM2 dequantised and exported
again answers on llama.cpp as the original does, and a base model's file gains the chat template it
was tuned with (llama.cpp then renders prompts as training did)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from aiforge.models import PACKAGED, resolve
from aiforge.train.gguf import dequantized_dir, export_gguf

SMOLLM2 = PACKAGED["smollm2-135m-instruct"]


def _fields(path: Path) -> dict[str, object]:
    import gguf

    return {key: field.contents() for key, field in gguf.GGUFReader(path).fields.items()}


def test_a_source_without_a_chat_template_gains_the_tuned_one(tmp_path: Path) -> None:
    import gguf

    source = tmp_path / "base.gguf"
    writer = gguf.GGUFWriter(source, "llama")
    writer.add_block_count(1)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    model = SimpleNamespace(config=SimpleNamespace(num_hidden_layers=1), state_dict=dict)
    template = "{% for m in messages %}<start_of_turn>{{ m['content'] }}<end_of_turn>{% endfor %}"
    export_gguf(model, source, tmp_path / "tuned.gguf", chat_template=template)
    assert _fields(tmp_path / "tuned.gguf")["tokenizer.chat_template"] == template
    assert "tokenizer.chat_template" not in _fields(source)


@pytest.mark.slow
@pytest.mark.skipif(not SMOLLM2.available(), reason=f"needs {SMOLLM2.install_command()}")
def test_smollm2_dequantised_and_written_back_answers_on_llama_cpp(tmp_path: Path) -> None:
    import torch
    import transformers

    from aiforge.tasks import load_pipeline

    source = resolve("packaged:smollm2-135m-instruct").path
    directory = dequantized_dir(source)
    model = transformers.AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
    exported = export_gguf(model, source, tmp_path / "model.gguf", chat_template="unused: the source has one")
    assert exported.stat().st_size < 0.6 * directory.joinpath("model.safetensors").stat().st_size  # Q8_0
    # the source's own template is kept, not replaced
    assert _fields(exported)["tokenizer.chat_template"] == _fields(source)["tokenizer.chat_template"]
    pipe = load_pipeline("text-generation", str(exported), max_new_tokens=16)
    answer = pipe.chat([{"role": "user", "content": "What is the capital of France?"}])
    assert "Paris" in answer["generated_text"] and answer["finish_reason"] == "stop"
