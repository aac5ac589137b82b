"""``ingest(paths, index)``: files -> parsed text -> chunks -> embeddings -> one atomic commit per batch.

The index's manifest (``sources``: id + sha256 of the bytes) decides what to do with each file:
unchanged files are skipped without parsing, new and changed files are parsed and embedded,
files that disappeared from an ingested folder have their chunks dropped. Chunks of a changed
file whose text is identical to a chunk already in the index reuse its vector, so editing one
section of a long document embeds only that section.

Work is committed in batches (a batch is as many whole files as fill ``batch_size`` chunks), each in
one transaction with its manifest entries. If the process dies (Ctrl-C, crash, power loss), every
file is either fully in the index or not at all, and the next ingest picks up where it stopped,
because the manifest only lists committed files. A file that cannot be read or parsed is reported
by name and the rest goes on.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np

from aiforge.errors import AiforgeError
from aiforge.io import resolve_data_path
from aiforge.rag.bm25 import encode_terms
from aiforge.rag.chunk import chunk_spans
from aiforge.rag.embed import (
    Embedder,
    ImageEmbedder,
    embedder_is_image_text,
    embeds_images,
    load_embedder,
)
from aiforge.rag.index import check_settings, open_store
from aiforge.rag.parse import ParsedDocument, is_image, parse_file, parse_image, supported
from aiforge.rag.settings import RagSettings
from aiforge.rag.store import ChunkRecord, DocumentRecord, SourceRecord, SourceUpdate, Store

COMPACT_DEAD_SHARE = 0.5  # compact when more than this share of rows are tombstones


@dataclass
class SourceInput:
    """Something to ingest: a file on disk, or a document given in memory (benchmarks, APIs)."""

    source_id: str  # internal: the absolute path, so a re-ingest finds the file again
    content_hash: str
    load: Callable[[], ParsedDocument]
    name: str = ""  # what clients see: the path relative to the ingested folder, or the name given

    @classmethod
    def from_file(cls, path: Path, name: str = "", image: bool = False) -> SourceInput:
        """``image``: the file is read as a picture for an image index (``parse_image``)."""
        data = path.read_bytes()
        parse = parse_image if image else parse_file
        return cls(str(path), hashlib.sha256(data).hexdigest(), lambda: parse(path, data), name or path.name)

    @classmethod
    def from_text(
        cls, source_id: str, text: str, title: str = "", kind: str = "txt", name: str = ""
    ) -> SourceInput:
        digest = hashlib.sha256(f"{title}\0{text}".encode()).hexdigest()
        return cls(source_id, digest, lambda: ParsedDocument(text, kind, title=title), name)


ParseAhead = Callable[[list[SourceInput]], list[SourceInput]]


@dataclass
class IngestReport:
    index: str
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: int = 0
    deleted: list[str] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)  # {"source", "code", "message"}
    chunks_embedded: int = 0
    chunks_reused: int = 0
    chunks_total: int = 0  # live chunks in the index after the ingest
    seconds: float = 0.0

    @property
    def chunks_per_second(self) -> float:
        return self.chunks_embedded / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "chunks_per_second": round(self.chunks_per_second, 2)}


def _fail(report: IngestReport, source: str, exc: AiforgeError) -> None:
    report.failed.append({"source": source, "code": exc.code, "message": exc.message})


def _escapes(relative: Path, root: Path) -> AiforgeError:
    return AiforgeError(
        "AF-INPUT-001",
        f"'{relative}' is a link to a file outside '{root}': skipped",
        "copy the file into the folder, or ingest its own path explicitly",
    )


def collect_files(
    paths: Iterable[str | Path],
    report: IngestReport,
    name: str | None = None,
    accepts: Callable[[Path], bool] = supported,
) -> tuple[dict[Path, str], list[Path]]:
    """({file to consider: its name for clients}, folders walked). A file in a folder is named by its
    path relative to the folder (``guide/install.md``, under ``name/`` when a name is given), a
    file given alone by ``name`` or its file name. Missing paths go to ``report``."""
    files: dict[Path, str] = {}
    roots: list[Path] = []
    prefix = f"{name.strip('/')}/" if name else ""
    for raw in paths:
        path = resolve_data_path(raw).resolve()  # packaged:guide_ko = the bundled Korean guide
        if path.is_dir():
            roots.append(path)
            for p in sorted(path.rglob("*")):
                relative = p.relative_to(path)
                if p.is_file() and accepts(p) and not any(part.startswith(".") for part in relative.parts):
                    if not p.resolve().is_relative_to(path):  # a link out of the folder: never follow it
                        _fail(report, str(p), _escapes(relative, path))
                        continue
                    files.setdefault(p, prefix + relative.as_posix())
        elif path.is_file():
            files.setdefault(path, name or path.name)
        else:
            _fail(
                report, str(path), AiforgeError("AF-INPUT-001", f"'{path}' does not exist", "check the path")
            )
    return files, roots


def ingest(
    paths: Iterable[str | Path],
    index: str,
    settings: RagSettings | None = None,
    embedder: Embedder | None = None,
    parse_ahead: ParseAhead | None = None,
    name: str | None = None,
) -> IngestReport:
    """Ingest files and folders into ``index`` (created on first use); see the module docstring.

    Clients see each source by its path relative to the ingested folder, or by ``name`` (one file's
    name, or the prefix of one folder's files); the absolute path stays internal, for re-ingest.
    ``parse_ahead`` may start parsing the files to ingest elsewhere (``aiforge.scale.ingest`` parses
    them on Ray workers); it returns the same sources, whose ``load`` then waits for that result.
    """
    paths = list(paths)
    if name and len(paths) != 1:
        raise AiforgeError(
            "AF-CONFIG-001", "a source name names one file or folder", "ingest each path with its own --name"
        )
    report = IngestReport(index)
    images = embeds_images(embedder) if embedder else is_image_index(index, settings or RagSettings())
    files, roots = collect_files(paths, report, name, is_image if images else supported)
    sources: list[SourceInput] = []
    prefixes = [str(r) + os.sep for r in roots]
    for path, source_name in files.items():
        try:
            if path.suffix.lower() == ".json" and not images:  # SQuAD / KorQuAD: a document per paragraph
                sources.extend(squad_sources(path, source_name))
                prefixes.append(f"{path}#")
            else:
                sources.append(SourceInput.from_file(path, source_name, image=images))
        except OSError as exc:
            unreadable = AiforgeError("AF-INPUT-001", f"cannot read '{path}': {exc.strerror}", "")
            _fail(report, str(path), unreadable)
        except AiforgeError as exc:
            _fail(report, str(path), exc)
    prune = prefixes if (settings or RagSettings()).prune else []
    return ingest_sources(
        sources, index, settings, embedder, prune_under=prune, report=report, parse_ahead=parse_ahead
    )


def is_image_index(index: str, settings: RagSettings) -> bool:
    """Whether ``index`` holds pictures: its embedder (the one asked for, else the one it was built
    with) is a CLIP-style model."""
    embedder = settings.embedder
    if "embedder" not in settings.model_fields_set:
        try:
            store = open_store(index, settings)
        except AiforgeError:  # a new index: the default embedder
            return embedder_is_image_text(embedder)
        try:
            embedder = store.config().get("embedder", embedder) if store.has_config() else embedder
        finally:
            store.close()
    return embedder_is_image_text(embedder)


def squad_sources(path: Path, name: str = "") -> list[SourceInput]:
    """The paragraphs of a SQuAD-format file (KorQuAD) as documents ``<path>#<title>/<n>`` (named
    ``<name>#<title>/<n>``) titled by their article, so ``aiforge rag eval`` can use the same file's
    questions against them."""
    name = name or path.name
    try:
        articles = json.loads(path.read_text(encoding="utf-8"))["data"]
        return [
            SourceInput.from_text(
                f"{path}#{a['title']}/{i}", p["context"], title=a["title"], name=f"{name}#{a['title']}/{i}"
            )
            for a in articles
            for i, p in enumerate(a["paragraphs"])
        ]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise AiforgeError(
            "AF-INPUT-005",
            f"'{path}': a .json file must be SQuAD format (data[].paragraphs[].context) ({exc!r})",
            "convert it to txt/md/html/pdf/docx, or to SQuAD JSON",
        ) from None


def ingest_sources(
    sources: list[SourceInput],
    index: str,
    settings: RagSettings | None = None,
    embedder: Embedder | None = None,
    prune_under: Iterable[str] = (),
    report: IngestReport | None = None,
    parse_ahead: ParseAhead | None = None,
) -> IngestReport:
    """Ingest prepared sources; manifest entries that start with a ``prune_under`` prefix and are
    not in ``sources`` are deleted (a folder's removed files: prefix ``"/path/to/folder/"``)."""
    settings = settings or RagSettings()
    report = report or IngestReport(index)
    started = time.perf_counter()
    store = open_store(index, settings, create=True)
    try:
        with store.writer():
            settings, embedder = _prepare(store, index, settings, embedder)
            manifest = store.sources()
            seen = {s.source_id for s in sources}
            deletions = [
                sid
                for sid in manifest
                for prefix in prune_under
                if sid.startswith(prefix) and sid not in seen
            ]
            todo = [
                s
                for s in sources
                if manifest.get(s.source_id) is None or manifest[s.source_id].content_hash != s.content_hash
            ]
            report.unchanged = len(sources) - len(todo)
            renamed = {
                s.source_id: s.name
                for s in sources
                if s.name and s.source_id in manifest and manifest[s.source_id].name != s.name
            }
            if renamed:  # unchanged files of an index from before names, or a new --name: no re-embedding
                store.rename_sources(renamed)
            if parse_ahead is not None:
                todo = parse_ahead(todo)
            if deletions:
                store.commit([], deletions)
                report.deleted = sorted(set(deletions))
            _run_batches(store, todo, manifest, settings, embedder, report)
            if todo or deletions:
                _finish(store)
            report.chunks_total = store.live_count()
    finally:
        store.close()
    report.seconds = time.perf_counter() - started
    return report


def _prepare(
    store: Store, index: str, settings: RagSettings, embedder: Embedder | None
) -> tuple[RagSettings, Embedder]:
    """Create the index's config on first ingest, or check ours against it."""
    exists = store.has_config()
    if exists:
        settings = check_settings(index, store.config(), settings)
    embedder = embedder or load_embedder(settings.embedder, settings.device)
    if not exists:
        modality = {"modality": "image"} if embeds_images(embedder) else {}
        store.initialise({**settings.index_fields(), "dim": int(embedder.dim), **modality})
    return settings, embedder


def _run_batches(
    store: Store,
    todo: list[SourceInput],
    manifest: dict[str, SourceRecord],
    settings: RagSettings,
    embedder: Embedder,
    report: IngestReport,
) -> None:
    bar = _progress(len(todo), settings)
    batch: list[tuple[SourceInput, ParsedDocument, list[ChunkRecord]]] = []
    pending_chunks = 0
    for source in todo:
        try:
            parsed = source.load()
        except AiforgeError as exc:
            _fail(report, source.source_id, exc)
            bar.update(1)
            continue
        chunks = _chunk(source, parsed, settings, embedder)
        batch.append((source, parsed, chunks))
        pending_chunks += len(chunks)
        if pending_chunks >= settings.batch_size:
            _embed_and_commit(store, batch, manifest, settings, embedder, report)
            bar.update(len(batch))
            batch, pending_chunks = [], 0
    if batch:
        _embed_and_commit(store, batch, manifest, settings, embedder, report)
        bar.update(len(batch))
    bar.close()


def _chunk(
    source: SourceInput, parsed: ParsedDocument, settings: RagSettings, embedder: Embedder
) -> list[ChunkRecord]:
    doc_key = f"{source.source_id}@{source.content_hash[:12]}"
    if parsed.kind == "image":  # one chunk, the picture: vectors are reused by content, not by name
        text = parsed.text
        return [
            ChunkRecord(source.source_id, doc_key, 0, 1, "", "image", 0, len(text), text, source.content_hash)
        ]
    out = []
    spans = chunk_spans(parsed, embedder.count_tokens, settings.chunk_tokens, settings.chunk_overlap)
    for ordinal, span in enumerate(spans):
        text = parsed.text[span.start : span.end]
        heading = parsed.heading_at(span.start)
        out.append(
            ChunkRecord(
                source.source_id,
                doc_key,
                ordinal,
                parsed.page_at(span.start),
                heading,
                parsed.kind,
                span.start,
                span.end,
                text,
                hashlib.sha1(embed_text(heading, text, settings).encode()).hexdigest(),
            )
        )
    return out


def embed_text(heading: str, text: str, settings: RagSettings) -> str:
    """What the embedder and BM25 see for a chunk: the heading path gives a bare paragraph its topic."""
    return f"{heading}\n{text}" if settings.embed_heading and heading else text


def _embed_and_commit(
    store: Store,
    batch: list[tuple[SourceInput, ParsedDocument, list[ChunkRecord]]],
    manifest: dict[str, SourceRecord],
    settings: RagSettings,
    embedder: Embedder,
    report: IngestReport,
) -> None:
    chunks = [c for _, _, cs in batch for c in cs]
    reuse = store.reusable_vectors({c.text_hash for c in chunks})
    pictures = {
        c.text_hash: p.image for _, p, cs in batch for c in cs if p.image and c.text_hash not in reuse
    }
    texts = {
        c.text_hash: embed_text(c.heading, c.text, settings)
        for c in chunks
        if c.text_hash not in reuse and c.text_hash not in pictures
    }
    vectors: dict[str, np.ndarray] = dict(reuse)
    vectors.update(_embed_in_batches(texts, embedder.embed_passages, settings.batch_size))
    if pictures:  # only an image embedder's sources carry pictures (parse_image)
        vectors.update(
            _embed_in_batches(pictures, cast(ImageEmbedder, embedder).embed_images, settings.batch_size)
        )
    report.chunks_embedded += len(texts) + len(pictures)
    report.chunks_reused += sum(1 for c in chunks if c.text_hash in reuse)
    updates = []
    for source, parsed, cs in batch:
        document = DocumentRecord(
            cs[0].doc_key if cs else f"{source.source_id}@{source.content_hash[:12]}",
            source.source_id,
            parsed.text,
            parsed.page_starts,
        )
        record = SourceRecord(
            source.source_id, source.content_hash, parsed.kind, parsed.title, len(cs), name=source.name
        )
        matrix = (
            np.stack([vectors[c.text_hash] for c in cs]) if cs else np.zeros((0, embedder.dim), np.float32)
        )
        terms = [encode_terms(embed_text(c.heading, c.text, settings)) for c in cs]
        updates.append(SourceUpdate(record, document, cs, matrix, terms))
        (report.updated if source.source_id in manifest else report.added).append(source.source_id)
    store.commit(updates)


def _embed_in_batches(
    todo: dict[str, Any], embed: Callable[[list[Any]], np.ndarray], batch_size: int
) -> dict[str, np.ndarray]:
    """{hash: what to embed} -> {hash: vector}, ``batch_size`` items per call."""
    hashes = list(todo)
    vectors: dict[str, np.ndarray] = {}
    for i in range(0, len(hashes), batch_size):
        part = hashes[i : i + batch_size]
        vectors.update(zip(part, embed([todo[h] for h in part]), strict=True))
    return vectors


def _finish(store: Store) -> None:
    """Compact when tombstones dominate, then save the BM25 base segment readers load at open."""
    state = store.state()
    if state.n_rows and store.live_count() < (1 - COMPACT_DEAD_SHARE) * state.n_rows:
        state = store.compact()
    store.save_keyword_base()


class _NoBar:
    def update(self, n: int) -> None:
        return None

    def close(self) -> None:
        return None


def _progress(total: int, settings: RagSettings) -> Any:
    if not settings.progress or not sys.stderr.isatty() or total == 0:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, unit="file", desc="ingest", file=sys.stderr)
