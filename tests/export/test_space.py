"""`aiforge export space`: the folder's front matter reads back as a Space card; its requirements
install in a fresh venv offline; app.py runs there without aiforge, and headless Chromium gets the
label `aiforge run` gives for a Korean review.

The fresh venv (made without pip, so no setuptools of its own shadows the pinned stack) sees the
project venv's site-packages through a .pth file: with no network and no wheel of gradio on this
machine, that is where the pinned packages come from. `pip install --no-index -r requirements.txt`
then checks that every pin is satisfied by exactly what was tested; a shadow `aiforge` package that
raises on import proves app.py does not need aiforge."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from aiforge.errors import AiforgeError
from aiforge.export.space import export_space
from tests.export.conftest import (
    KOREAN_REVIEW,
    REGISTERED,
    free_port,
    fresh_venv,
    machine_specific,
    pip_install_offline,
)


@pytest.fixture(scope="module")
def space(trained, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("space") / "space"
    export_space(REGISTERED, folder, hub_repo="someone/nsmc-tiny")
    return folder


def test_front_matter_is_a_space_card(space: Path) -> None:
    import gradio
    from huggingface_hub import SpaceCard

    data = SpaceCard.load(space / "README.md").data.to_dict()
    assert data["sdk"] == "gradio" and data["sdk_version"] == gradio.__version__
    assert (
        data["app_file"] == "app.py"
        and data["python_version"] == f"{sys.version_info[0]}.{sys.version_info[1]}"
    )
    assert data["models"] == ["someone/nsmc-tiny"] and data["suggested_hardware"] == "cpu-basic"
    assert {"title", "emoji", "license", "tags"} <= data.keys()
    assert (space / "model" / "model.safetensors").is_file()
    assert (
        "gradio==" in (space / "requirements.txt").read_text()
        and "import aiforge" not in (space / "app.py").read_text()
        and "from aiforge" not in (space / "app.py").read_text()
    )


def test_nothing_machine_specific_in_the_space(space: Path, trained) -> None:
    assert machine_specific(space, str(trained.output_dir)) == []


def test_app_scores_equal_aiforge_run_scores(space: Path) -> None:
    """The label alone says little on a near-50/50 tiny model: the scores must match too (the app
    divides by the fitted temperature as aiforge does)."""
    import importlib.util

    from aiforge.api import pipeline

    spec = importlib.util.spec_from_file_location("exported_space_app", space / "app.py")
    assert spec is not None and spec.loader is not None
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    assert app.TEMPERATURE != 1.0  # training fitted one: the parity below covers it
    ours = pipeline("text-classification", model=REGISTERED).predict([KOREAN_REVIEW])[0]
    theirs = app.classify(KOREAN_REVIEW)
    assert theirs == pytest.approx({s["label"]: s["score"] for s in ours["scores"]}, abs=1e-5)


def test_a_task_without_a_template_is_a_coded_error(tmp_path: Path) -> None:
    from tests.tiny_models import make_tiny_gpt2

    with pytest.raises(AiforgeError) as unsupported:
        export_space(str(make_tiny_gpt2(tmp_path / "gpt2")), tmp_path / "out")
    assert unsupported.value.code == "AF-EXPORT-003"


def test_a_model_stacked_with_its_baseline_is_refused_not_exported_without_the_stack(tmp_path: Path) -> None:
    import numpy as np

    from aiforge.tasks.stack import TextStack
    from tests.tiny_models import make_tiny_bert

    model = make_tiny_bert(tmp_path / "bert", head="seq-cls")
    TextStack(
        ["negative", "positive"], {"analyzer": "char_wb", "ngram_range": [1, 2]}, ["a"], np.ones(1),
        np.zeros((1, 1)), np.zeros(1), np.zeros((2, 4)), np.zeros(2),
    ).save(model)  # fmt: skip
    with pytest.raises(AiforgeError, match="ensemble") as refused:
        export_space(str(model), tmp_path / "out")
    assert refused.value.code == "AF-EXPORT-003" and "export docker" in refused.value.fix
    assert not (tmp_path / "out").exists()


@pytest.mark.slow  # ~40 s alone, 2 min on a busy machine: app start, Chromium, a CLI run
def test_space_runs_in_a_fresh_venv_and_chromium_gets_aiforge_runs_label(space: Path, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    python = fresh_venv(tmp_path)
    pip_install_offline(python, space / "requirements.txt")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

    cli = subprocess.run(
        [sys.executable, "-m", "aiforge", "run", "text-classification", "--model", REGISTERED, KOREAN_REVIEW],
        capture_output=True,
        text=True,
        timeout=300,
    )
    expected = json.loads(cli.stdout.splitlines()[0])["label"]

    no_aiforge = tmp_path / "no-aiforge" / "aiforge"
    no_aiforge.mkdir(parents=True)
    (no_aiforge / "__init__.py").write_text('raise ImportError("the Space must run without aiforge")\n')
    port = free_port()
    env.update(
        PYTHONPATH=str(no_aiforge.parent),
        GRADIO_SERVER_NAME="127.0.0.1",
        GRADIO_SERVER_PORT=str(port),
        GRADIO_ANALYTICS_ENABLED="False",
    )
    app = subprocess.Popen(
        [str(python), "app.py"],
        cwd=space,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert app.poll() is None, app.stderr.read().decode()[-2000:] if app.stderr else "app.py exited"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(1)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{port}/")
            page.get_by_label("text").first.fill(KOREAN_REVIEW)
            page.get_by_role("button", name="Submit").click()
            shown = page.get_by_test_id("label-output-value")
            shown.wait_for(timeout=60_000)
            assert shown.inner_text().strip() == expected
            browser.close()
    finally:
        os.killpg(app.pid, signal.SIGTERM)
        app.wait(timeout=30)
