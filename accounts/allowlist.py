"""Model allow-lists: which models a key may use, as an admin types them and as a request asks."""

from __future__ import annotations

import fnmatch
import re

_SEPARATORS = re.compile(r"[,\s]+")


def parse_models(text: str) -> tuple[str, ...]:
    """An allow-list as typed by an admin: ids or `*` patterns, comma- or line-separated."""
    return tuple(dict.fromkeys(entry for entry in _SEPARATORS.split(text or "") if entry))


def model_allowed(allowed: tuple[str, ...], model: str) -> bool:
    """Whether `model` may be used under an allow-list (empty: every model).

    An entry is an exact id or a `*` pattern; a provider suffix (`org/m:fastest`) is allowed
    wherever its model (`org/m`) is, while an entry with a suffix allows only that route.
    """
    if not allowed:
        return True
    base = model.split(":", 1)[0]
    return any(
        fnmatch.fnmatchcase(model, entry) or (":" not in entry and fnmatch.fnmatchcase(base, entry))
        for entry in allowed
    )
