"""``aiforge doctor``: check that this machine can actually do applied-ML work.

Every check reads its facts from an :class:`Env` instead of ``sys``/``os`` directly, so
the tests can fabricate Linux, macOS and Windows machines (fake PATH directories, conda
installs, ``.condarc`` files, ``nvidia-smi`` output, a fake ``torch``) on any host.

Each check returns :class:`Finding` objects: ``ok`` / ``warn`` / ``fail``, the facts that
were found, and for problems a fix spelled out as commands plus a stable ``AF-...`` code
from :data:`aiforge.errors.CODES`. torch and friends are imported lazily inside the checks
so ``import aiforge.doctor`` stays cheap.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import platform as _platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from aiforge.errors import CODES

Status = Literal["ok", "warn", "fail"]

MIN_PYTHON = (3, 10)  # matches requires-python in pyproject.toml
DISK_WARN_BYTES = 10 * 2**30  # a couple of checkpoints plus the HF cache
DISK_FAIL_BYTES = 1 * 2**30  # pip installs and checkpoint writes start failing
MEM_WARN_BYTES = 2 * 2**30  # a base-size transformer in fp32 plus tokenizers
HF_WALK_MAX_ENTRIES = 50_000  # keep `doctor` fast on huge caches: report a lower bound
HF_WALK_MAX_SECONDS = 1.0
MATMUL_N = 512  # big enough to hit real BLAS/cuBLAS kernels, small enough to be instant
DTYPE_N = 256
# PyTorch wheel indexes by CUDA version (https://download.pytorch.org/whl/cuXYZ).
TORCH_CUDA_WHEELS: tuple[tuple[int, int], ...] = (
    (11, 8),
    (12, 1),
    (12, 4),
    (12, 6),
    (12, 8),
    (12, 9),
    (13, 0),
)
ML_PACKAGES = ("transformers", "timm", "sentence-transformers")
# Channels run by Anaconda Inc.: their terms of service require a paid licence for
# organisations over 200 people, which is why we steer users to conda-forge.
ANACONDA_CHANNEL_NAMES = {"defaults", "main", "anaconda", "r", "msys2", "free", "pro", "mro"}
TRUTHY = {"1", "true", "yes", "on"}


# --------------------------------------------------------------------------- model


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


# --------------------------------------------------------------------------- helpers


def _norm(env: Env, path: str | Path) -> str:
    """Comparable form of a path: forward slashes, case-folded on Windows."""
    text = str(path).replace("\\", "/") if env.windows else str(path)
    text = text.rstrip("/") or "/"
    return text.lower() if env.windows else text


def _is_windowsapps(env: Env, path: str | Path) -> bool:
    # %LOCALAPPDATA%\Microsoft\WindowsApps holds the Store "App execution alias" stubs.
    return "/windowsapps/" in _norm(env, path).replace("\\", "/").lower() + "/"


def _pip_cmd(env: Env) -> str:
    """`python -m pip` for the running interpreter: the one invocation that cannot hit the wrong pip."""
    exe = env.executable or "python"
    return f'"{exe}" -m pip' if " " in exe else f"{exe} -m pip"


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _read_text(path: Path, limit: int = 1_000_000) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read(limit)
    except OSError:
        return None


def _is_shim(path: Path) -> bool:
    # pyenv / asdf / mise put bash (or .bat) dispatchers in a "shims" folder on PATH.
    return "shims" in {p.lower() for p in path.parts}


def _shim_target(env: Env, path: Path) -> str | None:
    """Ask a shim which interpreter it dispatches to; None when it has none (pyenv: command not found)."""
    key = f"shim:{path}"
    if key not in env.memo:
        target = _pyenv_target(env, path)
        if target is None:
            rc, out = env.run([str(path), "-c", "import sys; print(sys.executable)"])
            lines = out.strip().splitlines()
            target = lines[-1].strip() if rc == 0 and lines else None
        env.memo[key] = target
    return env.memo[key]


def _pyenv_selected(env: Env, root: Path) -> list[str]:
    """pyenv's version choice: PYENV_VERSION, else the nearest .python-version, else <root>/version."""
    if env.getenv("PYENV_VERSION"):
        return env.getenv("PYENV_VERSION").split(":")
    files = [d / ".python-version" for d in (env.cwd, *env.cwd.parents)] + [root / "version"]
    for file in files:
        text = _read_text(file, 10_000) if file.is_file() else None
        if text is not None:
            return [w for line in text.splitlines() for w in line.split("#")[0].split()]
    return ["system"]


def _pyenv_target(env: Env, shim: Path) -> str | None:
    """Resolve a POSIX pyenv shim without running it (running one costs ~0.2 s, seconds under load).

    None when the answer needs pyenv itself ("system", unknown layouts): the caller runs the shim.
    """
    root = shim.parent.parent
    if env.windows or not (root / "versions").is_dir():
        return None
    for version in _pyenv_selected(env, root):
        if version == "system":
            return None
        folder = root / "versions" / version
        if not folder.is_dir():  # pyenv >= 2.3 accepts a prefix such as "3.11" for the latest 3.11.x
            matches = [p for p in _glob(root / "versions", f"{version}.*") if p.is_dir()]
            matches.sort(key=lambda p: [int(x) if x.isdigit() else -1 for x in re.split(r"[.-]", p.name)])
            folder = matches[-1] if matches else folder
        candidate = folder / "bin" / shim.name
        if env.is_executable(candidate):
            return str(candidate)
    return None


def _interpreter_id(env: Env, exe: str | Path, *, ask_shims: bool = True) -> str:
    """Identity of the Python installation behind an executable path.

    A venv's ``bin/python`` is a symlink to the base interpreter, so resolving symlinks
    alone would call every venv "the system Python": a ``pyvenv.cfg`` next to it wins.
    """
    path = env.path(exe)
    if ask_shims and _is_shim(path):
        target = _shim_target(env, path)
        if target:
            return _interpreter_id(env, target, ask_shims=False)
    for candidate in (path, _resolve(path)):
        for root in (candidate.parent.parent, candidate.parent):
            if (root / "pyvenv.cfg").is_file():
                return _norm(env, root)
    return _norm(env, _resolve(path))


def _resolve(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):
        return path


def _conda_root(env: Env, prefix: Path) -> Path | None:
    """The conda installation that owns ``prefix`` (itself, or the parent of ``envs/``)."""
    if prefix.parent.name == "envs" and (prefix.parent.parent / "conda-meta").is_dir():
        return prefix.parent.parent
    if (prefix / "conda-meta").is_dir():
        return prefix
    conda_exe = env.getenv("CONDA_EXE")
    if conda_exe:
        root = env.path(conda_exe).parent.parent  # <root>/bin/conda or <root>\Scripts\conda.exe
        if (root / "conda-meta").is_dir():
            return root
    return None


