"""One configuration grammar for `aiforge train`, `serve`, `rag` and `run`.

Every command builds its settings the same way, lowest layer first::

    field defaults < config file (YAML) < AIFORGE_<COMMAND>_<KEY> environment variables < --set KEY=VALUE

**Keys** are dotted field paths: ``training.lr``, ``port``, ``models.max_batch_size``, ``top_k``.

**Environment**: ``AIFORGE_<COMMAND>_`` followed by the key in capitals with each ``.`` written as
``__`` (a double underscore), e.g. ``AIFORGE_TRAIN_TRAINING__LR=3e-5``, ``AIFORGE_SERVE_PORT=9000``,
``AIFORGE_SERVE_MODELS__MAX_BATCH_SIZE=16``, ``AIFORGE_RAG_STORE_URL=postgresql://...``. The key is
read in lower case. A variable under a command's prefix that names no field is an error, like a typo
in the file.

**Values** (``--set``, ``-p``, environment) are read as YAML 1.2 (the core schema, which JSON is a
subset of): ``true``/``false``, ``null``/``~``, integers, floats (``3e-5``, ``.5``), a flow list
``[긍정, 부정]`` or mapping ``{a: 1}``, a quoted string ``"a: b"``; anything else is the text as
written (so ``no``, ``on`` or ``Q: what?`` stay strings). A value whose field holds text keeps the
text as written: ``--set tracking.alias=2024`` is the string ``"2024"``, not a number.

**Errors**: :func:`describe_errors` is the one formatter of pydantic validation errors: each names the
field path, the bad value (and whether it came from ``--set`` or the environment) and, for an unknown
field, the closest valid name. :func:`build` raises them as ``AF-CONFIG-001``.
"""

from __future__ import annotations

import difflib
import os
import re
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from aiforge.errors import AiforgeError

M = TypeVar("M", bound=BaseModel)
Tree = dict[str, Any]

ENV_PREFIX = "AIFORGE_"


# ---- the config file --------------------------------------------------------------------------------
def read_yaml_file(path: str | Path, example_hint: str) -> Tree:
    """A YAML config file -> its top-level mapping. Missing file, bad YAML or a non-mapping is an
    AF-CONFIG-001 error; ``example_hint`` tells where a valid example comes from."""
    path = Path(path)
    if not path.exists():
        raise AiforgeError("AF-CONFIG-001", f"config file '{path}' does not exist", example_hint)
    try:
        loader = _FileLoader(path.read_text(encoding="utf-8"))
        loader.origin = str(path)
        try:
            data = loader.get_single_data()
        finally:
            loader.dispose()
    except OSError as exc:
        raise AiforgeError(
            "AF-CONFIG-001", f"cannot read config '{path}': {exc.strerror}", f"check the path; {example_hint}"
        ) from None
    except yaml.YAMLError as exc:
        raise AiforgeError(
            "AF-CONFIG-001", f"'{path}' is not valid YAML: {exc}", "fix the YAML syntax"
        ) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise AiforgeError(
            "AF-CONFIG-001",
            f"'{path}' must hold a mapping of fields, got {type(data).__name__}",
            example_hint,
        )
    return data


def merge(low: Mapping[str, Any], high: Mapping[str, Any]) -> Tree:
    """``high`` over ``low``, mappings merged key by key (a scalar or list replaces)."""
    out = dict(low)
    for key, value in high.items():
        below = out.get(key)
        out[key] = merge(below, value) if isinstance(value, dict) and isinstance(below, dict) else value
    return out


