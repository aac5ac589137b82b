"""The public Python API, exposed as ``aiforge.pipeline``, ``aiforge.train_model``,
``aiforge.serve_app``, ``aiforge.ingest`` and ``aiforge.ask``.

Each function is what the matching command runs, so the Python API and the CLI cannot drift apart:

=================================  ===========================================================
``pipeline(task, model)``          ``aiforge run TASK --model MODEL`` (the same ``load_pipeline``)
``train_model(config, sets)``      ``aiforge train CONFIG --set ...`` (local backend)
``sweep(spec, sets)``              ``aiforge sweep SWEEP.yaml --set ...`` (local backend)
``serve_app(config, models)``      ``aiforge serve`` (the same app factory, not yet listening)
``ingest(paths, index=...)``       ``aiforge rag ingest PATHS --index NAME`` (local backend)
``ask(question, index=...)``       ``aiforge rag ask QUESTION --index NAME``
=================================  ===========================================================

Settings follow the one grammar of :mod:`aiforge.config`: defaults < config file (or mapping) <
``AIFORGE_<COMMAND>_<KEY>`` environment variables < ``sets`` (``--set KEY=VALUE`` strings). Errors
are :class:`aiforge.errors.AiforgeError` with a code, the problem and the fix, as the CLI prints them.

Training is ``train_model``, not ``train``: ``aiforge.train`` is the training package, and Python sets
a package's attribute to its subpackage as soon as that is imported, so a function of that name
would be replaced by the module.

Importing this module is light: each function imports its libraries when it runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from aiforge.tasks import load_pipeline as pipeline

if TYPE_CHECKING:
    from fastapi import FastAPI

    from aiforge.rag import Answer, IngestReport, RagSettings
    from aiforge.sweeps import SweepResult, SweepSpec
    from aiforge.train import TrainConfig
    from aiforge.train.report import TrainResult

_Loaded = TypeVar("_Loaded")

__all__ = ["ask", "ask_stream", "ingest", "pipeline", "serve_app", "sweep", "train_model"]


def train_model(
    config: str | Path | Mapping[str, Any] | TrainConfig,
    sets: Sequence[str] = (),
    *,
    resume: bool = False,
    strict: bool = False,
) -> TrainResult:
    """Fine-tune, evaluate, save, track and register a model, as ``aiforge train CONFIG`` does.

    Args:
        config: a train.yaml path, the same fields as a mapping, or a loaded ``TrainConfig`` (used as
            given). ``aiforge train --init TASK`` prints a commented template of every field.
        sets: ``KEY=VALUE`` overrides (``--set``), e.g. ``["training.epochs=1"]``; they win over the
            config and over ``AIFORGE_TRAIN_*`` environment variables. Not allowed with a ``TrainConfig``.
        resume: continue from the last checkpoint in ``output_dir`` (``--resume``).
        strict: fail on empty or undecodable rows instead of skipping them (``--strict``).

    Returns:
        The ``TrainResult``: ``model_dir``, ``metrics`` (validation and test), the ``baseline``'s
        metrics and, when tracked and registered, ``ref`` (``registry:NAME@ALIAS``).
    """
    from aiforge import train as training

    loaded = _load_with_sets(config, sets, training.TrainConfig, training.load_config)
    return training.train(loaded, resume=resume, strict=strict)


def sweep(
    spec: str | Path | Mapping[str, Any] | SweepSpec,
    sets: Sequence[str] = (),
    *,
    resume: bool = False,
) -> SweepResult:
    """Search training configs (grid, random or TPE), as ``aiforge sweep SWEEP.yaml`` does.

    Args:
        spec: a sweep.yaml path, the same fields as a mapping, or a loaded ``SweepSpec``:
            ``train`` (a train.yaml path or its fields), ``parameters`` (dotted training-config
            paths -> a list of values or ``{low, high, log, step}``), ``method``, ``trials``...
        sets: ``KEY=VALUE`` overrides of the sweep's fields (``--set``), e.g. ``["trials=8"]``.
        resume: continue the interrupted sweep in ``output_dir`` (``--resume``).

    Returns:
        The ``SweepResult``: ``rows`` (one per trial: values, state, metric, compute), ``best``,
        and the written table and plots in ``artifacts``. Each trial is an ordinary training run.
    """
    from aiforge import sweeps

    loaded = _load_with_sets(spec, sets, sweeps.SweepSpec, sweeps.load_spec)
    return sweeps.run_sweep(loaded, resume=resume)


def serve_app(
    config: str | Path | None = None,
    models: Sequence[str] = (),
    *,
    sets: Sequence[str] = (),
) -> FastAPI:
    """The FastAPI app ``aiforge serve`` runs, for any ASGI server or test client.

    Args:
        config: a serve.yaml path (optional when ``models`` are given).
        models: model specs as on the command line: ``[NAME=]TASK[:MODEL]`` or ``[NAME=]MODEL``,
            e.g. ``["sentiment=text-classification:runs/nsmc-sentiment/model"]``.
        sets: ``KEY=VALUE`` overrides (``--set``): ``models.max_batch_size=16``,
            ``models.NAME.timeout_s=5``; they win over the file and ``AIFORGE_SERVE_*`` variables.

    The models load when the app starts (its lifespan), in the background: ``GET /readyz`` answers
    200 once every model is ready. Host and port settings apply only to ``aiforge serve`` itself.
    """
    from aiforge.serve import create_app, load_settings

    return create_app(load_settings(config, models, sets=sets))


def ingest(
    paths: Sequence[str | Path],
    *,
    index: str,
    config: str | Path | None = None,
    sets: Sequence[str] = (),
    name: str | None = None,
) -> IngestReport:
    """Parse, chunk and embed documents into ``index``, as ``aiforge rag ingest PATHS --index NAME``.

    Args:
        paths: files or folders (txt, md, html, pdf, docx, SQuAD json); re-ingesting embeds only
            what changed.
        index: the index name (created on first use; embedded indexes live under ``home``,
            default ``$AIFORGE_HOME/rag``).
        config: a YAML file of RAG settings (``--config``).
        sets: ``KEY=VALUE`` overrides (``--set``), e.g. ``["chunk_tokens=200"]``.
        name: what answers call the source (``--name``): a file's name, or a prefix for a
            folder's files (default: each file's path inside the folder).

    Returns:
        The ``IngestReport`` (``to_dict()`` is what ``--json`` prints); files that failed are listed
        in it rather than raised.
    """
    from aiforge.rag import ingest as ingest_paths

    return ingest_paths([str(p) for p in paths], index, rag_settings(config, sets), name=name)


def ask(
    question: str,
    *,
    index: str,
    config: str | Path | None = None,
    sets: Sequence[str] = (),
    top_k: int | None = None,
    source: str | None = None,
    generate: bool = False,
    model: str | None = None,
) -> Answer:
    """Answer ``question`` from ``index`` with checked citations, as ``aiforge rag ask``.

    Args:
        question: the question, in any language the embedder reads (Korean and English by default).
        index: the index name given to :func:`ingest`.
        config: a YAML file of RAG settings (``--config``).
        sets: ``KEY=VALUE`` overrides (``--set``), e.g. ``["qa_model=path/to/qa-model"]``.
        top_k: chunks retrieved (``--top-k``; default: the ``top_k`` setting).
        source: only chunks of sources matching this glob (``--source``).
        generate: an LLM writes the answer from the numbered sources (``--generate``), each of its
            statements checked against them; the ``generate`` setting does the same.
        model: the LLM (``--model``; the ``generator`` setting): a packaged name, GGUF file, hub id
            or local model; default: text-generation's default (the packaged SmolLM2 offline).

    Returns:
        The ``Answer``: ``answer``, ``found`` (False when the documents do not contain it) and
        ``citations`` (source, page, character offsets, whether the quote matches the stored text);
        a written answer also has ``statements``, each ``supported`` or not.
    """
    from aiforge.rag import ask as answer

    filters = {"source": source} if source else None
    settings = rag_settings(config, sets, generate=generate, model=model)
    return answer(question, index, settings, top_k=top_k, filters=filters)


def ask_stream(
    question: str,
    *,
    index: str,
    config: str | Path | None = None,
    sets: Sequence[str] = (),
    top_k: int | None = None,
    source: str | None = None,
    model: str | None = None,
) -> Iterator[dict[str, Any]]:
    """:func:`ask` with ``generate=True``, as the answer is written (``aiforge rag ask --generate``
    prints it so): ``{"event": "chunks"}``, ``{"event": "delta", "text"}`` per piece, then
    ``{"event": "answer", ...}``, the checked answer as ``Answer.to_dict()`` gives it."""
    from aiforge.rag import stream_query

    filters = {"source": source} if source else None
    settings = rag_settings(config, sets, generate=True, model=model)
    return stream_query(index, question, top_k=top_k, filters=filters, settings=settings)


def rag_settings(
    config: str | Path | None = None,
    sets: Sequence[str] = (),
    *,
    generate: bool = False,
    model: str | None = None,
) -> RagSettings:
    """The settings every ``aiforge rag`` command builds from ``--config`` and ``--set``; ``generate``
    and ``model`` are the ``--generate`` and ``--model`` flags (the ``generate`` and ``generator``
    settings, which ``--set`` still overrides)."""
    from aiforge.rag import RagSettings

    overrides = {"generate": generate or None, "generator": model}
    return RagSettings.load(config, sets, overrides=overrides)


def _load_with_sets(
    source: Any, sets: Sequence[str], model: type[_Loaded], load: Callable[..., _Loaded]
) -> _Loaded:
    """A config given as a path, a mapping or an already-loaded model, with ``--set`` overrides:
    the one loading rule of ``train_model`` and ``sweep`` (a loaded model is used as given)."""
    if isinstance(source, model):
        if sets:
            raise TypeError(f"sets apply to a path or mapping; change a {model.__name__} with model_copy()")
        return source
    if isinstance(source, Mapping):
        return load(None, list(sets), base=dict(source))
    return load(source, list(sets))
