"""MLflow tracking store and model registry.

By default everything lives in one SQLite file under ``$AIFORGE_HOME`` (``~/.cache/aiforge``),
so no server is needed and ``registry:NAME@ALIAS`` works from any directory. Set
``MLFLOW_TRACKING_URI`` (or pass a URI) to use an MLflow server instead.

Model references: ``registry:NAME@ALIAS`` (e.g. ``@production``), ``registry:NAME/VERSION``,
or ``registry:NAME`` (the latest version). Resolved versions are downloaded once into the cache.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from aiforge.errors import AiforgeError
from aiforge.models import ModelRef, cache_dir

REF_PATTERN = re.compile(
    r"^registry:(?P<name>[A-Za-z0-9_.\-]+)(?:@(?P<alias>[A-Za-z0-9_\-]+)|/(?P<version>\d+))?$"
)


def default_tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` when set, else a local SQLite store in the aiforge cache."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    home = cache_dir()
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{home / 'mlflow.db'}"


def client(tracking_uri: str | None = None):
    """An MlflowClient on the given or default store (tracking and registry in the same place)."""
    try:
        from mlflow.tracking import MlflowClient
    except ImportError as exc:
        raise AiforgeError(
            "AF-DEP-001", "the registry needs mlflow, which is not installed", 'pip install "aiforge[train]"'
        ) from exc
    uri = tracking_uri or default_tracking_uri()
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def parse_ref(ref: str) -> tuple[str, str | None, str | None]:
    match = REF_PATTERN.match(ref)
    if not match:
        raise AiforgeError(
            "AF-MODEL-001",
            f"malformed registry reference '{ref}'",
            "write registry:NAME@ALIAS, registry:NAME/VERSION or registry:NAME",
        )
    return match["name"], match["alias"], match["version"]


def resolve_ref(ref: str, tracking_uri: str | None = None) -> ModelRef:
    """Find the model version a registry reference points at and download it (once)."""
    name, alias, version = parse_ref(ref)
    mlflow_client = client(tracking_uri)
    from mlflow.exceptions import MlflowException

    try:
        if alias:
            mv = mlflow_client.get_model_version_by_alias(name, alias)
        elif version:
            mv = mlflow_client.get_model_version(name, version)
        else:
            versions = mlflow_client.search_model_versions(f"name='{name}'")
            if not versions:
                raise MlflowException(f"no versions of {name}")
            mv = max(versions, key=lambda v: int(v.version))
    except MlflowException:
        known = [m.name for m in mlflow_client.search_registered_models()]
        hint = f"registered models: {', '.join(known)}" if known else "no model is registered yet"
        raise AiforgeError(
            "AF-MODEL-004",
            f"'{ref}' not found in the registry at {tracking_uri or default_tracking_uri()} ({hint})",
            "train one with `aiforge train CONFIG` (it registers the model), or move an alias with "
            "`aiforge models promote NAME VERSION --alias ALIAS`",
        ) from None
    local = cache_dir() / "registry" / name / str(mv.version)
    if not (local / ".complete").exists():
        local = download_version(mv.source, local)
    return ModelRef(
        ref,
        "registry",
        str(local),
        registry_name=name,
        registry_version=str(mv.version),
        format=_format_of(local),
    )


def download_version(source: str, target: Path) -> Path:
    """Copy a version's artifacts into the cache; a marker file makes partial downloads visible."""
    import shutil

    import mlflow.artifacts

    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(tmp))
    # download_artifacts puts the artifact directory itself inside dst_path
    inner = [p for p in tmp.iterdir()]
    root = inner[0] if len(inner) == 1 and inner[0].is_dir() else tmp
    shutil.rmtree(target, ignore_errors=True)
    root.rename(target)
    shutil.rmtree(tmp, ignore_errors=True)
    (target / ".complete").touch()
    return target


def _format_of(path: Path) -> str:
    from aiforge.models import _detect_local_format

    return _detect_local_format(path)
