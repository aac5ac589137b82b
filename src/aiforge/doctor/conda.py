"""Conda checks: configured and installed channels (Anaconda's terms vs conda-forge)."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

from aiforge.doctor.installs import (
    comparable_path,
    conda_flavour,
    conda_root,
    glob_sorted,
    is_anaconda_channel,
    read_text,
    record_channel,
    record_name,
    resolved_path,
)
from aiforge.doctor.model import Env, Finding


def condarc_paths(env: Env) -> list[Path]:
    """The .condarc files conda reads, per its documented search path (minus /etc)."""
    prefix = env.path(env.prefix)
    root = conda_root(env, prefix) or conda_root(env, env.path(env.base_prefix))
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
            unique.setdefault(comparable_path(env, resolved_path(c)), c)
    return list(unique.values())


def _load_condarc(path: Path) -> dict:
    text = read_text(path) or ""
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
    for record in glob_sorted(meta, "*.json")[:limit]:
        channel = record_channel(record)
        if channel:
            out.setdefault(channel, []).append(record_name(record))
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
    defaults_is_anaconda = not default_channels or any(is_anaconda_channel(c) for c in default_channels)

    def bad(ch: str) -> bool:
        if ch.strip().lower() == "defaults":
            return defaults_is_anaconda
        return is_anaconda_channel(ch)

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
    file_opts = [
        f" --file {p}"
        for p in dict.fromkeys(bad_files)
        if comparable_path(env, p) != comparable_path(env, user_rc)
    ]
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
    root = conda_root(env, prefix) or conda_root(env, base)
    if root is not None and conda_flavour(root) in ("anaconda", "miniconda"):
        facts.append(f"base install is {conda_flavour(root)} ({root})")
    return Finding("conda-channels", "warn", "; ".join(facts), fix=fix, code="AF-CONDA-001", details=details)
