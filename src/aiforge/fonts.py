"""Which installed font draws a text's script, for the PNGs aiforge writes (confusion matrices, loss
curves) and for ``aiforge doctor``.

matplotlib's default font (DejaVu Sans) has no Hangul: Korean labels came out as empty boxes with a
``Glyph ... missing from font`` warning per character. :func:`families_for` returns a fallback chain,
the default font first (Latin text looks as before) and then, for any character it lacks, an
installed font that has it, preferring the CJK fonts each OS ships or installs
(``fonts-noto-cjk`` on Debian/Ubuntu, Apple SD Gothic Neo on macOS, Malgun Gothic on Windows).
matplotlib (>= 3.6) draws each glyph with the first family in the chain that has it.

matplotlib is imported inside the functions: importing this module stays free.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

HANGUL_SAMPLE = "한글"
# Tried first, in this order; any other installed font that has the glyph comes after them.
PREFERRED_FAMILIES = (
    "Noto Sans CJK KR",
    "Noto Sans KR",
    "Source Han Sans KR",
    "Apple SD Gothic Neo",
    "AppleGothic",
    "Malgun Gothic",
    "NanumGothic",
    "Noto Sans CJK JP",
    "Noto Sans CJK SC",
    "Noto Serif CJK KR",
)
FONT_INSTALL_FIX = {
    "linux": "`sudo apt-get install fonts-noto-cjk` (Fedora: `sudo dnf install google-noto-sans-cjk-fonts`)",
    "darwin": "macOS ships Apple SD Gothic Neo; if it was removed: `brew install --cask font-noto-sans-cjk`",
    "win32": "Windows ships Malgun Gothic; if it is missing: Settings > Time & language > Language > "
    "add Korean (its supplemental fonts)",
}


@functools.cache
def _charmap(path: str) -> frozenset[int]:
    from matplotlib.ft2font import FT2Font

    try:
        return frozenset(FT2Font(path).get_charmap())
    except (OSError, RuntimeError):  # unreadable or unsupported font file: it draws nothing
        return frozenset()


def _candidates() -> list[tuple[str, str]]:
    """(family, file) of every installed font, the preferred families first."""
    from matplotlib import font_manager

    entries = sorted({(f.name, f.fname) for f in font_manager.fontManager.ttflist})
    rank = {name: i for i, name in enumerate(PREFERRED_FAMILIES)}
    return sorted(entries, key=lambda entry: rank.get(entry[0], len(rank)))


@functools.cache
def family_for(char: str) -> str | None:
    """The family of an installed font that draws ``char`` (preferred families first), or None."""
    code = ord(char)
    return next((name for name, path in _candidates() if code in _charmap(path)), None)


def hangul_font() -> str | None:
    """An installed font family that draws Hangul, or None (Korean plot labels would be empty boxes)."""
    return family_for(HANGUL_SAMPLE[0])


@functools.cache
def _default_font() -> tuple[str, frozenset[int]]:
    from matplotlib import font_manager, rcParams

    path = font_manager.findfont(font_manager.FontProperties(family=rcParams["font.family"]))
    return font_manager.get_font(path).family_name, _charmap(path)


def families_for(texts: Iterable[str]) -> list[str]:
    """The fallback chain that draws every character of ``texts``: the default family, then one
    installed family per script the default lacks. Characters no installed font has are left out."""
    default, covered = _default_font()
    chain = [default]
    for char in sorted({c for text in texts for c in text if not c.isspace()}):
        if ord(char) in covered:
            continue
        family = family_for(char)
        if family is not None and family not in chain:
            chain.append(family)
    return chain


@contextmanager
def pyplot(texts: Iterable[str]) -> Iterator[Any]:
    """pyplot (Agg: files only, never needs a display) with fonts that draw every script in ``texts``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with plt.rc_context({"font.family": families_for(texts)}):
        yield plt
