"""The demo page's Chat tab, for models that back ``/v1/chat/completions`` (their card's ``openai``
lists ``chat``: text-generation on llama.cpp or transformers).

The answer streams through the route's own code (``stream_chat`` in routes/openai.py): the same
runtime method (``stream_chat`` of the model's pipeline), the same stream slot in the model's queue
(a full queue refuses the demo as it refuses an API client), the same timeout and the same stop
handling. The tab reads the route's server-sent events back into text, so there is no second way to
generate.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from aiforge.errors import AiforgeError
from aiforge.serve.demo_text import tr
from aiforge.serve.openai_spec import ChatCompletionRequest
from aiforge.serve.routes.openai import stream_chat
from aiforge.serve.runtime import ServedModel


def serves_chat(model: ServedModel) -> bool:
    return "chat" in model.card.openai


async def stream_answer(model: ServedModel, messages: list[dict[str, str]]) -> AsyncIterator[str]:
    """The assistant's answer to ``messages``, piece by piece, as ``/v1/chat/completions`` streams it
    (the model's configured generation parameters: the demo sets none of its own)."""
    body = ChatCompletionRequest.model_validate({"model": model.name, "messages": messages, "stream": True})
    deployment = model.require_ready()
    params = body.generation_params()
    runner: Any = model.variant(deployment, params)
    response = await stream_chat(model, deployment, runner, body.messages_as_dicts(), body)
    events: Any = response.body_iterator  # type: ignore[attr-defined]
    try:
        async for event in events:
            payload = str(event).removeprefix("data: ").strip()
            if payload == "[DONE]":
                return
            chunk = json.loads(payload)
            if "error" in chunk:
                error = chunk["error"]
                raise AiforgeError(error["code"], error["message"], error.get("fix", ""))
            for choice in chunk.get("choices", ()):
                piece = choice.get("delta", {}).get("content")
                if piece:
                    yield piece
    finally:
        await events.aclose()  # stops the generation, frees the slot


def history_messages(history: list[dict[str, Any]], message: str) -> list[dict[str, str]]:
    """Gradio's chat history (OpenAI-style messages whose content may be a list of parts) plus the
    new user message -> plain ``{"role", "content"}`` messages."""
    messages = []
    for turn in history:
        content = turn.get("content")
        if isinstance(content, list):
            content = "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
        if isinstance(content, str) and turn.get("role") in ("user", "assistant", "system"):
            messages.append({"role": str(turn["role"]), "content": content})
    return [*messages, {"role": "user", "content": message}]


def chat_tab(gr: Any, model: ServedModel) -> None:
    """A chat with history; each answer appears as it is generated."""

    async def reply(message: str, history: list[dict[str, Any]]) -> AsyncIterator[str]:
        answer = ""
        try:
            async for piece in stream_answer(model, history_messages(history, message)):
                answer += piece
                yield answer
        except AiforgeError as exc:  # the API's own message (English), under its code
            raise gr.Error(f"[{exc.code}] {exc.message}") from None

    gr.Markdown(tr("chat_intro"))
    gr.ChatInterface(
        reply,
        chatbot=gr.Chatbot(label=tr("conversation"), height=360),
        textbox=gr.Textbox(placeholder=tr("chat_placeholder"), show_label=False, submit_btn=True),
        api_name=f"chat_{model.name.replace('-', '_').replace('.', '_')}",
        fill_height=False,
    )
