"""`aiforge export hub`: a Hugging Face model repository folder (weights, config, tokenizer or
processor, and a model card whose metadata carries a ``model-index`` with the run's test metrics
and the baseline's), optionally pushed with ``huggingface_hub``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from aiforge.errors import AiforgeError
from aiforge.export.metadata import ModelFacts, headline, model_facts
from aiforge.export.source import copy_model_files, prepare_output, resolve_source

PLACEHOLDER_REPO = "YOUR_NAME/{name}"


def export_hub(
    ref: str,
    out: Path,
    *,
    repo_id: str | None = None,
    language: str | None = None,
    licence: str | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Write the repository folder; returns what was written (the CLI prints it)."""
    source = resolve_source(ref)
    out = prepare_output(out, force)
    files = copy_model_files(source, out)
    facts = model_facts(source, language, licence)
    card = model_card(facts, repo_id or PLACEHOLDER_REPO.format(name=facts.name))
    card.save(out / "README.md")
    return {"folder": str(out), "files": ["README.md", *files], "task": facts.task, "name": facts.name}


def model_card(facts: ModelFacts, repo_id: str) -> Any:
    """The model card: YAML metadata (``ModelCardData``, ``EvalResult``) and a body people read."""
    from huggingface_hub import ModelCard, ModelCardData

    data = ModelCardData(
        language=facts.language,
        license=facts.licence,
        library_name=facts.library_name,
        pipeline_tag=facts.pipeline_tag,
        base_model=facts.base_model,
        datasets=facts.datasets or None,
        tags=["aiforge", facts.task] + (["korean"] if facts.language == "ko" else []),
        model_name=facts.name,
        eval_results=eval_results(facts) or None,
    )
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{card_body(facts, repo_id)}")


def eval_results(facts: ModelFacts) -> list[Any]:
    """The report split's headline metrics for this model and for the baseline, as ``EvalResult``s
    (one model-index entry; the metric names tell the model and the baseline apart)."""
    split = facts.report_split
    if split is None:
        return []
    results = split_results(facts, split, facts.metrics[split], "this model")
    baseline = facts.baseline or {}
    if isinstance(baseline.get(split), dict):
        results += split_results(facts, split, baseline[split], f"baseline: {baseline.get('name')}")
    return results


def split_results(facts: ModelFacts, split: str, scores: dict[str, Any], who: str) -> list[Any]:
    from huggingface_hub import EvalResult

    return [
        EvalResult(
            task_type=facts.pipeline_tag,
            dataset_type=facts.datasets[0] if facts.datasets else "custom",
            dataset_name=facts.datasets[0] if facts.datasets else data_name(facts),
            dataset_split=split,
            metric_type=metric,
            metric_value=round(value, 4),
            metric_name=f"{metric} ({who})",
            metric_args={"ci95": interval} if interval else None,
        )
        for metric, value, interval in headline(scores)
    ]


def data_name(facts: ModelFacts) -> str:
    """Training data that is not on the hub: its file name (local paths are never exported)."""
    train = str((facts.config.get("data") or {}).get("train") or "")
    return f"custom ({train})" if train else "custom"


# ---- the body ----------------------------------------------------------------------------------------
def card_body(facts: ModelFacts, repo_id: str) -> str:
    sections = [
        f"# {facts.name}",
        intended_use(facts),
        training_data(facts),
        configuration(facts),
        metrics_section(facts),
        limitations(facts),
        how_to_load(facts, repo_id),
    ]
    return "\n\n".join(s for s in sections if s) + "\n"


def intended_use(facts: ModelFacts) -> str:
    if not facts.config:  # not trained by aiforge: say only what the files show
        origin = "exported with aiforge"
    elif facts.base_model:
        origin = (
            f"fine-tuned from [{facts.base_model}](https://huggingface.co/{facts.base_model}) with aiforge"
        )
    else:
        origin = "fine-tuned with aiforge"
    labels = (
        f" It predicts one of: {', '.join(f'`{label}`' for label in facts.labels)}." if facts.labels else ""
    )
    language = {"ko": "Korean", "en": "English"}.get(facts.language or "", facts.language or "")
    what = f"{language} " if language else ""
    return (
        "## Intended use\n\n"
        f"A `{facts.task}` model for {what}input, {origin}.{labels} Use it on data like its training "
        "data (below); check it on your own data before relying on it."
    )


def training_data(facts: ModelFacts) -> str:
    data = facts.config.get("data") or {}
    if not data and not facts.n_examples:
        return "## Training data\n\nNot recorded (this model was not trained by aiforge)."
    rows = [
        f"- training file: `{data.get('train')}`" + (f" (from {facts.datasets[0]})" if facts.datasets else "")
    ]
    if data.get("test"):
        rows.append(f"- test file: `{data['test']}`")
    counts = ", ".join(f"{split} {n}" for split, n in facts.n_examples.items() if n)
    if counts:
        rows.append(f"- examples: {counts}")
    if data.get("input_column"):
        rows.append(f"- input column `{data['input_column']}`, label column `{data.get('label_column')}`")
    return "## Training data\n\n" + "\n".join(rows)


