"""Without a cluster: a missing ray install and misplaced Ray flags are clear user errors."""

from __future__ import annotations

import subprocess
import sys

RUN_WITHOUT_RAY = (
    "import sys; sys.modules['ray'] = None; from aiforge.cli import main; sys.argv[0] = 'aiforge'; main()"
)


def aiforge_without_ray(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", RUN_WITHOUT_RAY, *args], capture_output=True, text=True, timeout=120
    )


def test_missing_ray_is_af_ray_001_without_traceback(tmp_path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "hi"}\n', encoding="utf-8")
    result = aiforge_without_ray("run", "text-classification", "-i", str(src), "--backend", "ray")
    assert result.returncode == 2 and "AF-RAY-001" in result.stderr and "aiforge[ray]" in result.stderr
    assert "Traceback" not in result.stderr


def test_ray_flags_need_the_ray_backend() -> None:
    result = aiforge_without_ray("run", "text-classification", "hi", "--workers", "2")
    assert result.returncode == 2 and "AF-RAY-004" in result.stderr and "--backend ray" in result.stderr


def test_help_does_not_import_ray() -> None:
    code = "import sys, aiforge.cli, aiforge.scale.cluster; assert 'ray' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
