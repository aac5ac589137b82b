"""The main job, end to end: check the machine, fine-tune a Korean sentiment model on the bundled
NSMC sample, register it, run it on Korean examples, answer a Korean question from the bundled
Korean guide with cited sources, then serve the model with the demo page.

Every step calls the same functions as the individual commands (`aiforge doctor`, `train`,
`run`, `rag ingest`, `rag ask`, `serve`), so the quickstart is also their integration test.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from rich.console import Console

from aiforge.errors import AiforgeError

EXAMPLE_CONFIG = "nsmc-sentiment.yaml"
MODEL_NAME = "nsmc-sentiment"
# "aiforge 사용 안내": three short Markdown files written for aiforge (CC0), in aiforge/data/guide_ko
GUIDE_SOURCE = "packaged:guide_ko"
GUIDE_INDEX = "guide-ko"
GUIDE_QUESTION = "aiforge 서버의 기본 포트는 몇 번인가요?"


def bundled(name: str) -> Path:
    return Path(str(resources.files("aiforge") / "data" / name))


def korean_examples() -> list[dict[str, Any]]:
    lines = bundled("examples_ko.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def step_doctor(console: Console) -> None:
    from aiforge import doctor

    findings = doctor.run_checks(device_ops=True)
    doctor.render(findings, console)


def example_config() -> Path:
    """The quickstart config: the repo's examples/ copy when run from a clone."""
    path = Path("examples") / EXAMPLE_CONFIG
    if not path.exists():
        raise AiforgeError(
            "AF-CONFIG-001",
            f"{path} not found (run the quickstart from the repository root)",
            "cd into the aiforge clone, or: aiforge train YOUR_CONFIG.yaml",
        )
    return path


def step_train(console: Console, output_dir: Path) -> str | None:
    """Fine-tune on the bundled sample; returns the registry ref of the new model."""
    from aiforge.train import load_config, train
    from aiforge.train.significance import describe

    config = load_config(example_config(), overrides=[f"output_dir={output_dir}"])
    result = train(config)
    test = result.metrics.get("test", {})
    base = (result.baseline or {}).get("test", {})
    console.print(
        f"{result.backbone}: test accuracy {test.get('accuracy', float('nan')):.3f}, "
        f"macro-F1 {test.get('macro_f1', float('nan')):.3f} in {result.seconds / 60:.1f} min; "
        f"TF-IDF baseline accuracy {base.get('accuracy', float('nan')):.3f}; registered as {result.ref}"
    )
    if "test" in result.comparison:  # "beats" only when the paired test says so
        console.print(f"model vs baseline: {describe(result.comparison['test'])}")
    stacked = (result.ensemble or {}).get("test")
    if stacked:  # what `run` and `serve` answer with: the model stacked with the baseline
        console.print(
            f"ensemble (model + baseline, weights fitted on validation): test accuracy "
            f"{stacked['accuracy']:.3f}, macro-F1 {stacked['macro_f1']:.3f}"
        )
        if "vs_baseline" in stacked:
            console.print(f"ensemble vs baseline: {describe(stacked['vs_baseline'])}")
    return result.ref


def step_run(console: Console, model_ref: str | None) -> None:
    from aiforge.tasks import load_pipeline

    examples = korean_examples()
    if model_ref:
        pipe = load_pipeline("text-classification", model_ref, device="auto")
    else:
        pipe = load_pipeline(
            "zero-shot-classification", device="auto", candidate_labels=["긍정적인 리뷰", "부정적인 리뷰"]
        )
    for example, result in zip(examples, pipe.predict(examples), strict=True):
        label = result.get("label") or result["labels"][0]
        score = result.get("score") or result["scores"][0]
        console.print(f"{label:>10} {score:.2f}  {example['text']}")


def step_documents(console: Console, question: str = GUIDE_QUESTION) -> Any:
    """Ingest the bundled Korean guide (again: only changed files are embedded) and answer
    ``question`` from it, printing the answer and its checked citations; returns the ``Answer``."""
    from aiforge import rag

    settings = rag.RagSettings.from_env(progress=False)
    report = rag.ingest([GUIDE_SOURCE], GUIDE_INDEX, settings)
    console.print(
        f"aiforge rag ingest {GUIDE_SOURCE} --index {GUIDE_INDEX}: {len(report.added) + len(report.updated)} "
        f"new or changed file(s), {report.chunks_total} chunks",
        highlight=False,
    )
    answer = rag.ask(question, GUIDE_INDEX, settings)
    console.print(f"Q: {question}\nA: {answer.answer}", highlight=False)
    for c in answer.citations:
        mark = "verified" if c.verified else "UNVERIFIED"
        console.print(f"  [{c.n}] {c.source} chars {c.start}-{c.end} ({mark}): {c.quote}", highlight=False)
    console.print(f'ask your own: aiforge rag ask "..." --index {GUIDE_INDEX}', highlight=False)
    return answer


def step_serve(console: Console, model_ref: str, host: str, port: int) -> None:
    from aiforge.serve import load_settings, run_server

    settings = load_settings(models=[f"{MODEL_NAME}={model_ref}"], overrides={"host": host, "port": port})
    console.print(
        f"demo page: http://{host}:{port}/demo   API docs: http://{host}:{port}/docs  (Ctrl-C stops)"
    )
    run_server(settings)


def quickstart(console: Console, output_dir: Path, serve: bool, host: str, port: int) -> None:
    console.rule("1. doctor")
    step_doctor(console)
    console.rule("2. fine-tune a Korean sentiment model")
    ref = step_train(console, output_dir)
    console.rule("3. run it on Korean examples")
    step_run(console, ref)
    console.rule("4. answer from documents (the bundled Korean guide)")
    step_documents(console)
    if serve and ref:
        console.rule("5. serve it")
        step_serve(console, ref, host, port)
