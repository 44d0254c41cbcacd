"""Symbol patterns of a vault's universe: globs (``*usdc*``) or regexes (``re:^gt.*core$``), case-insensitive.

Validated when the configuration loads (a bad regex names its key), and compiled once into a
matcher the universe screen calls per pool symbol. A glob must match the whole symbol; a regex
matches anywhere unless anchored (``re.search`` semantics), as regexes usually do.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Sequence

REGEX_PREFIX = "re:"


def compile_symbol_pattern(pattern: str) -> re.Pattern[str]:
    """One pattern -> a compiled case-insensitive regex; ``ValueError`` naming the pattern if it is bad."""
    text = pattern.strip()
    if not text or text == REGEX_PREFIX:
        raise ValueError(f"symbol pattern {pattern!r} is empty")
    if text.startswith(REGEX_PREFIX):
        try:
            return re.compile(text.removeprefix(REGEX_PREFIX), re.IGNORECASE)
        except re.error as exc:
            raise ValueError(f"symbol pattern {pattern!r} is not a valid regex: {exc}") from None
    return re.compile("^" + fnmatch.translate(text), re.IGNORECASE)  # a glob spans the whole symbol


def symbol_matcher(patterns: Sequence[str] | None) -> Callable[[str], bool] | None:
    """``symbol -> True`` when any pattern matches; None when no patterns are configured."""
    if patterns is None:
        return None
    compiled = [compile_symbol_pattern(p) for p in patterns]

    def matches(symbol: str) -> bool:
        return any(p.search(symbol) is not None for p in compiled)

    return matches
