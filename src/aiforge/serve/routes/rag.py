"""``POST /v1/rag/{index}/query``: cited answers from a RAG index built with `aiforge rag ingest`.

JSON::

    POST /v1/rag/manual/query
    {"question": "설치 방법은?", "top_k": 5, "filters": {"source": "install.md"}, "answer": true}
    -> {"index": "manual", "question": ..., "answer": ..., "found": true, "method": "sentence",
        "citations": [{"n": 1, "source": ..., "page": ..., "start": ..., "end": ..., "quote": ...,
                       "verified": true}, ...], "chunks": [...], "seconds": 0.04}

``"generate": true`` has an LLM write the answer from the numbered chunks (the ``generator`` setting,
else text-generation's default: the packaged SmolLM2 offline); the body adds ``statements``, each
checked against the sources (``supported``). With ``"stream": true`` as well, the answer comes as
server-sent events: ``{"event": "chunks"}``, ``{"event": "delta", "text"}`` as the model writes, then
``{"event": "answer", ...}`` (the JSON body above), and ``data: [DONE]``.

``GET /v1/rag`` lists the indexes. The server reads indexes where the CLI writes them
(``$AIFORGE_HOME/rag`` or the ``AIFORGE_RAG_*`` settings), so ingest with the CLI and query here.
Unknown index -> 404 AF-RAG-001, index locked by a writer -> 409, bad filter -> 400.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any

from fastapi import APIRouter
from fastapi import Path as PathParam
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool

from aiforge.errors import AiforgeError
from aiforge.serve.jsonbody import StrictJsonRoute
from aiforge.serve.logs import REQUEST_ID

# aiforge.rag.store.check_name's rule, stated in the schema (aiforge.rag is imported on first use
# only, so it is repeated here; tests/serve/test_fuzz.py keeps the two equal)
INDEX_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
router = APIRouter(prefix="/v1/rag", tags=["rag"], route_class=StrictJsonRoute)


class RagQuery(BaseModel):
    """One question to one index."""

    # the schema states _stream_needs_generate's rule, so generated clients never break it
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "if": {"properties": {"stream": {"const": True}}, "required": ["stream"]},
            "then": {
                "properties": {"generate": {"const": True}, "answer": {"const": True}},
                "required": ["generate"],
            },
        },
    )

    # The schema says "not blank" as the validator below does (a lone "\v" was schema-valid yet a 422:
    # schemathesis seed 1145910378); the validator stays the rule, the pattern documents it.
    question: str = Field(
        min_length=1,
        json_schema_extra={"pattern": r"\S"},
        description="the question (not blank), in any language the embedder reads",
    )
    top_k: int = Field(5, ge=1, le=50, description="retrieved chunks returned")
    filters: dict[str, Any] | None = Field(
        None, description='metadata filters on the chunks, e.g. {"source": "install.md"}'
    )
    answer: bool = Field(True, description="false: return only the retrieved chunks, no answer")
    generate: bool | None = Field(
        None, description="true: an LLM writes the answer, each statement checked; null: server settings"
    )
    stream: bool = Field(False, description="with generate: server-sent events as the answer is written")

    @field_validator("question")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("question must not be blank")
        return value

    @model_validator(mode="after")
    def _stream_needs_generate(self) -> RagQuery:
        if self.stream and not (self.generate and self.answer):
            raise ValueError("stream=true streams a written answer: set generate=true (and answer=true)")
        return self


@router.get("", summary="List the RAG indexes this server can query")
async def list_rag_indexes() -> dict[str, list[str]]:
    import aiforge.rag  # imported on first use: the server starts without RAG

    return {"indexes": await run_in_threadpool(aiforge.rag.list_indexes)}


@router.post("/{index}/query", summary="Answer a question from an index, with checked citations")
async def query_index(
    index: Annotated[str, PathParam(pattern=INDEX_NAME_PATTERN, description="an index name")], body: RagQuery
) -> Any:
    """Retrieval and answering block (embedding, disk reads, generation): they run in the thread pool.

    ``AiforgeError`` from the library carries its HTTP status and is answered by the shared handler.
    """
    import aiforge.rag

    if body.stream:
        return await stream_query(index, body)
    return await run_in_threadpool(
        aiforge.rag.query,
        index,
        body.question,
        top_k=body.top_k,
        filters=body.filters,
        answer=body.answer,
        generate=body.generate,
    )


async def stream_query(index: str, body: RagQuery) -> StreamingResponse:
    """The events of a written answer. The index is opened before the response starts, so an
    unknown index is still a plain 404."""
    import aiforge.rag

    await run_in_threadpool(aiforge.rag.get_index, index)
    events = aiforge.rag.stream_query(index, body.question, top_k=body.top_k, filters=body.filters)
    return StreamingResponse(
        _sse(events, REQUEST_ID.get()),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _sse(events: Iterator[dict[str, Any]], request_id: str | None) -> AsyncIterator[str]:
    try:
        async for event in iterate_in_threadpool(events):
            yield f"data: {json.dumps(event, ensure_ascii=False)}\n\n"
    except AiforgeError as exc:  # the status line is sent: the error becomes the last event
        error = {"code": exc.code, "message": exc.message, "fix": exc.fix, "request_id": request_id}
        yield f"data: {json.dumps({'event': 'error', 'error': error}, ensure_ascii=False)}\n\n"
    yield "data: [DONE]\n\n"
