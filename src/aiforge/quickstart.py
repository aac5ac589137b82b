"""The main job, end to end: check the machine, fine-tune a Korean sentiment model on the bundled
NSMC sample, register it, run it on Korean examples, then serve it with the demo page.

Every step calls the same functions as the individual commands (`aiforge doctor`, `train`,
`run`, `serve`), so the quickstart is also their integration test.
"""

from __future__ import annotations

import importlib.util
import json
from importlib import resources
from pathlib import Path
from typing import Any

from rich.console import Console

EXAMPLE_CONFIG = "nsmc-sentiment.yaml"
MODEL_NAME = "nsmc-sentiment"


def bundled(name: str) -> Path:
    return Path(str(resources.files("aiforge") / "data" / name))


def korean_examples() -> list[dict[str, Any]]:
    lines = bundled("examples_ko.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def step_doctor(console: Console) -> None:
    from aiforge import doctor

    findings = doctor.run_checks(device_ops=True)
    doctor.render(findings, console)


def step_train(console: Console, output_dir: Path) -> str | None:
    """Fine-tune on the bundled sample; returns the registry ref of the new model."""
    if importlib.util.find_spec("aiforge.train") is None:
        console.print("[yellow]training is not available in this build; skipping[/]")
        return None
    from aiforge.train import load_config, train

    config = load_config(bundled(EXAMPLE_CONFIG), overrides=[f"output_dir={output_dir}"])
    result = train(config)
    console.print(
        f"test accuracy {result.metrics.get('test_accuracy', float('nan')):.3f} "
        f"(baseline {result.baseline_metrics.get('test_accuracy', float('nan')):.3f}); "
        f"registered {result.registry_ref}"
    )
    return result.registry_ref


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


def step_serve(console: Console, model_ref: str, host: str, port: int) -> None:
    from aiforge.serve import ServeSettings, run_server

    settings = ServeSettings.from_refs([model_ref], host=host, port=port)
    console.print(f"demo page: http://{host}:{port}/demo   API docs: http://{host}:{port}/docs")
    run_server(settings)


def quickstart(console: Console, output_dir: Path, serve: bool, host: str, port: int) -> None:
    console.rule("1. doctor")
    step_doctor(console)
    console.rule("2. fine-tune a Korean sentiment model")
    ref = step_train(console, output_dir)
    console.rule("3. run it on Korean examples")
    step_run(console, ref)
    if serve and ref and importlib.util.find_spec("aiforge.serve") is not None:
        console.rule("4. serve it")
        step_serve(console, ref, host, port)
