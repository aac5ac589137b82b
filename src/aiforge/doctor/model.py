"""What every doctor check reads (:class:`Env`, the machine's facts) and returns (:class:`Finding`)."""

from __future__ import annotations

import importlib
import os
import platform as _platform
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from aiforge.errors import CODES

Status = Literal["ok", "warn", "fail"]


@dataclass
class Finding:
    """One result line of ``aiforge doctor``."""

    check: str
    status: Status
    message: str
    fix: str = ""
    code: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # A code that is not registered would break scripts that grep for it: fail loudly in tests.
        if self.code is not None and self.code not in CODES:
            raise ValueError(f"unregistered error code {self.code!r}")

    def to_dict(self) -> dict:
        return {
            "check": self.check,
            "status": self.status,
            "message": self.message,
            "fix": self.fix,
            "code": self.code,
            "details": _jsonable(self.details),
        }


def _jsonable(value: Any) -> Any:
    """Paths, tuples and sets in ``details`` must survive ``json.dumps``."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def _default_run(cmd: Sequence[str]) -> tuple[int, str]:
    """Run a command, never raise: (returncode, stdout+stderr); 127 when not found."""
    try:
        proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=15)
    except FileNotFoundError as exc:
        return 127, str(exc)
    except subprocess.TimeoutExpired:
        return 124, f"{cmd[0]} timed out"
    except OSError as exc:
        return 126, str(exc)
    return proc.returncode, (proc.stdout or "") + (proc.stderr or "")


def _default_dist_version(name: str) -> str | None:
    # Metadata instead of import: importing transformers/sentence-transformers costs seconds.
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _default_disk_usage(path: Path) -> tuple[int, int]:
    usage = shutil.disk_usage(path)
    return usage.free, usage.total


def _normalize_platform(name: str) -> str:
    if name.startswith("linux"):
        return "linux"
    if name in ("win32", "cygwin", "msys"):
        return "win32"
    return name


@dataclass
class Env:
    """Every OS fact the checks read. ``Env.current()`` for the real machine; tests build their own."""

    platform: str  # "linux" | "darwin" | "win32"
    machine: str  # "x86_64", "arm64", "AMD64", ...
    executable: str
    prefix: str
    base_prefix: str
    version: tuple[int, int, int]
    environ: dict[str, str]
    cwd: Path
    home: Path
    # Injected side effects, so tests never depend on the host:
    run: Callable[[Sequence[str]], tuple[int, str]] = _default_run
    import_module: Callable[[str], Any] = importlib.import_module
    dist_version: Callable[[str], str | None] = _default_dist_version
    disk_usage: Callable[[Path], tuple[int, int]] = _default_disk_usage  # (free, total) bytes
    meminfo_path: Path = Path("/proc/meminfo")
    # Answers of slow probes (pyenv shims take ~0.2 s each), shared by the checks of one run.
    memo: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    @classmethod
    def current(cls) -> Env:
        return cls(
            platform=_normalize_platform(sys.platform),
            machine=_platform.machine(),
            executable=sys.executable,
            prefix=sys.prefix,
            base_prefix=getattr(sys, "base_prefix", sys.prefix),
            version=tuple(sys.version_info[:3]),  # type: ignore[arg-type]
            environ=dict(os.environ),
            cwd=Path.cwd(),
            home=Path.home(),
        )

    @property
    def windows(self) -> bool:
        return self.platform == "win32"

    def getenv(self, name: str, default: str = "") -> str:
        # Windows environment variables are case-insensitive ("Path" vs "PATH").
        if name in self.environ:
            return self.environ[name]
        if self.windows:
            for key, value in self.environ.items():
                if key.upper() == name.upper():
                    return value
        return default

    def path(self, raw: str | os.PathLike) -> Path:
        """A Path for a string from this env; Windows backslashes work when tests run on POSIX."""
        text = os.fspath(raw)
        if self.windows and os.sep == "/":
            text = text.replace("\\", "/")
        return Path(text)

    def path_dirs(self) -> list[Path]:
        sep = ";" if self.windows else ":"
        return [self.path(d) for d in self.getenv("PATH").split(sep) if d.strip()]

    def is_executable(self, path: Path) -> bool:
        try:
            if not path.is_file():
                return False
        except OSError:
            return False
        if self.windows:
            return path.suffix.lower() in self._pathext()
        return os.access(path, os.X_OK)

    def _pathext(self) -> list[str]:
        raw = self.getenv("PATHEXT", ".COM;.EXE;.BAT;.CMD")
        return [e.lower() for e in raw.split(";") if e]

    def which_all(self, name: str) -> list[str]:
        """Every match for ``name`` on PATH, in PATH order (like ``which -a`` / ``where``)."""
        names = [name]
        if self.windows and not Path(name).suffix:
            names = [name + ext for ext in self._pathext()]
        hits: list[str] = []
        for directory in self.path_dirs():
            for candidate in names:
                path = directory / candidate
                if self.is_executable(path) and str(path) not in hits:
                    hits.append(str(path))
        return hits

    def scripts_dir(self, prefix: str | Path) -> Path:
        root = self.path(prefix)
        return root / "Scripts" if self.windows else root / "bin"


def gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def human_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