def _conda_flavour(root: Path) -> str:
    """miniforge / miniconda / anaconda, from install-dir names, then from files the installers leave."""
    name = root.name.lower()
    for marker, flavour in (
        ("miniforge", "miniforge"),
        ("mambaforge", "miniforge"),
        ("miniconda", "miniconda"),
        ("anaconda", "anaconda"),
        ("micromamba", "micromamba"),
    ):
        if marker in name:
            return flavour
    meta = root / "conda-meta"
    # The Anaconda Distribution installs the `anaconda` metapackage (anaconda-2024.02-py311_0.json);
    # anaconda-client / anaconda-anon-usage also exist in Miniconda, hence the digit.
    if any(re.match(r"anaconda-(\d|custom)", p.name) for p in _glob(meta, "anaconda-*.json")):
        return "anaconda"
    history = (_read_text(meta / "history", 20_000) or "").lower()
    if "miniforge" in history or "mambaforge" in history:
        return "miniforge"
    if "miniconda" in history:
        return "miniconda"
    # Miniforge ships <root>/.condarc pinning conda-forge; conda itself from conda-forge says the same.
    condarc = (_read_text(root / ".condarc", 20_000) or "").lower()
    conda_channel = _package_channel(meta, "conda")
    if "conda-forge" in condarc or conda_channel == "conda-forge":
        return "miniforge"
    if conda_channel and _is_anaconda_channel(conda_channel):
        return "miniconda"
    return "conda"


def _glob(directory: Path, pattern: str) -> list[Path]:
    try:
        return sorted(directory.glob(pattern))
    except OSError:
        return []


def _record_name(record: Path) -> str:
    # conda-meta records are named <name>-<version>-<build>.json; names may contain dashes.
    m = re.match(r"(.+)-[^-]+-[^-]+\.json$", record.name)
    return m.group(1) if m else record.stem


def _record_channel(record: Path) -> str | None:
    """The channel of one conda-meta record without parsing it: records of big packages list every
    file and can be megabytes, while the channel keys sit near the top."""
    for limit in (65_536, 100_000_000):
        text = _read_text(record, limit) or ""
        m = re.search(r'"schannel":\s*"([^"]+)"', text) or re.search(r'"channel":\s*"([^"]+)"', text)
        if m:
            return _channel_name(m.group(1))
        if len(text) < limit:
            break
    return None


def _package_channel(meta: Path, package: str) -> str | None:
    for record in _glob(meta, f"{package}-[0-9]*.json"):
        if _record_name(record) == package:
            return _record_channel(record)
    return None


def _classify_install(env: Env, root: Path) -> str:
    """Where a (base) Python installation came from, from its prefix path and marker files."""
    if (root / "conda-meta").is_dir():
        return _conda_flavour(_conda_root(env, root) or root)
    p = _norm(env, root).lower() + "/"
    rules = (
        (("/.pyenv/versions/", "/pyenv-win/versions/"), "pyenv"),
        (("/uv/python/",), "uv-managed"),
        (("/opt/homebrew/", "/usr/local/cellar/", "/home/linuxbrew/"), "homebrew"),
        (("/library/developer/commandlinetools/", "/applications/xcode"), "Apple Command Line Tools"),
        (
            (
                "/library/frameworks/python.framework/",
                "/appdata/local/programs/python/",
                "/program files/python",
            ),
            "python.org installer",
        ),
        (("/windowsapps/",), "Microsoft Store"),
    )
    for markers, label in rules:
        if any(m in p for m in markers):
            return label
    if p in ("/usr/", "/usr/local/", "/") or p.startswith("/usr/lib/"):
        return "system"
    return "unknown"


# --------------------------------------------------------------------------- Python


def python_origin(env: Env) -> dict[str, Any]:
    """Facts about where the running interpreter comes from (used by two checks)."""
    prefix, base = env.path(env.prefix), env.path(env.base_prefix)
    venv = (prefix / "pyvenv.cfg").is_file() or _norm(env, prefix) != _norm(env, base)
    conda_env = (prefix / "conda-meta").is_dir()
    install = base if venv else prefix
    root = _conda_root(env, install) if (install / "conda-meta").is_dir() else None
    return {
        "venv": venv,
        "conda_env": conda_env,
        "conda_root": str(root) if root else None,
        "conda_base": bool(root and _norm(env, root) == _norm(env, prefix)),
        "install": _classify_install(env, install),
        "install_prefix": str(install),
        "windows_store": _is_windowsapps(env, env.executable),
    }


def check_python(env: Env) -> Finding:
    ver = ".".join(map(str, env.version))
    origin = python_origin(env)
    where = origin["install"]
    if origin["venv"]:
        where = f"venv {env.prefix} on {origin['install']} Python ({origin['install_prefix']})"
    elif origin["conda_env"]:
        kind = "base env" if origin["conda_base"] else "env"
        where = f"conda {kind} {env.prefix} ({origin['install']})"
    details = {"version": ver, "executable": env.executable, **origin}
    message = f"Python {ver} at {env.executable}: {where}"
    if origin["windows_store"]:
        return Finding(
            "python",
            "fail",
            message + " (Microsoft Store Python: sandboxed, redirects writes to AppData)",
            fix="Install Python from https://www.python.org/downloads/windows/ or Miniforge "
            "(https://conda-forge.org/download/), then turn off the Store aliases: Settings > Apps > "
            "Advanced app settings > App execution aliases > python.exe / python3.exe off.",
            code="AF-PY-001",
            details=details,
        )
    if tuple(env.version[:2]) < MIN_PYTHON:
        need = ".".join(map(str, MIN_PYTHON))
        return Finding(
            "python",
            "fail",
            message + f" (aiforge needs Python >= {need})",
            fix="Create an environment with a newer Python, e.g. `uv venv --python 3.11 .venv` or "
            '`conda create -n aiforge -c conda-forge python=3.11`, then `pip install "aiforge[ml]"`.',
            code="AF-PY-002",
            details=details,
        )
    return Finding("python", "ok", message, details=details)


def check_python_env(env: Env) -> Finding:
    """Installing ML stacks into a system or conda-base Python breaks other tools: want an isolated env."""
    origin = python_origin(env)
    if origin["venv"]:
        return Finding("python-env", "ok", f"virtual environment {env.prefix}", details=origin)
    if origin["conda_env"] and not origin["conda_base"]:
        return Finding("python-env", "ok", f"conda environment {env.prefix}", details=origin)
    if origin["conda_base"]:
        return Finding(
            "python-env",
            "warn",
            f"running in the conda base environment ({env.prefix})",
            fix="Keep base for conda itself: `conda create -n aiforge -c conda-forge python=3.11` then "
            '`conda activate aiforge` and `pip install "aiforge[ml]"`.',
            code="AF-PY-005",
            details=origin,
        )
    activate = r".venv\Scripts\activate" if env.windows else "source .venv/bin/activate"
    return Finding(
        "python-env",
        "warn",
        f"not in a virtual environment ({origin['install']} Python, prefix {env.prefix})",
        fix=f'`python -m venv .venv`, then `{activate}` and `pip install "aiforge[ml]"`.',
        code="AF-PY-005",
        details=origin,
    )


_PYTHON_NAME = re.compile(r"^python(\d+(\.\d+)?)?(\.exe)?$", re.IGNORECASE)


