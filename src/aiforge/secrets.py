"""Keep secrets out of what aiforge writes: doctor reports, run metadata, logged params, exports.

Two rules, applied to any JSON-like value: a field whose *name* says it holds a secret (token,
secret, password, api_key, credential, authorization) has its value replaced, and any string has
the secrets it *contains* replaced: credentials in URLs (``https://user:pass@host``, a pip index or
a database URL) and query strings (``?api_key=``), ``Bearer`` tokens, and the token formats of the
services our users hold keys for (Hugging Face ``hf_``, OpenAI ``sk-``, GitHub ``ghp_`` and
``github_pat_``, AWS access key ids). The replacement names what was there, so a report still says
*that* a token was set.
"""

from __future__ import annotations

import re
from typing import Any

REDACTED = "<redacted>"
SECRET_NAME = re.compile(r"token|secret|passw(or)?d|api[_-]?key|credential|authorization", re.IGNORECASE)
# Names that match SECRET_NAME but hold counts or settings, not secrets.
NOT_SECRET_NAMES = re.compile(
    r"tokens?_?(count|per|len|limit|s$)|max_.*tokens|tokeni[sz]er|api_key_file|_env$", re.IGNORECASE
)
_URL_CREDENTIALS = re.compile(
    r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<userinfo>[^/@\s:]+(:[^/@\s]*)?)@", re.IGNORECASE
)
_TOKENS = re.compile(
    r"\b(hf_[A-Za-z0-9]{20,}|sk-(proj-)?[A-Za-z0-9_-]{20,}|gh[pousr]_[A-Za-z0-9]{30,}"
    r"|github_pat_[A-Za-z0-9_]{30,}|AKIA[0-9A-Z]{16})\b"
)
_BEARER = re.compile(r"(Bearer\s+)[A-Za-z0-9._~+/=-]{8,}", re.IGNORECASE)
# query parameters that carry credentials: ?api_key= (aiforge's demo link), ?token=, ?access_token=
_QUERY_SECRET = re.compile(
    r"([?&](?:api_key|apikey|key|token|access_token|password)=)[^&\s\"']+", re.IGNORECASE
)


def redact_text(text: str) -> str:
    """``text`` with URL credentials, bearer tokens and known token formats replaced."""
    text = _URL_CREDENTIALS.sub(lambda m: f"{m.group('scheme')}{REDACTED}@", text)
    text = _BEARER.sub(lambda m: f"{m.group(1)}{REDACTED}", text)
    text = _QUERY_SECRET.sub(lambda m: f"{m.group(1)}{REDACTED}", text)
    return _TOKENS.sub(REDACTED, text)


def is_secret_name(name: str) -> bool:
    return bool(SECRET_NAME.search(name)) and not NOT_SECRET_NAMES.search(name)


def redact(value: Any, name: str = "") -> Any:
    """A copy of a JSON-like ``value`` (dicts, lists, strings, scalars) with its secrets replaced."""
    if isinstance(value, dict):
        return {key: redact(item, str(key)) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(item, name) for item in value]
    if name and is_secret_name(name) and value not in (None, "", False):
        return REDACTED
    if isinstance(value, str):
        return redact_text(value)
    return value
