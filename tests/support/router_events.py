"""The answers of the router's typed-event APIs, as pure builders: the OpenAI Responses API
(`POST /v1/responses`) and the Anthropic Messages API (`POST /v1/messages`). The fake router
(tests/support/fake_router.py) sends them; tests can build the same answers to mock the router.

A stream is built event by event, so that the fake can stop anywhere (cut, break, drip…):
`ResponseStream(request, model).head()` gives `response.created`, `response.in_progress`,
`response.output_item.added`, `response.content_part.added`; `.delta(text)` one
`response.output_text.delta`; `.tail()` `response.output_text.done`, `response.content_part.done`,
`response.output_item.done`, `response.completed` (or `.tail("incomplete")`, `.failed(message)`).
`MessageStream` has the same methods for `message_start`, `content_block_start`, `ping`,
`content_block_delta` (text_delta), `content_block_stop`, `message_delta`, `message_stop`, and
`.failed(message)` for Anthropic's mid-stream `error` event. A non-streamed answer is what the
stream adds up to (`ResponseStream.answer()`, `MessageStream.answer()`), so the two agree.

Usage is a deterministic function of the request, so tests can compute what to expect:

    words           whitespace-separated words in the request's text: Responses: `instructions`
                    and `input` (a string, or items whose `content` is a string or parts with
                    `text`, and `function_call_output` items' `output`); Messages: `system` (a
                    string or text blocks) and every message's `content` (a string or blocks
                    with `text`). At least 1.
    Responses       input_tokens = words; input_tokens_details.cached_tokens = words // 2 when
                    the request has a `prompt_cache_key`, else 0 (a subset of input_tokens, as
                    OpenAI counts); output_tokens_details.reasoning_tokens = REASONING_TOKENS
                    when the request has a non-null `reasoning`, else 0; output_tokens = the
                    text deltas + reasoning_tokens; total_tokens = input + output. No
                    `cache_write_tokens` (HF's Responses implementation sends none).
    Messages        with a `cache_control` anywhere in the request: cache_read_input_tokens =
                    words // 2, cache_creation_input_tokens = words // 4 and input_tokens the
                    rest (Anthropic's input_tokens excludes both); without: input_tokens = words
                    and both cache counts 0. output_tokens = the text deltas. `message_start`
                    says output_tokens 1; `message_delta` repeats the input and cache counts
                    with the final output_tokens (what Anthropic's API sends today; older
                    versions sent output_tokens alone there).
"""

from __future__ import annotations

import json
import secrets
import time

REASONING_TOKENS = 7


def structured_deltas(request: dict) -> list[str] | None:
    """Structured output (`text.format` a `json_schema`): the text deltas of a JSON object that
    the schema accepts (each property: a string "x", a number 1, a boolean true, an empty array
    or object), one property a delta; None when the request asks for none."""
    text = request.get("text")
    form = text.get("format") if isinstance(text, dict) else None
    if not isinstance(form, dict) or form.get("type") != "json_schema":
        return None
    schema = form.get("schema") or {}
    samples = {"string": "x", "integer": 1, "number": 1, "boolean": True, "array": [], "object": {}}
    properties = schema.get("properties") or {}
    values = {name: samples.get(spec.get("type"), "x") for name, spec in properties.items()}
    parts = [f"{json.dumps(name)}: {json.dumps(value)}" for name, value in values.items()]
    deltas = ["{" + ", ".join(parts[:1])] + [", " + part for part in parts[1:]] + ["}"]
    return deltas


def sse(event: dict, event_line: bool = True) -> bytes:
    """One server-sent event: `event: <type>` then its data, as OpenAI and Anthropic frame them
    (`event_line=False`: the data line alone, as HF's responses.js frames them)."""
    data = b"data: " + json.dumps(event).encode() + b"\n\n"
    return b"event: " + event["type"].encode() + b"\n" + data if event_line else data


def _text_words(value) -> int:
    """Words in a string, or in the `text` of a list of content parts/blocks."""
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, list):
        return sum(_text_words(part.get("text")) for part in value if isinstance(part, dict))
    return 0


