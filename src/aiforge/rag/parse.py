"""Documents -> plain text with page starts and headings, so every chunk can be cited exactly.

Each parser returns a :class:`ParsedDocument` whose ``text`` is the document's *original text* in
the sense citations use: for txt and md the decoded file itself (markdown is not stripped, so
offsets are offsets into the file), for html the visible text with one line per block element,
for pdf the pages' extracted text joined by a blank line (``page_starts`` says where each page
begins), for docx the paragraphs and table rows one per line. The text is stored in the index, so a
citation's ``text[start:end]`` can always be checked, even after the file changed on disk.

A file that cannot be parsed raises ``AiforgeError("AF-RAG-003")`` naming the file and the reason;
the ingest reports it and goes on with the other files.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiforge.errors import AiforgeError, require

PAGE_SEPARATOR = "\n\n"
# A DOCX is a ZIP of XML: a few kilobytes can expand to gigabytes (a decompression bomb). Real
# documents' XML stays far below this; the declared sizes are checked before anything is inflated,
# and zipfile never inflates a member past its declared size.
MAX_DOCX_UNPACKED_BYTES = 256 * 2**20
# PDFs: pypdf stops inflating a stream at its own limit (75 MB by default) and raises
# LimitReachedError, reported as a bomb below. A file of many small pages is the other way to make
# extraction run for hours (about 3 ms a page here): past this many pages the file is refused.
MAX_PDF_PAGES = 5000


@dataclass
class Heading:
    offset: int  # where the heading's section starts in ``text``
    level: int  # 1 = top level
    title: str


@dataclass
class ParsedDocument:
    text: str
    kind: str  # txt | md | html | pdf | docx
    page_starts: list[int] = field(default_factory=lambda: [0])  # offset of each page, page 1 first
    headings: list[Heading] = field(default_factory=list)
    title: str = ""  # a document-level title (file stem, <title>, docx core title)
    image: bytes | None = None  # a picture's bytes (kind "image"): the image index embeds these

    def page_at(self, offset: int) -> int:
        """1-based page of a character offset."""
        return max(1, bisect.bisect_right(self.page_starts, offset))

    def heading_at(self, offset: int) -> str:
        """The heading path in effect at ``offset``, e.g. ``"Install > Linux"``; the title when none."""
        path: list[Heading] = []
        for heading in self.headings:
            if heading.offset > offset:
                break
            path = [h for h in path if h.level < heading.level] + [heading]
        titles = [h.title for h in path]
        if self.title and (not titles or titles[0] != self.title):
            titles.insert(0, self.title)
        return " > ".join(titles)

    def hard_breaks(self) -> list[int]:
        """Offsets a chunk never spans: page starts and heading starts."""
        return sorted({*self.page_starts[1:], *(h.offset for h in self.headings if h.offset > 0)})


def _parse_error(path: Path, reason: str) -> AiforgeError:
    return AiforgeError(
        "AF-RAG-003",
        f"could not parse '{path}': {reason}",
        "check that the file opens in its usual viewer; re-export or convert it, or leave it out",
    )


def _decode(path: Path, data: bytes) -> str:
    for encoding in ("utf-8-sig", "cp949"):  # cp949: Korean files saved by older Windows tools
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise _parse_error(path, "not valid UTF-8 or CP949 text")


def parse_text(path: Path, data: bytes) -> ParsedDocument:
    text = _decode(path, data).replace("\r\n", "\n")
    return ParsedDocument(text, "txt", title=path.stem)


_MD_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$", re.MULTILINE)


def parse_markdown(path: Path, data: bytes) -> ParsedDocument:
    text = _decode(path, data).replace("\r\n", "\n")
    headings = [Heading(m.start(), len(m.group(1)), m.group(2).strip()) for m in _MD_HEADING.finditer(text)]
    return ParsedDocument(text, "md", headings=headings, title=path.stem)


_HTML_BLOCKS = (
    "p",
    "div",
    "li",
    "td",
    "th",
    "pre",
    "blockquote",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "section",
    "article",
    "tr",
    "dt",
    "dd",
    "caption",
    "figcaption",
)


def parse_html(path: Path, data: bytes) -> ParsedDocument:
    bs4 = require("bs4", "rag")
    soup = bs4.BeautifulSoup(data, "html.parser")
    for tag in soup(["script", "style", "noscript", "template"]):
        tag.decompose()
    title = soup.title.get_text(" ", strip=True) if soup.title else path.stem
    if soup.title:
        soup.title.decompose()
    lines: list[str] = []
    headings: list[Heading] = []
    offset = 0
    # innermost blocks only: a <div> wrapping <p>s would otherwise repeat their text
    for block in soup.find_all(_HTML_BLOCKS):
        if block.find(_HTML_BLOCKS):
            continue
        line = " ".join(block.get_text(" ", strip=True).split())
        if not line:
            continue
        if block.name in ("h1", "h2", "h3", "h4", "h5", "h6"):
            headings.append(Heading(offset, int(block.name[1]), line))
        lines.append(line)
        offset += len(line) + 1
    if not lines:  # no block markup at all: the visible text as it is
        lines = [" ".join(soup.get_text(" ", strip=True).split())]
    return ParsedDocument("\n".join(lines), "html", headings=headings, title=title)


def _join_pages(pages: list[str]) -> tuple[str, list[int]]:
    starts, offset = [], 0
    for page in pages:
        starts.append(offset)
        offset += len(page) + len(PAGE_SEPARATOR)
    return PAGE_SEPARATOR.join(pages), starts or [0]


def parse_pdf(path: Path, data: bytes) -> ParsedDocument:
    pypdf = require("pypdf", "rag")
    import io

    reader = pypdf.PdfReader(io.BytesIO(data))
    if reader.is_encrypted:
        raise _parse_error(path, "the PDF is encrypted")
    if len(reader.pages) > MAX_PDF_PAGES:
        raise _parse_error(
            path, f"{len(reader.pages)} pages, over the limit of {MAX_PDF_PAGES}: split the file first"
        )
    try:
        pages = [(page.extract_text() or "").replace("\r\n", "\n").strip() for page in reader.pages]
    except pypdf.errors.LimitReachedError as exc:
        raise _parse_error(
            path, f"a stream inflates past pypdf's decompression limit (a decompression bomb?): {exc}"
        ) from None
    if not any(pages):
        raise _parse_error(
            path, f"no extractable text in {len(pages)} page(s) (a scanned PDF needs OCR first)"
        )
    text, starts = _join_pages(pages)
    meta_title = (reader.metadata.title if reader.metadata else None) or path.stem
    return ParsedDocument(text, "pdf", page_starts=starts, title=str(meta_title))


def parse_docx(path: Path, data: bytes) -> ParsedDocument:
    docx = require("docx", "rag")
    import io

    refuse_zip_bomb(path, data, MAX_DOCX_UNPACKED_BYTES)
    document = docx.Document(io.BytesIO(data))
    lines: list[str] = []
    headings: list[Heading] = []
    offset = 0
    for block in document.iter_inner_content():
        if hasattr(block, "rows"):  # a table: one line per row, cells separated by " | "
            rows = [" | ".join(c.text.strip() for c in row.cells) for row in block.rows]
            block_lines = [r for r in rows if r.strip(" |")]
        else:
            block_lines = [block.text.strip()] if block.text.strip() else []
            level = _docx_heading_level(block.style.name if block.style is not None else "")
            if block_lines and level:
                headings.append(Heading(offset, level, block_lines[0]))
        for line in block_lines:
            lines.append(line)
            offset += len(line) + 1
    title = document.core_properties.title or path.stem
    return ParsedDocument("\n".join(lines), "docx", headings=headings, title=title)


def refuse_zip_bomb(path: Path, data: bytes, limit: int) -> None:
    """AF-RAG-003 when the ZIP in ``data`` declares more than ``limit`` bytes once unpacked."""
    import io
    import zipfile

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            unpacked = sum(member.file_size for member in archive.infolist())
    except zipfile.BadZipFile as exc:
        raise _parse_error(path, f"not a ZIP archive ({exc})") from None
    if unpacked > limit:
        raise _parse_error(
            path,
            f"unpacks to {unpacked:,} bytes, over the {limit:,}-byte limit (a decompression bomb?)",
        )


def _docx_heading_level(style: str) -> int:
    if style == "Title":
        return 1
    match = re.match(r"Heading (\d)", style)
    return int(match.group(1)) if match else 0


PARSERS: dict[str, Callable[[Path, bytes], ParsedDocument]] = {
    ".txt": parse_text,
    ".text": parse_text,
    ".md": parse_markdown,
    ".markdown": parse_markdown,
    ".html": parse_html,
    ".htm": parse_html,
    ".pdf": parse_pdf,
    ".docx": parse_docx,
}


def supported(path: Path) -> bool:
    return path.suffix.lower() in PARSERS


# What an image index (a CLIP embedder) ingests; a text index skips these files as before.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def parse_image(path: Path, data: bytes) -> ParsedDocument:
    """A picture -> a document whose text is its file name (what a citation names) and whose bytes
    the image embedder reads. AF-INPUT-005 for a file that is not a picture, AF-INPUT-003 for one
    that does not decode (checked here, so the ingest reports that file and goes on)."""
    from aiforge.media import load_image

    if not is_image(path):
        raise AiforgeError(
            "AF-INPUT-005",
            f"'{path}': an image index holds pictures, not '{path.suffix or '(none)'}' files",
            f"ingest {', '.join(IMAGE_SUFFIXES)} files here; put documents in a text index (another --index)",
        )
    load_image(data, name=str(path))
    return ParsedDocument(path.name, "image", title=path.stem, image=data)


def parse_file(path: Path, data: bytes) -> ParsedDocument:
    """Parse ``data`` (the bytes of ``path``); AF-INPUT-005 for an unsupported type, AF-RAG-003 if corrupt."""
    parser = PARSERS.get(path.suffix.lower())
    if parser is None:
        raise AiforgeError(
            "AF-INPUT-005",
            f"'{path}': unsupported file type '{path.suffix or '(none)'}'",
            f"supported: {', '.join(sorted(PARSERS))}; convert the file or leave it out",
        )
    try:
        parsed = parser(path, data)
    except AiforgeError:
        raise
    except Exception as exc:  # any parser failure means this file is unreadable
        raise _parse_error(path, f"{type(exc).__name__}: {exc}") from exc
    if not parsed.text.strip():
        raise _parse_error(path, "the document contains no text")
    return parsed