# ---- values -----------------------------------------------------------------------------------------
class _CoreLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader with YAML 1.2 core-schema scalars: PyYAML follows YAML 1.1, where ``no``
    and ``on`` are booleans (``-p language=no`` would be False) and ``3e-5`` is a string."""


_CoreLoader.yaml_implicit_resolvers = {}
_CORE_SCALARS = (
    ("tag:yaml.org,2002:null", r"~|null|Null|NULL", "~nN"),
    ("tag:yaml.org,2002:bool", r"true|True|TRUE|false|False|FALSE", "tTfF"),
    ("tag:yaml.org,2002:int", r"[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+", "-+0123456789"),
    (
        "tag:yaml.org,2002:float",
        r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)",
        "-+.0123456789",
    ),
)
for _tag, _pattern, _first in _CORE_SCALARS:
    _CoreLoader.add_implicit_resolver(_tag, re.compile(f"^(?:{_pattern})$"), list(_first))
_CoreLoader.add_implicit_resolver("tag:yaml.org,2002:null", re.compile("^$"), [""])


def _core_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    text = str(loader.construct_scalar(node))
    if text.startswith(("0o", "0x")):
        return int(text, 0)
    return int(text)  # decimal: YAML 1.1 would read 017 as octal


_CoreLoader.add_constructor("tag:yaml.org,2002:int", _core_int)
_CORE_SCALAR = re.compile("|".join(f"(?:{pattern})" for _, pattern, _ in _CORE_SCALARS))


def parse_value(text: str, where: str = "value") -> Any:
    """One value as written on the command line or in the environment (see the module doc);
    ``where`` names it in the error for a malformed list or mapping (``--set params.labels``)."""
    stripped = text.strip()
    if not stripped:
        return ""
    structured = stripped[0] in "[{\"'"
    if not structured and not _CORE_SCALAR.fullmatch(stripped):
        return text
    try:
        return yaml.load(stripped, Loader=_CoreLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise AiforgeError(
            "AF-CONFIG-001",
            f"{where}: {text!r} is not a valid YAML value ({problem})",
            "close the brackets of a list [a, b] or mapping {k: v}; quote text that starts with a "
            "bracket or a quote",
        ) from None


@dataclass(frozen=True)
class Override:
    """One ``KEY=VALUE`` from ``--set``, ``-p``, the environment or a file's scalar. ``origin`` names
    where it came from in errors: ``--set training.lr``, ``AIFORGE_TRAIN_TRAINING__LR``, ``train.yaml``."""

    key: str
    text: str
    origin: str

    @property
    def parts(self) -> list[str]:
        return self.key.split(".")

    def value(self) -> Any:
        return parse_value(self.text, self.origin)


class _FileLoader(_CoreLoader):
    """A config file's numbers and booleans stay as written (an :class:`Override` from the file) until
    the field they land in is known, so ``alias: 2024`` in a file is the text "2024", as it is from
    ``--set`` or the environment, while ``lr: 3e-5`` is a number everywhere."""

    origin = "the config file"


def _as_written(loader: _FileLoader, node: yaml.ScalarNode) -> Override:
    return Override("", str(loader.construct_scalar(node)), loader.origin)


for _tag in ("bool", "int", "float"):
    _FileLoader.add_constructor(f"tag:yaml.org,2002:{_tag}", _as_written)


def parse_sets(
    pairs: Iterable[str],
    flag: str = "--set",
    example: str = "training.lr=3e-5",
    code: str = "AF-CONFIG-001",
    prefix: str = "",
) -> list[Override]:
    """``["training.lr=3e-5", ...]`` -> overrides of ``prefix + key``; a pair without ``=`` or with a
    malformed value is an error (``code``) naming it. ``-p top_k=3`` is ``prefix="params."``."""
    out: list[Override] = []
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise AiforgeError(code, f"{flag} '{pair}' is not KEY=VALUE", f"write e.g. {flag} {example}")
        override = Override(prefix + key, text, f"{flag} {key}")
        override.value()  # a malformed value fails now, naming its key
        out.append(override)
    return out


def env_overrides(command: str, environ: Mapping[str, str] | None = None) -> list[Override]:
    """``AIFORGE_<COMMAND>_<KEY>`` variables -> overrides, sorted by variable name."""
    prefix = f"{ENV_PREFIX}{command.upper()}_"
    environ = os.environ if environ is None else environ
    return [
        Override(name.removeprefix(prefix).lower().replace("__", "."), text, name)
        for name, text in sorted(environ.items())
        if name.startswith(prefix) and len(name) > len(prefix)
    ]


def set_path(tree: Tree, parts: list[str], value: Any, origin: str = "") -> None:
    """``tree[a][b][c] = value`` for ``parts == [a, b, c]``, creating mappings on the way."""
    node = tree
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if isinstance(child, Override) and isinstance(child.value(), dict):
            child = node[part] = child.value()  # --set model={...} then --set model.layers=8
        if not isinstance(child, dict):
            where = ".".join(parts[: depth + 1])
            raise AiforgeError(
                "AF-CONFIG-001",
                f"{origin or '.'.join(parts)}: '{where}' is a value, not a section",
                f"'{where}' takes a value itself: {where}=VALUE",
            )
        node = child
    node[parts[-1]] = value


def apply(tree: Tree, overrides: Iterable[Override]) -> Tree:
    """Each override written into ``tree`` (in place, later ones win); the values stay unparsed
    until :func:`build` knows each field's type."""
    for override in overrides:
        set_path(tree, override.parts, override, override.origin)
    return tree


