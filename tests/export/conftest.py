"""A real tiny training run shared by the export tests: a random tiny BERT fine-tuned for two epochs
on 120 rows of the bundled Korean NSMC sample (~12 s on one CPU thread), tracked and registered in
the session's SQLite registry as ``registry:nsmc-tiny@production``."""

from __future__ import annotations

import getpass
import os
import re
import site
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from aiforge.train.data import resolve_data_path

REGISTERED = "registry:nsmc-tiny@production"
KOREAN_REVIEW = "정말 재미있고 감동적인 영화였어요. 배우들 연기가 최고!"


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory, aiforge_home: Path):
    """The TrainResult of the shared run (its model dir, run id and registry reference)."""
    from aiforge.api import train_model
    from tests.tiny_models import make_tiny_bert

    root = tmp_path_factory.mktemp("export-run")
    bert = make_tiny_bert(root / "bert", head="seq-cls")
    train = pd.read_csv(resolve_data_path("packaged:nsmc_sample/train.tsv"), sep="\t")
    test = pd.read_csv(resolve_data_path("packaged:nsmc_sample/test.tsv"), sep="\t")
    train.groupby("label").head(60).sample(frac=1, random_state=0).to_csv(root / "train.csv", index=False)
    test.groupby("label").head(20).to_json(
        root / "test.jsonl", orient="records", lines=True, force_ascii=False
    )
    result = train_model(
        {
            "model": str(bert),
            "output_dir": str(root / "run"),
            "data": {
                "train": str(root / "train.csv"),
                "test": str(root / "test.jsonl"),
                "validation_split": 0.25,
            },
            "training": {"epochs": 2, "batch_size": 16, "num_threads": 1, "max_length": 64},
            "tracking": {"model_name": "nsmc-tiny", "alias": "production"},
        }
    )
    assert result.ref == REGISTERED
    return result


def machine_specific(folder: Path, *extra: str) -> list[str]:
    """Everything in ``folder`` that names this machine: absolute paths, the user's name, tokens."""
    needles = [str(Path.home()), "/tmp/", "/root", "/work/", *extra]
    user = getpass.getuser()
    token = re.compile(rb"hf_[A-Za-z0-9]{30,}")
    found = []
    for path in folder.rglob("*"):
        if not path.is_file():
            continue
        data = path.read_bytes()
        found += [f"{path.name}: {n}" for n in needles if n.encode() in data]
        if user not in ("root",) and re.search(rb"\b" + re.escape(user.encode()) + rb"\b", data):
            found.append(f"{path.name}: user name {user}")
        if token.search(data):
            found.append(f"{path.name}: a hub token")
    return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def fresh_venv(root: Path) -> Path:
    """A new venv that sees the project venv's packages (no network here, and no wheel of gradio on
    this machine: they are the only copies). Made without pip, so no setuptools of its own shadows
    the tested stack; `pip` runs from the project venv's copy through the .pth file."""
    python = root / "venv" / "bin" / "python"
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--without-pip", str(root / "venv")], check=True)
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(purelib, "project-venv.pth").write_text(site.getsitepackages()[0] + "\n", encoding="utf-8")
    return python


def pip_install_offline(python: Path, requirements: Path) -> None:
    """`pip install --no-index -r requirements.txt`: passes only if every pin is what was tested."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    installed = subprocess.run(
        [str(python), "-m", "pip", "install", "--no-index", "-r", str(requirements)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert installed.returncode == 0, installed.stderr[-2000:]
