"""The task contract: every registered task, on its tiny model, works the same way everywhere.

Parametrised by the registry itself (``aiforge.tasks.task_cards()``), each task goes through

(a) ``pipe.predict``: each output validates against the task's Output schema and has the shape its
    card's demo output kind promises (label scores, entities, an answer span, text, boxes, masks,
    audio, a vector);
(b) ``pipe.stream`` over a lazy iterator: the same results as ``predict``, in input order; a
    malformed input among them gets an error record in its place (no abort), and an input given
    twice gets the same output both times (unless its entry says why not: ``batch_dependent``);
(c) ``POST /v1/models/{task}/predict`` on a real server (uvicorn on 127.0.0.1, one server for every
    task, which also warms each model up with its card's warm-up input): 200 with that output for the
    warm-up input (as JSON, and for media tasks as a multipart upload too), the same output
    ``pipe.predict`` gives; a 4xx error object for a malformed input;
(d) the demo view: the tab is on the /demo page, its input widgets make a record the task accepts,
    and its output widget takes the rendered output.

A task registered without an entry in ``tests/tasks/contract_models.py`` fails every check, naming
the entry to add.
"""

from __future__ import annotations

import base64
import io
import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from aiforge.serve import ServeSettings
from aiforge.serve.demo import label_scores, task_ui
from aiforge.tasks import load_pipeline, task_cards
from aiforge.tasks.base import Pipeline
from aiforge.tasks.card import TaskCard
from aiforge.tasks.execute import is_error
from tests.serve.conftest import Server, running_server
from tests.tasks.contract_models import CONTRACT_MODELS, SAMPLING_RATE, ContractModel

CARDS = {card.name: card for card in task_cards()}


def _task_params() -> list[Any]:
    def marks(task: str) -> list[pytest.MarkDecorator]:
        entry = CONTRACT_MODELS.get(task)
        return [pytest.mark.slow] if entry is not None and entry.slow else []

    return [pytest.param(task, marks=marks(task), id=task) for task in CARDS]


every_task = pytest.mark.parametrize("task", _task_params())


def contract_model(task: str) -> ContractModel:
    """The task's entry; a task registered without one fails here, saying what to add."""
    if task not in CONTRACT_MODELS:
        pytest.fail(
            f"task '{task}' is registered but has no contract model: add CONTRACT_MODELS['{task}'] = "
            "ContractModel(build=<a tiny-model builder from tests/tiny_models.py>, inputs=[<2+ sample "
            f"inputs>]) to tests/tasks/contract_models.py (see its docstring)",
            pytrace=False,
        )
    return CONTRACT_MODELS[task]


def test_every_contract_model_names_a_registered_task() -> None:
    stale = sorted(set(CONTRACT_MODELS) - set(CARDS))
    assert not stale, f"tests/tasks/contract_models.py has entries for unregistered tasks: {stale}"


