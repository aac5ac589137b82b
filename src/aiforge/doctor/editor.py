"""Editor check: does VS Code's configured interpreter match this one."""

from __future__ import annotations

import json
import re
from pathlib import Path

from aiforge.doctor.installs import comparable_path, expand_home, interpreter_id, read_text
from aiforge.doctor.model import Env, Finding


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
    home = comparable_path(env, env.home)
    for directory in (env.cwd, *env.cwd.parents):
        candidate = directory / ".vscode" / "settings.json"
        if candidate.is_file():
            found.append(candidate)
        if comparable_path(env, directory) == home:
            break
    return found


def _expand_vscode(env: Env, value: str, workspace: Path) -> Path:
    value = value.replace("${workspaceFolder}", str(workspace)).replace("${userHome}", str(env.home))
    value = re.sub(r"\$\{env:([^}]+)\}", lambda m: env.getenv(m.group(1)), value)
    path = expand_home(env, value)
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
    running = interpreter_id(env, env.executable)
    for file in settings:
        try:
            data = json.loads(strip_jsonc(read_text(file) or "{}"))
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
        if interpreter_id(env, configured) != running:
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
