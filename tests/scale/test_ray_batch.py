"""``aiforge run --backend ray``: the same JSON lines as a local run, in input order, and resume."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from aiforge.scale.batch import progress_file, resume_point, run_signature
from aiforge.scale.records import RECORDS, decode_record
from tests.scale.conftest import Cluster
from tests.tiny_models import make_tiny_bert

AIFORGE = [sys.executable, "-m", "aiforge.cli"]
WINDOW = 4 * 16  # --batch-size 4 x the text pipelines' sort_window_batches


def aiforge(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*AIFORGE, *args], capture_output=True, text=True, timeout=300, env=env)


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("clf"), head="seq-cls", id2label={0: "neg", 1: "pos"})


@pytest.fixture(scope="module")
def reviews(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """150 texts of very different lengths, with one malformed line."""
    lines = [
        json.dumps({"id": i, "text": f"리뷰 {i} " + "정말 재미있는 영화 " * (i % 11)}, ensure_ascii=False)
        for i in range(150)
    ]
    lines.insert(7, "{broken")
    path = tmp_path_factory.mktemp("in") / "reviews.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def local_output(classifier: Path, reviews: Path) -> Path:
    out = reviews.with_name("local.jsonl")
    result = aiforge(
        "run", "text-classification", "-m", str(classifier), "-i", str(reviews), "-o", str(out), "-b", "4"
    )
    assert result.returncode == 0, result.stderr
    return out


def ray_command(classifier: Path, reviews: Path, out: Path, workers: int = 2) -> list[str]:
    return [
        *AIFORGE,
        *("run", "text-classification", "-m", str(classifier), "-i", str(reviews), "-o", str(out)),
        *("-b", "4", "--backend", "ray", "--workers", str(workers)),
    ]


def run_ray(classifier: Path, reviews: Path, out: Path, cluster: Cluster) -> subprocess.CompletedProcess:
    result = subprocess.run(
        ray_command(classifier, reviews, out), capture_output=True, text=True, timeout=300, env=cluster.env
    )
    assert result.returncode == 0, result.stderr
    return result


@pytest.fixture(scope="module")
def ray_output(ray_cluster: Cluster, classifier: Path, reviews: Path, tmp_path_factory) -> tuple[Path, str]:
    """One complete Ray run (two actors), reused by the tests below; returns (output, stderr)."""
    out = tmp_path_factory.mktemp("ray-out") / "ray.jsonl"
    return out, run_ray(classifier, reviews, out, ray_cluster).stderr


def test_ray_batch_inference_matches_local_in_input_order(ray_output: tuple[Path, str], local_output: Path):
    out, stderr = ray_output
    assert out.read_text(encoding="utf-8") == local_output.read_text(encoding="utf-8")
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 151 and rows[7]["error"]["code"] == "AF-INPUT-002"
    assert "1 input(s) failed" in stderr
    assert json.loads(progress_file(out).read_text(encoding="utf-8"))["complete"] is True


def test_ray_batch_inference_resumes_a_partial_output(
    ray_cluster: Cluster,
    classifier: Path,
    reviews: Path,
    local_output: Path,
    ray_output: tuple[Path, str],
    tmp_path: Path,
):
    # An interrupted run: the complete run's progress file, 70 whole lines and half of the 71st.
    # The first line is marked, to prove the kept results are not computed again.
    out = tmp_path / "ray.jsonl"
    shutil.copy(progress_file(ray_output[0]), progress_file(out))
    expected = local_output.read_text(encoding="utf-8").splitlines(keepends=True)
    kept = ['{"kept": true}\n', *expected[1:70], expected[70][:9]]
    out.write_text("".join(kept), encoding="utf-8")
    result = run_ray(classifier, reviews, out, ray_cluster)
    assert f"kept {WINDOW} results" in result.stderr
    lines = out.read_text(encoding="utf-8").splitlines(keepends=True)
    assert lines[0] == '{"kept": true}\n' and lines[1:] == expected[1:]


def test_output_of_another_input_is_started_over(reviews: Path, local_output: Path, tmp_path: Path):
    """What a Ray run keeps is decided here, in the driver, before any Ray work: another input file
    (or model, or parameters) than the one recorded in the progress file keeps nothing."""
    out = tmp_path / "out.jsonl"
    shutil.copy(local_output, out)
    signature = run_signature("text-classification", "m", {}, 4, reviews)
    progress_file(out).write_text(json.dumps({**signature, "complete": True}), encoding="utf-8")
    assert resume_point(out, signature, WINDOW) == 128  # the same run: whole windows are kept
    other = reviews.with_name("other.jsonl")
    other.write_text('{"text": "하나"}\n', encoding="utf-8")
    for changed in (
        run_signature("text-classification", "m", {}, 4, other),
        run_signature("text-classification", "other-model", {}, 4, reviews),
        run_signature("text-classification", "m", {"top_k": 2}, 4, reviews),
    ):
        shutil.copy(local_output, out)
        progress_file(out).write_text(json.dumps({**signature, "complete": True}), encoding="utf-8")
        assert resume_point(out, changed, WINDOW) == 0 and out.read_bytes() == b""


def test_an_input_that_crashes_the_model_is_an_error_line_locally_and_on_ray(
    ray_cluster: Cluster, classifier: Path, tmp_path: Path
):
    """The shared failure policy: a token limit beyond the model's 512 positions makes forward raise
    for the one input that long; its window runs again item by item, so it alone becomes an error
    line (AF-TASK-002), the others are answered, and a Ray run writes what a local run does."""
    texts = [f"짧은 리뷰 {i}" for i in range(9)]
    texts.insert(4, "long " * 600)
    reviews = tmp_path / "reviews.jsonl"
    reviews.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    options = ("-b", "4", "-p", "max_length=1024", "-p", "packing=false")
    outputs = {}
    for backend in ("local", "ray"):
        out = tmp_path / f"{backend}.jsonl"
        command = ["run", "text-classification", "-m", str(classifier), "-i", str(reviews), "-o", str(out)]
        result = aiforge(*command, *options, "--backend", backend, env=ray_cluster.env)
        assert result.returncode == 0, result.stderr
        assert "1 input(s) failed" in result.stderr
        outputs[backend] = out.read_text(encoding="utf-8")
    assert outputs["ray"] == outputs["local"]
    rows = [json.loads(line) for line in outputs["ray"].splitlines()]
    assert len(rows) == 10 and rows[4]["error"]["code"] == "AF-TASK-002"
    assert all("label" in row for i, row in enumerate(rows) if i != 4)


def test_ray_actors_run_the_int8_onnx_backend_as_a_local_run_does(
    ray_cluster: Cluster, classifier: Path, reviews: Path, tmp_path: Path
):
    """`-p precision=int8` reaches each actor's load_pipeline: it runs the same cached int8 ONNX
    file as the local run, so labels match and scores agree to float noise (thread counts differ)."""
    rows = {}
    for backend in ("local", "ray"):
        out = tmp_path / f"{backend}.jsonl"
        command = ["run", "text-classification", "-m", str(classifier), "-i", str(reviews), "-o", str(out)]
        result = aiforge(
            *command, "-b", "4", "-p", "precision=int8", "--backend", backend, env=ray_cluster.env
        )
        assert result.returncode == 0, result.stderr
        assert "running on PyTorch" not in result.stderr, result.stderr
        rows[backend] = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(list((classifier / "onnx").glob("*-int8*.onnx"))) == 1, "exported once, read by the actors"
    assert len(rows["ray"]) == len(rows["local"]) == 151
    for local, ray in zip(rows["local"], rows["ray"], strict=True):
        assert local.get("label") == ray.get("label")
        assert local.get("score", 0) == pytest.approx(ray.get("score", 0), abs=1e-4)


def test_input_records_skip_whole_windows_and_keep_read_errors(reviews: Path):
    """The datasource alone (no cluster): a one-row block per window after ``skip`` records, the
    task's fields only, a malformed line as the error record a local run reads there."""
    from aiforge.scale.datasource import InputRecords

    def rows(skip: int) -> list[list]:
        source = InputRecords(reviews, ["text"], "text", None, window=WINDOW, skip=skip)
        blocks = list(source.read())
        assert all(block.num_rows == 1 for block in blocks)
        return [[decode_record(json.loads(r)) for r in block.column(RECORDS)[0].as_py()] for block in blocks]

    whole = rows(0)
    assert [len(b) for b in whole] == [64, 64, 23]
    assert whole[0][7].code == "AF-INPUT-002"
    assert whole[0][8] == {"text": "리뷰 7 " + "정말 재미있는 영화 " * 7}  # no "id": not a field of the task
    assert rows(WINDOW) == whole[1:]


