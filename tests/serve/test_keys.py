"""Keys and secrets on a real server: scopes, per-key rate limits, CORS, request ids in errors, and
keys never written to the log."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from aiforge.errors import AiforgeError
from aiforge.serve import ServeSettings
from aiforge.serve.auth import TokenBucket, load_api_keys, parse_rate
from tests.serve.conftest import Server, running_server

INFER = "infer-key-0c41"
ADMIN = "admin-key-93fd"
LIMITED = "limited-key-5e2a"
ORIGIN = "https://app.example.com"


@pytest.fixture(scope="module")
def keyed(model_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    key_file = tmp_path_factory.mktemp("keys") / "keys.txt"
    key_file.write_text(
        f"# inference, admin, and a key limited to 3 requests a minute\n{INFER}\n"
        f"{ADMIN}   scope=admin  # the operators' key\n{LIMITED} rate=3/min\n",
        encoding="utf-8",
    )
    settings = ServeSettings(
        host="127.0.0.1",
        port=0,
        api_key_file=key_file,
        cors_origins=[ORIGIN],
        demo=False,
        log_level="info",
        models=[
            {"name": "clf", "task": "text-classification", "model": str(model_dirs["clf"]), "device": "cpu"}
        ],
    )
    with running_server(settings, headers={"Authorization": f"Bearer {INFER}"}) as server:
        yield server


def _post(server: Server, path: str, key: str, **kwargs: object) -> httpx.Response:
    return httpx.post(server.base + path, headers={"Authorization": f"Bearer {key}"}, timeout=60, **kwargs)  # type: ignore[arg-type]


def test_admin_routes_need_an_admin_key(keyed: Server) -> None:
    denied = _post(keyed, "/admin/reload", INFER, json={})
    assert denied.status_code == 403
    error = denied.json()["error"]
    assert error["code"] == "AF-SERVE-010" and "scope=admin" in error["fix"]
    assert _post(keyed, "/admin/reload", ADMIN, json={}).status_code == 200
    # an admin key may also call the inference routes; an inference key the inference routes
    for key in (ADMIN, INFER):
        answer = _post(keyed, "/v1/models/clf/predict", key, json={"inputs": ["좋아요"]})
        assert answer.status_code == 200, answer.text


def test_a_key_over_its_rate_gets_429_with_retry_after(keyed: Server) -> None:
    statuses = [_post(keyed, "/v1/models/clf/predict", LIMITED, json={"inputs": ["x"]}) for _ in range(5)]
    assert [r.status_code for r in statuses[:3]] == [200, 200, 200]
    limited = statuses[3]
    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "AF-SERVE-011"
    assert 1 <= int(limited.headers["retry-after"]) <= 20  # one request refills in 20 s at 3/min
    # other keys are not limited by it
    assert _post(keyed, "/v1/models/clf/predict", INFER, json={"inputs": ["x"]}).status_code == 200


def test_every_error_carries_the_request_id(keyed: Server) -> None:
    for response in (
        httpx.post(keyed.base + "/v1/models/clf/predict", json={"inputs": ["x"]}),  # 401
        _post(keyed, "/admin/rollback", INFER, json={"model": "clf"}),  # 403
        _post(keyed, "/v1/models/nope/predict", INFER, json={"inputs": ["x"]}),  # 404
        _post(keyed, "/v1/models/clf/predict", INFER, content=b"{not json"),  # 400
    ):
        assert response.status_code >= 400
        assert response.json()["error"]["request_id"] == response.headers["x-request-id"]
    chosen = httpx.post(
        keyed.base + "/v1/models/clf/predict",
        json={},
        headers={"x-request-id": "trace-42", "Authorization": f"Bearer {INFER}"},
    )
    assert chosen.status_code == 422 and chosen.json()["error"]["request_id"] == "trace-42"


def test_cors_only_for_the_configured_origins(keyed: Server) -> None:
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    allowed = httpx.options(keyed.base + "/v1/models/clf/predict", headers={"Origin": ORIGIN, **preflight})
    assert allowed.status_code == 200  # answered without a key: browsers preflight without credentials
    assert allowed.headers["access-control-allow-origin"] == ORIGIN
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
    other = httpx.options(
        keyed.base + "/v1/models/clf/predict", headers={"Origin": "https://evil.example", **preflight}
    )
    assert "access-control-allow-origin" not in other.headers
    answer = httpx.post(
        keyed.base + "/v1/models/clf/predict",
        json={"inputs": ["x"]},
        headers={"Origin": ORIGIN, "Authorization": f"Bearer {INFER}"},
    )
    assert answer.headers["access-control-allow-origin"] == ORIGIN


def test_cors_is_off_by_default() -> None:
    assert (
        ServeSettings(models=[{"name": "m", "task": "text-classification", "model": "m"}]).cors_origins == []
    )


def test_keys_never_reach_the_log(keyed: Server, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        httpx.get(keyed.base + f"/docs?api_key={INFER}")
        httpx.get(keyed.base + "/v1/models", headers={"Authorization": f"Bearer {ADMIN}"})
        httpx.get(keyed.base + "/v1/models", headers={"Authorization": "Bearer wrong-key-123"})
    server_side = [r for r in caplog.records if r.name.startswith(("aiforge", "uvicorn"))]
    logged = "\n".join(r.getMessage() + " " + str(vars(r)) for r in server_side)
    assert "request" in logged  # the access log did run
    for secret in (INFER, ADMIN, "wrong-key-123"):
        assert secret not in logged, [(r.name, r.getMessage()) for r in server_side if secret in str(vars(r))]


def test_key_file_options_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "keys.txt"
    path.write_text("k1 scope=root\n", encoding="utf-8")
    with pytest.raises(AiforgeError) as err:
        load_api_keys(path)
    assert (
        err.value.code == "AF-CONFIG-001"
        and "line 1" in err.value.message
        and "scope=root" in err.value.message
    )
    path.write_text("k1 rate=fast\n", encoding="utf-8")
    with pytest.raises(AiforgeError, match="rate 'fast'"):
        load_api_keys(path)
    path.write_text("plain-key-with=padding=\n", encoding="utf-8")  # '=' inside a key is fine
    assert load_api_keys(path)[0].scope == "inference"


def test_token_bucket_refills_at_its_rate() -> None:
    bucket: TokenBucket = parse_rate("2/s")
    now = bucket.updated
    assert bucket.take(now) == 0.0 and bucket.take(now) == 0.0
    assert bucket.take(now) == pytest.approx(0.5)  # empty: one token in half a second
    assert bucket.take(now + 0.5) == 0.0
