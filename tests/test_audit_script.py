"""scripts/audit.sh: pip-audit with an allow-list, which says "skipped" when its vulnerability service
does not answer instead of passing. pip-audit is replaced by a stub playing the service's answers
(the real services are unreachable from the test machines, which is the case the script exists for)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
AUDIT = REPO / "scripts" / "audit.sh"

STUB = """#!{python}
import json, os, sys
args = sys.argv[1:]
out = args[args.index("-o") + 1]
canary = "-r" in args
mode = os.environ["STUB_SERVICE"]
if mode == "down":
    sys.exit("requests.exceptions.ConnectionError: Failed to resolve 'api.osv.dev'")
if mode == "proxied":  # PyPI's JSON API without its per-version pages: everything skipped
    dep = {{"name": "requests", "skip_reason": "Dependency not found on PyPI and could not be audited"}}
    json.dump({{"dependencies": [dep], "fixes": []}}, open(out, "w"))
    sys.exit(0)
vuln = {{"id": "PYSEC-2018-28", "aliases": ["CVE-2018-18074"], "fix_versions": ["2.20.0"]}}
if canary:
    deps = [{{"name": "requests", "version": "2.19.0", "vulns": [vuln]}}]
else:
    found = [{{"id": "GHSA-test-0001", "aliases": ["CVE-2099-0001"], "fix_versions": ["9.9"]}}]
    deps = [
        {{"name": "numpy", "version": "2.0.0", "vulns": []}},
        {{"name": "somepkg", "version": "1.0", "vulns": found if mode == "vulnerable" else []}},
        {{"name": "gt-local-wheel", "skip_reason": "Dependency not found on PyPI and could not be audited"}},
    ]
json.dump({{"dependencies": deps, "fixes": []}}, open(out, "w"))
sys.exit(1 if any(d.get("vulns") for d in deps) else 0)
"""


def audit(tmp_path: Path, service: str, allow: str = "", **env: str) -> subprocess.CompletedProcess[str]:
    stub = tmp_path / "pip-audit"
    stub.write_text(STUB.format(python=sys.executable), encoding="utf-8")
    stub.chmod(0o755)
    allow_file = tmp_path / "allow.txt"
    allow_file.write_text(allow, encoding="utf-8")
    environment = {
        **os.environ,
        "PIP_AUDIT": str(stub),
        "PYTHON": sys.executable,
        "STUB_SERVICE": service,
        "AIFORGE_AUDIT_ALLOW": str(allow_file),
        **env,
    }
    if "AIFORGE_AUDIT_REQUIRED" not in env:
        environment.pop("AIFORGE_AUDIT_REQUIRED", None)
    return subprocess.run(["bash", str(AUDIT)], capture_output=True, text=True, env=environment, timeout=60)


@pytest.mark.parametrize("service", ["down", "proxied"])
def test_an_unanswering_service_is_a_skip_said_plainly_never_a_pass(tmp_path: Path, service: str) -> None:
    run = audit(tmp_path, service)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "skipped: vulnerability service 'pypi' unreachable" in run.stdout
    assert "nothing was audited" in run.stdout and "0 vulnerabilities" not in run.stdout
    required = audit(tmp_path, service, AIFORGE_AUDIT_REQUIRED="1")
    assert required.returncode == 1 and "skipped" in required.stdout


def test_a_clean_environment_passes_and_says_what_it_audited(tmp_path: Path) -> None:
    run = audit(tmp_path, "clean")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "2 packages audited, 1 not on the index (local wheels), 0 vulnerabilities" in run.stdout


def test_a_vulnerability_fails_unless_the_allow_list_accepts_it_with_a_reason(tmp_path: Path) -> None:
    run = audit(tmp_path, "vulnerable")
    assert run.returncode == 1
    assert "VULNERABLE: somepkg 1.0 GHSA-test-0001 (fixed in: 9.9)" in run.stdout
    assert "audit-allow" in run.stderr or "allow.txt" in run.stderr  # the fix names the allow-list
    allowed = audit(tmp_path, "vulnerable", allow="CVE-2099-0001  # never called by aiforge\n")
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert "allowed: somepkg 1.0 GHSA-test-0001: never called by aiforge" in allowed.stdout


def test_every_entry_of_the_allow_list_states_its_reason() -> None:
    for line in (REPO / "scripts" / "audit-allow.txt").read_text(encoding="utf-8").splitlines():
        entry, _, reason = line.partition("#")
        if entry.strip():
            assert reason.strip(), f"allow-list entry without a reason: {line!r}"
            assert len(entry.split()) == 1, f"one advisory id a line: {line!r}"
