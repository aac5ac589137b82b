"""Training from scratch (issue 18): models built from a config, tokenizers trained on the corpus,
a causal LM with bits per character beside a Kneser-Ney n-gram, a vision model beside an SVC, and
reproducibility. Every model is a few thousand parameters trained for a few steps: these tests
check plumbing and guarantees (same seed -> same loss, resume, saved dirs load), not quality."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from aiforge.errors import AiforgeError
from aiforge.train import init_template, load_config, train
from aiforge.train.config import TokenizerConfig, TrainConfig, dump_yaml
from aiforge.train.ngram import KneserNey
from aiforge.train.tokenizer import compose, train_tokenizer
from tests.train.conftest import config_builder

REPO = Path(__file__).parents[2]
KOREAN = ["이 영화 정말 재밌어요", "배우 연기가 최고", "ＡＢＣ 전각 문자도 섞여요", "다시 보고 싶은 영화"] * 5

lm_config = config_builder(
    "task=text-generation",
    "model={init: scratch, architecture: gpt2, layers: 1, heads: 2, hidden: 16, context: 16}",
    "data.train=packaged:nsmc_text/validation.txt",
    "data.max_rows=150",
    "training.batch_size=8",
    "training.max_steps=6",
    "training.lr=3e-3",
    "training.scheduler=cosine",
    "training.checkpoint_every_steps=3",
)


# ---- tokenizers ----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["char", "bpe", "unigram"])
def test_tokenizers_learn_from_the_corpus_and_reload_as_hugging_face(kind: str, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = train_tokenizer(KOREAN, TokenizerConfig(kind=kind, vocab_size=60), 32)
    text = "이 영화 정말 최고"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids).replace(" ", "").replace("▁", "") == text.replace(" ", "")
    tokenizer.save_pretrained(tmp_path)
    assert AutoTokenizer.from_pretrained(tmp_path)(text, add_special_tokens=False)["input_ids"] == ids
    if kind == "char":
        assert tokenizer.decode(ids) == text  # every character, spaces included, round-trips
        assert tokenizer.convert_ids_to_tokens(tokenizer("ＡＢ")["input_ids"]) == ["A", "B"]  # NFKC folds


def test_jamo_decomposition_shrinks_the_vocabulary_and_composes_back() -> None:
    syllables = train_tokenizer(KOREAN, TokenizerConfig(kind="char"), 64)
    jamo = train_tokenizer(KOREAN, TokenizerConfig(kind="char", jamo=True), 64)
    assert len(jamo) < len(syllables)
    ids = jamo("영화", add_special_tokens=False)["input_ids"]
    assert len(ids) == 5  # ㅇ ㅕ ㅇ ㅎ ㅘ
    assert compose(jamo.decode(ids)) == "영화"


# ---- the n-gram baseline -------------------------------------------------------------------------
def test_kneser_ney_is_a_distribution_and_learns_repetition() -> None:
    text = "가나다라마바사 " * 40 + "아자차카타파하"
    model = KneserNey(text, order=5)
    alphabet = sorted(set(text)) + ["?"]  # "?" stands for every unseen character
    for context in ("", "가나", "나다라마", "zz"):
        seen = sum(model.probability(context, c) for c in alphabet[:-1])
        unseen = model.probability(context, "?")
        assert seen + unseen * (model.vocab - len(alphabet) + 1) == pytest.approx(1.0)
    assert model.bits_per_char("가나다라마바사 가나다라") < 0.5 < math.log2(model.vocab)


# ---- causal LM ------------------------------------------------------------------------------------
def test_lm_from_scratch_tracks_registers_and_runs_like_any_model(tmp_path: Path) -> None:
    from aiforge import registry
    from aiforge.tasks import load_pipeline

    config = lm_config(
        f"output_dir={tmp_path / 'run'}",
        "training.eval_every_steps=3",
        "tracking.enabled=true",
        "tracking.experiment=scratch-tests",
        "tracking.model_name=tiny-char-lm",
    )
    result = train(config, progress=False)
    validation = result.metrics["validation"]
    assert validation["bits_per_char"] == pytest.approx(validation["loss"] / math.log(2), rel=0.05)
    assert len(validation["samples"]) == 2 and all(validation["samples"])
    assert result.baseline is not None and result.baseline["validation"]["bits_per_char"] > 0
    assert (result.output_dir / "samples.txt").read_text(encoding="utf-8").count("# evaluation") == 3
    # a model dir with its own tokenizer: the same pipeline as any hub model, and the registry
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        assert (result.model_dir / name).is_file()
    assert json.loads((result.model_dir / "config.json").read_text())["n_layer"] == 1
    for model in (str(result.model_dir), "registry:tiny-char-lm"):
        pipe = load_pipeline("text-generation", model, device="cpu", max_new_tokens=5)
        assert isinstance(pipe("이 영화")["generated_text"], str)
    run = registry.client(config.tracking.tracking_uri).get_run(result.run_id)
    assert run.data.params["model.architecture"] == "gpt2" and "final_val_bits_per_char" in run.data.metrics
    assert "baseline_validation_bits_per_char" in run.data.metrics


def test_same_config_and_seed_give_the_same_validation_loss(tmp_path: Path) -> None:
    """Item 6: seeds, data order, initialisation; the resolved config, the tokenizer and the
    environment are stored with the run."""
    llama = "model={init: scratch, architecture: llama, layers: 1, heads: 2, hidden: 16, context: 16}"
    first = train(lm_config(llama, f"output_dir={tmp_path / 'a'}", "baseline=false"), progress=False)
    second = train(lm_config(llama, f"output_dir={tmp_path / 'b'}", "baseline=false"), progress=False)
    other = train(
        lm_config(llama, f"output_dir={tmp_path / 'c'}", "baseline=false", "training.seed=7"), progress=False
    )
    assert first.metrics["validation"]["loss"] == second.metrics["validation"]["loss"]  # bit for bit
    assert first.metrics["validation"]["loss"] != other.metrics["validation"]["loss"]
    stored = yaml.safe_load((first.output_dir / "config.yaml").read_text(encoding="utf-8"))
    assert TrainConfig.model_validate(stored) == lm_config(
        llama, f"output_dir={tmp_path / 'a'}", "baseline=false"
    )
    assert (first.output_dir / "environment.json").is_file() and (
        first.model_dir / "tokenizer.json"
    ).is_file()


@pytest.mark.slow
def test_lm_resumes_after_sigkill_with_the_same_result(tmp_path: Path) -> None:
    from tests.train.test_loop import _run, _script

    reference = train(lm_config(f"output_dir={tmp_path / 'reference'}", "baseline=false"), progress=False)
    crashed = tmp_path / "crashed.yaml"
    crashed.write_text(dump_yaml(lm_config(f"output_dir={tmp_path / 'crashed'}", "baseline=false")), "utf-8")
    assert _run(_script(tmp_path, 4, resume=False), crashed).returncode == -9  # after the step-3 checkpoint
    resumed = _run(_script(tmp_path, None, resume=True), crashed)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    got = json.loads((tmp_path / "crashed" / "metrics.json").read_text(encoding="utf-8"))
    assert got["metrics"]["validation"]["loss"] == reference.metrics["validation"]["loss"]


def test_dry_run_counts_parameters_and_flops_per_token(tmp_path: Path) -> None:
    from aiforge.train.dryrun import dry_run

    report = dry_run(lm_config(f"output_dir={tmp_path / 'run'}"), measure_steps=1)
    assert report.parameters["total"] > 0 and report.truncated_share == 0  # packed: nothing is cut
    # a GPT-2 forward pass costs ~2 FLOPs per parameter per token, plus attention
    assert 1.5 * report.parameters["total"] < report.forward_flops < 4 * report.parameters["total"]
    assert any(line.startswith("FLOPs") for line in report.lines())


# ---- vision and text classification ---------------------------------------------------------------
@pytest.mark.parametrize("architecture", ["resnet", "vit"])
def test_image_classifier_from_scratch_beside_an_svc(architecture: str, tmp_path: Path) -> None:
    from aiforge.tasks import load_pipeline
    from examples.make_digits import write_digits

    digits = write_digits(tmp_path / "digits", (0, 1, 2), 20, test_per_class=5)
    config = config_builder(
        "task=image-classification",
        f"model={{init: scratch, architecture: {architecture}, layers: 1, heads: 2, hidden: 8}}",
        "model.image_size=16",
        f"output_dir={tmp_path / 'run'}",
        f"data.train={digits / 'train'}",
        f"data.test={digits / 'test'}",
        "training.epochs=1",
        "training.batch_size=16",
    )()
    result = train(config, progress=False)
    assert result.baseline is not None and result.baseline["name"] == "pixels+SVC(rbf)"
    assert result.baseline["test"]["accuracy"] > 0.6  # three digits, separable on pixels
    saved = json.loads((result.model_dir / "config.json").read_text())
    assert (
        saved["model_args"]["embed_dim" if architecture == "vit" else "stem_width"] == 8
    )  # the sizes, rebuilt on load
    pipe = load_pipeline("image-classification", model=str(result.model_dir), device="cpu", top_k=3)
    assert pipe.backend == "timm"
    out = pipe(str(digits / "test" / "one" / "000.png"))
    assert {s["label"] for s in out["labels"]} == {"zero", "one", "two"}


def test_bert_from_scratch_classifies_text(nsmc_files: dict[str, Path], tmp_path: Path) -> None:
    config = config_builder(
        "model={init: scratch, architecture: bert, layers: 1, heads: 2, hidden: 16, context: 64}",
        f"output_dir={tmp_path / 'run'}",
        f"data.train={nsmc_files['train']}",
        "training.epochs=1",
        "baseline=false",
    )()
    result = train(config, progress=False)
    assert 0 <= result.metrics["validation"]["accuracy"] <= 1
    assert json.loads((result.model_dir / "config.json").read_text())["model_type"] == "bert"


# ---- config --------------------------------------------------------------------------------------
def test_an_architecture_for_another_task_is_a_clear_config_error() -> None:
    with pytest.raises(AiforgeError) as caught:
        load_config(None, ["task=image-classification", "model={init: scratch, architecture: gpt2}"])
    assert caught.value.code == "AF-CONFIG-001"
    assert "gpt2 trains text-generation" in caught.value.message and "vit or resnet" in caught.value.message
    with pytest.raises(AiforgeError, match="multiple of heads"):
        load_config(None, ["task=text-generation", "model={init: scratch, architecture: gpt2, hidden: 30}"])


def test_from_scratch_template_is_a_valid_config(tmp_path: Path) -> None:
    text = init_template("text-generation", from_scratch=True)
    (tmp_path / "t.yaml").write_text(text, encoding="utf-8")
    config = load_config(tmp_path / "t.yaml")
    assert config.model.architecture == "gpt2" and config.model.tokenizer.kind == "char"  # type: ignore[union-attr]
    assert "model.layers" in config.flat()  # what a sweep varies
    cli = subprocess.run(
        [sys.executable, "-m", "aiforge", "train", "--init", "text-classification", "--from-scratch"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"},
    )
    assert cli.returncode == 0 and "architecture: bert" in cli.stdout
