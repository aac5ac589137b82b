"""What every export starts from: REF (``registry:NAME@ALIAS``, an MLflow run id or a model dir)
resolved to a local model dir, its task, and what training recorded about it (``aiforge.json``)."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiforge.errors import AiforgeError

RUN_ID = re.compile(r"^[0-9a-f]{32}$")  # MLflow run ids: 32 lowercase hex digits
METADATA_FILE = "aiforge.json"  # written by aiforge.train.report.write_metadata

# Files of a model dir that are not the model: aiforge's own record (its config holds local paths;
# the card carries what it says), the MLflow model wrapper (aiforge.export.mlflow_model), the
# registry cache's marker. Exports leave them out.
NOT_MODEL_FILES = frozenset(
    {
        METADATA_FILE,
        "MLmodel",
        "python_env.yaml",
        "conda.yaml",
        "requirements.txt",
        "input_example.json",
        "serving_input_example.json",
        "registered_model_meta",
        ".complete",
    }
)


@dataclass(frozen=True)
class ExportSource:
    """A model ready to export: where its files are and what is known about it."""

    ref: str
    model_dir: Path
    task: str
    name: str  # a repo-friendly name: the registered name, the run's name or the folder's
    format: str  # transformers | timm | sentence-transformers ... (aiforge.models)
    metadata: dict[str, Any] = field(default_factory=dict)  # aiforge.json; {} if aiforge did not train it

    @property
    def labels(self) -> list[str]:
        """Class names: from training's record, else the model's config.json id2label."""
        if self.metadata.get("labels"):
            return list(self.metadata["labels"])
        config = self.model_dir / "config.json"
        if config.is_file():
            id2label = json.loads(config.read_text(encoding="utf-8")).get("id2label") or {}
            return [id2label[k] for k in sorted(id2label, key=int)]
        return []


def resolve_source(ref: str, task: str | None = None) -> ExportSource:
    """Find the model REF names; raises AF-EXPORT-001 (with what was tried) when there is none."""
    from aiforge.models import resolve

    if RUN_ID.match(ref) and not Path(ref).exists():
        from aiforge.registry import fetch_run_model

        model_dir, name = fetch_run_model(ref)
        model_format = resolve(str(model_dir)).format
    else:
        try:
            model_ref = resolve(ref)
        except AiforgeError as exc:
            raise AiforgeError(
                "AF-EXPORT-001",
                f"cannot find the model to export '{ref}': {exc.message}",
                "pass registry:NAME@ALIAS, a run id from `aiforge runs`, or a model folder",
            ) from None
        if model_ref.path is None:
            raise AiforgeError(
                "AF-EXPORT-001",
                f"'{ref}' is a {model_ref.kind} reference; export needs the model's files",
                "export a registry model, a run or a local model folder",
            )
        model_dir = model_ref.path
        model_format = model_ref.format
        name = model_ref.registry_name or (model_dir.parent if model_dir.name == "model" else model_dir).name
    metadata_file = model_dir / METADATA_FILE
    metadata = json.loads(metadata_file.read_text(encoding="utf-8")) if metadata_file.is_file() else {}
    if task is None:
        task = metadata.get("task")
    if task is None:
        from aiforge.serve.settings import infer_task

        task = infer_task(str(model_dir))
    return ExportSource(ref, model_dir, task, repo_name(name), model_format, metadata)


def repo_name(name: str) -> str:
    """``name`` as a hub repository name: letters, digits, '-', '_', '.'; nothing else."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "model"
    return cleaned[:96]


def copy_model_files(source: ExportSource, target: Path) -> list[str]:
    """Copy the model's own files (weights, config, tokenizer, processor) into ``target``."""
    target.mkdir(parents=True, exist_ok=True)
    copied = []
    src = source.model_dir
    files = [src] if src.is_file() else sorted(p for p in src.rglob("*") if p.is_file())
    for path in files:
        relative = Path(path.name) if src.is_file() else path.relative_to(src)
        if relative.name in NOT_MODEL_FILES or any(part.startswith(".") for part in relative.parts):
            continue
        (target / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target / relative)
        copied.append(relative.as_posix())
    return copied


def prepare_output(out: Path, force: bool = False) -> Path:
    """An empty output folder; an existing non-empty one only with ``force`` (its content goes)."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not force:
            raise AiforgeError(
                "AF-EXPORT-004",
                f"the export folder {out} exists and is not empty",
                "pick a new folder, or pass --force to replace its content",
            )
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return out
