"""JSON log lines carrying the request id, so one request's lines can be grepped across the server.

Every line is one JSON object: ``ts``, ``level``, ``logger``, ``msg``, ``request_id`` (when logged
while handling a request) and any ``extra={...}`` fields. The access log line per request is written
by :class:`~aiforge.serve.middleware.RequestContext` with ``msg: "request"``.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from typing import Any

from aiforge.secrets import redact_text

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("aiforge_request_id", default=None)

# LogRecord attributes that are not user-supplied ``extra`` fields.
_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "color_message",
}  # color_message: uvicorn's ANSI-coloured copy of msg


class JsonFormatter(logging.Formatter):
    """One JSON object per record; ``extra`` fields are kept as top-level keys."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = REQUEST_ID.get()
        if request_id:
            entry["request_id"] = request_id
        entry.update({k: v for k, v in vars(record).items() if k not in _RECORD_FIELDS})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class RedactSecrets(logging.Filter):
    """Replace secrets in a record's message (keys in query strings, bearer tokens, URL passwords)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact_text(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def log_config(level: str = "info", as_json: bool = True, process_wide: bool = False) -> dict[str, Any]:
    """The ``logging.config`` dict uvicorn applies at start (its ``log_config``).

    ``process_wide`` (a server that owns its process, as `aiforge serve` does) sends every logger,
    the root included, to stderr in one format. Otherwise (the app embedded in a test or another
    program) only ``aiforge.serve`` and uvicorn's loggers are touched, so the host's logging stays as it was.
    """
    handler = {
        "class": "logging.StreamHandler",
        "formatter": "json" if as_json else "plain",
        "stream": sys.stderr,
        "filters": ["redact"],
    }
    ours = {"handlers": ["stderr"], "level": level.upper(), "propagate": False, "filters": ["redact"]}
    config: dict[str, Any] = {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"redact": {"()": RedactSecrets}},
        "formatters": {
            "json": {"()": JsonFormatter},
            "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
        },
        "handlers": {"stderr": handler},
        "loggers": {
            **{name: dict(ours) for name in ("uvicorn", "uvicorn.error")},
            # uvicorn's access lines carry the query string, where a browser's ?api_key= would be
            "uvicorn.access": {"filters": ["redact"]},
        },
    }
    if process_wide:
        config["root"] = {"handlers": ["stderr"], "level": level.upper()}
    else:
        config["loggers"]["aiforge.serve"] = dict(ours)
    return config
