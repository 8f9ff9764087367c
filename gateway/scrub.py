"""What the router sends back never carries the Hugging Face token out of the proxy.

A router may quote the `Authorization` header it got anywhere: an error's message, `param`,
`code` or `type`, a nested field, a header, an answer. Everything the proxy passes on or keeps
from it is scrubbed against the exact token values of that request (whatever their shape:
`secrets_of`); bytes relayed as they came (`raw`) also of the token as a JSON string may spell
it, escapes and all, since the client reads them decoded. A router's word that becomes an
identifier (an error code stored in a record, a metric label, a `Retry-After`) is taken only
when it has the shape such a word has. Log lines (a library's debug output quotes the router's
headers) are scrubbed by `LogFilter` of the token the task logging them calls the router with
(`in_use`).
"""

from __future__ import annotations

import functools
import json
import logging
import re
from contextvars import ContextVar
from email.utils import parsedate_to_datetime
from json.decoder import scanstring as _scanstring
from typing import Any

REDACTED = "***"
# A Hugging Face token's own prefix: the rest of it is as secret, quoted alone or not.
_PREFIX = "hf_"
# An error code, as a record's `error_code` (40 characters) and a metric label hold it.
_CODE = re.compile(r"[a-z0-9_]{1,40}")
# A code this long that is part of a token is a piece of the token, not a word.
_PIECE = 8


def secrets_of(token: str) -> tuple[str, ...]:
    """The strings that must never leave: the token, and without its `hf_` prefix; each also as
    a JSON string spells it (a `"` or `\\` in it escaped), longest first."""
    if not token:
        return ()
    bare = token.removeprefix(_PREFIX)
    forms = (token, bare) if bare != token and len(bare) >= _PIECE else (token,)
    spelled = {form: None for plain in forms for form in (_json_spelling(plain), plain)}
    # Longest first: a longer form may hold a shorter one (`\\x` holds `\x`), never the reverse.
    return tuple(sorted(spelled, key=len, reverse=True))


def _json_spelling(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)[1:-1]


def text(value: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:  # the whole token first: its bare form is inside it
        if secret in value:
            value = value.replace(secret, REDACTED)
    return value


# Through the next JSON string literal whose escapes may spell the token anew once decoded (a
# `\u` or `\/` in it, or a `\\`: the string may be JSON itself, a tool call's `arguments`), or
# to the end. What it passes (text between literals, literals without such escapes) is scanned
# once, possessively: whatever the bytes, the scan stays on the quotes that open literals and
# takes linear time. JSON strings hold no raw newline (nor do SSE events' lines): a literal left
# open ends with its line.
_ESCAPE = re.compile(rb"\\[u/]")
_ESCAPED = re.compile(rb'(?:[^"]++|"(?:[^"\\\n]++|\\[^u/\\\n])*+")*+("(?:[^"\\\n]++|\\.)*+"?|\Z)')


def raw(data: bytes, secrets: tuple[str, ...]) -> bytes:
    """Bytes relayed as they came (an answer, whole stream events), scrubbed as they are, and
    of the token spelled with `\\u` escapes (or `\\/`) inside a JSON string, which only
    decoding tells: such strings are decoded, and written anew where the token was in one."""
    for secret in secrets:
        encoded = secret.encode()
        if encoded in data:
            data = data.replace(encoded, REDACTED.encode())
    # Any character may be spelled `\uXXXX`, a `/` also `\/`: no list of spellings covers
    # them all. Rare in answers: the common chunk pays one search for them.
    if _ESCAPE.search(data):
        data = _ESCAPED.sub(functools.partial(_decoded, secrets=secrets), data)
    return data


def _decoded(match: re.Match[bytes], secrets: tuple[str, ...]) -> bytes:
    literal = match[1]
    if b"\\" not in literal:
        return match[0]  # the end, or a literal left open: no client decodes it
    try:
        value = _scanstring(literal.decode(), 1)[0]
    except ValueError:
        return match[0]
    encoded = value.encode("utf-8", "surrogatepass")
    scrubbed = raw(encoded, secrets)
    if scrubbed == encoded:
        return match[0]
    passed = match[0][: match.start(1) - match.start()]
    return passed + json.dumps(scrubbed.decode("utf-8", "surrogatepass")).encode()


def tree(data: Any, secrets: tuple[str, ...]) -> Any:
    """Parsed JSON with every string in it (keys too) scrubbed, before anything reads it."""
    if not secrets:
        return data
    pending, root = [], [data]
    pending.append((root, 0))
    # A loop, not recursion: a router's nesting may go as deep as the JSON parser does.
    while pending:
        parent, where = pending.pop()
        value = parent[where]
        if isinstance(value, str):
            parent[where] = text(value, secrets)
        elif isinstance(value, list):
            pending.extend((value, index) for index in range(len(value)))
        elif isinstance(value, dict):
            scrubbed = {text(key, secrets): item for key, item in value.items()}
            value.clear()
            value.update(scrubbed)
            pending.extend((value, key) for key in value)
    return root[0]


def code(value: Any, secrets: tuple[str, ...]) -> str | None:
    """A router's error code, when it is one (a short snake_case word or a number that is no
    part of the token), else None: the caller falls back to a code of its own."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None
    word = str(value)
    if not _CODE.fullmatch(word):
        return None
    if any(secret in word or (len(word) >= _PIECE and word in secret) for secret in secrets):
        return None
    return word


def retry_after(value: str | None) -> str:
    """A router's `Retry-After`, when it is one (seconds, or an HTTP date), else ""."""
    if not value:
        return ""
    value = value.strip()
    if value.isascii() and value.isdigit() and len(value) <= 9:
        return value
    try:
        parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return ""
    return value if value.isascii() and len(value) <= 40 else ""


# The token the running task calls the router with (asyncio gives each request's task its own).
_in_use: ContextVar[tuple[str, ...]] = ContextVar("hfproxy_token_in_use", default=())


def in_use(token: str) -> None:
    """This task calls the router with `token`: what it logs from now on is scrubbed of it."""
    _in_use.set(secrets_of(token))


class LogFilter(logging.Filter):
    """On the log handlers: a line logged by a task that calls the router (httpcore's debug
    lines quote the router's response headers) leaves without that task's token."""

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = _in_use.get()
        if secrets:
            # Kept formatted, scrubbed or not: the formatter would format the arguments again.
            record.msg, record.args = text(record.getMessage(), secrets), None
        return True
