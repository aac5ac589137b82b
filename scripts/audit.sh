#!/usr/bin/env bash
# pip-audit of the installed environment (.venv) against a vulnerability service, with a documented
# allow-list (scripts/audit-allow.txt). Exit 0: no vulnerability outside the allow-list, or the
# service did not answer ("skipped", said plainly: never a pass). Exit 1: vulnerabilities found.
#
# Why a canary first: where PyPI's JSON API is proxied without its per-version pages (as on this
# project's build machines), pip-audit marks every package "could not be audited" and still prints
# "No known vulnerabilities found" with exit 0. So the script first asks the service about
# requests 2.19.0, which has a published advisory (PYSEC-2018-28, CVE-2018-18074); a service that
# does not report it is not answering, and the audit is skipped.
#
#   bash scripts/audit.sh                         # PyPI's vulnerability data (pip-audit's default)
#   AIFORGE_AUDIT_SERVICE=osv bash scripts/audit.sh
#   AIFORGE_AUDIT_REQUIRED=1 bash scripts/audit.sh   # a skip fails too (a release build)
set -euo pipefail
cd "$(dirname "$0")/.."
PIP_AUDIT=${PIP_AUDIT:-.venv/bin/pip-audit}
PYTHON=${PYTHON:-.venv/bin/python}
SERVICE=${AIFORGE_AUDIT_SERVICE:-pypi}
ALLOW=${AIFORGE_AUDIT_ALLOW:-scripts/audit-allow.txt}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

skip() {
    echo "pip-audit skipped: vulnerability service '$SERVICE' unreachable ($1); nothing was audited"
    if [[ -n "${AIFORGE_AUDIT_REQUIRED:-}" ]]; then exit 1; fi
    exit 0
}

for tool in "$PIP_AUDIT" "$PYTHON"; do
    [[ -x "$tool" ]] || { echo "$tool not found: run bash scripts/setup.sh (pip-audit is in the dev extra)" >&2; exit 2; }
done

echo "requests==2.19.0" >"$work/canary.txt"
"$PIP_AUDIT" -r "$work/canary.txt" --no-deps -s "$SERVICE" -f json --progress-spinner off \
    -o "$work/canary.json" >/dev/null 2>"$work/canary.err" || true
canary=$("$PYTHON" - "$work/canary.json" "$work/canary.err" <<'PY'
import json, sys
try:
    report = json.load(open(sys.argv[1]))
except (OSError, ValueError):
    report = {}
deps = [d for d in report.get("dependencies", []) if d.get("name") == "requests"]
if deps and deps[0].get("vulns"):
    print("flagged")
else:  # why: the service's own words ("not found on PyPI"), else pip-audit's last error line
    errors = [line for line in open(sys.argv[2], errors="replace").read().splitlines() if line.strip()]
    print(deps[0].get("skip_reason", "") if deps else (errors[-1] if errors else "no answer"))
PY
)
if [[ "$canary" != flagged ]]; then
    skip "it did not report the known advisory of requests 2.19.0: ${canary:0:300}"
fi

# editable installs (aiforge itself) are not on PyPI; pip-audit exits 1 when it finds any
# vulnerability, so its status is read from the JSON below, not from its exit code
"$PIP_AUDIT" -s "$SERVICE" --skip-editable -f json --progress-spinner off -o "$work/audit.json" \
    2>"$work/audit.err" || true
"$PYTHON" - "$work/audit.json" "$ALLOW" "$work/audit.err" <<'PY'
import json, sys

report_path, allow_path, errors_path = sys.argv[1:4]
try:
    report = json.load(open(report_path))
except (OSError, ValueError):
    sys.exit(f"pip-audit failed: {open(errors_path).read()[-2000:]}")
allowed = {}
for line in open(allow_path, encoding="utf-8"):
    entry, _, why = line.partition("#")
    if entry.strip():
        allowed[entry.split()[0]] = why.strip()
dependencies = report.get("dependencies", [])
audited = [d for d in dependencies if "skip_reason" not in d]
skipped = [d for d in dependencies if "skip_reason" in d]
found, accepted = [], []
for dep in audited:
    for vuln in dep.get("vulns", []):
        ids = {vuln["id"], *vuln.get("aliases", [])}
        (accepted if ids & allowed.keys() else found).append((dep, vuln))
for dep, vuln in accepted:
    reason = next(allowed[i] for i in (vuln["id"], *vuln.get("aliases", [])) if i in allowed)
    print(f"allowed: {dep['name']} {dep['version']} {vuln['id']}: {reason}")
for dep, vuln in found:
    fixes = ", ".join(vuln.get("fix_versions", [])) or "none yet"
    print(f"VULNERABLE: {dep['name']} {dep['version']} {vuln['id']} (fixed in: {fixes})")
print(
    f"pip-audit: {len(audited)} packages audited, {len(skipped)} not on the index (local wheels), "
    f"{len(found)} vulnerabilities, {len(accepted)} allowed by {allow_path}"
)
if not audited:
    sys.exit("pip-audit audited nothing: every package was skipped (see above); not a pass")
if found:
    sys.exit(f"fix: upgrade the package, or accept the advisory in {allow_path} with the reason")
PY
