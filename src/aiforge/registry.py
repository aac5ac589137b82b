"""MLflow tracking store and model registry.

By default everything lives in one SQLite file under ``$AIFORGE_HOME`` (``~/.cache/aiforge``),
so no server is needed and ``registry:NAME@ALIAS`` works from any directory. Set
``MLFLOW_TRACKING_URI`` (or pass a URI) to use an MLflow server instead.

Model references: ``registry:NAME@ALIAS`` (e.g. ``@production``), ``registry:NAME/VERSION``,
or ``registry:NAME`` (the latest version). Resolved versions are downloaded once into the cache.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiforge.cache import cache_dir
from aiforge.errors import AiforgeError

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

REF_PATTERN = re.compile(
    r"^registry:(?P<name>[A-Za-z0-9_.\-]+)(?:@(?P<alias>[A-Za-z0-9_\-]+)|/(?P<version>\d+))?$"
)


SQLITE_BUSY_TIMEOUT_S = 30  # a second process (`aiforge runs` during training) waits instead of failing


def default_tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` when set, else a local SQLite store in the aiforge cache.

    The SQLite URI carries a busy timeout (SQLAlchemy passes ``?timeout=`` to sqlite3), and
    :func:`client` switches the file to WAL mode, so readers never block a training run's writes.
    """
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    home = cache_dir()
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{home / 'mlflow.db'}?timeout={SQLITE_BUSY_TIMEOUT_S}"


def client(tracking_uri: str | None = None) -> MlflowClient:
    """An MlflowClient on the given or default store (tracking and registry in the same place)."""
    try:
        from mlflow.tracking import MlflowClient
    except ImportError as exc:
        raise AiforgeError(
            "AF-DEP-001", "the registry needs mlflow, which is not installed", 'pip install "aiforge[train]"'
        ) from exc
    uri = tracking_uri or default_tracking_uri()
    enable_sqlite_wal(uri)
    with _first_touch(uri):
        return MlflowClient(tracking_uri=uri, registry_uri=uri)


_INITIALISED: set[str] = set()


