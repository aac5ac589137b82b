"""Where aiforge keeps the files it derives (assembled weights, the registry database and its
downloads, RAG indexes): ``$AIFORGE_HOME``, by default ``~/.cache/aiforge``."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """Where aiforge keeps derived files (assembled weights, registry db, indexes)."""
    return Path(os.environ.get("AIFORGE_HOME", Path.home() / ".cache" / "aiforge"))
