"""The demo page's words, in English and Korean.

Static text (titles, labels, buttons, descriptions) is handed to Gradio's i18n: the page carries a key
(``tr(key)``) and the browser shows the string of its own language, English where it has none.
Messages the server writes while it answers (errors, the list of cited sources) cannot be translated
in the browser (Gradio's i18n covers static text only), so they are written in the language the
browser asks for in its ``Accept-Language`` header (``language(request)``).
"""

from __future__ import annotations

from typing import Any

TEXT: dict[str, dict[str, str]] = {
    "en": {
        "intro": "## aiforge models\nEach tab runs one served model through the same batcher as the API "
        "([API docs](/docs)).",
        "submit": "Submit",
        "raw_output": "raw output",
        "documents_tab": "Documents (RAG)",
        "index": "index",
        "index_info": "built with `aiforge rag ingest PATH --index NAME`",
        "question": "question",
        "ask": "Ask",
        "answer": "answer",
        "sources": "sources",
        "text": "text",
        "candidate_labels": "candidate labels (comma-separated)",
        "context": "context",
        "image": "image",
        "image_click": "image: click an object to segment it, or Submit to segment everything",
        "audio": "audio",
        "prediction": "prediction",
        "entities": "entities",
        "output": "output",
        "speech": "speech",
        "summary": "summary",
        "chat_tab": "chat",
        "chat_intro": "Talks with the model through the same streaming path as `/v1/chat/completions`.",
        "chat_placeholder": "Ask the model something",
        "conversation": "conversation",
        # messages written by the server (language(request) picks the column)
        "choose_index": "choose an index (create one with `aiforge rag ingest PATH --index NAME`)",
        "type_question": "type a question first",
        "no_sources": "_no sources cited_",
        "sources_heading": "**Sources**",
        "verified": "✓ verified",
        "not_verified": "✗ not verified",
        "where": "{source} p.{page} chars {start}-{end}",
        "upload_first": "no {what} given: upload one first",
        "vector": "{dim}-dimensional vector",
    },
    "ko": {
        "intro": "## aiforge 모델\n탭마다 서빙 중인 모델 하나를 API와 같은 배처로 실행합니다 "
        "([API 문서](/docs)).",
        "submit": "실행",
        "raw_output": "원본 출력",
        "documents_tab": "문서 (RAG)",
        "index": "인덱스",
        "index_info": "`aiforge rag ingest 경로 --index 이름`으로 만듭니다",
        "question": "질문",
        "ask": "질문하기",
        "answer": "답변",
        "sources": "출처",
        "text": "텍스트",
        "candidate_labels": "후보 레이블 (쉼표로 구분)",
        "context": "본문",
        "image": "이미지",
        "image_click": "이미지: 물체를 클릭하면 그 물체를, 실행을 누르면 전부를 분할합니다",
        "audio": "오디오",
        "prediction": "예측",
        "entities": "개체명",
        "output": "출력",
        "speech": "음성",
        "summary": "요약",
        "chat_tab": "채팅",
        "chat_intro": "`/v1/chat/completions`와 같은 스트리밍 경로로 모델과 대화합니다.",
        "chat_placeholder": "모델에게 물어보세요",
        "conversation": "대화",
        "choose_index": "인덱스를 고르세요 (`aiforge rag ingest 경로 --index 이름`으로 만듭니다)",
        "type_question": "먼저 질문을 입력하세요",
        "no_sources": "_인용한 출처가 없습니다_",
        "sources_heading": "**출처**",
        "verified": "✓ 확인됨",
        "not_verified": "✗ 확인되지 않음",
        "where": "{source} {page}쪽, {start}-{end}번째 글자",
        "upload_first": "{what} 파일이 없습니다: 먼저 올려 주세요",
        "vector": "{dim}차원 벡터",
    },
}
DEFAULT_LANGUAGE = "en"


def tr(key: str) -> Any:
    """A translation key for a static string on the page (the browser shows its language's text)."""
    from gradio.i18n import I18nData

    if key not in TEXT[DEFAULT_LANGUAGE]:
        raise KeyError(f"no demo text '{key}'")
    return I18nData(key)


def translations() -> Any:
    """The gr.I18n for mount_gradio_app: every language's strings."""
    import gradio as gr

    return gr.I18n(**TEXT)


def language(request: Any) -> str:
    """The first language of the request's ``Accept-Language`` that the demo speaks (else English)."""
    headers = getattr(request, "headers", None) or {}
    accepted = headers.get("accept-language", "") if hasattr(headers, "get") else ""
    ranked = []
    for position, part in enumerate(accepted.split(",")):
        tag, _, weight = part.strip().partition(";q=")
        try:
            quality = float(weight) if weight else 1.0
        except ValueError:
            quality = 0.0
        ranked.append((-quality, position, tag.split("-")[0].lower()))
    for _, _, code in sorted(ranked):
        if code in TEXT:
            return code
    return DEFAULT_LANGUAGE


def say(key: str, lang: str, **values: Any) -> str:
    """A server-written message in ``lang``."""
    text = TEXT.get(lang, TEXT[DEFAULT_LANGUAGE])[key]
    return text.format(**values) if values else text
