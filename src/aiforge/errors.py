"""User-facing errors with stable codes.

Every error a user can act on is an :class:`AiforgeError` carrying a stable code
(``AF-<AREA>-<NNN>``), a message that names the problem and a fix that names the
remedy. The CLI prints them without a traceback and exits non-zero; the server maps
them to 4xx JSON bodies. Codes are listed in ``CODES`` so docs and scripts can rely on them.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

# code -> one-line meaning. Keep codes stable: scripts and docs refer to them.
CODES: dict[str, str] = {
    # environment (doctor)
    "AF-PY-001": "Python interpreter is a Microsoft Store stub or unusable",
    "AF-PY-002": "Python version too old",
    "AF-PY-003": "several Python interpreters on PATH",
    "AF-PY-004": "pip does not belong to the running interpreter",
    "AF-PY-005": "not running inside a virtual environment",
    "AF-CONDA-001": "conda 'defaults' / repo.anaconda.com channel in use (commercial licence terms)",
    "AF-EDITOR-001": "editor interpreter differs from the running interpreter",
    "AF-TORCH-001": "torch is not installed",
    "AF-TORCH-002": "torch import failed",
    "AF-CUDA-001": "NVIDIA driver present but torch is a CPU build",
    "AF-CUDA-002": "CUDA build of torch but no usable GPU",
    "AF-CUDA-003": "NVIDIA driver too old for torch's CUDA build",
    "AF-CUDA-004": "tensor operation failed on an accelerator",
    "AF-MPS-001": "Apple MPS unavailable on Apple silicon",
    "AF-HF-001": "Hugging Face cache problem",
    "AF-DISK-001": "low free disk space",
    "AF-DISK-002": "disk full while writing (the previous version of the file is kept)",
    "AF-FILE-001": "a saved file (checkpoint, model weights, index) is truncated or corrupt",
    "AF-MEM-001": "low free memory",
    "AF-PKG-001": "optional package missing",
    "AF-TORCH-003": "tensor operation failed or gave wrong results on the CPU",
    "AF-MPS-002": "tensor operation failed or gave wrong results on Apple MPS",
    "AF-DOCTOR-001": "a doctor check crashed (bug in aiforge)",
    "AF-FONT-001": "no installed font draws Hangul (Korean plot labels show as empty boxes)",
    # tasks and models
    "AF-TASK-001": "unknown task",
    "AF-TASK-002": "the model or its task code failed on an input (forward or postprocess raised)",
    "AF-TASK-003": "a task name or alias is registered twice",
    "AF-MODEL-001": "model reference cannot be resolved",
    "AF-MODEL-002": "model not available offline",
    "AF-MODEL-003": "model does not fit the task",
    "AF-MODEL-004": "registry model or alias not found",
    "AF-ONNX-001": "ONNX export, quantisation or probe check failed (the model stays on PyTorch)",
    "AF-ONNX-002": "int8 loses more than the tolerance against fp32 (not made the default)",
    "AF-DEP-001": "optional dependency missing (install an extra)",
    "AF-INPUT-001": "input file missing or unreadable",
    "AF-INPUT-002": "input record malformed",
    "AF-INPUT-003": "image could not be decoded",
    "AF-INPUT-004": "audio could not be decoded",
    "AF-INPUT-005": "unsupported input file type",
    "AF-INPUT-006": "media input over a limit (file size, image pixels or audio duration)",
    "AF-DEVICE-001": "requested device is not available",
    # training
    "AF-CONFIG-001": "configuration invalid",
    "AF-DATA-001": "dataset column missing",
    "AF-DATA-002": "labels in validation/test unseen in training",
    "AF-DATA-003": "dataset empty or undecodable",
    "AF-TRAIN-001": "out of memory during training",
    "AF-TRAIN-002": "no checkpoint to resume from",
    "AF-TRACK-001": "tracking store unreachable or rejected a value",
    # sweeps
    "AF-SWEEP-001": "sweep file invalid (unknown field, bad method, missing trials or parameters)",
    "AF-SWEEP-002": "a sweep parameter names no training field, or a value its field refuses",
    "AF-SWEEP-003": "sweep dir mix-up: a sweep is already there, nothing to resume, or another space",
    "AF-SWEEP-004": "sweep trial produced no value for the metric",
    # serving
    "AF-SERVE-001": "served model not found",
    "AF-SERVE-002": "request invalid",
    "AF-SERVE-003": "queue full",
    "AF-SERVE-004": "request timed out",
    "AF-SERVE-005": "model not ready (loading, warming, failed or shutting down)",
    "AF-SERVE-006": "API key missing or invalid",
    "AF-SERVE-007": "request body too large",
    "AF-SERVE-008": "model reload or rollback failed",
    "AF-SERVE-009": "inference failed inside the server",
    "AF-SERVE-010": "API key not allowed on this route (scope)",
    "AF-SERVE-011": "API key over its rate limit",
    # rag
    "AF-RAG-001": "index not found",
    "AF-RAG-002": "index empty",
    "AF-RAG-003": "document could not be parsed",
    "AF-RAG-004": "index locked by another writer",
    "AF-RAG-005": "index store server unreachable",
    "AF-RAG-006": "answer generator failed (endpoint error or bad reply)",
    "AF-RAG-007": "index was built with other settings (embedder, chunking)",
    "AF-RAG-008": "index store needs an upgrade or a server extension (pgvector)",
    # scaling out on Ray
    "AF-RAY-001": "the Ray backend needs ray, which is not installed",
    "AF-RAY-002": "Ray cluster unreachable or refused the connection",
    "AF-RAY-003": "a Ray replica or worker died while handling the request (retry it)",
    "AF-RAY-004": "option not supported with this backend",
    # export (hub repo, Space, MLflow model, container)
    "AF-EXPORT-001": "the model to export cannot be found (registry reference, run id or model dir)",
    "AF-EXPORT-002": "pushing to the Hugging Face hub failed (offline, no token, or refused)",
    "AF-EXPORT-003": "this export target does not support the model's task or format",
    "AF-EXPORT-004": "the export folder exists and is not empty",
}


@dataclass
class AiforgeError(Exception):
    """An error the user can fix. ``message`` says what is wrong, ``fix`` what to do."""

    code: str
    message: str
    fix: str = ""
    status: int = 400  # HTTP status when raised inside the server

    def __post_init__(self) -> None:
        super().__init__(self.message)
        if self.code not in CODES:
            raise ValueError(f"unregistered error code {self.code!r}; add it to aiforge.errors.CODES")

    def __str__(self) -> str:
        text = f"[{self.code}] {self.message}"
        return f"{text}\n  fix: {self.fix}" if self.fix else text

    def __reduce__(self) -> tuple:
        """Pickle by fields (Exception's default pickles ``args`` only), so errors cross processes
        (Ray workers, subprocesses) as themselves."""
        return (type(self), tuple(getattr(self, f.name) for f in fields(self)))

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message, "fix": self.fix}

    def as_value_error(self) -> ValueError:
        """This error for a pydantic field validator, which reports ValueErrors with the field's
        location (so a bad `task:` in any config reads the same as any other bad field)."""
        return ValueError(f"{self.message}; {self.fix}" if self.fix else self.message)


def missing_extra(package: str, extra: str) -> AiforgeError:
    """The error for an optional dependency that is not installed."""
    return AiforgeError(
        "AF-DEP-001",
        f"the optional package '{package}' is not installed",
        f'pip install "aiforge[{extra}]"',
    )


def require(module: str, extra: str):
    """Import ``module`` or raise the install hint for ``extra``."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise missing_extra(module.split(".")[0], extra) from exc


DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def is_disk_full(exc: BaseException | None) -> bool:
    """ENOSPC / EDQUOT from the kernel, SQLite's own "database or disk is full" (SQLITE_FULL) or
    safetensors' "(os error 28)", anywhere in the exception's chain: torch.save turns the OSError
    into a RuntimeError about zip positions while closing the file, with the OSError as its context."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
            return True
        if type(exc).__name__ == "OperationalError" and "disk is full" in str(exc):
            return True
        if type(exc).__name__ == "SafetensorError" and "(os error 28)" in str(exc):  # Rust's io::Error text
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


@contextlib.contextmanager
def disk_full_guard(target: str | Path, what: str, leftovers: Sequence[Path] = ()) -> Iterator[None]:
    """Turns a full disk while writing ``target`` into AF-DISK-002 after deleting ``leftovers`` (the
    half-written temporary files). Every writer in aiforge writes beside the file it replaces and
    renames at the end, so the previous version is still whole when this error is raised."""
    try:
        yield
    except Exception as exc:
        if not is_disk_full(exc):
            raise
        for leftover in leftovers:
            with contextlib.suppress(OSError):
                if leftover.is_dir():
                    import shutil

                    shutil.rmtree(leftover, ignore_errors=True)
                else:
                    leftover.unlink(missing_ok=True)
        folder = Path(target).parent
        raise AiforgeError(
            "AF-DISK-002",
            f"the disk is full: writing the {what} '{target}' failed; the previous {what} is kept",
            f"free space on the disk that holds {folder} (`df -h {folder}`), then run the command again",
            status=507,
        ) from None


def corrupt_file(path: str | Path, what: str, fix: str) -> AiforgeError:
    """The error for a saved file that cannot be read back (cut short by a crash, a copy or a disk)."""
    size = os.path.getsize(path) if os.path.exists(path) else 0
    return AiforgeError(
        "AF-FILE-001", f"the {what} '{path}' is truncated or corrupt ({size:,} bytes)", fix, status=500
    )