def apply_values(tree: Tree, values: Mapping[str, Any]) -> Tree:
    """Typed values by dotted key (flags: ``{"port": 9000}``); None means "not given"."""
    for key, value in values.items():
        if value is not None:
            set_path(tree, key.split("."), value)
    return tree


# ---- validation ---------------------------------------------------------------------------------------
def build(schema: type[M], tree: Tree, what: str, fix: str) -> M:
    """Validate ``tree`` into ``schema``; errors raise AF-CONFIG-001 ``"invalid {what}: ..."``."""
    origins: dict[tuple[Any, ...], str] = {}
    resolved = _resolve(tree, schema, (), origins)
    try:
        return schema.model_validate(resolved)
    except ValidationError as exc:
        raise AiforgeError(
            "AF-CONFIG-001",
            f"invalid {what}: {describe_errors(exc, schema, origins)}",
            "; ".join(filter(None, [fix, field_hint(exc, schema)])),
        ) from None


def describe_errors(
    exc: ValidationError,
    schema: type[BaseModel] | None = None,
    origins: Mapping[tuple[Any, ...], str] | None = None,
    limit: int = 5,
) -> str:
    """``"training.batch_size: Input should be a valid integer (got 'many' from --set ...)"``, one
    clause per wrong field (the first ``limit``); an unknown field names the closest valid one."""
    by_field: dict[tuple[Any, ...], list[Any]] = {}
    for error in exc.errors():  # a union reports once per member: one clause per field
        by_field.setdefault(tuple(_field_loc(error["loc"])), []).append(error)
    clauses = [_clause(list(loc), errors, schema, origins or {}) for loc, errors in by_field.items()]
    if len(clauses) > limit:
        clauses[limit:] = [f"and {len(clauses) - limit} more"]
    return "; ".join(clauses)


def _clause(
    loc: list[Any],
    errors: list[Any],
    schema: type[BaseModel] | None,
    origins: Mapping[tuple[Any, ...], str],
) -> str:
    path = format_path(loc)
    origin = origins.get(tuple(loc))
    if errors[0]["type"] == "extra_forbidden":
        close = _closest(schema, loc) if schema else None
        return (
            f"unknown field '{path}'"
            + (f" (from {origin})" if origin else "")
            + (f"; did you mean '{close}'?" if close else "")
        )
    messages = dict.fromkeys(str(e["msg"]).removeprefix("Value error, ") for e in errors)
    got = _short(errors[0].get("input")) if errors[0]["type"] != "missing" else None
    source = " ".join(filter(None, [f"got {got}" if got is not None else "", origin and f"from {origin}"]))
    return f"{path + ': ' if path else ''}{', or '.join(messages)}" + (f" ({source})" if source else "")


def field_hint(exc: ValidationError, schema: type[BaseModel]) -> str:
    """For the first error: the valid fields beside an unknown one, or what the bad field means."""
    loc = _field_loc(exc.errors()[0]["loc"])
    if not loc:
        return ""
    parent = _model_at(schema, loc[:-1])
    if parent is None:
        return ""
    if exc.errors()[0]["type"] == "extra_forbidden":
        where = format_path(loc[:-1])
        return f"valid fields{f' in {where}' if where else ''}: {', '.join(parent.model_fields)}"
    field = parent.model_fields.get(str(loc[-1]))
    return f"{format_path(loc)}: {field.description}" if field is not None and field.description else ""