def pythons_on_path(env: Env) -> list[dict[str, str]]:
    """Distinct interpreters on PATH in PATH order: [{"path":..., "id":...}]."""
    seen: dict[str, str] = {}
    for directory in env.path_dirs():
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError:
            continue
        for entry in entries:
            path = Path(entry.path)
            if not _PYTHON_NAME.match(entry.name) or not env.is_executable(path):
                continue
            if _is_windowsapps(env, path):
                ident = _norm(env, path)  # never execute a Store alias: running one opens the Store
            elif _is_shim(path):
                if re.sub(r"\.(exe|bat|cmd)$", "", entry.name.lower()) not in ("python", "python3"):
                    continue  # running every versioned shim is slow and lists versions not selected here
                target = _shim_target(env, path)
                if target is None:
                    continue  # a pyenv shim for a version that is not selected here runs nothing
                ident = _interpreter_id(env, target, ask_shims=False)
            else:
                ident = _interpreter_id(env, path)
            seen.setdefault(ident, str(path))
    return [{"path": p, "id": i} for i, p in seen.items()]


def _activate_hint(env: Env) -> str:
    origin = python_origin(env)
    if origin["conda_env"]:
        return f"`conda activate {env.prefix}`"
    if origin["venv"]:
        script = env.scripts_dir(env.prefix) / ("activate" if not env.windows else "activate.bat")
        return f"`{script}`" if env.windows else f"`source {script}`"
    return f"put {env.path(env.executable).parent} first on PATH"


def check_python_path(env: Env) -> Finding:
    running = _interpreter_id(env, env.executable)
    found = pythons_on_path(env)
    paths = [f["path"] for f in found]
    problems: list[str] = []
    store_alias = False
    on_path = []
    for name in ("python", "python3"):
        hits = env.which_all(name)
        if not hits:
            continue
        on_path.append(f"`{name}`")
        if _is_windowsapps(env, hits[0]):
            store_alias = True
            problems.append(f"`{name}` on PATH is the Microsoft Store alias {hits[0]}")
        elif _interpreter_id(env, hits[0]) != running:
            problems.append(f"`{name}` on PATH is {hits[0]}, not the running interpreter")
    details = {"pythons": paths, "running": env.executable}
    listing = f"{len(paths)} interpreter(s) on PATH: " + (", ".join(paths) if paths else "none")
    if not problems:
        return Finding(
            "python-path",
            "ok",
            (
                f"{' and '.join(on_path)} on PATH: the running interpreter"
                if on_path
                else "no `python` / `python3` on PATH"
            )
            + f"; {listing}",
            details=details,
        )
    fix = (
        f"Activate the environment ({_activate_hint(env)}) in every terminal, and run tools as "
        f"`python -m pip` / `python -m aiforge` so they use the same interpreter."
    )
    if store_alias:
        fix += " Turn off the Store aliases: Settings > Apps > Advanced app settings > App execution aliases."
    return Finding(
        "python-path",
        "warn",
        "; ".join(problems) + f". {listing}",
        fix=fix,
        code="AF-PY-001" if store_alias and len(problems) == 1 else "AF-PY-003",
        details=details,
    )


def _shebang_interpreter(env: Env, script: Path) -> str | None:
    """The interpreter a console script runs with (POSIX shebang or the Windows launcher's embedded one)."""
    try:
        with open(script, "rb") as fh:
            data = fh.read(4096 if script.suffix.lower() != ".exe" else 2_000_000)
    except OSError:
        return None
    # pip's long-path form: #!/bin/sh + '''exec' "/very/long/path/python" "$0" "$@"
    m = re.search(rb"'''exec' \"([^\"]+)\"", data)
    if m is None:
        # A Windows launcher .exe carries its shebang after the stub code: take the last one.
        found = list(re.finditer(rb'#!"([^"\r\n]+)"|#!([^\r\n]+)', data))
        m = found[-1] if found else None
    if m is None:
        return None
    line = (m.group(1) or m.group(2)).decode("utf-8", "replace").strip()
    parts = line.split()
    if parts and Path(parts[0]).name == "env" and len(parts) > 1:
        hits = env.which_all(parts[1])  # `#!/usr/bin/env python3` uses whatever is first on PATH
        return hits[0] if hits else None
    if script.suffix.lower() == ".exe" or '"' in m.group(0).decode("utf-8", "replace"):
        return line
    return parts[0] if parts else None


def _pip_site(env: Env, pip: Path) -> str | None:
    """Ask pip itself where it lives: `pip 24.0 from /x/lib/python3.11/site-packages/pip (python 3.11)`."""
    rc, out = env.run([str(pip), "--version"])
    m = re.search(r" from (.+?) \(python", out) if rc == 0 else None
    return m.group(1).strip() if m else None


def _pip_owner(env: Env, pip: Path) -> tuple[str | None, bool | None]:
    """(what pip installs into, whether that is the running interpreter); (None, None) if unknown."""
    if _norm(env, pip.parent) == _norm(env, env.scripts_dir(env.prefix)):
        return env.executable, True
    owner = _shebang_interpreter(env, pip)
    sibling = pip.with_name("python" + pip.suffix)
    if _is_shim(pip) and env.is_executable(sibling):
        # A pip shim dispatches to the same selected version as the python shim beside it.
        owner = _shim_target(env, sibling)
    if owner and env.path(owner).name.lower().startswith("python"):
        return owner, _interpreter_id(env, owner) == _interpreter_id(env, env.executable)
    # Shims, shell wrappers, unreadable launchers: pip's own answer is authoritative.
    site = _pip_site(env, pip)
    if site is None:
        return None, None
    return site, _norm(env, site).startswith(_norm(env, env.prefix) + "/")


def check_pip(env: Env) -> Finding:
    hits = env.which_all("pip")
    if not hits:
        return Finding("pip", "ok", "no `pip` on PATH (use `python -m pip`)", details={"pip": None})
    pip = env.path(hits[0])
    owner, belongs = _pip_owner(env, pip)
    details: dict[str, Any] = {"pip": str(pip), "installs_into": owner}
    if belongs is None:
        return Finding(
            "pip", "ok", f"`pip` on PATH is {pip}; could not tell its interpreter", details=details
        )
    if belongs:
        return Finding(
            "pip", "ok", f"`pip` on PATH ({pip}) belongs to the running interpreter", details=details
        )
    return Finding(
        "pip",
        "warn",
        f"`pip` on PATH ({pip}) installs into {owner}, not into {env.prefix}",
        fix=f"Use `{_pip_cmd(env)} install ...` (or activate the environment: {_activate_hint(env)}).",
        code="AF-PY-004",
        details=details,
    )


# --------------------------------------------------------------------------- conda


def _channel_name(channel: str) -> str:
    """'https://repo.anaconda.com/pkgs/main/linux-64' -> 'pkgs/main'; conda.anaconda.org/X/... -> 'X'."""
    c = channel.strip().rstrip("/")
    low = c.lower()
    m = re.search(r"repo\.(?:anaconda\.com|continuum\.io)/(pkgs/[^/]+)", low)
    if m:
        return m.group(1)
    m = re.search(r"conda\.anaconda\.org/([^/]+)", low)
    if m:
        return m.group(1)
    return c


def _is_anaconda_channel(channel: str) -> bool:
    low = channel.strip().lower().rstrip("/")
    if "repo.anaconda.com" in low or "repo.continuum.io" in low:
        return True
    name = _channel_name(low)
    return name in ANACONDA_CHANNEL_NAMES or name.startswith("pkgs/")