@contextlib.contextmanager
def _first_touch(uri: str) -> Iterator[None]:
    """Let one process at a time create (or migrate) a SQLite store's tables. Two `aiforge train` runs
    started together on a new store both ran MLflow's CREATE TABLEs (MlflowClient() creates its stores)
    and one lost its tracking to "table runs already exists" (tests/train/test_train_faults.py); a file lock
    beside the database serialises that first touch, once per process and store."""
    path = sqlite_path(uri)
    if path is None or uri in _INITIALISED:
        yield
        return
    import fcntl

    with open(path.with_name(path.name + ".init-lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    _INITIALISED.add(uri)


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///...`` URI (query string removed), else None."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri.removeprefix("sqlite:///").split("?", 1)[0])


def enable_sqlite_wal(uri: str) -> None:
    """Put a SQLite store in WAL mode (persistent in the file): concurrent readers and one writer,
    so `aiforge runs` reading while a training run logs does not hit 'database is locked'."""
    path = sqlite_path(uri)
    if path is None:
        return
    import sqlite3

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.closing(sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT_S)) as con:
            con.execute("PRAGMA journal_mode=WAL")
    except (OSError, sqlite3.Error) as exc:  # read-only or locked: MLflow reports it properly on first use
        log.warning("could not switch %s to WAL mode: %s", path, exc)


def artifact_root(tracking_uri: str) -> str | None:
    """Where a local SQLite store keeps artifacts: beside the database, never ``./mlruns`` in the cwd."""
    path = sqlite_path(tracking_uri)
    return (path.parent / "mlartifacts").as_uri() if path is not None else None


def parse_ref(ref: str) -> tuple[str, str | None, str | None]:
    match = REF_PATTERN.match(ref)
    if not match:
        raise AiforgeError(
            "AF-MODEL-001",
            f"malformed registry reference '{ref}'",
            "write registry:NAME@ALIAS, registry:NAME/VERSION or registry:NAME",
        )
    return match["name"], match["alias"], match["version"]


@dataclass(frozen=True)
class RegisteredVersion:
    """A registered model version, downloaded into the cache (:func:`aiforge.models.resolve` turns it
    into a ``ModelRef``)."""

    name: str
    version: str
    path: Path


def fetch_version(ref: str, tracking_uri: str | None = None) -> RegisteredVersion:
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
        if not mv.source:  # MLflow allows a version without artifacts; aiforge never registers one
            raise AiforgeError(
                "AF-MODEL-004",
                f"'{ref}' (version {mv.version}) has no artifacts in the registry",
                "register a trained model with `aiforge train CONFIG`, or point the alias at another version",
            )
        local = download_version(mv.source, local)
    return RegisteredVersion(name, str(mv.version), local)


def fetch_run_model(run_id: str, tracking_uri: str | None = None) -> tuple[Path, str]:
    """The model a training run logged (its ``model`` artifact folder), downloaded once into the
    cache, and the run's name: what `aiforge export` starts from when given a run id."""
    mlflow_client = client(tracking_uri)
    from mlflow.exceptions import MlflowException

    try:
        run = mlflow_client.get_run(run_id)
    except MlflowException:
        raise AiforgeError(
            "AF-MODEL-004",
            f"no run '{run_id}' in the tracking store at {tracking_uri or default_tracking_uri()}",
            "`aiforge runs` lists the runs and their ids",
        ) from None
    local = cache_dir() / "runs" / run_id
    if not (local / ".complete").exists():
        local = download_version(f"{run.info.artifact_uri}/model", local)
    return local, run.info.run_name or run_id


def download_version(source: str, target: Path) -> Path:
    """Copy a version's artifacts into the cache; a marker file makes partial downloads visible."""
    import shutil

    # a local copy takes milliseconds; MLflow's progress bar would only clutter `aiforge run` output
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
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


# ---- tracking: runs, params, metrics, artifacts ------------------------------------------------------
PARAM_VALUE_LIMIT = (
    500  # MLflow rejects long values on some stores (250 chars on older servers); full config is an artifact
)


class RunLogger:
    """Logs one training run to MLflow and never raises: tracking must not kill training.

    Any call that fails (store unreachable, locked SQLite file, a value the store rejects) is
    appended to ``OUTPUT_DIR/tracking_pending.jsonl`` with a single warning; ``finish`` replays the
    pending calls once more (the store may be back) and says where the local log is if not.
    """

    def __init__(
        self, output_dir: Path, tracking_uri: str | None = None, experiment: str = "aiforge"
    ) -> None:
        self.output_dir = Path(output_dir)
        self.tracking_uri = tracking_uri or default_tracking_uri()
        self.experiment = experiment
        self.pending_path = self.output_dir / "tracking_pending.jsonl"
        self.run_id: str | None = None
        self.artifact_uri: str | None = None
        self._client: MlflowClient | None = None
        self._warned = False

    # -- plumbing
    def _call(self, op: str, payload: dict[str, Any], fn: Callable[[], Any], record: bool = True) -> Any:
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - any tracking failure is logged, never fatal
            if record:
                self._record(op, payload)
            if not self._warned:
                self._warned = True
                log.warning(
                    "[AF-TRACK-001] MLflow %s failed (%s: %s); training goes on and tracking is logged to %s",
                    op,
                    type(exc).__name__,
                    str(exc)[:200],
                    self.pending_path,
                )
            return None

    def _record(self, op: str, payload: dict[str, Any]) -> None:
        import json
        import time

        self.pending_path.parent.mkdir(parents=True, exist_ok=True)
        with self.pending_path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps({"op": op, "time": time.time(), **payload}, default=str) + "\n")

    # -- the run
    def start(
        self, run_name: str, tags: dict[str, str] | None = None, run_id: str | None = None
    ) -> str | None:
        """Open a run, or reopen ``run_id`` (a resumed training continues the same run)."""

        def _start() -> str:
            self._client = mlflow_client = client(self.tracking_uri)
            if run_id:
                run = mlflow_client.get_run(run_id)
                mlflow_client.update_run(run_id, status="RUNNING")
            else:
                experiment_id = self._experiment_id(mlflow_client)
                run = mlflow_client.create_run(experiment_id, run_name=run_name, tags=tags or {})
            self.run_id, self.artifact_uri = run.info.run_id, run.info.artifact_uri
            return run.info.run_id

        return self._call("start", {"run_name": run_name, "tags": tags or {}}, _start)

    def _experiment_id(self, mlflow_client: MlflowClient) -> str:
        from mlflow.exceptions import MlflowException

        found = mlflow_client.get_experiment_by_name(self.experiment)
        if found is not None:
            return found.experiment_id
        try:
            return mlflow_client.create_experiment(
                self.experiment, artifact_location=artifact_root(self.tracking_uri)
            )
        except MlflowException:  # another run created it since the lookup above
            found = mlflow_client.get_experiment_by_name(self.experiment)
            if found is None:
                raise
            return found.experiment_id

    def _active_run(self) -> tuple[MlflowClient, str] | None:
        """The client and id of the open run; None before ``start`` succeeded (calls are then
        recorded for ``sync``)."""
        if self._client is None or self.run_id is None:
            return None
        return self._client, self.run_id

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        clean = {k: _param_value(v) for k, v in params.items()}
        active = self._active_run()
        if active is None:
            self._record("params", {"params": clean})
            return
        mlflow_client, run_id = active
        batch = [Param(k, v) for k, v in clean.items()]
        done = self._call(
            "params",
            {"params": clean},
            lambda: mlflow_client.log_batch(run_id, params=batch) or True,
            record=False,
        )
        if done is None:  # find the value the store rejects; keep the others
            for key, value in clean.items():
                self._call(
                    "params",
                    {"params": {key: value}},
                    functools.partial(mlflow_client.log_param, run_id, key, value),
                )

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric

        values = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}
        active = self._active_run()
        if active is None:
            self._record("metrics", {"metrics": values, "step": step})
            return
        mlflow_client, run_id = active
        now = int(time.time() * 1000)
        batch = [Metric(k, v, now, step) for k, v in values.items()]
        self._call(
            "metrics",
            {"metrics": values, "step": step},
            lambda: mlflow_client.log_batch(run_id, metrics=batch),
        )

    def set_tags(self, tags: dict[str, str]) -> None:
        active = self._active_run()
        if active is None:
            self._record("tags", {"tags": tags})
            return
        mlflow_client, run_id = active
        for key, value in tags.items():
            self._call(
                "tags", {"tags": {key: value}}, functools.partial(mlflow_client.set_tag, run_id, key, value)
            )

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        """A file or a whole directory (e.g. the model) under ``artifact_path``."""
        payload = {"path": str(path), "artifact_path": artifact_path}
        active = self._active_run()
        if active is None:
            self._record("artifact", payload)
            return
        mlflow_client, run_id = active
        log_fn = mlflow_client.log_artifacts if Path(path).is_dir() else mlflow_client.log_artifact
        self._call("artifact", payload, lambda: log_fn(run_id, str(path), artifact_path))

    def finish(self, status: str = "FINISHED") -> bool:
        """Close the run; replay calls that failed earlier. True when everything reached the store."""
        active = self._active_run()
        if active is not None:
            mlflow_client, run_id = active
            self._call("end", {"status": status}, lambda: mlflow_client.set_terminated(run_id, status))
        return self.sync()

    def sync(self) -> bool:
        """Replay ``tracking_pending.jsonl`` into the store; keep what still fails."""
        import json

        if not self.pending_path.exists():
            return True
        lines = self.pending_path.read_text(encoding="utf-8").splitlines()
        entries = [json.loads(line) for line in lines if line]
        opened: dict[str, Any] = next(
            (e for e in entries if e["op"] == "start"), {"run_name": self.output_dir.name, "tags": {}}
        )
        if self._active_run() is None and self.start(opened["run_name"], opened["tags"]) is None:
            log.warning(
                "[AF-TRACK-001] tracking store %s still unreachable; the run's tracking is in %s",
                self.tracking_uri,
                self.pending_path,
            )
            return False
        self.pending_path.unlink()
        self._warned = True  # the summary below is the warning now
        for entry in entries:
            self._replay(entry)
        if self.pending_path.exists():
            log.warning(
                "[AF-TRACK-001] some tracking calls were rejected by %s; they are kept in %s",
                self.tracking_uri,
                self.pending_path,
            )
            return False
        return True

    def _replay(self, entry: dict[str, Any]) -> None:
        op = entry["op"]
        if op == "params":
            self.log_params(entry["params"])
        elif op == "metrics":
            self.log_metrics(entry["metrics"], entry["step"])
        elif op == "tags":
            self.set_tags(entry["tags"])
        elif op == "artifact" and Path(entry["path"]).exists():
            self.log_artifact(Path(entry["path"]), entry["artifact_path"])


