"""Python checks: version, environment kind, which ``python`` and ``pip`` PATH finds."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from aiforge.doctor.installs import (
    classify_install,
    comparable_path,
    conda_root,
    interpreter_id,
    is_shim,
    is_windowsapps,
    pip_command,
    shim_target,
)
from aiforge.doctor.model import Env, Finding

MIN_PYTHON = (3, 10)  # matches requires-python in pyproject.toml


def python_origin(env: Env) -> dict[str, Any]:
    """Facts about where the running interpreter comes from (used by two checks)."""
    prefix, base = env.path(env.prefix), env.path(env.base_prefix)
    venv = (prefix / "pyvenv.cfg").is_file() or comparable_path(env, prefix) != comparable_path(env, base)
    conda_env = (prefix / "conda-meta").is_dir()
    install = base if venv else prefix
    root = conda_root(env, install) if (install / "conda-meta").is_dir() else None
    return {
        "venv": venv,
        "conda_env": conda_env,
        "conda_root": str(root) if root else None,
        "conda_base": bool(root and comparable_path(env, root) == comparable_path(env, prefix)),
        "install": classify_install(env, install),
        "install_prefix": str(install),
        "windows_store": is_windowsapps(env, env.executable),
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
            if is_windowsapps(env, path):
                ident = comparable_path(env, path)  # never execute a Store alias: running one opens the Store
            elif is_shim(path):
                if re.sub(r"\.(exe|bat|cmd)$", "", entry.name.lower()) not in ("python", "python3"):
                    continue  # running every versioned shim is slow and lists versions not selected here
                target = shim_target(env, path)
                if target is None:
                    continue  # a pyenv shim for a version that is not selected here runs nothing
                ident = interpreter_id(env, target, ask_shims=False)
            else:
                ident = interpreter_id(env, path)
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
    running = interpreter_id(env, env.executable)
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
        if is_windowsapps(env, hits[0]):
            store_alias = True
            problems.append(f"`{name}` on PATH is the Microsoft Store alias {hits[0]}")
        elif interpreter_id(env, hits[0]) != running:
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
    if comparable_path(env, pip.parent) == comparable_path(env, env.scripts_dir(env.prefix)):
        return env.executable, True
    owner = _shebang_interpreter(env, pip)
    sibling = pip.with_name("python" + pip.suffix)
    if is_shim(pip) and env.is_executable(sibling):
        # A pip shim dispatches to the same selected version as the python shim beside it.
        owner = shim_target(env, sibling)
    if owner and env.path(owner).name.lower().startswith("python"):
        return owner, interpreter_id(env, owner) == interpreter_id(env, env.executable)
    # Shims, shell wrappers, unreadable launchers: pip's own answer is authoritative.
    site = _pip_site(env, pip)
    if site is None:
        return None, None
    return site, comparable_path(env, site).startswith(comparable_path(env, env.prefix) + "/")


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
        fix=f"Use `{pip_command(env)} install ...` (or activate the environment: {_activate_hint(env)}).",
        code="AF-PY-004",
        details=details,
    )
