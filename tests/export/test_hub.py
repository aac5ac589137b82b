"""`aiforge export hub`: a model repo folder whose card huggingface_hub reads back, with the run's
and the baseline's metrics, that plain transformers loads, and that names nothing of this machine."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from aiforge.errors import AiforgeError
from aiforge.export import source
from aiforge.export.hub import export_hub, push
from tests.export.conftest import KOREAN_REVIEW, REGISTERED, machine_specific


@pytest.fixture(scope="module")
def hub_folder(trained, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("hub") / "repo"
    export_hub(REGISTERED, folder, repo_id="someone/nsmc-tiny")
    return folder


def test_folder_is_a_model_repo(hub_folder: Path) -> None:
    names = {p.name for p in hub_folder.iterdir()}
    assert {"README.md", "config.json", "model.safetensors", "tokenizer.json"} <= names
    assert not names & source.NOT_MODEL_FILES  # no aiforge.json (local paths), no MLflow wrapper


def test_card_metadata_and_model_index_read_back_with_huggingface_hub(hub_folder: Path, trained) -> None:
    from huggingface_hub import ModelCard
    from huggingface_hub.repocard_data import model_index_to_eval_results

    card = ModelCard.load(hub_folder / "README.md")
    data = card.data.to_dict()
    assert data["language"] == "ko"  # guessed from the Hangul training data
    assert data["pipeline_tag"] == "text-classification" and data["library_name"] == "transformers"
    assert data["license"] == "unknown"  # a local random backbone: no licence to inherit
    assert "aiforge" in data["tags"]
    name, results = model_index_to_eval_results(data["model-index"])
    assert name == "nsmc-tiny"
    by_name = {r.metric_name: r for r in results}
    test = trained.metrics["test"]
    ours = by_name["accuracy (this model)"]
    assert ours.dataset_split == "test" and ours.metric_value == pytest.approx(test["accuracy"], abs=1e-4)
    assert ours.metric_args == {"ci95": list(test["ci"]["accuracy"])}
    baseline = by_name["accuracy (baseline: tfidf-char-ngrams+logreg)"]
    assert baseline.metric_value == pytest.approx(trained.baseline["test"]["accuracy"], abs=1e-4)
    for section in (
        "Intended use",
        "Training data",
        "Configuration",
        "Metrics",
        "Limitations",
        "How to load it",
    ):
        assert f"## {section}" in card.text
    assert "someone/nsmc-tiny" in card.text and "95 % interval" in card.text


def test_nothing_machine_specific_in_the_folder(hub_folder: Path, trained, aiforge_home: Path) -> None:
    assert machine_specific(hub_folder, str(aiforge_home), str(trained.output_dir)) == []


def test_plain_transformers_loads_the_folder_and_agrees_with_aiforge(hub_folder: Path, trained) -> None:
    from transformers import pipeline as hf_pipeline

    from aiforge.api import pipeline

    theirs = hf_pipeline("text-classification", model=str(hub_folder), device="cpu")(KOREAN_REVIEW)[0]
    ours = pipeline("text-classification", model=REGISTERED).predict([KOREAN_REVIEW])[0]
    assert theirs["label"] == ours["label"]


def test_run_id_and_model_folder_export_the_same_model(trained, tmp_path: Path) -> None:
    by_run = source.resolve_source(trained.run_id)
    by_dir = source.resolve_source(str(trained.model_dir))
    assert by_run.task == by_dir.task == "text-classification"
    assert by_run.metadata["metrics"] == by_dir.metadata["metrics"]
    assert by_dir.name == "run"  # the run folder's name (the model dir itself is always "model")


def test_unknown_reference_and_non_empty_folder_are_clear_errors(tmp_path: Path, hub_folder: Path) -> None:
    with pytest.raises(AiforgeError) as missing:
        export_hub("registry:no-such-model@production", tmp_path / "x")
    assert missing.value.code == "AF-EXPORT-001"
    with pytest.raises(AiforgeError) as taken:
        export_hub(REGISTERED, hub_folder)
    assert taken.value.code == "AF-EXPORT-004"
    assert source.METADATA_FILE == "aiforge.json"  # == aiforge.train.report.METADATA_FILE


def test_push_offline_is_a_coded_error(hub_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(AiforgeError) as offline:
        push(hub_folder, "someone/nsmc-tiny")
    assert offline.value.code == "AF-EXPORT-002" and str(hub_folder) in offline.value.fix


def test_cli_exports_and_reports_the_offline_push(trained, tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "aiforge", "export", "hub", REGISTERED, str(tmp_path / "repo")]
    done = subprocess.run(
        [*command, "--push", "someone/x"], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 2 and "AF-EXPORT-002" in done.stderr
    assert (tmp_path / "repo" / "README.md").is_file()  # the folder is written before the push fails


def test_a_model_aiforge_did_not_train_gets_an_honest_card(tmp_path: Path) -> None:
    from huggingface_hub import ModelCard

    from tests.tiny_models import make_tiny_bert

    model = make_tiny_bert(tmp_path / "plain-bert", head="seq-cls")
    export_hub(str(model), tmp_path / "repo", language="en")
    card = ModelCard.load(tmp_path / "repo" / "README.md")
    assert card.data.language == "en" and card.data.eval_results is None  # no metrics, no model-index
    assert "Not recorded" in card.text and "fine-tuned" not in card.text
