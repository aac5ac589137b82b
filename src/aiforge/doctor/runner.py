"""Runs every doctor check, guarded, and reports the findings (exit code, JSON, a table)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from aiforge.doctor.conda import check_conda_channels
from aiforge.doctor.editor import check_editor
from aiforge.doctor.gpu import check_packages, check_torch
from aiforge.doctor.model import Env, Finding
from aiforge.doctor.plots import check_plot_fonts
from aiforge.doctor.python import check_pip, check_python, check_python_env, check_python_path
from aiforge.doctor.resources import check_disk, check_hf_cache, check_memory
from aiforge.secrets import redact


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
        ("plot-fonts", lambda: check_plot_fonts(env)),
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
    """The report as JSON, secrets redacted: users paste it into bug reports (and runs store it)."""
    findings = list(findings)
    return {
        "ok": exit_code(findings) == 0,
        "summary": summary(findings),
        "findings": [redact(f.to_dict()) for f in findings],
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
