"""A model served on ONNX Runtime int8: same route, same batching and metrics, the runtime in a header."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from aiforge.serve import ServeSettings
from tests.serve.conftest import LABELS, running_server
from tests.tiny_models import make_tiny_bert


def test_served_int8_model_names_its_runtime(tmp_path: Path) -> None:
    model = str(make_tiny_bert(tmp_path / "clf", head="seq-cls", id2label=LABELS))
    common = {"task": "text-classification", "model": model, "device": "cpu", "max_batch_size": 8}
    settings = ServeSettings(
        host="127.0.0.1",
        port=0,
        log_level="warning",
        models=[
            {
                "name": "int8",
                **common,
                "params": {"runtime": "onnx", "precision": "int8"},
                "max_wait_ms": 100,
            },
            {"name": "fp32", **common},
        ],
    )
    with running_server(settings) as server, server.client() as client:
        body = {"inputs": ["정말 재미있다", "별로였다", "so so"]}

        def post(name: str) -> tuple[str, list[str]]:
            response = client.post(f"/v1/models/{name}/predict", json=body)
            assert response.status_code == 200, response.text
            labels = [result["label"] for result in response.json()["outputs"]]
            return response.headers["x-aiforge-runtime"], labels

        with ThreadPoolExecutor(8) as pool:  # concurrent requests: the batcher groups them
            answers = list(pool.map(post, ["int8"] * 8))
        assert {runtime for runtime, _ in answers} == {"onnx/int8"}
        assert all(set(labels) <= set(LABELS.values()) for _, labels in answers)
        assert post("fp32")[0] == "torch/fp32"
        assert client.get("/readyz").status_code == 200
        assert server.metric("aiforge_batch_size_count", model="int8") >= 1
        assert server.metric("aiforge_batch_size_sum", model="int8") >= 24 - 1  # every item went through