def condarc_paths(env: Env) -> list[Path]:
    """The .condarc files conda reads, per its documented search path (minus /etc)."""
    prefix = env.path(env.prefix)
    root = _conda_root(env, prefix) or _conda_root(env, env.path(env.base_prefix))
    candidates: list[Path] = []
    for base in [root, prefix]:
        if base is not None:
            candidates += [base / ".condarc", base / "condarc"]
    xdg = env.getenv("XDG_CONFIG_HOME")
    if xdg:
        candidates += [env.path(xdg) / "conda" / ".condarc", env.path(xdg) / "conda" / "condarc"]
    home = env.home
    candidates += [
        home / ".config" / "conda" / ".condarc",
        home / ".config" / "conda" / "condarc",
        home / ".conda" / ".condarc",
        home / ".conda" / "condarc",
        home / ".condarc",
    ]
    if env.getenv("CONDARC"):
        candidates.append(env.path(env.getenv("CONDARC")))
    unique: dict[str, Path] = {}
    for c in candidates:
        if c.is_file():
            unique.setdefault(_norm(env, _resolve(c)), c)
    return list(unique.values())


def _load_condarc(path: Path) -> dict:
    text = _read_text(path) or ""
    try:
        import yaml

        data = yaml.safe_load(text)
    except Exception:  # malformed YAML or pyyaml missing: fall back to a line scan of `channels:`
        data = _scan_condarc(text)
    return data if isinstance(data, dict) else {}


def _scan_condarc(text: str) -> dict:
    data: dict[str, list[str]] = {}
    key = None
    for line in text.splitlines():
        if re.match(r"^[A-Za-z_]+:\s*$", line):
            key = line.split(":")[0]
            data[key] = []
        elif key and re.match(r"^\s+-\s*", line):
            data[key].append(line.split("-", 1)[1].strip().strip("'\""))
        elif line.strip():
            key = None
    return data


def _as_list(value: Any) -> list:
    # `channels: conda-forge` (a scalar) is a common hand-written mistake that conda also accepts.
    if isinstance(value, str):
        return [value]
    return list(value) if isinstance(value, (list, tuple)) else []


def installed_channels(meta: Path, limit: int = 5000) -> dict[str, list[str]]:
    """channel name -> package names, from conda-meta/*.json records."""
    out: dict[str, list[str]] = {}
    for record in _glob(meta, "*.json")[:limit]:
        channel = _record_channel(record)
        if channel:
            out.setdefault(channel, []).append(_record_name(record))
    return out


def check_conda_channels(env: Env) -> Finding:
    prefix, base = env.path(env.prefix), env.path(env.base_prefix)
    meta = next((p / "conda-meta" for p in (prefix, base) if (p / "conda-meta").is_dir()), None)
    rc_files = condarc_paths(env)
    conda_in_use = meta is not None or bool(env.getenv("CONDA_EXE")) or bool(rc_files)
    if not conda_in_use:
        return Finding("conda-channels", "ok", "conda not in use (no conda-meta, no .condarc)")

    configured: list[tuple[str, Path]] = []
    default_channels: list[str] = []
    for rc in rc_files:
        data = _load_condarc(rc)
        configured += [(str(ch), rc) for ch in _as_list(data.get("channels"))]
        default_channels += [str(ch) for ch in _as_list(data.get("default_channels"))]
    # `defaults` may be remapped to a private mirror; then it is not Anaconda's repository.
    defaults_is_anaconda = not default_channels or any(_is_anaconda_channel(c) for c in default_channels)

    def bad(ch: str) -> bool:
        if ch.strip().lower() == "defaults":
            return defaults_is_anaconda
        return _is_anaconda_channel(ch)

    facts: list[str] = []
    bad_files: list[Path] = []
    for ch, rc in configured:
        if bad(ch):
            facts.append(f"channel '{ch}' in {rc}")
            bad_files.append(rc)
    if not configured and meta is not None and defaults_is_anaconda:
        # No `channels:` anywhere: conda silently falls back to `defaults` (repo.anaconda.com).
        facts.append("no .condarc sets `channels`, so conda uses `defaults` (repo.anaconda.com)")
    installed = installed_channels(meta) if meta else {}
    from_anaconda = sorted(p for ch, pkgs in installed.items() if bad(ch) for p in pkgs)
    if from_anaconda:
        facts.append(
            f"{len(from_anaconda)} installed package(s) from Anaconda channels "
            f"(e.g. {', '.join(from_anaconda[:5])})"
        )
    details = {
        "condarc": [str(p) for p in rc_files],
        "channels": [ch for ch, _ in configured],
        "installed_channels": {ch: len(pkgs) for ch, pkgs in sorted(installed.items())},
        "anaconda_packages": from_anaconda,
    }
    summary = (
        ", ".join(
            f"{ch} ({n})" for ch, n in Counter({ch: len(p) for ch, p in installed.items()}).most_common()
        )
        or "none recorded"
    )
    if not facts:
        chans = ", ".join(dict.fromkeys(ch for ch, _ in configured)) or "(none configured)"
        return Finding(
            "conda-channels", "ok", f"channels: {chans}; installed from: {summary}", details=details
        )

    user_rc = env.home / ".condarc"
    file_opts = [f" --file {p}" for p in dict.fromkeys(bad_files) if _norm(env, p) != _norm(env, user_rc)]
    removes = [f"conda config{opt} --remove channels defaults" for opt in (file_opts or [""])]
    fix = (
        "Anaconda's repository (defaults/main/anaconda, repo.anaconda.com) needs a paid licence for "
        "organisations over 200 people; use conda-forge: "
        + "; ".join(f"`{c}`" for c in removes)
        + "; `conda config --add channels conda-forge`; `conda config --set channel_priority strict`."
    )
    if from_anaconda:
        fix += (
            " Then recreate the environment from conda-forge (`conda create -n aiforge --override-channels "
            "-c conda-forge python=3.11`), or install Miniforge (https://conda-forge.org/download/)."
        )
    root = _conda_root(env, prefix) or _conda_root(env, base)
    if root is not None and _conda_flavour(root) in ("anaconda", "miniconda"):
        facts.append(f"base install is {_conda_flavour(root)} ({root})")
    return Finding("conda-channels", "warn", "; ".join(facts), fix=fix, code="AF-CONDA-001", details=details)


# --------------------------------------------------------------------------- editor


def strip_jsonc(text: str) -> str:
    """VS Code settings are JSON with comments and trailing commas: make them plain JSON."""
    out: list[str] = []
    i, n, in_str = 0, len(text), False
    while i < n:
        c = text[i]
        if in_str:
            out.append(c)
            if c == "\\" and i + 1 < n:
                out.append(text[i + 1])
                i += 1
            elif c == '"':
                in_str = False
        elif c == '"':
            in_str = True
            out.append(c)
        elif text.startswith("//", i):
            while i < n and text[i] not in "\r\n":
                i += 1
            continue
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 2
            continue
        else:
            out.append(c)
        i += 1
    return _drop_trailing_commas("".join(out))