def response_words(request: dict) -> int:
    """The Responses request's words (the module docstring's rule)."""
    count = _text_words(request.get("instructions"))
    items = request.get("input")
    if isinstance(items, str):
        count += _text_words(items)
    elif isinstance(items, list):
        for item in items:
            if isinstance(item, dict):
                count += _text_words(item.get("content")) + _text_words(item.get("output"))
    return max(count, 1)


def message_words(request: dict) -> int:
    """The Messages request's words (the module docstring's rule)."""
    count = _text_words(request.get("system"))
    for message in request.get("messages") or []:
        if isinstance(message, dict):
            count += _text_words(message.get("content"))
    return max(count, 1)


def response_usage(request: dict, deltas: int) -> dict:
    words = response_words(request)
    reasoning = REASONING_TOKENS if request.get("reasoning") is not None else 0
    output = deltas + reasoning
    return {
        "input_tokens": words,
        "input_tokens_details": {"cached_tokens": words // 2 if request.get("prompt_cache_key") else 0},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": words + output,
    }


def _mentions_cache_control(value) -> bool:
    if isinstance(value, dict):
        return "cache_control" in value or any(_mentions_cache_control(v) for v in value.values())
    if isinstance(value, list):
        return any(_mentions_cache_control(v) for v in value)
    return False


def message_usage(request: dict, output_tokens: int) -> dict:
    words = message_words(request)
    cached = _mentions_cache_control(request)
    read, creation = (words // 2, words // 4) if cached else (0, 0)
    return {
        "input_tokens": words - read - creation,
        "cache_creation_input_tokens": creation,
        "cache_read_input_tokens": read,
        "output_tokens": output_tokens,
    }


class ResponseStream:
    """A Responses API answer: one assistant message with one output_text part."""

    DELTA = "response.output_text.delta"

    def __init__(self, request: dict, model: str, usage: bool = True) -> None:
        self.request = request
        self.with_usage = usage
        self.sequence = 0
        self.text = ""
        self.deltas = 0
        self.item_id = "msg_" + secrets.token_hex(24)
        self.response = {
            "id": "resp_" + secrets.token_hex(24),
            "object": "response",
            "created_at": int(time.time()),
            "status": "in_progress",
            "completed_at": None,
            "error": None,
            "incomplete_details": None,
            "instructions": request.get("instructions"),
            "max_output_tokens": request.get("max_output_tokens"),
            "model": model,
            "output": [],
            "parallel_tool_calls": request.get("parallel_tool_calls", True),
            "previous_response_id": request.get("previous_response_id"),
            "reasoning": request.get("reasoning") or {"effort": None, "summary": None},
            "store": request.get("store", True),
            "temperature": request.get("temperature", 1.0),
            "text": request.get("text") or {"format": {"type": "text"}},
            "tool_choice": request.get("tool_choice", "auto"),
            "tools": request.get("tools") or [],
            "top_p": request.get("top_p", 1.0),
            "truncation": request.get("truncation") or "disabled",
            "usage": None,
            "user": None,
            "metadata": request.get("metadata") or {},
        }

    def _event(self, kind: str, **fields) -> dict:
        event = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return event

    def _snapshot(self) -> dict:
        return json.loads(json.dumps(self.response))

    def _item(self, status: str, text: str | None) -> dict:
        content = [] if text is None else [self._part(text)]
        return {
            "id": self.item_id,
            "type": "message",
            "status": status,
            "role": "assistant",
            "content": content,
        }

    @staticmethod
    def _part(text: str) -> dict:
        return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}

    def _where(self) -> dict:
        return {"item_id": self.item_id, "output_index": 0, "content_index": 0}

    def head(self) -> list[dict]:
        return [
            self._event("response.created", response=self._snapshot()),
            self._event("response.in_progress", response=self._snapshot()),
            self._event("response.output_item.added", output_index=0, item=self._item("in_progress", None)),
            self._event("response.content_part.added", **self._where(), part=self._part("")),
        ]

    def delta(self, text: str) -> dict:
        self.text += text
        self.deltas += 1
        return self._event(self.DELTA, **self._where(), delta=text, logprobs=[])

    def _finish(self, status: str) -> None:
        item_status = "completed" if status == "completed" else "incomplete"
        self.response["status"] = status
        self.response["output"] = [self._item(item_status, self.text)]
        if status == "completed":
            self.response["completed_at"] = int(time.time())
        else:
            self.response["incomplete_details"] = {"reason": "max_output_tokens"}
        if self.with_usage:
            self.response["usage"] = response_usage(self.request, self.deltas)

    def tail(self, status: str = "completed") -> list[dict]:
        """The events that close the answer; `status` "incomplete" ends it as cut short by
        max_output_tokens (`response.incomplete`, with usage)."""
        self._finish(status)
        item = self.response["output"][0]
        return [
            self._event("response.output_text.done", **self._where(), text=self.text, logprobs=[]),
            self._event("response.content_part.done", **self._where(), part=self._part(self.text)),
            self._event("response.output_item.done", output_index=0, item=item),
            self._event(f"response.{status}", response=self._snapshot()),
        ]

    def failed(self, message: str) -> list[dict]:
        """`response.failed`: the model failed mid-answer (no usage, the output as it stood)."""
        self.response["status"] = "failed"
        self.response["error"] = {"code": "server_error", "message": message}
        self.response["output"] = [self._item("in_progress", self.text)]
        return [self._event("response.failed", response=self._snapshot())]

    def answer(self, deltas: list[str], status: str = "completed") -> dict:
        """The non-streamed Response object of an answer made of these deltas."""
        for text in deltas:
            self.delta(text)
        self._finish(status)
        return self.response


class MessageStream:
    """An Anthropic Messages API answer: one text block, ended by `stop_reason` (`end_turn`, or
    `max_tokens` for one cut short)."""

    DELTA = "content_block_delta"

    def __init__(self, request: dict, model: str, usage: bool = True, stop_reason: str = "end_turn") -> None:
        self.request = request
        self.with_usage = usage
        self.stop_reason = stop_reason
        self.text = ""
        self.deltas = 0
        self.message = {
            "id": "msg_01" + secrets.token_hex(12),
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
        }
        if usage:
            self.message["usage"] = message_usage(request, 1)

    def head(self) -> list[dict]:
        return [
            {"type": "message_start", "message": json.loads(json.dumps(self.message))},
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            {"type": "ping"},
        ]

    def delta(self, text: str) -> dict:
        self.text += text
        self.deltas += 1
        return {"type": self.DELTA, "index": 0, "delta": {"type": "text_delta", "text": text}}

    def tail(self) -> list[dict]:
        delta = {"type": "message_delta", "delta": {"stop_reason": self.stop_reason, "stop_sequence": None}}
        if self.with_usage:
            delta["usage"] = message_usage(self.request, self.deltas)
        return [{"type": "content_block_stop", "index": 0}, delta, {"type": "message_stop"}]

    def failed(self, message: str) -> list[dict]:
        """Anthropic's mid-stream `error` event (what an overloaded model sends once streaming)."""
        return [anthropic_error("overloaded_error", message)]

    def answer(self, deltas: list[str]) -> dict:
        """The non-streamed Message object of an answer made of these deltas."""
        for text in deltas:
            self.delta(text)
        answer = {
            **self.message,
            "content": [{"type": "text", "text": self.text}],
            "stop_reason": self.stop_reason,
        }
        if self.with_usage:
            answer["usage"] = message_usage(self.request, self.deltas)
        return answer


ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def anthropic_error(kind: str, message: str) -> dict:
    """Anthropic's error body (and its stream's `error` event)."""
    return {"type": "error", "error": {"type": kind, "message": message}}


def anthropic_status_error(status: int, message: str) -> dict:
    """Anthropic's error body for an HTTP status (`api_error` for the ones it names no type for)."""
    return anthropic_error(ANTHROPIC_ERROR_TYPES.get(status, "api_error"), message)
