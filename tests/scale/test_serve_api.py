"""The serving suite of ``tests/serve`` (test_api.py, test_openai.py), run unchanged against
``aiforge serve --backend ray``: same six models, same API key, same limits, one replica (so the
per-replica /metrics the tests read are the whole server's)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.scale.conftest import Cluster
from tests.serve.conftest import API_KEY, Server, api_settings, wait_ready
from tests.serve.test_api import *  # noqa: F403 - the same tests, against the Ray deployment
from tests.serve.test_openai import *  # noqa: F403


@pytest.fixture(scope="module")
def api(
    ray_cluster: Cluster,
    serve_port: int,
    model_dirs: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Server]:
    from aiforge.scale.serve import Scaling, deploy, serve_uses_haproxy, undeploy

    key_file = tmp_path_factory.mktemp("ray-keys") / "keys.txt"
    key_file.write_text(f"# test keys\n{API_KEY}\n", encoding="utf-8")
    settings = api_settings(model_dirs, key_file, demo=True).model_copy(update={"port": serve_port})
    headers = {"Authorization": f"Bearer {API_KEY}"}
    base = deploy(settings, Scaling(replicas=1, cpus_per_replica=1), address=ray_cluster.address)
    try:
        wait_ready(base, headers)
        # behind HAProxy (direct ingress) a client's close does not always reach the replica: HAProxy
        # 2.8 often keeps the server connection open until the answer (here the 0.5 s timeout of
        # "slow"), so the replica cannot know; the item is then dropped as "timeout". See
        # aiforge.scale.serve's module docstring.
        abandon = ("disconnect", "timeout") if serve_uses_haproxy() else ("disconnect",)
        yield Server(base, None, headers, abandon_reasons=abandon)
    finally:
        undeploy()