def _param_value(value: Any) -> str:
    text = str(value)
    return text if len(text) <= PARAM_VALUE_LIMIT else text[: PARAM_VALUE_LIMIT - 3] + "..."


# ---- the MLflow model wrapper of a model dir ---------------------------------------------------------
# MLflow imports this module when it loads the model (`mlflow.pyfunc.load_model`, `mlflow models
# serve`); a string, because the export layer sits above this one.
PYFUNC_LOADER = "aiforge.export.mlflow_model"
MLFLOW_REQUIREMENTS = ("aiforge", "mlflow", "torch", "transformers", "pandas")


def write_pyfunc_wrapper(
    model_dir: Path, task: str, input_field: str | None = None, example: str | None = None
) -> None:
    """Make ``model_dir`` an MLflow model as well (``MLmodel``, pyfunc flavour, input signature and
    example, requirements), beside the Hugging Face files it keeps, so a registered version loads
    with ``mlflow.pyfunc.load_model("models:/NAME@ALIAS")``. The pyfunc runs aiforge's pipeline for
    ``task``: the same pre- and postprocessing as `aiforge run` and the server."""
    import importlib.metadata
    import platform

    import mlflow.pyfunc
    import pandas as pd
    from mlflow.models import Model, ModelSignature
    from mlflow.models.utils import _save_example
    from mlflow.types import ColSpec, Schema

    model = Model(metadata={"aiforge_task": task})
    mlflow.pyfunc.add_to_model(model, loader_module=PYFUNC_LOADER, data=".", python_env="python_env.yaml")
    if input_field:
        model.signature = ModelSignature(inputs=Schema([ColSpec("string", input_field)]))
        if example:  # MLflow has no public call that stores an example beside an existing model dir
            _save_example(model, pd.DataFrame({input_field: [example]}), str(model_dir))
    pins = []
    for name in MLFLOW_REQUIREMENTS:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            pins.append(f"{name}=={importlib.metadata.version(name)}")
    (model_dir / "requirements.txt").write_text("\n".join(pins) + "\n", encoding="utf-8")
    (model_dir / "python_env.yaml").write_text(
        f"python: {platform.python_version()}\n"
        "build_dependencies:\n- pip\ndependencies:\n- -r requirements.txt\n",
        encoding="utf-8",
    )
    model.save(str(model_dir / "MLmodel"))


