"""``POST /v1/rag/{index}/query``: cited answers from a RAG index built with `aiforge rag ingest`.

JSON::

    POST /v1/rag/manual/query
    {"question": "설치 방법은?", "top_k": 5, "filters": {"source": "install.md"}, "answer": true}
    -> {"index": "manual", "question": ..., "answer": ..., "found": true, "method": "sentence",
        "citations": [{"n": 1, "source": ..., "page": ..., "start": ..., "end": ..., "quote": ...,
                       "verified": true}, ...], "chunks": [...], "seconds": 0.04}

``GET /v1/rag`` lists the indexes. The server reads indexes where the CLI writes them
(``$AIFORGE_HOME/rag`` or the ``AIFORGE_RAG_*`` settings), so ingest with the CLI and query here.
Unknown index -> 404 AF-RAG-001, index locked by a writer -> 409, bad filter -> 400.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.concurrency import run_in_threadpool

from aiforge.serve.jsonbody import StrictJsonRoute

router = APIRouter(prefix="/v1/rag", tags=["rag"], route_class=StrictJsonRoute)


class RagQuery(BaseModel):
    """One question to one index."""

    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=1, description="the question, in any language the embedder reads")
    top_k: int = Field(5, ge=1, le=50, description="retrieved chunks returned")
    filters: dict[str, Any] | None = Field(
        None, description='metadata filters on the chunks, e.g. {"source": "install.md"}'
    )
    answer: bool = Field(True, description="false: return only the retrieved chunks, no answer")

    @field_validator("question")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("question must not be blank")
        return value


@router.get("", summary="List the RAG indexes this server can query")
async def list_rag_indexes() -> dict[str, list[str]]:
    import aiforge.rag  # imported on first use: the server starts without RAG

    return {"indexes": await run_in_threadpool(aiforge.rag.list_indexes)}


@router.post("/{index}/query", summary="Answer a question from an index, with checked citations")
async def query_index(index: str, body: RagQuery) -> dict[str, Any]:
    """Retrieval and answering block (embedding, disk reads): they run in the thread pool.

    ``AiforgeError`` from the library carries its HTTP status and is answered by the shared handler.
    """
    import aiforge.rag

    return await run_in_threadpool(
        aiforge.rag.query, index, body.question, top_k=body.top_k, filters=body.filters, answer=body.answer
    )
