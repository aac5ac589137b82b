"""Facts every export writes about a model, in one place: its licence and base model, language,
training data, the pipeline tag and library, the run's metrics with intervals and the baseline's,
a configuration with nothing machine-specific in it, and pinned requirements."""

from __future__ import annotations

import importlib.metadata
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiforge.export.source import ExportSource

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
HEADLINE_METRICS = ("accuracy", "macro_f1", "micro_f1", "f1")

# aiforge task -> the hub's pipeline_tag, where the names differ (the others are the same name)
PIPELINE_TAGS = {"sentence-embeddings": "sentence-similarity"}
LIBRARIES = {"transformers": "transformers", "timm": "timm", "sentence-transformers": "sentence-transformers"}
# bundled training data (packaged:PATH) -> the hub dataset it was sampled from
PACKAGED_DATASETS = {"nsmc_sample": "e9t/nsmc"}
# settings that describe this machine, not the model: never exported
MACHINE_SETTINGS = ("output_dir", "tracking", "training.device", "training.num_threads")


@dataclass(frozen=True)
class ModelFacts:
    """What a model card, a Space's front matter and an MLflow model say about one model."""

    name: str
    task: str
    pipeline_tag: str
    library_name: str
    base_model: str | None
    licence: str
    language: str | None
    datasets: list[str]
    labels: list[str]
    metrics: dict[str, dict[str, Any]]  # split -> {metric: value, "ci": {metric: [low, high]}}
    baseline: dict[str, Any] | None
    comparison: dict[str, Any]
    config: dict[str, Any]  # the training config, paths reduced to file names, machine settings out
    n_examples: dict[str, int]
    report_split: str | None  # test when there is one, else validation; None: not trained by aiforge


def model_facts(source: ExportSource, language: str | None = None, licence: str | None = None) -> ModelFacts:
    meta = source.metadata
    backbone = str(meta.get("backbone") or "")
    metrics = {
        split: {**scores, "ci": (meta.get("intervals") or {}).get(split, {})}
        for split, scores in (meta.get("metrics") or {}).items()
    }
    config = meta.get("config") or {}
    return ModelFacts(
        name=source.name,
        task=source.task,
        pipeline_tag=PIPELINE_TAGS.get(source.task, source.task),
        library_name=LIBRARIES.get(source.format, source.format),
        base_model=base_model_id(backbone),
        licence=licence or base_licence(backbone),
        language=language or guess_language(config),
        datasets=dataset_ids(config),
        labels=source.labels,
        metrics=metrics,
        baseline=meta.get("baseline"),
        comparison=meta.get("comparison") or {},
        config=public_config(config),
        n_examples=meta.get("n_examples") or {},
        report_split=next((s for s in ("test", "validation") if s in metrics), None),
    )


def base_model_id(backbone: str) -> str | None:
    """The hub id of the model training started from: a packaged model's upstream, a hub id as is;
    None for a local folder (its origin is not known)."""
    from aiforge.models import PACKAGED

    packaged = PACKAGED.get(backbone.removeprefix("packaged:"))
    if packaged is not None:
        upstream = packaged.upstream
        return None if upstream.startswith("timm:") else upstream
    if HUB_ID.match(backbone) and not Path(backbone).exists():
        return backbone
    return None


def base_licence(backbone: str) -> str:
    """The base model's licence as the hub spells it: a packaged model's, a cached hub model card's;
    'unknown' when neither says (the hub accepts it; the card asks the owner to set it)."""
    from aiforge.models import PACKAGED

    packaged = PACKAGED.get(backbone.removeprefix("packaged:"))
    if packaged is not None:
        return packaged.licence.lower()
    if HUB_ID.match(backbone):
        try:
            from huggingface_hub import ModelCard, try_to_load_from_cache

            cached = try_to_load_from_cache(backbone, "README.md")
            if isinstance(cached, str):
                return str(ModelCard.load(cached).data.license or "unknown")
        except Exception:  # noqa: BLE001 - a card we cannot read means the licence is unknown
            return "unknown"
    return "unknown"


def guess_language(config: dict[str, Any]) -> str | None:
    """'ko' when the training data (if still on this machine) is mostly Hangul; None otherwise (the
    user names it with --language: a Latin-script guess would be a guess)."""
    text = ""
    for key in ("test", "train", "validation"):
        path = data_file((config.get("data") or {}).get(key))
        if path is not None:
            text += path.read_text(encoding="utf-8", errors="ignore")[:20_000]
    letters = [c for c in text if c.isalpha()]
    hangul = sum("\uac00" <= c <= "\ud7a3" for c in letters)
    return "ko" if letters and hangul / len(letters) > 0.3 else None


def data_file(value: str | None) -> Path | None:
    if not value:
        return None
    if value.startswith("packaged:"):
        from importlib.resources import files

        path = Path(str(files("aiforge") / "data" / value.removeprefix("packaged:")))
    else:
        path = Path(value).expanduser()
    return path if path.is_file() else None


def dataset_ids(config: dict[str, Any]) -> list[str]:
    """Hub dataset ids of the training data: a hub id as given, the bundled sample's source."""
    train = str((config.get("data") or {}).get("train") or "")
    if train.startswith("packaged:"):
        folder = train.removeprefix("packaged:").split("/", 1)[0]
        return [PACKAGED_DATASETS[folder]] if folder in PACKAGED_DATASETS else []
    return [train] if HUB_ID.match(train) and not Path(train).exists() else []


def public_config(config: dict[str, Any]) -> dict[str, Any]:
    """The training config without machine settings, every local path reduced to its file name."""

    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        if isinstance(value, str) and looks_like_path(value):
            return Path(value).name
        return value

    public = clean(config)
    for dotted in MACHINE_SETTINGS:
        *parents, key = dotted.split(".")
        section = public
        for parent in parents:
            section = section.get(parent) or {}
        section.pop(key, None)
    return public


def looks_like_path(value: str) -> bool:
    return value.startswith(("/", "~", "./", "../")) or bool(re.match(r"^[A-Za-z]:[\\/]", value))


def headline(scores: dict[str, Any]) -> list[tuple[str, float, list[float] | None]]:
    """(metric, value, 95 % interval or None) for the metrics a card reports."""
    intervals = scores.get("ci") or {}
    return [(name, float(scores[name]), intervals.get(name)) for name in HEADLINE_METRICS if name in scores]


def pinned(*distributions: str) -> list[str]:
    """``name==version`` of each installed distribution (the versions this export was tested with)."""
    return [f"{name}=={importlib.metadata.version(name)}" for name in distributions]
