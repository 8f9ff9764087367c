"""Anthropic's Messages API (`POST /v1/messages`, what Claude Code speaks), relayed as it came.

Pure like the converter: the request's few checked fields, a local count of its input tokens
(for `count_tokens` when the router has none), usage in Anthropic's terms, a stream followed event
by event (`MessagesStream`), and the model list in Anthropic's shape. Everything else in a
request (`thinking`, `cache_control`, `context_management`, fields newer than this code) goes on
untouched.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gateway import converter, sse
from gateway.converter import (
    Answer,
    Api,
    BadAnswer,
    Follower,
    Forwarded,
    InvalidRequest,
    Usage,
    event_payload,
)

# The client's headers that are part of the API: forwarded to the router (never its key).
FORWARDED_HEADERS = ("anthropic-version", "anthropic-beta")
_FIELD_TYPES = (
    ("stream", converter.is_boolean, "a boolean"),
    ("max_tokens", converter.is_integer, "an integer"),
)
# Content blocks' text worth counting for an estimate: text, tool calls' input (whole, or streamed
# as `partial_json`), tool results.
_BLOCK_TEXT = ("text", "content", "input", "thinking", "partial_json", "name")


def parse_request(raw: bytes, default_model: str) -> Forwarded:
    return converter.parse_forwarded(raw, default_model, _FIELD_TYPES, _check_messages, estimate_input_tokens)


def _check_messages(body: dict[str, Any]) -> None:
    if not isinstance(body.get("messages"), list):
        raise InvalidRequest("`messages` must be an array of message objects.", "messages")


def estimate_input_tokens(body: dict[str, Any]) -> int:
    """The input's tokens as a chat template would make them: the system prompt, every message's
    blocks, the tool definitions (an estimate: see docs/estimates.md)."""
    tokens = converter.TOKENS_PER_REQUEST
    system = body.get("system")
    if system:
        tokens += converter.TOKENS_PER_MESSAGE + converter.tokens_for(_text_size(system))
    for message in body.get("messages") or ():
        if isinstance(message, dict):
            tokens += converter.TOKENS_PER_MESSAGE + converter.tokens_for(_text_size(message.get("content")))
    return tokens + converter.tools_tokens(body.get("tools"))


def _text_size(content: Any) -> int:
    """Characters in a string or a list of content blocks (nested tool results included)."""
    total, pending = 0, [content]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            total += converter.text_size(item)
        elif isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, dict):
            for key in _BLOCK_TEXT:
                value = item.get(key)
                # A tool call's input is an object: its JSON is what the model reads.
                pending.append(json.dumps(value, ensure_ascii=False) if key == "input" and value else value)
    return total


def usage_of(*parts: Any) -> Usage | None:
    """Usage in OpenAI's terms from Anthropic's counts (later parts override earlier ones: a
    stream's `message_delta` after its `message_start`). Anthropic counts input in three parts:
    uncached, read from the cache, written to it; the prompt is their sum, cached the second."""
    counts: dict[str, Any] = {}
    for part in parts:
        if isinstance(part, dict):
            counts.update((key, value) for key, value in part.items() if value is not None)
    if not counts:
        return None
    uncached, read, written = (
        converter.count(counts.get(key))
        for key in ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")
    )
    prompt = None if uncached is None else uncached + (read or 0) + (written or 0)
    return Usage.counted(prompt, counts.get("output_tokens"), cached=read)


def read_answer(raw: bytes) -> Answer:
    answer = converter.parse_answer(raw)
    if not isinstance(answer, dict):
        raise BadAnswer("the answer is not a JSON object")
    if answer.get("type") == "error" or ("content" not in answer and "error" in answer):
        raise BadAnswer("the router answered with an error", error=answer)
    return Answer(
        str(answer.get("model") or ""), usage_of(answer.get("usage")), _text_size(answer.get("content"))
    )


@dataclass
class MessagesStream(Follower):
    """Follows a relayed Messages stream (`message_start`, `content_block_*`, `message_delta`,
    `ping`, `message_stop`), passing every event on as it came. A message has no failed state:
    a failure is an `error` event."""

    LAST = "message_stop"
    _start: Any = None  # message_start's usage: the prompt, counted before the answer

    def event(self, event: bytes) -> bytes:
        data = sse.data_of(event)
        if data is None:
            return event + b"\n\n"
        payload = event_payload(data)
        kind = payload.get("type")
        if kind == "error":
            raise BadAnswer("the router reported an error mid-stream", error=payload)
        if kind == "message_start" and isinstance(payload.get("message"), dict):
            message = payload["message"]
            if isinstance(message.get("model"), str):
                self.model = message["model"]
            self._start = message.get("usage")
            counted = usage_of(self._start)
            self.prompt_tokens = counted.prompt_tokens if counted else None
        elif kind == "content_block_delta":
            self.started = True
            self.completion_chars += _text_size(payload.get("delta"))
        elif kind == "message_delta":
            # The final counts: the output, and (in newer versions) the input repeated.
            self.usage = usage_of(self._start, payload.get("usage"))
        elif kind == "message_stop":
            self.done = True
        return event + b"\n\n"

    def error_event(self, error: Any) -> bytes:
        return error.anthropic_event()


MESSAGES = Api(follower=lambda request: MessagesStream(), read_answer=read_answer)


def models_list(listing: dict[str, Any]) -> dict[str, Any]:
    """The model list (OpenAI's shape, `modellist.models_list`) in Anthropic's, all on one page."""
    data = [model_entry(entry) for entry in listing["data"]]
    return {
        "data": data,
        "has_more": False,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }


def model_entry(entry: dict[str, Any]) -> dict[str, Any]:
    try:
        created = datetime.fromtimestamp(entry.get("created") or 0, UTC)
    except (OverflowError, OSError, ValueError):  # a router's nonsense date
        created = datetime.fromtimestamp(0, UTC)
    return {
        "type": "model",
        "id": entry["id"],
        "display_name": entry["id"],
        "created_at": created.isoformat().replace("+00:00", "Z"),
    }
