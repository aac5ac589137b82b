"""Terminal tables that never break a name (task, model, package) across lines.

A name cut in two ("text-classificat / ion") cannot be read or copied. :func:`print_table` keeps
name columns whole and lets only the other columns fold; when the names alone and a readable
minimum of the other columns do not fit the terminal, it prints one record per block instead::

    text-classification
      backend   transformers
      input     text: str

``--json`` stays the machine interface; this is for people.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from rich.console import Console, Group, RenderableType
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

MIN_FOLDED_WIDTH = 10  # a folded column narrower than this is unreadable: switch to records instead
MAX_WORD_KEPT = 16  # a folded column is kept at least as wide as its longest word, up to this
RECORD_INDENT = 2


def _lines(text: Text) -> list[str]:
    return text.plain.split("\n")


def _full_width(header: str, cells: Sequence[Text]) -> int:
    return max([len(header), *(Text(line).cell_len for cell in cells for line in _lines(cell))])


def _longest_word(cells: Sequence[Text]) -> int:
    return max((Text(word).cell_len for cell in cells for word in cell.plain.split()), default=0)


def column_widths(
    headers: Sequence[str], rows: Sequence[Sequence[Text]], names: Collection[str], width: int
) -> list[int] | None:
    """Content widths for a boxed table of ``width`` columns: names at their full width, the other
    columns shared the rest (each at least its longest word, or ``MIN_FOLDED_WIDTH``), or None when
    that cannot fit."""
    full = [_full_width(h, [row[i] for row in rows]) for i, h in enumerate(headers)]
    floor = [
        f
        if h in names
        else min(f, max(MIN_FOLDED_WIDTH, min(_longest_word([r[i] for r in rows]), MAX_WORD_KEPT)))
        for i, (h, f) in enumerate(zip(headers, full, strict=True))
    ]
    room = width - (len(headers) + 1) - 2 * len(headers)  # borders, and one space of padding each side
    spare = room - sum(floor)
    if spare < 0:
        return None
    widths = list(floor)
    growing = [i for i, h in enumerate(headers) if h not in names and widths[i] < full[i]]
    while spare > 0 and growing:  # share what is left evenly among the folded columns
        for i in list(growing):
            if spare == 0:
                break
            widths[i] += 1
            spare -= 1
            if widths[i] == full[i]:
                growing.remove(i)
    return widths


def print_table(
    console: Console,
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    names: Collection[str],
    title: str | None = None,
) -> None:
    """``rows`` (cells may hold rich markup and newlines) as a table whose ``names`` columns are
    never wrapped, or as one block per row (the first column its heading) when that cannot fit."""
    cells = [[Text.from_markup(cell) for cell in row] for row in rows]
    widths = column_widths(headers, cells, names, console.width)
    if widths is None:
        console.print(_records(headers, cells, title))
        return
    table = Table(title=title, show_lines=True)
    for header, width in zip(headers, widths, strict=True):
        table.add_column(header, width=width, no_wrap=header in names, overflow="fold")
    for row in cells:
        table.add_row(*row)
    console.print(table)


def _records(headers: Sequence[str], rows: list[list[Text]], title: str | None) -> Group:
    blocks: list[RenderableType] = [Text(title, style="bold underline")] if title else []
    for row in rows:
        fields = Table.grid(padding=(0, 2))
        fields.add_column(no_wrap=True, style="dim")
        fields.add_column(overflow="fold")
        for header, cell in zip(headers[1:], row[1:], strict=True):
            fields.add_row(header, cell)
        heading = row[0].copy()
        heading.stylize("bold")
        blocks += [heading, Padding(fields, (0, 0, 1, RECORD_INDENT), expand=False)]
    return Group(*blocks)
