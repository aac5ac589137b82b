"""A replica killed during a load run: Ray replaces it, and no request is lost.

Both ingresses: behind HAProxy (``direct``) the requests in flight on the killed replica are sent
again to the live one (``retry-on empty-response``), so every request succeeds; behind Ray's proxy
and the gateway (``gateway``) only those fail, with aiforge's retryable 503 (AF-RAY-003,
Retry-After). Each runs on a Serve instance of its own (the ingress is chosen when Serve starts).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from aiforge.serve import ServeSettings
from tests.scale.conftest import Cluster

CLIENTS = 6


@pytest.fixture(scope="module", params=["direct", "gateway"])
def fleet(
    request: pytest.FixtureRequest, ray_cluster: Cluster, serve_port: int, model_dirs: dict[str, Path]
) -> Iterator[tuple[str, str]]:
    from aiforge.scale.serve import Scaling, deploy, shutdown_serve, undeploy

    shutdown_serve()  # a fresh Serve instance, started with this ingress

    settings = ServeSettings(
        host="127.0.0.1",
        port=serve_port,
        demo=False,
        log_level="warning",
        models=[
            {"name": "clf", "task": "text-classification", "model": str(model_dirs["clf"]), "device": "cpu"}
        ],
    )
    scaling = Scaling(replicas=2, cpus_per_replica=1, ingress=request.param)
    base = deploy(settings, scaling, address=ray_cluster.address)
    try:
        yield base, request.param
    finally:
        undeploy()
        shutdown_serve()


def replica_names() -> set[str]:
    import ray

    return {
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["name"].startswith("SERVE_REPLICA::aiforge#AppReplica#")
    }


def running_replicas() -> int:
    from ray import serve

    deployment = serve.status().applications["aiforge"].deployments["AppReplica"]
    return deployment.replica_states.get("RUNNING", 0)


def test_killed_replica_is_replaced_and_only_its_in_flight_requests_fail(fleet: tuple[str, str]) -> None:
    import ray

    base, ingress = fleet
    results: list[tuple[int, dict, dict]] = []
    stop = threading.Event()

    def client(i: int) -> None:
        with httpx.Client(base_url=base, timeout=60) as http:
            while not stop.is_set():
                response = http.post("/v1/models/clf/predict", json={"inputs": [f"문장 {i} 재밌다"] * 4})
                json_body = response.headers.get("content-type", "").startswith("application/json")
                body = response.json() if json_body else {"text": response.text}
                results.append((response.status_code, dict(response.headers), body))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    try:
        time.sleep(2)
        before = replica_names()
        assert len(before) == 2
        victim = sorted(before)[0]
        ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
        served_at_kill = len(results)
        deadline = time.monotonic() + 120
        while not (running_replicas() == 2 and replica_names() - before):
            assert time.monotonic() < deadline, "the killed replica was not replaced"
            time.sleep(0.5)
        replaced_at = len(results)
        time.sleep(2)  # keep the load on the healed deployment for a while
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert victim not in replica_names() and len(replica_names()) == 2
    failed = [(status, headers, body) for status, headers, body in results if status != 200]
    if ingress == "direct":
        assert not failed, failed[:3]  # HAProxy sent the killed replica's requests to the live one
    # only requests in flight on the killed replica failed: at most one per client
    assert len(failed) <= CLIENTS, failed[:3]
    for status, headers, body in failed:
        assert status == 503 and body["error"]["code"] == "AF-RAY-003" and headers["retry-after"] == "1"
    assert len(results) > replaced_at > served_at_kill > 0  # traffic went on while it was replaced
    assert all(status == 200 for status, _, _ in results[replaced_at + CLIENTS :])
