"""The ONNX Runtime backend: same answers as PyTorch, exported once, and PyTorch when it cannot be trusted."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from aiforge.errors import AiforgeError
from aiforge.tasks import get_task, load_pipeline, onnxrt
from tests.tiny_models import make_tiny_bert

TEXTS = [
    "짧다",
    "배우들 연기가 훌륭했다",
    "this one is a little longer than the first, with punctuation!",
    "ok",
]


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("onnx") / "clf", head="seq-cls", num_labels=3)


def scores(results: list[dict]) -> np.ndarray:
    return np.array([[s["score"] for s in sorted(r["scores"], key=lambda s: s["label"])] for r in results])


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_classifier_matches_pytorch(classifier: Path, precision: str) -> None:
    torch_pipe = load_pipeline("text-classification", str(classifier), device="cpu")
    onnx_pipe = load_pipeline("text-classification", str(classifier), device="cpu", precision=precision)
    assert (torch_pipe.runtime_label(), onnx_pipe.runtime_label()) == ("torch/fp32", f"onnx/{precision}")
    assert not onnx_pipe.packs, "ONNX batches run padded: the batcher's padded cost model applies"
    expected, got = scores(torch_pipe.predict(TEXTS)), scores(onnx_pipe.predict(TEXTS))
    assert np.abs(expected - got).max() < (1e-4 if precision == "fp32" else 0.02)


def test_entities_and_answers_match_pytorch(tmp_path: Path) -> None:
    ner = make_tiny_bert(tmp_path / "ner", head="token-cls", num_labels=5)
    expected = load_pipeline("ner", str(ner), device="cpu").predict(TEXTS)
    onnx_ner = load_pipeline("ner", str(ner), device="cpu", runtime="onnx", precision="fp32")
    assert onnx_ner.runtime_label() == "onnx/fp32"
    for want, got in zip(expected, onnx_ner.predict(TEXTS), strict=True):
        assert [(e["entity_group"], e["start"], e["end"]) for e in want["entities"]] == [
            (e["entity_group"], e["start"], e["end"]) for e in got["entities"]
        ]
        assert [e["score"] for e in want["entities"]] == pytest.approx([e["score"] for e in got["entities"]])
    qa = make_tiny_bert(tmp_path / "qa", head="qa")
    item = {"question": "who went home?", "context": "Kim went home after the long meeting in Seoul."}
    torch_answer = load_pipeline("question-answering", str(qa), device="cpu")(item)
    onnx_pipe = load_pipeline("question-answering", str(qa), device="cpu", precision="fp32")
    assert onnx_pipe.runtime_label() == "onnx/fp32"
    assert onnx_pipe(item)["answer"] == torch_answer["answer"]


def test_export_is_cached_beside_the_model_and_reused(
    classifier: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    load_pipeline("text-classification", str(classifier), device="cpu", precision="int8")
    files = sorted(p.name for p in (classifier / "onnx").glob("*.onnx"))
    assert len(files) == 2 and all("-opset17-" in name for name in files)  # fp32 and int8, one key

    def no_export(*args: object, **kwargs: object) -> None:
        raise AssertionError("exported again although cached")

    monkeypatch.setattr(onnxrt, "export_fp32", no_export)
    monkeypatch.setattr(onnxrt, "quantize_int8", no_export)
    pipe = load_pipeline("text-classification", str(classifier), device="cpu", precision="int8")
    assert pipe.runtime_label() == "onnx/int8"


def test_probe_mismatch_falls_back_to_pytorch_with_the_reason(
    classifier: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real_arrays = onnxrt.OnnxForward.arrays

    def wrong(self: onnxrt.OnnxForward, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        return [out + 1.0 for out in real_arrays(self, feed)]  # what a broken export would answer

    monkeypatch.setattr(onnxrt.OnnxForward, "arrays", wrong)
    with caplog.at_level(logging.WARNING, logger="aiforge.tasks"):
        pipe = load_pipeline("text-classification", str(classifier), device="cpu", precision="fp32")
    assert pipe.runtime_label() == "torch/fp32"
    assert pipe.packs, "the PyTorch fallback takes the packing decision it takes without ONNX"
    assert pipe.runtime_fallback and "differ from PyTorch" in pipe.runtime_fallback
    assert "running on PyTorch" in caplog.text
    reference = load_pipeline("text-classification", str(classifier), device="cpu")
    assert pipe.predict(TEXTS) == reference.predict(TEXTS)


def test_unreadable_cached_file_falls_back(classifier: Path, tmp_path: Path) -> None:
    copy = tmp_path / "clf"
    copy.mkdir()
    for item in classifier.iterdir():
        if item.is_file():
            (copy / item.name).write_bytes(item.read_bytes())
    first = load_pipeline("text-classification", str(copy), device="cpu", precision="fp32")
    assert first.exported is not None
    first.exported.path("fp32").write_bytes(b"not an onnx file")
    pipe = load_pipeline("text-classification", str(copy), device="cpu", precision="fp32")
    assert pipe.runtime_label() == "torch/fp32" and pipe.runtime_fallback


def test_a_task_without_an_onnx_runtime_says_so() -> None:
    with pytest.raises(AiforgeError) as caught:
        get_task("text-generation").pipeline_for("transformers", "onnx")
    assert caught.value.code == "AF-INPUT-002" and "no 'onnx' runtime" in caught.value.message


def test_quantize_gate_refuses_int8_beyond_the_tolerance(classifier: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from aiforge.cli import app

    split = tmp_path / "validation.jsonl"
    labels = load_pipeline("text-classification", str(classifier), device="cpu").predict(TEXTS)
    split.write_text(
        "".join(
            json.dumps({"text": t, "label": r["label"]}) + "\n" for t, r in zip(TEXTS, labels, strict=True)
        ),
        encoding="utf-8",
    )
    refused = CliRunner().invoke(
        app, ["quantize", str(classifier), "--data", str(split), "--tolerance", "-1"]
    )
    assert refused.exit_code == 3, refused.output
    assert "AF-ONNX-002" in refused.output
    recorded = json.loads((classifier / "onnx" / "quality.json").read_text())
    assert recorded["int8_default"] is False and recorded["splits"]["validation"]["rows"] == len(TEXTS)
    assert (
        load_pipeline("text-classification", str(classifier), device="cpu", runtime="onnx").precision
        == "fp32"
    )

    accepted = CliRunner().invoke(
        app, ["quantize", str(classifier), "--data", str(split), "--tolerance", "50"]
    )
    assert accepted.exit_code == 0, accepted.output
    assert (
        load_pipeline("text-classification", str(classifier), device="cpu", runtime="onnx").precision
        == "int8"
    )


def test_fused_per_channel_recipe_matches_pytorch_cached_apart_and_gated_on_its_own(
    classifier: Path, tmp_path: Path
) -> None:
    import onnx
    from typer.testing import CliRunner

    from aiforge.cli import app

    torch_pipe = load_pipeline("text-classification", str(classifier), device="cpu")
    plain = load_pipeline("text-classification", str(classifier), device="cpu", onnx_recipe="plain")
    fused = load_pipeline(
        "text-classification", str(classifier), device="cpu", onnx_recipe="fused-per-channel"
    )
    assert fused.runtime_label() == "onnx/int8", fused.runtime_fallback
    assert plain.exported is not None and fused.exported is not None
    assert fused.exported.key != plain.exported.key, "a fused graph is not the plain export's cache entry"
    assert fused.exported.path("int8").name.endswith("-int8-per-channel.onnx")
    fused_ops = {node.op_type for node in onnx.load(str(fused.exported.path("fp32"))).graph.node}
    assert {"Attention", "SkipLayerNormalization"} <= fused_ops, fused_ops
    assert np.abs(scores(torch_pipe.predict(TEXTS)) - scores(fused.predict(TEXTS))).max() < 0.02

    split = tmp_path / "validation.jsonl"
    split.write_text(
        "".join(
            json.dumps({"text": t, "label": r["label"]}) + "\n"
            for t, r in zip(TEXTS, torch_pipe.predict(TEXTS), strict=True)
        ),
        encoding="utf-8",
    )
    gate = ["quantize", str(classifier), "--data", str(split), "--recipe", "fused-per-channel"]
    refused = CliRunner().invoke(app, [*gate, "--tolerance", "-1"])
    assert refused.exit_code == 3, refused.output
    assert json.loads((classifier / "onnx" / "quality.json").read_text())["recipe"] == "fused-per-channel"
    for recipe, precision in (("fused-per-channel", "fp32"), ("plain", "int8")):  # the verdict is per recipe
        pipe = load_pipeline("text-classification", str(classifier), device="cpu", onnx_recipe=recipe)
        assert pipe.precision == precision, recipe
    unknown = CliRunner().invoke(app, [*gate[:4], "--recipe", "fastest"])
    assert (
        unknown.exit_code != 0 and "AF-CONFIG-001" in unknown.output and "fused-per-channel" in unknown.output
    )


def test_timm_image_classifier_runs_on_onnx_and_a_transformers_one_says_why_not(tmp_path: Path) -> None:
    from PIL import Image

    from tests.tiny_models import make_tiny_timm, make_tiny_vit_classifier

    rng = np.random.default_rng(1)
    images = []
    for i, size in enumerate([(40, 56), (64, 64), (90, 30)]):
        images.append(tmp_path / f"photo{i}.png")
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(images[-1])
    timm_dir = make_tiny_timm(tmp_path / "timm", labels=["apple", "banana", "cherry", "date"])
    torch_pipe = load_pipeline("image-classification", str(timm_dir), device="cpu", top_k=4)
    onnx_pipe = load_pipeline("image-classification", str(timm_dir), device="cpu", top_k=4, precision="fp32")
    assert onnx_pipe.runtime_label() == "onnx/fp32", onnx_pipe.runtime_fallback
    for want, got in zip(
        torch_pipe.predict(map(str, images)), onnx_pipe.predict(map(str, images)), strict=True
    ):
        expected = {e["label"]: e["score"] for e in want["labels"]}
        assert {e["label"]: e["score"] for e in got["labels"]} == pytest.approx(expected, abs=1e-4)

    vit = make_tiny_vit_classifier(tmp_path / "vit", labels=["cat", "dog"])
    vit_pipe = load_pipeline("image-classification", str(vit), device="cpu", precision="fp32")
    assert vit_pipe.runtime_label() == "torch/fp32"
    assert vit_pipe.runtime_fallback and "timm" in vit_pipe.runtime_fallback


def test_training_export_key_writes_the_int8_model_beside_the_hf_dir(tmp_path: Path) -> None:
    from aiforge.train.config import TrainConfig
    from aiforge.train.loop import export_onnx

    assert TrainConfig(export="onnx-int8").export == "onnx-int8"
    model = make_tiny_bert(tmp_path / "trained", head="seq-cls")
    export_onnx("text-classification", model, "int8")
    assert list((model / "onnx").glob("model-*-opset17-int8*.onnx"))
    export_onnx("text-generation", model, "int8")  # no ONNX runtime for the task: a warning, no raise


def test_sentence_embeddings_on_onnx_match_sentence_transformers(tmp_path: Path) -> None:
    """The encoder and its mean pooling exported as one graph: the same vectors as
    sentence-transformers at fp32; at int8 either within the gate's cosine bar or back on PyTorch."""
    encoder = make_tiny_bert(tmp_path / "encoder", head="seq-cls")
    texts = [*TEXTS, "a fifth, longer sentence so that batches carry padding"]
    reference = np.array(
        [r["embedding"] for r in load_pipeline("sentence-embeddings", str(encoder)).predict(texts)]
    )
    fp32 = load_pipeline("sentence-embeddings", str(encoder), device="cpu", precision="fp32")
    assert fp32.runtime_label() == "onnx/fp32", fp32.runtime_fallback
    vectors = np.array([r["embedding"] for r in fp32.predict(texts)])
    assert np.sum(reference * vectors, axis=1) == pytest.approx(1.0, abs=1e-5)
    int8 = load_pipeline("sentence-embeddings", str(encoder), device="cpu", precision="int8")
    vectors = np.array([r["embedding"] for r in int8.predict(texts)])
    if int8.runtime_label() == "onnx/int8":
        assert np.sum(reference * vectors, axis=1).min() >= onnxrt.MIN_COSINE["int8"]
    else:
        assert int8.runtime_fallback and "cosine" in int8.runtime_fallback