# ---- models, pipelines and the server, built once per module ----------------------------------------
class Models:
    """Each task's model reference and loaded pipeline, built on first use."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._refs: dict[str, str] = {}
        self._pipes: dict[str, Pipeline] = {}

    def ref(self, task: str) -> str:
        if task not in self._refs:
            self._refs[task] = str(contract_model(task).build(self.root / task))
        return self._refs[task]

    def pipe(self, task: str) -> Pipeline:
        if task not in self._pipes:
            entry = contract_model(task)
            self._pipes[task] = load_pipeline(task, self.ref(task), device="cpu", **entry.params)
        return self._pipes[task]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Models:
    return Models(tmp_path_factory.mktemp("contract-models"))


@pytest.fixture(scope="module")
def server(models: Models) -> Iterator[Server]:
    """One server with a model per task that has a contract entry (named after the task), demo on."""
    tasks = [task for task in CARDS if task in CONTRACT_MODELS]
    settings = ServeSettings(
        host="127.0.0.1",
        port=0,
        log_level="warning",
        demo=True,
        models=[
            {
                "name": task,
                "task": task,
                "model": models.ref(task),
                "device": "cpu",
                "params": CONTRACT_MODELS[task].params,
                "max_wait_ms": 1,
            }
            for task in tasks
        ],
    )
    with running_server(settings, ready=False) as handle:
        wait_until_loaded(handle, timeout_s=300)
        yield handle


def wait_until_loaded(server: Server, timeout_s: float) -> None:
    """Until every model is ready or failed (a failed one fails its own tests, not the others')."""
    deadline = time.monotonic() + timeout_s
    with server.client() as client:
        while time.monotonic() < deadline:
            states = {m["state"] for m in client.get("/readyz").json()["models"].values()}
            if states <= {"ready", "failed", "unhealthy"}:
                return
            time.sleep(0.2)
    raise TimeoutError(f"models still loading after {timeout_s}s")


def served(server: Server, task: str) -> Any:
    """The task's ServedModel, checked to have loaded and warmed up with the card's warm-up input."""
    model = server.app.state.runtime.models[task]
    assert model.state == "ready", f"{task} did not load or warm up on the server: {model.reason}"
    return model


# ---- what each demo output kind needs of an output -----------------------------------------------------
def _label(out: dict[str, Any]) -> None:
    scores = label_scores(out)
    assert scores, "no label scores"
    assert all(isinstance(k, str) and 0.0 <= v <= 1.0 + 1e-6 for k, v in scores.items()), scores


def _entities(out: dict[str, Any]) -> None:
    for entity in out["entities"]:
        assert isinstance(entity["entity_group"], str) and 0 <= entity["start"] <= entity["end"], entity


def _answer(out: dict[str, Any]) -> None:
    assert isinstance(out["answer"], str) and 0 <= out["start"] <= out["end"], out


def _text(out: dict[str, Any]) -> None:
    assert isinstance(out.get("generated_text", out.get("text")), str), out


def _boxes(out: dict[str, Any]) -> None:
    assert out["objects"], "threshold 0 keeps every query: expected boxes"
    for obj in out["objects"]:
        box = obj["box"]
        assert box["xmin"] <= box["xmax"] and box["ymin"] <= box["ymax"] and isinstance(obj["label"], str)


def _masks(out: dict[str, Any]) -> None:
    parts = out.get("segments") or out.get("masks")
    assert parts and all(part.get("mask") or part.get("rle") for part in parts), out.keys()


def _audio(out: dict[str, Any]) -> None:
    import soundfile

    info = soundfile.info(io.BytesIO(base64.b64decode(out["audio_base64"])))
    assert info.samplerate == out["sampling_rate"] and info.frames > 0


def _vector(out: dict[str, Any]) -> None:
    assert out["dim"] == len(out["embedding"]) > 0 and all(math.isfinite(v) for v in out["embedding"])


def _json(out: dict[str, Any]) -> None:
    json.dumps(out)


OUTPUT_KINDS = {
    "label": _label,
    "entities": _entities,
    "answer": _answer,
    "text": _text,
    "boxes": _boxes,
    "masks": _masks,
    "audio": _audio,
    "vector": _vector,
    "json": _json,
}


def check_output(card: TaskCard, out: Any) -> None:
    assert not is_error(out), f"{card.name} failed: {out}"
    card.pipeline.Output.model_validate(out)
    OUTPUT_KINDS[card.demo.output](out)
    json.dumps(out)  # what the HTTP route and `aiforge run` write


def test_every_demo_output_kind_has_a_check() -> None:
    from typing import get_args

    from aiforge.tasks.card import DemoOutput

    assert set(OUTPUT_KINDS) == set(get_args(DemoOutput))


# ---- (a) predict, (b) stream ---------------------------------------------------------------------------
@every_task
def test_predict_gives_the_output_its_demo_view_shows(task: str, models: Models) -> None:
    entry = contract_model(task)
    outputs = models.pipe(task).predict(entry.inputs)
    assert len(outputs) == len(entry.inputs)
    for out in outputs:
        check_output(CARDS[task], out)


@every_task
def test_stream_yields_what_predict_returns(task: str, models: Models) -> None:
    """Also with a malformed input among good ones: an error record in its place, the others intact."""
    entry = contract_model(task)
    pipe = models.pipe(task)
    items = [*entry.inputs, entry.malformed, entry.inputs[0]]
    streamed = list(pipe.stream(iter(items)))  # a lazy iterator, not a list
    assert streamed == pipe.predict(items)
    bad = streamed[len(entry.inputs)]
    assert is_error(bad) and not bad.internal, f"the malformed input gave {bad}"
    if not entry.batch_dependent:  # the same input gives the same output wherever it sits in a batch
        assert streamed[-1] == streamed[0]


# ---- (c) the HTTP predict route --------------------------------------------------------------------------
def upload_bytes(value: bytes | np.ndarray) -> bytes:
    """Media as a client uploads it: file bytes as they are, sample arrays as a 16 kHz WAV file."""
    if isinstance(value, bytes):
        return value
    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, value, SAMPLING_RATE, format="WAV")
    return buffer.getvalue()


