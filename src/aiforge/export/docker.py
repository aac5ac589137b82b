"""`aiforge export docker`: a build context for a serving container: a Dockerfile (slim Python base,
pinned requirements, a non-root user, HEALTHCHECK on /readyz, the model baked in), the serve.yaml
it runs, a .dockerignore, requirements.txt and the model files in ``model/``."""

from __future__ import annotations

import importlib.metadata
import platform
from pathlib import Path
from typing import Any

from aiforge.export.metadata import pinned
from aiforge.export.source import copy_model_files, prepare_output, resolve_source

MODEL_FOLDER = "model"
PORT = 8000
APP_UID = 10001  # a fixed non-root uid: files baked in as it, volumes can be chowned to it

DOCKERFILE = """\
# Serving container for {name} ({task}), written by `aiforge export docker`.
# Build: docker build -t {name} .    Run: docker run -p {port}:{port} {name}
FROM python:{python}-slim

ENV PYTHONDONTWRITEBYTECODE=1 \\
    PYTHONUNBUFFERED=1 \\
    PIP_NO_CACHE_DIR=1 \\
    HF_HUB_OFFLINE=1 \\
    AIFORGE_HOME=/home/app/.cache/aiforge

RUN useradd --create-home --uid {uid} app
WORKDIR /app

# Dependencies first: the layer is reused while only the model changes.
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt

COPY --chown={uid}:{uid} {model}/ /app/{model}/
COPY --chown={uid}:{uid} serve.yaml /app/serve.yaml

USER {uid}
EXPOSE {port}
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \\
    CMD ["python", "-c", "{probe}"]
CMD ["aiforge", "serve", "serve.yaml"]
"""

# The slim image has no curl: Python asks /readyz (urlopen raises on a 503, which fails the check too).
READY_PROBE = (
    "import sys, urllib.request; "
    "sys.exit(urllib.request.urlopen('http://127.0.0.1:{port}/readyz', timeout=4).status != 200)"
)

DOCKERIGNORE = """\
# Only requirements.txt, serve.yaml and the model go into the image.
*
!requirements.txt
!serve.yaml
!{model}
"""


def export_docker(ref: str, out: Path, *, name: str | None = None, force: bool = False) -> dict[str, Any]:
    """Write the build context; returns what was written (the CLI prints it)."""
    import yaml

    source = resolve_source(ref)
    out = prepare_output(out, force)
    served = name or source.name
    files = [f"{MODEL_FOLDER}/{f}" for f in copy_model_files(source, out / MODEL_FOLDER)]
    settings = {
        "host": "0.0.0.0",  # inside a container: the published port reaches it only this way
        "port": PORT,
        "models": [{"name": served, "task": source.task, "model": f"./{MODEL_FOLDER}", "device": "cpu"}],
    }
    (out / "serve.yaml").write_text(yaml.safe_dump(settings, sort_keys=False), encoding="utf-8")
    requirements = serving_requirements(source.task)
    (out / "requirements.txt").write_text("\n".join(requirements) + "\n", encoding="utf-8")
    (out / ".dockerignore").write_text(DOCKERIGNORE.format(model=MODEL_FOLDER), encoding="utf-8")
    (out / "Dockerfile").write_text(
        DOCKERFILE.format(
            name=served,
            task=source.task,
            port=PORT,
            uid=APP_UID,
            model=MODEL_FOLDER,
            python=".".join(platform.python_version_tuple()[:2]),
            probe=READY_PROBE.format(port=PORT),
        ),
        encoding="utf-8",
    )
    return {
        "folder": str(out),
        "files": ["Dockerfile", ".dockerignore", "serve.yaml", "requirements.txt", *files],
        "requirements": requirements,
        "name": served,
    }


def serving_requirements(task: str) -> list[str]:
    """aiforge and what `aiforge serve` needs (its core and ``serve`` extra), plus the libraries the
    task's models load with (its card's ``requires``), each pinned to the version installed here.
    The ``ml`` extra is not taken whole: its packaged models are not needed to serve this one."""
    from packaging.requirements import Requirement

    from aiforge.tasks.card import get_task

    names = ["aiforge"]
    for line in importlib.metadata.requires("aiforge") or []:
        requirement = Requirement(line)
        marker = str(requirement.marker or "")
        if not marker or marker == 'extra == "serve"':
            names.append(requirement.name)
    by_module = importlib.metadata.packages_distributions()
    for module in get_task(task).requires:
        names.extend(by_module.get(module, [module])[:1])
    names.append("safetensors")
    return pinned(*dict.fromkeys(names))