# ---- registry: versions and aliases -----------------------------------------------------------------
def register_version(
    run_id: str,
    artifact_uri: str,
    name: str,
    alias: str | None = None,
    tracking_uri: str | None = None,
    description: str = "",
) -> str:
    """Register ``artifact_uri`` (the run's model directory) as a new version of ``name``; move ``alias``."""
    from mlflow.exceptions import MlflowException

    mlflow_client = client(tracking_uri)
    try:
        mlflow_client.get_registered_model(name)
    except MlflowException:
        mlflow_client.create_registered_model(name)
    version = mlflow_client.create_model_version(
        name, source=artifact_uri, run_id=run_id, description=description
    )
    if alias:
        mlflow_client.set_registered_model_alias(name, alias, version.version)
    return str(version.version)


def tag_version(name: str, version: str, tags: dict[str, str], tracking_uri: str | None = None) -> None:
    """Set tags on a registered version (what `aiforge quantize` found: whether int8 may serve it)."""
    mlflow_client = client(tracking_uri)
    for key, value in tags.items():
        mlflow_client.set_model_version_tag(name, version, key, value)


def promote(name: str, version: str | int, alias: str, tracking_uri: str | None = None) -> dict[str, str]:
    """Point ``alias`` (e.g. production) at ``version`` of ``name``; returns what moved."""
    from mlflow.exceptions import MlflowException

    mlflow_client = client(tracking_uri)
    try:
        mlflow_client.get_model_version(name, str(version))
    except MlflowException:
        try:
            known = sorted(int(v.version) for v in mlflow_client.search_model_versions(f"name='{name}'"))
        except MlflowException:
            known = []
        hint = f"versions of {name}: {', '.join(map(str, known))}" if known else f"no model named '{name}'"
        raise AiforgeError(
            "AF-MODEL-004",
            f"model '{name}' version {version} not found ({hint})",
            "`aiforge runs` lists runs and their registered versions",
        ) from None
    previous = None
    with contextlib.suppress(MlflowException):
        previous = mlflow_client.get_model_version_by_alias(name, alias).version
    mlflow_client.set_registered_model_alias(name, alias, str(version))
    return {
        "name": name,
        "alias": alias,
        "version": str(version),
        "previous": str(previous) if previous else "",
    }


def list_runs(limit: int = 20, tracking_uri: str | None = None) -> list[dict[str, Any]]:
    """The most recent runs of every experiment, newest first, with their metrics (for `aiforge runs`)."""
    mlflow_client = client(tracking_uri)
    experiments = [e.experiment_id for e in mlflow_client.search_experiments()]
    if not experiments:
        return []
    runs = mlflow_client.search_runs(experiments, max_results=limit, order_by=["attributes.start_time DESC"])
    rows = []
    for run in runs:
        tags = run.data.tags
        rows.append(
            {
                "run_id": run.info.run_id,
                "name": run.info.run_name,
                "status": run.info.status,
                "start_time": run.info.start_time,
                "duration_s": ((run.info.end_time or run.info.start_time) - run.info.start_time) / 1000,
                "task": tags.get("aiforge.task", ""),
                "model": tags.get("aiforge.backbone", ""),
                "registered": tags.get("aiforge.registered", ""),
                "metrics": dict(run.data.metrics),
            }
        )
    return rows