def _drop_trailing_commas(text: str) -> str:
    out: list[str] = []
    in_str, escaped = False, False
    for i, c in enumerate(text):
        if in_str:
            in_str = not (c == '"' and not escaped)
            escaped = c == "\\" and not escaped
        elif c == '"':
            in_str = True
        elif c == ",":
            rest = text[i + 1 :].lstrip()
            if rest[:1] in ("}", "]"):
                continue
        out.append(c)
    return "".join(out)


def _vscode_settings(env: Env) -> list[Path]:
    """settings.json files from cwd up to home (or the filesystem root when cwd is outside home)."""
    found: list[Path] = []
    home = _norm(env, env.home)
    for directory in (env.cwd, *env.cwd.parents):
        candidate = directory / ".vscode" / "settings.json"
        if candidate.is_file():
            found.append(candidate)
        if _norm(env, directory) == home:
            break
    return found


def _expand_vscode(env: Env, value: str, workspace: Path) -> Path:
    value = value.replace("${workspaceFolder}", str(workspace)).replace("${userHome}", str(env.home))
    value = re.sub(r"\$\{env:([^}]+)\}", lambda m: env.getenv(m.group(1)), value)
    path = _expand_home(env, value)
    return path if path.is_absolute() else workspace / path


def _interpreter_in(env: Env, path: Path) -> Path:
    """VS Code accepts an environment folder too: find its interpreter."""
    if path.is_dir():
        for rel in ("bin/python", "bin/python3", "Scripts/python.exe", "python.exe"):
            if (path / rel).is_file():
                return path / rel
    return path


def check_editor(env: Env) -> Finding:
    settings = _vscode_settings(env)
    running = _interpreter_id(env, env.executable)
    for file in settings:
        try:
            data = json.loads(strip_jsonc(_read_text(file) or "{}"))
        except ValueError as exc:
            return Finding(
                "editor",
                "warn",
                f"{file} is not valid JSON(C): {exc}",
                fix=f"Fix the syntax of {file} (VS Code underlines the error).",
                code="AF-EDITOR-001",
                details={"settings": str(file)},
            )
        key = next(
            (
                k
                for k in ("python.defaultInterpreterPath", "python.pythonPath")
                if isinstance(data, dict) and isinstance(data.get(k), str)
            ),
            None,
        )
        if key is None:
            continue
        configured = _interpreter_in(env, _expand_vscode(env, data[key], file.parent.parent))
        details = {"settings": str(file), "key": key, "interpreter": str(configured)}
        if not configured.exists():
            return Finding(
                "editor",
                "warn",
                f"{file}: {key} points to {configured}, which does not exist",
                fix=f'Set "{key}": "{env.executable}" in {file}, or pick it with '
                f'"Python: Select Interpreter".',
                code="AF-EDITOR-001",
                details=details,
            )
        if _interpreter_id(env, configured) != running:
            return Finding(
                "editor",
                "warn",
                f"{file}: {key} = {configured}, but this terminal runs {env.executable}",
                fix=f'Set "{key}": "{env.executable}" in {file} (or "Python: Select Interpreter"), '
                "or activate the editor's environment in the terminal.",
                code="AF-EDITOR-001",
                details=details,
            )
        return Finding("editor", "ok", f"{file}: {key} matches the running interpreter", details=details)
    msg = "no VS Code interpreter pinned" + (
        f" in {', '.join(map(str, settings))}"
        if settings
        else " (no .vscode/settings.json from here up to home)"
    )
    return Finding("editor", "ok", msg, details={"settings": [str(s) for s in settings]})


# --------------------------------------------------------------------------- torch / GPU


def _version_tuple(text: str | None) -> tuple[int, int] | None:
    m = re.match(r"(\d+)\.(\d+)", text or "")
    return (int(m.group(1)), int(m.group(2))) if m else None


def nvidia_smi(env: Env) -> dict[str, Any] | None:
    """Driver facts from nvidia-smi, or None when there is no NVIDIA driver tool at all."""
    commands = [["nvidia-smi"]]
    if env.windows:  # older Windows drivers did not put nvidia-smi on PATH
        commands.append([r"C:\Program Files\NVIDIA Corporation\NVSMI\nvidia-smi.exe"])
    for cmd in commands:
        rc, out = env.run(cmd)
        if rc in (126, 127):
            continue
        info: dict[str, Any] = {"ok": rc == 0, "output": out.strip()[-2000:], "command": cmd[0]}
        if m := re.search(r"Driver Version:\s*([\d.]+)", out):
            info["driver"] = m.group(1)
        if m := re.search(r"CUDA Version:\s*([\d.]+)", out):
            info["cuda"] = m.group(1)
        if rc == 0:
            q_rc, q_out = env.run([cmd[0], "--query-gpu=index,name,memory.total", "--format=csv,noheader"])
            if q_rc == 0:
                info["gpus"] = [line.strip() for line in q_out.splitlines() if line.strip()]
        return info
    return None


def _wheel_for(max_cuda: tuple[int, int] | None) -> str | None:
    fitting = [w for w in TORCH_CUDA_WHEELS if max_cuda and w <= max_cuda]
    return f"cu{fitting[-1][0]}{fitting[-1][1]}" if fitting else None


def _torch_build(torch: Any) -> str:
    version = getattr(torch, "version", None)
    if getattr(version, "cuda", None):
        return f"CUDA {version.cuda}"
    if getattr(version, "hip", None):
        return f"ROCm {version.hip}"
    return "CPU"


def check_torch_import(env: Env) -> tuple[Finding, Any]:
    try:
        torch = env.import_module("torch")
    except ImportError as exc:
        return Finding(
            "torch",
            "warn",
            f"torch is not installed ({exc})",
            fix=f'{_pip_cmd(env)} install "aiforge[ml]"',
            code="AF-TORCH-001",
        ), None
    except Exception as exc:  # DLL load failures, undefined symbols, ABI mismatches
        return Finding(
            "torch",
            "fail",
            f"`import torch` failed: {type(exc).__name__}: {exc}",
            fix=f"Reinstall it cleanly: `{_pip_cmd(env)} install --force-reinstall --no-cache-dir torch`",
            code="AF-TORCH-002",
        ), None
    build = _torch_build(torch)
    details = {
        "version": getattr(torch, "__version__", "?"),
        "build": build,
        "path": str(getattr(torch, "__file__", "")),
    }
    return Finding("torch", "ok", f"torch {details['version']} ({build} build)", details=details), torch


def _cuda_available(torch: Any) -> tuple[bool, str]:
    # torch reports driver problems as warnings from is_available(): keep them as facts.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ok = bool(torch.cuda.is_available())
        except Exception as exc:
            return False, str(exc)
    return ok, "; ".join(str(w.message).strip().splitlines()[0] for w in caught if str(w.message).strip())


