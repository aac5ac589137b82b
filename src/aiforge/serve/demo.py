"""The demo page at /demo: one Gradio tab per served model, inputs and outputs that fit its task.

Text tasks get a text box (plus a question or candidate labels where the task needs them), image
tasks an image upload, audio tasks an upload or the microphone. Outputs are readable: label bars,
highlighted entities and answers, boxes and masks drawn on the image, transcripts, audio players;
the raw JSON is shown under every result. The page calls the same :meth:`ServedModel.predict` as
the HTTP API, so demo requests are batched, limited and counted like any other.

A "Documents (RAG)" tab, shown when ``aiforge.rag`` imports, asks a question of an index built with
`aiforge rag ingest` (the same call as ``POST /v1/rag/{index}/query``) and lists the cited sources,
each with its quote and whether the citation was verified against the stored document. A model that
backs ``/v1/chat/completions`` also gets a chat tab (demo_chat.py).

The page speaks the browser's language, English or Korean (demo_text.py holds the words).
"""

from __future__ import annotations

import base64
import html
import io
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiforge.errors import AiforgeError
from aiforge.serve.demo_chat import chat_tab, serves_chat
from aiforge.serve.demo_text import language, say, tr, translations
from aiforge.serve.runtime import Runtime, ServedModel


@dataclass
class TaskUI:
    """How one task is shown: input components, how their values become a record, the output view."""

    inputs: Callable[[], list[Any]]
    record: Callable[..., dict[str, Any]]
    output: Callable[[], Any]
    render: Callable[..., Any]  # (output record, input values, language="en") -> the view's value


def mount_demo(app: Any, runtime: Runtime, max_file_bytes: int) -> None:
    """Build the Blocks and mount them at /demo (gradio is imported only when the demo is on)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no phoning home from a model server
    import gradio as gr

    with gr.Blocks(title="aiforge demo", analytics_enabled=False) as blocks:
        gr.Markdown(tr("intro"))
        for model in runtime.models.values():
            with gr.Tab(f"{model.name} ({model.task})"):
                _model_tab(gr, model)
            if serves_chat(model):
                with gr.Tab(f"{model.name} · " + tr("chat_tab")):
                    chat_tab(gr, model)
        _rag_tab(gr)
    gr.mount_gradio_app(
        app,
        blocks,
        path="/demo",
        ssr_mode=False,
        max_file_size=max_file_bytes,
        footer_links=["api"],
        i18n=translations(),
    )


def _model_tab(gr: Any, model: ServedModel) -> None:
    ui = task_ui(gr, model)
    inputs = ui.inputs()
    submit = gr.Button(tr("submit"), variant="primary")
    view = ui.output()
    raw = gr.JSON(label=tr("raw_output"))

    kind = model.card.demo.input
    # "image-click" (click-to-segment) and "image-labels" (an image, then labels) upload an image first
    media = {"image": "image", "audio": "audio"}.get(kind.partition("-")[0])

    async def answer(record: Callable[[], dict[str, Any]], values: tuple[Any, ...], lang: str) -> Any:
        if media and not values[0]:
            raise gr.Error(say("upload_first", lang, what=say(media, lang)))
        try:
            outputs, _ = await model.predict([record()])
        except AiforgeError as exc:
            raise gr.Error(f"[{exc.code}] {exc.message}") from None
        return ui.render(outputs[0], values, lang), outputs[0]

    async def run(request: Any, *values: Any) -> tuple[Any, dict[str, Any]]:
        return await answer(lambda: ui.record(*values), values, language(request))

    accept_request(gr, run)
    api_name = f"predict_{model.name.replace('-', '_').replace('.', '_')}"
    submit.click(run, inputs, [view, raw], api_name=api_name)

    if kind == "image-click":  # click-to-segment: the clicked pixel is the point prompt

        async def click(request: Any, event: Any, path: str | None) -> tuple[Any, dict[str, Any]]:
            point = [float(v) for v in event.index]
            return await answer(lambda: {**ui.record(path), "points": [point]}, (path,), language(request))

        accept_request(gr, click)
        click.__annotations__["event"] = gr.SelectData  # Gradio passes the click by this annotation
        inputs[0].select(click, inputs, [view, raw], api_name=f"{api_name}_click")


def _rag_tab(gr: Any) -> None:
    """Question answering over ingested documents; skipped when the RAG extras do not import."""
    try:
        import aiforge.rag as rag
    except ImportError:
        return
    indexes = rag.list_indexes()
    with gr.Tab(tr("documents_tab")):
        index = gr.Dropdown(
            choices=indexes,
            value=indexes[0] if indexes else None,
            allow_custom_value=True,
            label=tr("index"),
            info=tr("index_info"),
        )
        question = gr.Textbox(label=tr("question"), lines=2)
        ask = gr.Button(tr("ask"), variant="primary")
        answer = gr.Textbox(label=tr("answer"), lines=3)
        sources = gr.Markdown(label=tr("sources"))

        def run(name: str | None, text: str, request: gr.Request) -> tuple[str, str]:
            lang = language(request)
            if not name:
                raise gr.Error(say("choose_index", lang))
            if not text or not text.strip():
                raise gr.Error(say("type_question", lang))
            try:
                body = rag.query(name, text)
            except AiforgeError as exc:
                raise gr.Error(f"[{exc.code}] {exc.message}") from None
            return body["answer"], render_citations(body.get("citations", []), lang)

        accept_request(gr, run)

        ask.click(run, [index, question], [answer, sources], api_name="rag_query")


def accept_request(gr: Any, fn: Callable[..., Any]) -> None:
    """Have Gradio pass ``fn`` its request (the browser's language is in its headers). Gradio finds
    the parameter by its annotation, gr.Request; under postponed annotations it cannot resolve the
    string "gr.Request" (gr is a local name here), so the class is set on the function."""
    fn.__annotations__["request"] = gr.Request


def render_citations(citations: list[dict[str, Any]], lang: str = "en") -> str:
    """Markdown for the cited sources: where each quote is, the quote, and whether it was verified."""
    if not citations:
        return say("no_sources", lang)
    lines = [say("sources_heading", lang), ""]
    for c in citations:
        mark = say("verified" if c["verified"] else "not_verified", lang)
        quote = markdown_literal(" ".join(str(c["quote"]).split()))
        source = markdown_literal(str(c["source"]))
        where = say("where", lang, source=source, page=c["page"], start=c["start"], end=c["end"])
        lines.append(f"- [{c['n']}] {where} ({mark})")
        lines.append(f"  > {quote}")
    return "\n".join(lines)


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|~-])")


def markdown_literal(text: str) -> str:
    """``text`` shown as written: ingested documents are untrusted, so HTML in a quote (a
    ``<script>``, an ``onerror=``) must stay text, and Markdown in it must not become links or
    formatting (tests/serve/test_rag_route.py checks this in Chromium)."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", html.escape(text, quote=False))