def jsonable(value: Any) -> Any:
    """An input as a JSON client sends it: media as base64."""
    if isinstance(value, (bytes, np.ndarray)):
        return base64.b64encode(upload_bytes(value)).decode()
    if isinstance(value, dict):
        return {key: jsonable(item) for key, item in value.items()}
    return value


def warmup_input(task: str) -> Any:
    card, entry = CARDS[task], contract_model(task)
    sample = card.warmup(entry.params) if card.warmup else None
    return entry.inputs[0] if sample is None else sample


@every_task
def test_http_predict_answers_the_warmup_input_and_refuses_a_malformed_one(
    task: str, models: Models, server: Server
) -> None:
    entry = contract_model(task)
    served(server, task)
    sample = warmup_input(task)
    with server.client() as client:
        response = client.post(f"/v1/models/{task}/predict", json={"inputs": [jsonable(sample)]})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["model"] == task and len(body["outputs"]) == 1
        check_output(CARDS[task], body["outputs"][0])
        assert body["outputs"] == json.loads(json.dumps(models.pipe(task).predict([sample])))

        media = media_field(task)
        if media in ("image", "audio"):  # the same input uploaded as a multipart file
            record = sample if isinstance(sample, dict) else {media: sample}
            fields = {key: value for key, value in record.items() if key != media}
            upload = client.post(
                f"/v1/models/{task}/predict", files={"file": upload_bytes(record[media])}, data=fields
            )
            assert upload.status_code == 200, upload.text
            assert upload.json()["outputs"] == body["outputs"]

        bad = client.post(f"/v1/models/{task}/predict", json={"inputs": [jsonable(entry.malformed)]})
    assert 400 <= bad.status_code < 500, bad.text
    error = bad.json()["error"]
    assert error["code"].startswith("AF-") and error["message"] and error["fix"], error


def media_field(task: str) -> str:
    """The input field a demo tab uploads into: its demo input kind, "image-click" being an image too."""
    kind = CARDS[task].demo.input
    return "image" if kind == "image-click" else kind


# ---- (d) the demo view -----------------------------------------------------------------------------------
def demo_values(task: str, directory: Path) -> tuple[Any, ...]:
    """What the task's demo widgets hold for its first sample input (media: an uploaded file)."""
    entry = contract_model(task)
    sample = entry.inputs[0]
    media = CARDS[task].demo.input.partition("-")[0]  # "image-labels": the upload, then entry.demo
    if media in ("image", "audio"):
        data = sample[media] if isinstance(sample, dict) else sample
        path = directory / f"upload.{'png' if media == 'image' else 'wav'}"
        path.write_bytes(data)
        return (str(path), *(entry.demo or ()))
    if entry.demo is not None:
        return entry.demo
    return (sample["text"] if isinstance(sample, dict) else sample,)


@pytest.fixture(scope="module")
def demo_config(server: Server) -> str:
    with server.client() as client:
        response = client.get("/demo/config")
    assert response.status_code == 200, response.text
    return response.text


@every_task
def test_demo_tab_renders_the_task_output(
    task: str, models: Models, server: Server, demo_config: str, tmp_path: Path
) -> None:
    import gradio as gr

    model = served(server, task)
    assert json.dumps(f"{task} ({task})") in demo_config, "the demo page has no tab for the model"
    values = demo_values(task, tmp_path)
    with gr.Blocks():
        ui = task_ui(gr, model)
        widgets = ui.inputs()
        view = ui.output()
    assert len(widgets) == len(values)
    record = ui.record(*values)
    [out] = models.pipe(task).predict([record])  # what the tab's Submit runs (ServedModel.predict)
    check_output(CARDS[task], out)
    view.postprocess(ui.render(out, values))  # the output widget takes what the view renders