def check_cuda(env: Env, torch: Any, smi: dict[str, Any] | None) -> Finding:
    torch_cuda = getattr(torch.version, "cuda", None)
    available, note = _cuda_available(torch)
    driver_cuda = _version_tuple((smi or {}).get("cuda"))
    wheel = _wheel_for(driver_cuda)
    index = f"https://download.pytorch.org/whl/{wheel}" if wheel else None
    details = {
        "torch_cuda": torch_cuda,
        "hip": getattr(torch.version, "hip", None),
        "available": available,
        "nvidia_smi": {k: v for k, v in (smi or {}).items() if k != "output"} or None,
        "note": note,
    }
    driver = f"NVIDIA driver {smi.get('driver', '?')} (CUDA <= {smi.get('cuda', '?')})" if smi else ""
    reinstall = (
        f"`{_pip_cmd(env)} install --force-reinstall torch torchvision --index-url {index}`"
        if index
        else "update the NVIDIA driver (https://www.nvidia.com/Download/index.aspx)"
    )

    if smi and not smi["ok"]:
        first = next((ln for ln in smi["output"].splitlines() if ln.strip()), "no output")
        return Finding(
            "cuda",
            "fail" if torch_cuda else "warn",
            f"nvidia-smi failed: {first}",
            fix="The NVIDIA driver is not loaded: reboot after a driver/kernel update, or reinstall the "
            "driver (Linux: `sudo ubuntu-drivers install` / your distro's nvidia package).",
            code="AF-CUDA-002",
            details=details,
        )
    if smi and not torch_cuda:
        return Finding(
            "cuda",
            "fail",
            f"{driver} found, but torch is a {_torch_build(torch)} build: the GPU is unused",
            fix=f"Install a CUDA build of torch: {reinstall}",
            code="AF-CUDA-001",
            details=details,
        )
    if not torch_cuda:
        hip = getattr(torch.version, "hip", None)
        if hip and available:
            return Finding(
                "cuda", "ok", f"ROCm {hip}: {torch.cuda.device_count()} GPU(s) visible", details=details
            )
        if env.platform == "darwin":
            return Finding("cuda", "ok", "no CUDA on macOS (see mps)", details=details)
        return Finding(
            "cuda",
            "ok",
            f"no NVIDIA driver (nvidia-smi not found); torch is a {_torch_build(torch)} build",
            details=details,
        )

    built = _version_tuple(torch_cuda)
    if not smi:
        return Finding(
            "cuda",
            "warn",
            f"torch is a CUDA {torch_cuda} build, but there is no NVIDIA driver "
            "(nvidia-smi not found): running on CPU",
            fix="On a GPU machine install the NVIDIA driver. On a CPU-only machine the CPU wheel is "
            f"~4 GB smaller: `{_pip_cmd(env)} install --force-reinstall torch torchvision "
            "--index-url https://download.pytorch.org/whl/cpu`",
            code="AF-CUDA-002",
            details=details,
        )
    if built and driver_cuda and built > driver_cuda:
        major = built[0] != driver_cuda[0]
        return Finding(
            "cuda",
            "fail" if major or not available else "warn",
            f"torch is built for CUDA {torch_cuda} but the {driver}"
            + ("" if available else f"; torch.cuda.is_available() is False{': ' + note if note else ''}"),
            fix=f"Update the NVIDIA driver to one supporting CUDA {torch_cuda} "
            "(https://www.nvidia.com/Download/index.aspx)"
            + (f", or install a wheel built for the driver: {reinstall}" if index else "."),
            code="AF-CUDA-003",
            details=details,
        )
    if not available:
        hidden = "CUDA_VISIBLE_DEVICES" in env.environ
        visible = env.getenv("CUDA_VISIBLE_DEVICES")
        hint = f" CUDA_VISIBLE_DEVICES={visible!r} hides GPUs: unset it." if hidden else ""
        return Finding(
            "cuda",
            "fail",
            f"{driver} and a CUDA {torch_cuda} build, but torch.cuda.is_available() is "
            f"False{': ' + note if note else ''}",
            fix=f"Check `nvidia-smi` and the container's GPU access (docker run --gpus all).{hint} "
            f"If it persists: {reinstall}",
            code="AF-CUDA-002",
            details=details,
        )
    count = torch.cuda.device_count()
    return Finding(
        "cuda", "ok", f"{driver}; torch CUDA {torch_cuda}; {count} GPU(s) available", details=details
    )


def check_mps(env: Env, torch: Any) -> Finding | None:
    if env.platform != "darwin":
        return None
    mps = getattr(getattr(torch, "backends", None), "mps", None)
    available = bool(mps and mps.is_available())
    built = bool(mps and mps.is_built())
    details = {"available": available, "built": built, "machine": env.machine}
    if available:
        return Finding("mps", "ok", "Apple MPS available", details=details)
    if env.machine == "x86_64":
        rc, out = env.run(["sysctl", "-n", "sysctl.proc_translated"])
        if rc == 0 and out.strip() == "1":  # an Intel Python under Rosetta on an Apple-silicon Mac
            return Finding(
                "mps",
                "warn",
                "Python is an x86_64 build running under Rosetta on Apple silicon: no MPS, slow CPU",
                fix="Install a native arm64 Python (Miniforge arm64 or "
                "python.org universal2) and recreate the environment.",
                code="AF-MPS-001",
                details={**details, "rosetta": True},
            )
        return Finding("mps", "ok", "Intel Mac: no MPS (CPU only)", details=details)
    if env.machine == "arm64":
        why = "torch was built without MPS" if not built else "MPS not available (macOS < 12.3?)"
        return Finding(
            "mps",
            "warn",
            f"Apple silicon but {why}",
            fix=f"Update macOS to >= 12.3 and install the standard macOS arm64 torch wheel: "
            f"`{_pip_cmd(env)} install --upgrade torch`",
            code="AF-MPS-001",
            details=details,
        )
    return Finding("mps", "ok", "MPS not available", details=details)


