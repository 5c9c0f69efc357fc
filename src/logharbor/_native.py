"""The optional C speedups, or ``None`` where they are not built or are turned off.

``logharbor._speedups`` (src/logharbor/_speedups.c) validates and decodes log
groups many times faster than the pure-Python paths, which remain the reference
and are used when the module is missing.  Set ``LOGHARBOR_NO_SPEEDUPS=1`` to use
the pure-Python paths even where it is built.
"""

from __future__ import annotations

import importlib
import os
from typing import Any


def _load() -> Any:
    if os.environ.get("LOGHARBOR_NO_SPEEDUPS", "") not in ("", "0"):
        return None
    try:
        return importlib.import_module("logharbor._speedups")
    except ImportError:  # not built: there was no C compiler at install time
        return None


speedups: Any = _load()

__all__ = ["speedups"]
