"""The command line as a user meets it: fast help, clear errors without tracebacks, JSON out."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from tests.tiny_models import make_tiny_bert

AIFORGE = [sys.executable, "-m", "aiforge.cli"]


def aiforge(*args: str, input_text: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*AIFORGE, *args], capture_output=True, text=True, input=input_text, timeout=300)


def test_import_and_help_do_not_load_torch_or_transformers():
    code = (
        "import sys, aiforge, aiforge.cli, aiforge.models, aiforge.tasks, aiforge.errors\n"
        "heavy = [m for m in ('torch', 'transformers', 'mlflow', 'fastapi') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    result = aiforge("--help")
    assert result.returncode == 0 and "doctor" in result.stdout and "run" in result.stdout


def test_unknown_task_suggests_close_matches_without_traceback():
    result = aiforge("run", "text-clasification", "hello")
    assert result.returncode == 2
    assert "AF-TASK-001" in result.stderr and "text-classification" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_model_path_is_a_clear_error():
    result = aiforge("run", "text-classification", "hi", "--model", "./no/such/dir")
    assert result.returncode == 2 and "AF-MODEL-001" in result.stderr and "Traceback" not in result.stderr


def test_hub_model_offline_names_the_packaged_alternative():
    result = aiforge("run", "sentence-embeddings", "hi", "--model", "someorg/not-cached-model")
    assert result.returncode == 2 and "AF-MODEL-002" in result.stderr
    assert "packaged:" in result.stderr


def test_tasks_and_models_list_every_task(tmp_path):
    from aiforge.tasks import task_cards

    names = {card.name for card in task_cards()}
    result = aiforge("models", "--json")
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)
    assert {d["task"] for d in listed["defaults"]} == names
    e5 = next(p for p in listed["packaged"] if p["name"] == "multilingual-e5-small")
    assert e5["installed"] is True
    defaults = {d["task"]: d for d in listed["defaults"]}
    # ocr tells which engine reads what: Korean goes to Tesseract, the rest to RapidOCR
    engines = {e["model"]: e["inputs"] for e in defaults["ocr"]["offline_engines"]}
    assert "Korean" in engines["tesseract-kor"] and set(engines) == {"tesseract-kor", "rapidocr"}
    # defaults trained here rather than installed say how to build them
    assert all(
        defaults[t].get("offline_build") or defaults[t]["offline_available"]
        for t in ("text-classification", "question-answering")
    )
    tasks = json.loads(aiforge("tasks", "--json").stdout)
    assert {t["task"] for t in tasks} == names
    assert all(t["input"] and t["output"] and t["summary"] for t in tasks)


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory):
    return make_tiny_bert(tmp_path_factory.mktemp("cls"), head="seq-cls", id2label={0: "neg", 1: "pos"})


def test_run_input_file_keeps_order_and_reports_bad_lines(tmp_path, classifier_dir):
    texts = [f"문장 {'아주 ' * (i % 7)}{i}" for i in range(40)]
    src = tmp_path / "in.jsonl"
    lines = [json.dumps({"text": t, "id": i}, ensure_ascii=False) for i, t in enumerate(texts)]
    lines.insert(5, "{not json")
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    result = aiforge(
        "run",
        "text-classification",
        "--model",
        str(classifier_dir),
        "-i",
        str(src),
        "-o",
        str(out),
        "--batch-size",
        "4",
    )
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 41
    assert rows[5]["error"]["code"] == "AF-INPUT-002"
    good = [r for r in rows if "label" in r]
    # same answers as running each text alone, in input order
    from aiforge.tasks import load_pipeline

    pipe = load_pipeline("text-classification", str(classifier_dir), device="cpu")
    assert [r["label"] for r in good] == [pipe(t)["label"] for t in texts]


def test_run_tsv_picks_the_text_column(tmp_path, classifier_dir):
    src = tmp_path / "reviews.tsv"
    src.write_text("id\tdocument\tlabel\n1\t재밌다\t1\n2\t별로\t0\n", encoding="utf-8")
    result = aiforge("run", "text-classification", "--model", str(classifier_dir), "-i", str(src))
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["label"] in ("neg", "pos") for line in result.stdout.splitlines()] == [
        True,
        True,
    ]
    missing = aiforge(
        "run", "text-classification", "--model", str(classifier_dir), "-i", str(src), "--column", "review"
    )
    assert "column 'review' not found" in missing.stdout


def test_run_prints_one_json_object_per_positional_input(classifier_dir):
    result = aiforge("run", "text-classification", "좋아요", "싫어요", "--model", str(classifier_dir))
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 2 and all(r["label"] in ("neg", "pos") for r in rows)


def test_bad_param_syntax_is_a_user_error(classifier_dir):
    result = aiforge("run", "text-classification", "x", "--model", str(classifier_dir), "-p", "top_k")
    assert result.returncode == 2 and "KEY=VALUE" in result.stderr


def test_missing_input_file_names_the_file(tmp_path):
    result = aiforge("run", "sentence-embeddings", "-i", str(tmp_path / "nope.jsonl"))
    assert result.returncode == 2 and "nope.jsonl" in result.stderr and "Traceback" not in result.stderr


def test_zero_shot_korean_from_the_command_line():
    result = aiforge(
        "run",
        "zero-shot-classification",
        "정말 재미없고 지루한 영화",
        "-p",
        'candidate_labels=["긍정", "부정"]',
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["labels"][0] == "부정"


def test_rag_ingest_and_ask_from_the_command_line(tmp_path, monkeypatch):
    monkeypatch.setenv("AIFORGE_HOME", str(tmp_path / "home"))
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "guide.md").write_text(
        "# 서빙\n\n서버는 기본적으로 8000번 포트에서 시작된다. API 키는 --api-key-file 옵션으로 지정한다.\n",
        encoding="utf-8",
    )
    (docs / "broken.pdf").write_text("not a pdf")
    ingest = aiforge("rag", "ingest", str(docs), "--index", "manual", "--json")
    assert ingest.returncode == 1  # the broken file is reported, the rest is ingested
    report = json.loads(ingest.stdout)
    assert report["failed"][0]["source"].endswith("broken.pdf") and report["chunks_total"] >= 1
    ask = aiforge("rag", "ask", "서버는 몇 번 포트에서 시작돼?", "--index", "manual", "--json")
    assert ask.returncode == 0, ask.stderr
    answer = json.loads(ask.stdout)
    assert "8000" in answer["answer"] and answer["citations"][0]["verified"] is True
    missing = aiforge("rag", "ask", "질문", "--index", "nope")
    assert missing.returncode == 2 and "AF-RAG-001" in missing.stderr and "Traceback" not in missing.stderr


@pytest.mark.parametrize("columns", [80, 120])
def test_tasks_and_models_never_break_a_name(columns):
    import os

    env = {**os.environ, "COLUMNS": str(columns)}
    listed = json.loads(aiforge("models", "--json").stdout)
    names = {d["task"] for d in listed["defaults"]}
    names |= {d[k] for d in listed["defaults"] for k in ("hub_default", "offline_default") if d[k]}
    names |= {p["name"] for p in listed["packaged"]} | {
        pkg for p in listed["packaged"] for pkg in p["package"].split()
    }
    shown = ""
    for command in ("tasks", "models"):
        result = subprocess.run([*AIFORGE, command], capture_output=True, text=True, env=env, timeout=300)
        assert result.returncode == 0, result.stderr
        assert all(len(line) <= columns for line in result.stdout.splitlines()), command
        shown += result.stdout
    assert re.search(r"\b\d+ of \d+ tasks work offline now", shown)
    lines = shown.splitlines()
    broken = sorted(name for name in names if not any(name in line for line in lines))
    assert not broken, f"names broken across lines at {columns} columns: {broken}"


def test_rag_ask_names_sources_without_the_servers_path(tmp_path, monkeypatch):
    monkeypatch.setenv("AIFORGE_HOME", str(tmp_path / "home"))
    docs = tmp_path / "docs"
    (docs / "guide").mkdir(parents=True)
    (docs / "guide" / "install.md").write_text(
        "# 설치\n\n서버는 기본적으로 8000번 포트에서 시작된다.\n", encoding="utf-8"
    )
    assert aiforge("rag", "ingest", str(docs), "--index", "manual").returncode == 0
    as_json = aiforge("rag", "ask", "서버는 몇 번 포트에서 시작돼?", "--index", "manual", "--json")
    plain = aiforge("rag", "ask", "서버는 몇 번 포트에서 시작돼?", "--index", "manual")
    assert as_json.returncode == 0 and plain.returncode == 0, as_json.stderr + plain.stderr
    assert str(tmp_path) not in as_json.stdout + plain.stdout
    assert json.loads(as_json.stdout)["citations"][0]["source"] == "guide/install.md"
    assert "[1] guide/install.md p." in plain.stdout


def test_rag_ask_and_eval_with_answers_written_by_the_packaged_llm(tmp_path, monkeypatch):
    from aiforge.models import PACKAGED

    smollm2 = PACKAGED["smollm2-135m-instruct"]
    if not smollm2.available():
        pytest.skip(f"needs {smollm2.install_command()}")
    monkeypatch.setenv("AIFORGE_HOME", str(tmp_path / "home"))
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "refunds.txt").write_text("Refunds are paid within 14 days.\n", encoding="utf-8")
    (docs / "pump.txt").write_text("The pump starts at 40 degrees.\n", encoding="utf-8")
    assert aiforge("rag", "ingest", str(docs), "--index", "notes").returncode == 0
    ask = aiforge("rag", "ask", "When are refunds paid?", "--index", "notes", "--generate", "--json")
    assert ask.returncode == 0, ask.stderr
    answer = json.loads(ask.stdout)
    assert answer["method"] == "generator" and "14 days" in answer["answer"]
    assert any(s["supported"] for s in answer["statements"])
    plain = aiforge("rag", "ask", "When are refunds paid?", "--index", "notes", "--generate")
    assert "(supported" in plain.stdout and "refunds.txt p.1" in plain.stdout
    qa = tmp_path / "qa.jsonl"
    qa.write_text('{"question": "When are refunds paid?", "answer": "within 14 days"}\n', encoding="utf-8")
    scores = json.loads(aiforge("rag", "eval", str(qa), "--index", "notes", "--generate").stdout)
    assert set(scores["generated"]) == {"EM", "F1", "answered", "supported_statements", "seconds_per_answer"}
    assert scores["F1"] > 0 and scores["generated"]["F1"] > 0
