"""Real servers for the serving tests: uvicorn in a thread (or a subprocess) on 127.0.0.1, a free port.

``api`` is one session-wide server with an API key, a small body limit and six models:

* ``clf``  tiny random BERT classifier (labels 부정/긍정), batches of at most 4 items
* ``slow`` the same classifier behind a 2-item queue, a 5 s batch wait and a 0.5 s timeout, so
           429 (queue full), 504 (timeout) and dropped work are deterministic
* ``e5``   the packaged multilingual e5 (sentence-embeddings, real weights)
* ``gpt``  tiny random GPT-2 (chat completions)
* ``img``  the packaged EfficientNet-Lite0 (image-classification, real weights)
* ``asr``  the packaged Whisper tiny.en (speech recognition, real weights)
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from aiforge.serve import ServeSettings, build_server

API_KEY = "test-key-6b1f"
LABELS = {0: "부정", 1: "긍정"}
SAMPLE_IMAGES = Path(__import__("sklearn").__file__).parent / "datasets" / "images"


@dataclass
class Server:
    """A running server: its base URL and the uvicorn.Server (``app`` is the FastAPI app)."""

    base: str
    server: Any
    headers: dict[str, str] = field(default_factory=dict)
    # how a client that gives up is counted in aiforge_dropped_items_total: "disconnect" when the
    # server hears of it, as uvicorn always does; behind an HAProxy that does not always pass the
    # client's close on to the server (Ray Serve's direct ingress), "timeout" is the other outcome
    abandon_reasons: tuple[str, ...] = ("disconnect",)

    @property
    def app(self) -> Any:
        return self.server.config.app

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(
            base_url=self.base, headers=self.headers, timeout=kwargs.pop("timeout", 60), **kwargs
        )

    def metric(self, name: str, **labels: str) -> float:
        """One sample of /metrics (0.0 when absent)."""
        with self.client() as client:
            text = client.get("/metrics").text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    return sample.value
        return 0.0


def wait_ready(base: str, headers: dict[str, str], timeout_s: float = 180, alive: Any = None) -> None:
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise RuntimeError(f"server exited before it was ready; last /readyz: {last}")
        try:
            response = httpx.get(f"{base}/readyz", headers=headers, timeout=5)
            if response.status_code == 200:
                return
            last = response.text
        except httpx.TransportError as exc:
            last = repr(exc)
        time.sleep(0.1)
    raise TimeoutError(f"server not ready after {timeout_s}s: {last}")


@contextlib.contextmanager
def running_server(
    settings: ServeSettings, headers: dict[str, str] | None = None, ready: bool = True
) -> Iterator[Server]:
    """Run ``settings`` under uvicorn in a thread; port 0 picks a free port."""
    server = build_server(settings)
    thread = threading.Thread(target=server.run, name="test-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    handle = Server(f"http://127.0.0.1:{port}", server, dict(headers or {}))
    try:
        if ready:
            wait_ready(handle.base, handle.headers, alive=thread.is_alive)
        yield handle
    finally:
        server.should_exit = True
        thread.join(60)


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium (Debian's ``chromium`` package) driven by Playwright; skips without it."""
    import shutil

    executable = shutil.which("chromium") or "/usr/bin/chromium"
    if not shutil.which(executable):
        pytest.skip("Chromium is missing: apt-get install -y chromium fonts-noto-cjk")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, args=["--no-sandbox", "--headless", "--disable-gpu"]
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from tests.tiny_models import make_tiny_bert, make_tiny_gpt2

    root = tmp_path_factory.mktemp("serve-models")
    return {
        "clf": make_tiny_bert(root / "clf", head="seq-cls", id2label=LABELS),
        "gpt": make_tiny_gpt2(root / "gpt"),
    }


@pytest.fixture(scope="session")
def speech_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """English speech synthesised by Debian's espeak-ng (no download), 16 kHz mono WAV."""
    import shutil
    import subprocess

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    path = tmp_path_factory.mktemp("speech") / "hello.wav"
    subprocess.run(
        [
            "espeak-ng",
            "-v",
            "en-us",
            "-s",
            "140",
            "-w",
            str(path),
            "Hello world. This is a test of the speech server.",
        ],
        check=True,
    )
    return path


def api_settings(model_dirs: dict[str, Path], key_file: Path, **server: Any) -> ServeSettings:
    clf = str(model_dirs["clf"])
    return ServeSettings(
        host="127.0.0.1",
        port=0,
        api_key_file=key_file,
        max_body_bytes=1 << 20,
        log_level="warning",
        **server,
        models=[
            {
                "name": "clf",
                "task": "text-classification",
                "model": clf,
                "device": "cpu",
                "max_batch_size": 4,
                "max_wait_ms": 50,
            },
            {
                "name": "slow",
                "task": "text-classification",
                "model": clf,
                "device": "cpu",
                "max_batch_size": 64,
                "max_wait_ms": 5000,
                "max_queue": 2,
                "timeout_s": 0.5,
                "warmup": False,
            },
            {"name": "e5", "task": "sentence-embeddings", "model": "multilingual-e5-small", "device": "cpu"},
            {
                "name": "gpt",
                "task": "text-generation",
                "model": str(model_dirs["gpt"]),
                "device": "cpu",
                "params": {"max_new_tokens": 8},
            },
            {"name": "img", "task": "image-classification", "model": "efficientnet-lite0", "device": "cpu"},
            {
                "name": "asr",
                "task": "automatic-speech-recognition",
                "model": "whisper-tiny.en",
                "device": "cpu",
            },
        ],
    )


@pytest.fixture(scope="session")
def api(model_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    key_file = tmp_path_factory.mktemp("keys") / "keys.txt"
    key_file.write_text(f"# test keys\n{API_KEY}\n", encoding="utf-8")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    with running_server(
        api_settings(model_dirs, key_file, demo=True), headers={"Authorization": f"Bearer {API_KEY}"}
    ) as server:
        yield server
