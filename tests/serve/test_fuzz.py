"""schemathesis over a real server: every route (admin and multipart included), positive and
negative data, every check, zero failures.

The server has keys (an admin-scoped one, so /admin is reached), a text classifier, a chat model,
the packaged embedder, the packaged Whisper and espeak-ng speech (/v1/audio/speech); its
/openapi.json lists them (serve/schema.py), so generated requests reach the models.

CI runs a pinned seed, so a submission's verdict does not depend on the draw (a fresh seed per CI run
found a new case at landing time, stop 11). ``AIFORGE_FUZZ_SEED=random`` draws a fresh one (the session
loop ``bench/fuzz_seeds.sh`` runs many) and every seed is printed and named in a failure's message:
``AIFORGE_FUZZ_SEED=N`` replays that run's cases (more ``AIFORGE_FUZZ_EXAMPLES`` explore further).
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from aiforge.serve import ServeSettings
from aiforge.serve.routes.rag import INDEX_NAME_PATTERN
from tests.serve.conftest import Server, running_server

ADMIN_KEY = "fuzz-admin-key-1f0c"
CONFIG = Path(__file__).with_name("schemathesis.toml")
EXAMPLES = os.environ.get("AIFORGE_FUZZ_EXAMPLES", "40")
PINNED_SEED = 252871952  # the seed whose 413 case (65 embeddings inputs) failed stop 11's CI


def fuzz_seed() -> int:
    """``AIFORGE_FUZZ_SEED``: a number replays that run, ``random`` draws one; unset, the pinned seed."""
    given = os.environ.get("AIFORGE_FUZZ_SEED", "").strip()
    if given == "random":
        return random.SystemRandom().randrange(2**31)
    return int(given) if given else PINNED_SEED


@pytest.fixture(scope="module")
def fuzzed(model_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    key_file = tmp_path_factory.mktemp("fuzz-keys") / "keys.txt"
    key_file.write_text(f"{ADMIN_KEY} scope=admin\n", encoding="utf-8")
    models = [
        {"name": "clf", "task": "text-classification", "model": str(model_dirs["clf"])},
        {"name": "gpt", "task": "text-generation", "model": str(model_dirs["gpt"])},
        {"name": "e5", "task": "sentence-embeddings"},
        {"name": "asr", "task": "automatic-speech-recognition"},
        {"name": "tts", "task": "text-to-audio", "model": "espeak-ng"},
    ]
    settings = ServeSettings(
        host="127.0.0.1",
        port=0,
        api_key_file=key_file,
        demo=False,
        log_level="error",
        # max_queue caps a request's items in the schema too: 64 keeps each case under seconds
        models=[{**m, "device": "cpu", "max_queue": 64} for m in models],
    )
    with running_server(settings, headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as server:
        yield server


@pytest.mark.slow
def test_schemathesis_finds_nothing(fuzzed: Server) -> None:
    command = [
        str(Path(sys.executable).with_name("st")),
        "--config-file",
        str(CONFIG),
        "run",
        f"{fuzzed.base}/openapi.json",
        "-H",
        f"Authorization: Bearer {ADMIN_KEY}",
        "--checks",
        "all",
        "--mode",
        "all",
        "--max-examples",
        EXAMPLES,
        "--workers",
        "1",
        "--request-timeout",
        "120",
        "--no-color",
    ]
    seed = fuzz_seed()
    replay = f"schemathesis seed {seed}: replay with AIFORGE_FUZZ_SEED={seed}"
    print(replay, file=sys.stderr)  # pytest shows it with the test's output (-rA, or on failure)
    command += ["--seed", str(seed)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=900)
    report = run.stdout + run.stderr
    summary = re.search(r"(\d+) generated, .*", report)
    assert run.returncode == 0, f"{replay}\n{report[-12000:]}"
    assert summary and int(summary.group(1)) > 500, f"{replay}\n{report[-3000:]}"  # it really generated cases


def test_ci_replays_the_pinned_seed_and_random_draws_fresh_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIFORGE_FUZZ_SEED", raising=False)
    assert {fuzz_seed() for _ in range(5)} == {PINNED_SEED}
    monkeypatch.setenv("AIFORGE_FUZZ_SEED", "random")
    assert len({fuzz_seed() for _ in range(5)}) > 1
    monkeypatch.setenv("AIFORGE_FUZZ_SEED", "1234")
    assert fuzz_seed() == 1234


def test_the_route_states_the_index_name_rule_the_store_enforces() -> None:
    from aiforge.rag.store import _NAME

    assert _NAME.pattern == INDEX_NAME_PATTERN