def format_path(loc: Iterable[Any]) -> str:
    """``("models", 0, "port")`` -> ``models[0].port``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f"{'.' if text else ''}{part}"
    return text


def _short(value: Any) -> str | None:
    if isinstance(value, (dict, list, tuple, set, BaseModel)):
        return None
    text = repr(str(value) if isinstance(value, PurePath) else value)
    return text if len(text) <= 80 else text[:77] + "..."


def _field_loc(loc: Iterable[Any]) -> list[Any]:
    """pydantic's loc without the union-member tags it adds (``workers.int``, ``x.literal['auto']``)."""
    return [part for part in loc if not (isinstance(part, str) and ("[" in part or part in _TYPE_TAGS))]


_TYPE_TAGS = {"int", "float", "str", "bool", "none", "list", "dict", "function-after", "function-plain"}


def _closest(schema: type[BaseModel], loc: list[Any]) -> str | None:
    parent = _model_at(schema, loc[:-1])
    if parent is None:
        return None
    close = difflib.get_close_matches(str(loc[-1]), list(parent.model_fields), n=1, cutoff=0.6)
    return format_path([*loc[:-1], close[0]]) if close else None


def _model_at(schema: type[BaseModel], loc: Iterable[Any]) -> type[BaseModel] | None:
    """The pydantic model that holds the fields at ``loc`` (list indices and dict keys pass through)."""
    current: type[BaseModel] | None = schema
    for part in loc:
        if isinstance(part, int):
            continue
        if current is None or part not in current.model_fields:
            return None
        current = _inner_model(current.model_fields[part].annotation)
    return current


def _members(annotation: Any) -> list[Any]:
    """The alternatives of a union, with Annotated[...] unwrapped."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _members(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [m for arg in typing.get_args(annotation) for m in _members(arg)]
    return [annotation]


def _inner_model(annotation: Any) -> type[BaseModel] | None:
    """The model inside ``Model``, ``Model | None``, ``list[Model]`` or ``dict[str, Model]``."""
    for member in _members(annotation):
        if isinstance(member, type) and issubclass(member, BaseModel):
            return member
        args = typing.get_args(member)
        if typing.get_origin(member) in (list, tuple, set, dict) and args:
            inner = _inner_model(args[-1])
            if inner is not None:
                return inner
    return None


def _resolve(node: Any, annotation: Any, loc: tuple[Any, ...], origins: dict[tuple[Any, ...], str]) -> Any:
    """Replace every :class:`Override` in ``node`` with its value, typed for the field it lands in."""
    if isinstance(node, Override):
        origins[loc] = node.origin
        return _typed(node, annotation)
    model = _inner_model(annotation) if annotation is not None else None
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            key = key.value() if isinstance(key, Override) else key  # noqa: PLW2901 - a number as a key
            field = model.model_fields.get(key) if model is not None else None
            inner = field.annotation if field is not None else _item_type(annotation)
            out[key] = _resolve(value, inner, (*loc, key), origins)
        return out
    if isinstance(node, list):
        return [_resolve(item, _item_type(annotation), (*loc, i), origins) for i, item in enumerate(node)]
    return node


def _item_type(annotation: Any) -> Any:
    for member in _members(annotation):
        args = typing.get_args(member)
        if typing.get_origin(member) in (list, tuple, set, dict) and args:
            return args[-1]
    return None


def _typed(override: Override, annotation: Any) -> Any:
    """The parsed value, except where the field takes text and not the parsed type: then the text
    as written (``alias=2024`` stays "2024"; ``AIFORGE_RAG_GENERATOR_MODEL=1.0`` stays "1.0")."""
    value = override.value()
    members = _members(annotation)
    if annotation is None or Any in members or not isinstance(value, (bool, int, float)):
        return value
    members = [m for m in members if isinstance(m, type)]
    takes_text = any(issubclass(m, (str, PurePath)) for m in members)
    takes_value = any(issubclass(type(value), m) or (m is float and type(value) is int) for m in members)
    return override.text.strip() if takes_text and not takes_value else value
