"""Where an interpreter comes from: shims, venvs, conda roots and flavours, install records."""

from __future__ import annotations

import re
from pathlib import Path

from aiforge.doctor.model import Env

# Channels run by Anaconda Inc.: their terms of service require a paid licence for
# organisations over 200 people, which is why we steer users to conda-forge.
ANACONDA_CHANNEL_NAMES = {"defaults", "main", "anaconda", "r", "msys2", "free", "pro", "mro"}


def comparable_path(env: Env, path: str | Path) -> str:
    """Comparable form of a path: forward slashes, case-folded on Windows."""
    text = str(path).replace("\\", "/") if env.windows else str(path)
    text = text.rstrip("/") or "/"
    return text.lower() if env.windows else text


def is_windowsapps(env: Env, path: str | Path) -> bool:
    # %LOCALAPPDATA%\Microsoft\WindowsApps holds the Store "App execution alias" stubs.
    return "/windowsapps/" in comparable_path(env, path).replace("\\", "/").lower() + "/"


def pip_command(env: Env) -> str:
    """`python -m pip` for the running interpreter: the one invocation that cannot hit the wrong pip."""
    exe = env.executable or "python"
    return f'"{exe}" -m pip' if " " in exe else f"{exe} -m pip"


def read_text(path: Path, limit: int = 1_000_000) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read(limit)
    except OSError:
        return None


def is_shim(path: Path) -> bool:
    # pyenv / asdf / mise put bash (or .bat) dispatchers in a "shims" folder on PATH.
    return "shims" in {p.lower() for p in path.parts}


def shim_target(env: Env, path: Path) -> str | None:
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
        text = read_text(file, 10_000) if file.is_file() else None
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
            matches = [p for p in glob_sorted(root / "versions", f"{version}.*") if p.is_dir()]
            matches.sort(key=lambda p: [int(x) if x.isdigit() else -1 for x in re.split(r"[.-]", p.name)])
            folder = matches[-1] if matches else folder
        candidate = folder / "bin" / shim.name
        if env.is_executable(candidate):
            return str(candidate)
    return None


def interpreter_id(env: Env, exe: str | Path, *, ask_shims: bool = True) -> str:
    """Identity of the Python installation behind an executable path.

    A venv's ``bin/python`` is a symlink to the base interpreter, so resolving symlinks
    alone would call every venv "the system Python": a ``pyvenv.cfg`` next to it wins.
    """
    path = env.path(exe)
    if ask_shims and is_shim(path):
        target = shim_target(env, path)
        if target:
            return interpreter_id(env, target, ask_shims=False)
    for candidate in (path, resolved_path(path)):
        for root in (candidate.parent.parent, candidate.parent):
            if (root / "pyvenv.cfg").is_file():
                return comparable_path(env, root)
    return comparable_path(env, resolved_path(path))


def resolved_path(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):
        return path


def conda_root(env: Env, prefix: Path) -> Path | None:
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


def conda_flavour(root: Path) -> str:
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
    if any(re.match(r"anaconda-(\d|custom)", p.name) for p in glob_sorted(meta, "anaconda-*.json")):
        return "anaconda"
    history = (read_text(meta / "history", 20_000) or "").lower()
    if "miniforge" in history or "mambaforge" in history:
        return "miniforge"
    if "miniconda" in history:
        return "miniconda"
    # Miniforge ships <root>/.condarc pinning conda-forge; conda itself from conda-forge says the same.
    condarc = (read_text(root / ".condarc", 20_000) or "").lower()
    conda_channel = _package_channel(meta, "conda")
    if "conda-forge" in condarc or conda_channel == "conda-forge":
        return "miniforge"
    if conda_channel and is_anaconda_channel(conda_channel):
        return "miniconda"
    return "conda"


def glob_sorted(directory: Path, pattern: str) -> list[Path]:
    try:
        return sorted(directory.glob(pattern))
    except OSError:
        return []


def record_name(record: Path) -> str:
    # conda-meta records are named <name>-<version>-<build>.json; names may contain dashes.
    m = re.match(r"(.+)-[^-]+-[^-]+\.json$", record.name)
    return m.group(1) if m else record.stem


def record_channel(record: Path) -> str | None:
    """The channel of one conda-meta record without parsing it: records of big packages list every
    file and can be megabytes, while the channel keys sit near the top."""
    for limit in (65_536, 100_000_000):
        text = read_text(record, limit) or ""
        m = re.search(r'"schannel":\s*"([^"]+)"', text) or re.search(r'"channel":\s*"([^"]+)"', text)
        if m:
            return _channel_name(m.group(1))
        if len(text) < limit:
            break
    return None


def _package_channel(meta: Path, package: str) -> str | None:
    for record in glob_sorted(meta, f"{package}-[0-9]*.json"):
        if record_name(record) == package:
            return record_channel(record)
    return None


def classify_install(env: Env, root: Path) -> str:
    """Where a (base) Python installation came from, from its prefix path and marker files."""
    if (root / "conda-meta").is_dir():
        return conda_flavour(conda_root(env, root) or root)
    p = comparable_path(env, root).lower() + "/"
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


def is_anaconda_channel(channel: str) -> bool:
    low = channel.strip().lower().rstrip("/")
    if "repo.anaconda.com" in low or "repo.continuum.io" in low:
        return True
    name = _channel_name(low)
    return name in ANACONDA_CHANNEL_NAMES or name.startswith("pkgs/")


def expand_home(env: Env, text: str) -> Path:
    return env.path(str(env.home) + text[1:] if text.startswith("~") else text)