def task_ui(gr: Any, model: ServedModel) -> TaskUI:
    """The widgets for a model's task, as its card's demo view names them."""
    view = model.card.demo
    inputs, record = _INPUTS[view.input](gr)
    return TaskUI(
        inputs,
        record,
        lambda: _OUTPUTS[view.output](gr),
        lambda out, values, lang="en": render_output(view.output, out, values, lang),
    )


InputWidgets = tuple[Callable[[], list[Any]], Callable[..., dict[str, Any]]]

# Demo input kind -> (the widgets, how their values become one input record).
_INPUTS: dict[str, Callable[[Any], InputWidgets]] = {
    "text": lambda gr: (lambda: [gr.Textbox(label=tr("text"), lines=3)], lambda text: {"text": text}),
    "text-labels": lambda gr: (
        lambda: [gr.Textbox(label=tr("text"), lines=3), gr.Textbox(label=tr("candidate_labels"))],
        lambda text, labels: {
            "text": text,
            "candidate_labels": split_labels(labels),
        },
    ),
    "question-context": lambda gr: (
        lambda: [gr.Textbox(label=tr("question")), gr.Textbox(label=tr("context"), lines=6)],
        lambda question, context: {"question": question, "context": context},
    ),
    "image": lambda gr: (
        lambda: [gr.Image(type="filepath", label=tr("image"))],
        lambda path: {"image": _read(path, "image")},
    ),
    "image-click": lambda gr: (
        lambda: [gr.Image(type="filepath", label=tr("image_click"))],
        lambda path: {"image": _read(path, "image")},
    ),
    "image-labels": lambda gr: (
        lambda: [gr.Image(type="filepath", label=tr("image")), gr.Textbox(label=tr("candidate_labels"))],
        lambda path, labels: {"image": _read(path, "image"), "candidate_labels": split_labels(labels)},
    ),
    "image-question": lambda gr: (
        lambda: [gr.Image(type="filepath", label=tr("image")), gr.Textbox(label=tr("question"))],
        lambda path, question: {"image": _read(path, "image"), "question": question},
    ),
    "audio": lambda gr: (
        lambda: [gr.Audio(sources=["upload", "microphone"], type="filepath", label=tr("audio"))],
        lambda path: {"audio": _read(path, "audio")},
    ),
}

