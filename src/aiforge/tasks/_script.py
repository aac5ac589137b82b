"""Which script a text is in, where a task picks its engine by it (OCR, speech synthesis)."""

from __future__ import annotations

import re

# Hangul syllables, Jamo and compatibility Jamo
HANGUL = re.compile("[\uac00-\ud7a3\u1100-\u11ff\u3130-\u318f]")


def has_hangul(text: str) -> bool:
    return HANGUL.search(text) is not None