def configuration(facts: ModelFacts) -> str:
    if not facts.config:
        return ""
    import yaml

    text = yaml.safe_dump(facts.config, sort_keys=False, allow_unicode=True).strip()
    return (
        "## Configuration\n\nThe `aiforge train` configuration (local paths reduced to file names, "
        f"machine settings left out):\n\n```yaml\n{text}\n```"
    )


def metrics_section(facts: ModelFacts) -> str:
    if facts.report_split is None:
        return ""
    lines = [
        "## Metrics",
        "",
        "95 % intervals are bootstrap intervals over the evaluation examples.",
        "",
        "| split | model | metric | value | 95 % interval |",
        "|---|---|---|---|---|",
    ]
    baseline = facts.baseline or {}
    for split in ("test", "validation"):
        rows = [("this model", facts.metrics.get(split))]
        if isinstance(baseline.get(split), dict):
            rows.append((f"baseline ({baseline.get('name')})", baseline[split]))
        for who, scores in rows:
            for metric, value, interval in headline(scores or {}):
                shown = f"[{interval[0]:.4f}, {interval[1]:.4f}]" if interval else "-"
                lines.append(f"| {split} | {who} | {metric} | {value:.4f} | {shown} |")
    verdict = facts.comparison.get(facts.report_split)
    if verdict:
        lines += [
            "",
            f"**Against the baseline** ({facts.report_split}, {verdict['test']}, n = {verdict['n']}): "
            f"{verdict['metric']} difference {verdict['difference']:+.4f} "
            f"[{verdict['difference_ci'][0]:+.4f}, {verdict['difference_ci'][1]:+.4f}], "
            f"p = {verdict['p_value']:.4f}: **{verdict['verdict']}**.",
        ]
    return "\n".join(lines)


def limitations(facts: ModelFacts) -> str:
    points = []
    n_report = facts.n_examples.get(facts.report_split or "", 0)
    if n_report:
        points.append(
            f"The scores come from {n_report} {facts.report_split} examples; the intervals show how "
            "far they may be from the score on more data of the same kind."
        )
    verdict = (facts.comparison.get(facts.report_split or "") or {}).get("verdict")
    if verdict and verdict != "beats":
        points.append(
            f"It does not beat the simple baseline on {facts.report_split} (verdict: {verdict}): "
            "a cheaper model may serve as well."
        )
    points.append("Data from another domain, period or style than the training data may score lower.")
    points.append("Biases in the training data carry over to the predictions.")
    if facts.licence == "unknown":
        points.append("The base model's licence was not found: set `license` before publishing.")
    return "## Limitations\n\n" + "\n".join(f"- {p}" for p in points)


def how_to_load(facts: ModelFacts, repo_id: str) -> str:
    if facts.library_name == "timm":
        code = f'import timm\n\nmodel = timm.create_model("hf-hub:{repo_id}", pretrained=True)'
    else:
        code = (
            "from transformers import pipeline\n\n"
            f'model = pipeline("{facts.pipeline_tag}", model="{repo_id}")\n'
            f"print(model({example_input(facts)!r}))"
        )
    return (
        "## How to load it\n\n"
        f"```python\n{code}\n```\n\n"
        f"With aiforge: `aiforge run {facts.task} --model {repo_id} INPUT`."
    )


def example_input(facts: ModelFacts) -> str:
    return "이 영화 정말 재미있어요" if facts.language == "ko" else "This was a great movie."


# ---- push ---------------------------------------------------------------------------------------------
def push(folder: Path, repo_id: str, private: bool = False) -> str:
    """Upload the folder to ``repo_id`` (created if missing); returns the repository URL."""
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false")
    if offline:
        raise AiforgeError(
            "AF-EXPORT-002",
            f"cannot push to {repo_id}: HF_HUB_OFFLINE is set, so the hub is not contacted",
            f"the folder {folder} is complete; push it later when online (unset HF_HUB_OFFLINE, "
            "`hf auth login`), or upload it with `hf upload`",
        )
    from huggingface_hub import HfApi

    api = HfApi()
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True)
        api.upload_folder(folder_path=str(folder), repo_id=repo_id, commit_message="aiforge export")
    except Exception as exc:  # no network, no token, no permission: say which and keep the folder
        raise AiforgeError(
            "AF-EXPORT-002",
            f"could not push to {repo_id}: {type(exc).__name__}: {str(exc)[:300]}",
            f"check the network and your token (`hf auth login`); the folder {folder} is complete",
        ) from exc
    return str(url)