# Demo output kind -> the widget that shows it.
_OUTPUTS: dict[str, Callable[[Any], Any]] = {
    "label": lambda gr: gr.Label(label=tr("prediction"), num_top_classes=5),
    "entities": lambda gr: gr.HighlightedText(label=tr("entities")),
    "answer": lambda gr: gr.HighlightedText(label=tr("answer")),
    "text": lambda gr: gr.Textbox(label=tr("output"), lines=4),
    "boxes": lambda gr: gr.AnnotatedImage(label=tr("prediction")),
    "masks": lambda gr: gr.AnnotatedImage(label=tr("prediction")),
    "audio": lambda gr: gr.Audio(label=tr("speech"), type="numpy"),
    "vector": lambda gr: gr.Textbox(label=tr("summary")),
    "json": lambda gr: gr.Textbox(label=tr("summary")),
}


def render_output(kind: str, out: dict[str, Any], values: tuple[Any, ...], lang: str = "en") -> Any:
    """One output record -> the value of the output widget of this demo kind (``values`` are the
    input widgets' values: the text that entities highlight, the image boxes are drawn on)."""
    if kind == "label":  # a generated answer (VQA) has no score: gr.Label shows it alone
        return out["answer"] if out.get("score", 0.0) is None else label_scores(out)
    if kind == "entities":
        spans = [(e["entity_group"], e["start"], e["end"]) for e in out.get("entities", [])]
        return _highlight(values[0], spans)
    if kind == "answer":  # the answer highlighted in its context
        return _highlight(values[1], [("answer", out["start"], out["end"])] if out.get("answer") else [])
    if kind == "text":
        return out.get("generated_text", out.get("text", ""))
    if kind == "boxes":  # gr.AnnotatedImage slices the image with the corners: whole pixels only
        return values[0], [
            (
                tuple(round(o["box"][corner]) for corner in ("xmin", "ymin", "xmax", "ymax")),
                f"{o['label']} {o['score']:.2f}",
            )
            for o in out.get("objects", [])
        ]
    if kind == "masks":
        from aiforge.tasks.images import decode_mask, decode_rle

        parts = out.get("segments") or out.get("masks") or []
        return values[0], [
            (decode_mask(p["mask"]) if p.get("mask") else decode_rle(p["rle"]), _mask_label(p, n))
            for n, p in enumerate(parts, 1)
        ]
    if kind == "audio":
        import soundfile

        samples, rate = soundfile.read(io.BytesIO(base64.b64decode(out["audio_base64"])))
        return rate, samples
    if kind == "vector" and "embedding" in out:
        return (
            say("vector", lang, dim=out["dim"])
            + f": [{', '.join(f'{v:.4f}' for v in out['embedding'][:6])}, ...]"
        )
    return str(out)


def _mask_label(part: dict[str, Any], n: int) -> str:
    if "label" in part:
        return str(part["label"])
    return f"#{n} {part['score']:.2f}" if "score" in part else f"#{n}"


def _highlight(text: str, spans: list[tuple[str, int, int]]) -> dict[str, Any]:
    return {"text": text, "entities": [{"entity": label, "start": a, "end": b} for label, a, b in spans]}


def label_scores(out: dict[str, Any]) -> dict[str, float]:
    """{label: score} for gr.Label from any of the classification output shapes."""
    if "answers" in out:  # visual question answering
        return {a["answer"]: a["score"] for a in out["answers"]}
    if "predictions" in out:  # fill-mask
        return {p["token_str"]: p["score"] for p in out["predictions"]}
    if (
        isinstance(out.get("labels"), list) and out["labels"] and isinstance(out["labels"][0], str)
    ):  # zero-shot
        return dict(zip(out["labels"], out["scores"], strict=False))
    pairs: list[Any] = out["scores"] if isinstance(out.get("scores"), list) else out.get("labels") or []
    return {p["label"]: p["score"] for p in pairs}


def split_labels(labels: str) -> list[str]:
    """The candidate-labels box ("cat, dog") -> ["cat", "dog"]."""
    return [x.strip() for x in labels.split(",") if x.strip()]


def _read(path: str | None, what: str) -> bytes:
    if not path:
        raise AiforgeError("AF-INPUT-001", f"no {what} given", f"upload an {what} first")
    return Path(path).read_bytes()