def available_devices(torch: Any) -> list[str]:
    devices = ["cpu"]
    if _cuda_available(torch)[0]:
        devices += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(getattr(torch, "backends", None), "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    return devices


def _sync(torch: Any, device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
    elif device == "mps":
        torch.mps.synchronize()


def _rel_err(torch: Any, got: Any, ref: Any) -> float:
    got = got.detach().to("cpu", torch.float64)
    return float((got - ref).abs().max() / ref.abs().max().clamp_min(1e-12))


def _timed_matmul(torch: Any, device: str, a: Any, b: Any, reps: int = 5) -> tuple[Any, float]:
    """Median wall time in ms of a @ b on device (after one warm-up that pays for kernel loading)."""
    a, b = a.to(device), b.to(device)
    out = a @ b
    _sync(torch, device)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        out = a @ b
        _sync(torch, device)
        times.append((time.perf_counter() - start) * 1000)
    return out, sorted(times)[len(times) // 2]


def _dtype_support(torch: Any, device: str, a: Any, b: Any) -> dict[str, bool]:
    """Does a small fp16/bf16 matmul run on device and stay close to the fp64 result?"""
    a, b = a[:DTYPE_N, :DTYPE_N], b[:DTYPE_N, :DTYPE_N]
    ref = a.double() @ b.double()
    support: dict[str, bool] = {}
    for name, dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
        if device.startswith("cuda") and name == "bf16" and not torch.cuda.is_bf16_supported():
            support[name] = False
            continue
        try:
            got = a.to(device, dtype) @ b.to(device, dtype)
            _sync(torch, device)
            support[name] = _rel_err(torch, got, ref) < 5e-2
        except Exception:  # "not implemented for 'Half'" and friends
            support[name] = False
    return support


def _device_label(torch: Any, device: str) -> tuple[str, dict[str, Any]]:
    if not device.startswith("cuda"):
        return device, {}
    idx = int(device.split(":")[1])
    props = torch.cuda.get_device_properties(idx)
    cap = torch.cuda.get_device_capability(idx)
    info: dict[str, Any] = {
        "name": props.name,
        "capability": f"sm_{cap[0]}{cap[1]}",
        "total_bytes": int(props.total_memory),
    }
    with contextlib.suppress(Exception):
        info["free_bytes"] = int(torch.cuda.mem_get_info(idx)[0])
    mem = f"{_gib(info['free_bytes'])} free / " if "free_bytes" in info else ""
    return f"{device} {props.name} ({info['capability']}, {mem}{_gib(info['total_bytes'])})", info


def check_device(env: Env, torch: Any, device: str, a: Any, b: Any, ref: Any) -> Finding:
    """A real matmul on one device, timed and checked against the fp64 CPU result."""
    check = f"device:{device}"
    code = {"cpu": "AF-TORCH-003", "mps": "AF-MPS-002"}.get(device, "AF-CUDA-004")
    try:
        label, details = _device_label(torch, device)
        out, ms = _timed_matmul(torch, device, a, b)
        err = _rel_err(torch, out, ref)
    except Exception as exc:
        arch = ""
        if device.startswith("cuda"):
            with contextlib.suppress(Exception):
                major, minor = torch.cuda.get_device_capability(int(device.split(":")[1]))
                if f"sm_{major}{minor}" not in torch.cuda.get_arch_list():
                    arch = f" This torch has no kernels for sm_{major}{minor} ({torch.cuda.get_arch_list()})."
        return Finding(
            check,
            "fail",
            f"{MATMUL_N}x{MATMUL_N} matmul on {device} failed: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}",
            fix=f"Install a torch build that supports this device.{arch} See "
            "https://pytorch.org/get-started/locally/ ; on CUDA rerun with CUDA_LAUNCH_BLOCKING=1 "
            "for the exact failing kernel.",
            code=code,
        )
    gflops = 2 * MATMUL_N**3 / (ms / 1000) / 1e9 if ms > 0 else float("inf")
    dtypes = _dtype_support(torch, device, a, b)
    details.update(
        {
            "device": device,
            "matmul_ms": round(ms, 3),
            "gflops": round(gflops, 1),
            "max_rel_err": err,
            **dtypes,
        }
    )
    kinds = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in dtypes.items())
    message = (
        f"{label}: {MATMUL_N}x{MATMUL_N} fp32 matmul {ms:.2f} ms ({gflops:.0f} GFLOP/s), "
        f"max rel err vs CPU fp64 {err:.1e}; {kinds}"
    )
    # fp32 on GPUs may use TF32 (10-bit mantissa) when a program enabled it: allow ~1e-2.
    if err > (1e-4 if device == "cpu" else 1e-2):
        return Finding(
            check,
            "fail",
            message + " (WRONG RESULT)",
            fix="The device computes wrong numbers: update the driver / torch, and check the "
            "hardware (overclock, ECC errors in `nvidia-smi -q`).",
            code=code,
            details=details,
        )
    return Finding(check, "ok", message, details=details)


def check_torch(env: Env, *, device_ops: bool = True) -> list[Finding]:
    finding, torch = check_torch_import(env)
    findings = [finding]
    if torch is None:
        # Without torch a visible NVIDIA driver is still worth reporting.
        smi = nvidia_smi(env)
        if smi and smi["ok"]:
            wheel = _wheel_for(_version_tuple(smi.get("cuda")))
            finding.details["nvidia_smi"] = {k: v for k, v in smi.items() if k != "output"}
            if wheel:
                finding.fix += (
                    f" (this machine has NVIDIA driver {smi.get('driver')}: use "
                    f"`--index-url https://download.pytorch.org/whl/{wheel}` for torch)"
                )
        return findings
    findings.append(check_cuda(env, torch, nvidia_smi(env) if env.platform != "darwin" else None))
    mps = check_mps(env, torch)
    if mps is not None:
        findings.append(mps)
    if device_ops:
        gen = torch.Generator().manual_seed(0)
        a = torch.randn(MATMUL_N, MATMUL_N, generator=gen)
        b = torch.randn(MATMUL_N, MATMUL_N, generator=gen)
        ref = a.double() @ b.double()
        for device in available_devices(torch):
            findings.append(check_device(env, torch, device, a, b, ref))
    return findings


def check_packages(env: Env) -> list[Finding]:
    findings = []
    for name in ML_PACKAGES:
        version = env.dist_version(name)
        if version:
            findings.append(Finding(f"pkg:{name}", "ok", f"{name} {version}", details={"version": version}))
        else:
            findings.append(
                Finding(
                    f"pkg:{name}",
                    "warn",
                    f"{name} is not installed",
                    fix=f'{_pip_cmd(env)} install "aiforge[ml]"',
                    code="AF-PKG-001",
                )
            )
    return findings


# --------------------------------------------------------------------------- Hugging Face cache, disk, memory


def _expand_home(env: Env, text: str) -> Path:
    return env.path(str(env.home) + text[1:] if text.startswith("~") else text)


def hf_cache_dir(env: Env) -> tuple[Path, str]:
    """The hub cache in effect and which setting chose it (same precedence as huggingface_hub)."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_CACHE"):
        if env.getenv(var):
            return _expand_home(env, env.getenv(var)), var
    if env.getenv("HF_HOME"):
        return _expand_home(env, env.getenv("HF_HOME")) / "hub", "HF_HOME"
    xdg = env.getenv("XDG_CACHE_HOME")
    base = env.path(xdg) if xdg else env.home / ".cache"
    return base / "huggingface" / "hub", "XDG_CACHE_HOME" if xdg else "default"


def dir_size(
    path: Path, max_entries: int = HF_WALK_MAX_ENTRIES, max_seconds: float = HF_WALK_MAX_SECONDS
) -> tuple[int, bool]:
    """Bytes of regular files under path (symlinks not followed: the hub's snapshots link to blobs).

    Returns (size, complete); complete is False when a cap stopped the walk.
    """
    total, seen, deadline = 0, 0, time.monotonic() + max_seconds
    stack = [path]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            seen += 1
            if seen > max_entries or time.monotonic() > deadline:
                return total, False
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                elif entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_size
            except OSError:
                continue
    return total, True


def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return path


def _writable(path: Path) -> bool:
    """Really create a file: os.access lies on network shares and read-only bind mounts."""
    target = _nearest_existing(path)
    try:
        fd, name = tempfile.mkstemp(prefix=".aiforge-doctor-", dir=target)
    except OSError:
        return False
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(name)
    return True


def check_hf_cache(env: Env) -> Finding:
    cache, source = hf_cache_dir(env)
    offline_vars = [v for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE") if env.getenv(v).lower() in TRUTHY]
    exists = cache.is_dir()
    size, complete = dir_size(cache) if exists else (0, True)
    models = len(_glob(cache, "models--*")) if exists else 0
    writable = _writable(cache)
    details = {
        "path": str(cache),
        "source": source,
        "exists": exists,
        "size_bytes": size,
        "size_complete": complete,
        "models": models,
        "offline": bool(offline_vars),
        "writable": writable,
    }
    size_text = ("" if complete else ">= ") + _human(size)
    offline = f"offline ({', '.join(offline_vars)})" if offline_vars else "online"
    message = (
        f"{cache} ({source}): {size_text}, {models} model(s), {offline}, "
        f"{'writable' if writable else 'NOT writable'}"
        if exists
        else f"{cache} ({source}) does not exist yet, {offline}, "
        f"{'can be created' if writable else 'parent NOT writable'}"
    )
    if not writable and not offline_vars:
        return Finding(
            "hf-cache",
            "fail",
            message,
            fix=f"Point the cache to a writable folder: `export HF_HOME=$HOME/hf` (Windows: "
            f"`setx HF_HOME %USERPROFILE%\\hf`), or fix the permissions of {cache}.",
            code="AF-HF-001",
            details=details,
        )
    if offline_vars and models == 0:
        return Finding(
            "hf-cache",
            "warn",
            message + ": offline mode with no cached models, nothing can load",
            fix=f"Download models first with network access (unset {' '.join(offline_vars)}), or "
            "point HF_HOME at a cache that has them.",
            code="AF-HF-001",
            details=details,
        )
    return Finding("hf-cache", "ok", message, details=details)


def check_disk(env: Env) -> list[Finding]:
    cache, _ = hf_cache_dir(env)
    findings, seen = [], set()
    for label, path in (("cwd", env.cwd), ("hf-cache", cache)):
        target = _nearest_existing(path)
        try:
            dev = os.stat(target).st_dev
            free, total = env.disk_usage(target)
        except OSError as exc:
            findings.append(
                Finding(
                    f"disk:{label}",
                    "warn",
                    f"cannot read free space at {target}: {exc}",
                    fix="Check that the path is mounted.",
                    code="AF-DISK-001",
                )
            )
            continue
        if dev in seen:
            continue  # same filesystem as an earlier line
        seen.add(dev)
        details = {"path": str(target), "free_bytes": free, "total_bytes": total}
        message = f"{_gib(free)} free of {_gib(total)} at {target}"
        status: Status = "fail" if free < DISK_FAIL_BYTES else "warn" if free < DISK_WARN_BYTES else "ok"
        if status == "ok":
            findings.append(Finding(f"disk:{label}", "ok", message, details=details))
        else:
            findings.append(
                Finding(
                    f"disk:{label}",
                    status,
                    message + f" (< {_gib(DISK_WARN_BYTES)})",
                    fix="Free space: `pip cache purge`, `conda clean --all`, `hf cache delete`, "
                    "or move the Hugging Face cache to a bigger disk with HF_HOME.",
                    code="AF-DISK-001",
                    details=details,
                )
            )
    return findings


def memory_info(env: Env) -> tuple[int, int] | None:
    """(available, total) bytes: psutil when installed; /proc/meminfo on Linux; otherwise unknown."""
    try:
        psutil = env.import_module("psutil")
        vm = psutil.virtual_memory()
        return int(vm.available), int(vm.total)
    except ImportError:
        pass
    if env.platform != "linux":
        return None
    text = _read_text(env.meminfo_path) or ""
    values = {m.group(1): int(m.group(2)) * 1024 for m in re.finditer(r"^(\w+):\s+(\d+) kB", text, re.M)}
    if "MemTotal" not in values:
        return None
    return values.get("MemAvailable", values.get("MemFree", 0)), values["MemTotal"]


def check_memory(env: Env) -> Finding:
    info = memory_info(env)
    if info is None:
        return Finding(
            "memory",
            "ok",
            f"free memory unknown on {env.platform} without psutil (`pip install psutil` to check it)",
        )
    available, total = info
    details = {"available_bytes": available, "total_bytes": total}
    message = f"{_gib(available)} available of {_gib(total)}"
    if available < MEM_WARN_BYTES:
        return Finding(
            "memory",
            "warn",
            message + f" (< {_gib(MEM_WARN_BYTES)})",
            fix="Close other programs, use a smaller model / batch size, or add swap.",
            code="AF-MEM-001",
            details=details,
        )
    return Finding("memory", "ok", message, details=details)


# --------------------------------------------------------------------------- driver


def _guard(check: str, fn: Callable[[], Finding | list[Finding] | None]) -> list[Finding]:
    """One broken check must not take `doctor` down: report it and go on."""
    try:
        result = fn()
    except Exception as exc:
        return [
            Finding(
                check,
                "warn",
                f"check crashed: {type(exc).__name__}: {exc}",
                fix="Please report this at the aiforge issue tracker with `aiforge doctor --json`.",
                code="AF-DOCTOR-001",
            )
        ]
    if result is None:
        return []
    return result if isinstance(result, list) else [result]


def run_checks(env: Env | None = None, *, device_ops: bool = True) -> list[Finding]:
    env = env or Env.current()
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("python", lambda: check_python(env)),
        ("python-env", lambda: check_python_env(env)),
        ("python-path", lambda: check_python_path(env)),
        ("pip", lambda: check_pip(env)),
        ("conda-channels", lambda: check_conda_channels(env)),
        ("editor", lambda: check_editor(env)),
        ("torch", lambda: check_torch(env, device_ops=device_ops)),
        ("packages", lambda: check_packages(env)),
        ("hf-cache", lambda: check_hf_cache(env)),
        ("disk", lambda: check_disk(env)),
        ("memory", lambda: check_memory(env)),
    ]
    findings: list[Finding] = []
    for name, fn in steps:
        findings += _guard(name, fn)
    return findings


def exit_code(findings: Iterable[Finding]) -> int:
    return 1 if any(f.status == "fail" for f in findings) else 0


def summary(findings: Iterable[Finding]) -> dict[str, int]:
    counts = {"ok": 0, "warn": 0, "fail": 0}
    for f in findings:
        counts[f.status] += 1
    return counts


def to_json(findings: Iterable[Finding]) -> dict:
    findings = list(findings)
    return {
        "ok": exit_code(findings) == 0,
        "summary": summary(findings),
        "findings": [f.to_dict() for f in findings],
    }


_SYMBOLS = {"ok": ("✓", "OK", "green"), "warn": ("!", "WARN", "yellow"), "fail": ("✗", "FAIL", "red")}


def render(findings: Iterable[Finding], console: Any) -> None:
    """A table: status symbol, check, message with the code, and a `fix:` line under problems."""
    from rich.table import Table
    from rich.text import Text

    findings = list(findings)
    # Legacy Windows consoles (cp1252) cannot print the check marks.
    unicode_ok = (getattr(console, "encoding", "utf-8") or "").lower().startswith("utf")
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False, expand=False)
    table.add_column("", no_wrap=True)
    table.add_column("check", style="bold", no_wrap=True)
    table.add_column("result", overflow="fold")
    for f in findings:
        symbol, word, style = _SYMBOLS[f.status]
        text = Text()
        if f.code:
            text.append(f"[{f.code}] ", style=style)
        text.append(f.message)
        if f.fix:
            text.append("\nfix: ", style="bold cyan")
            text.append(f.fix)
        table.add_row(Text(symbol if unicode_ok else word, style=style), f.check, text)
    console.print(table)
    counts = summary(findings)
    console.print(
        f"[green]{counts['ok']} ok[/], [yellow]{counts['warn']} warn[/], [red]{counts['fail']} fail[/]"
    )