@pytest.fixture(scope="module")
def many_reviews(tmp_path_factory: pytest.TempPathFactory, classifier: Path) -> tuple[Path, Path]:
    """6,000 reviews (94 windows) and their local output."""
    path = tmp_path_factory.mktemp("many") / "reviews.jsonl"
    path.write_text(
        "".join(
            json.dumps({"text": f"리뷰 {i} " + "재미있다 " * (i % 23)}, ensure_ascii=False) + "\n"
            for i in range(6000)
        ),
        encoding="utf-8",
    )
    out = path.with_name("local.jsonl")
    result = aiforge(
        "run", "text-classification", "-m", str(classifier), "-i", str(path), "-o", str(out), "-b", "4"
    )
    assert result.returncode == 0, result.stderr
    return path, out


def batch_actors() -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if "MapBatches(WindowPredictor)" in " ".join(process.info["cmdline"] or []):
            found.append(process)
    return found


def test_three_actors_on_two_nodes_keep_input_order_through_a_killed_actor(
    ray_cluster: Cluster, classifier: Path, many_reviews: tuple[Path, Path], tmp_path: Path
):
    """Three actors (the head's two CPUs and the worker node's one); once results flow, one actor is
    killed (SIGKILL): Ray Data restarts it and runs its windows again, and the output is still the
    local run's, byte for byte."""
    reviews, local = many_reviews
    out = tmp_path / "ray.jsonl"
    command = ray_command(classifier, reviews, out, workers=3)
    run = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ray_cluster.env
    )
    killed = None
    deadline = time.monotonic() + 240
    while killed is None and run.poll() is None and time.monotonic() < deadline:
        if out.exists() and out.stat().st_size > 0 and (actors := batch_actors()):
            killed = actors[0].pid
            actors[0].send_signal(signal.SIGKILL)
        time.sleep(0.05)
    _, stderr = run.communicate(timeout=300)
    assert run.returncode == 0, stderr
    assert killed is not None, "the run ended before an actor could be killed"
    assert out.read_bytes() == local.read_bytes()
