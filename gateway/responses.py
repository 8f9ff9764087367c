"""OpenAI's Responses API (`POST /v1/responses`, what Codex CLI speaks), relayed as it came.

Pure like the converter: the request's few checked fields, a whole answer's usage, and a stream's
typed events followed one by one (`ResponsesStream`). Everything else in a request (tools,
`reasoning`, `include`, `previous_response_id`, fields newer than this code) is the router's to
judge and goes on untouched.
"""

from __future__ import annotations

from dataclasses import dataclass
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

# The events that end a response, and what each says of how it ended.
_TERMINAL = {"response.completed": "", "response.incomplete": "", "response.failed": "response_failed"}
_FIELD_TYPES = (
    ("stream", converter.is_boolean, "a boolean"),
    ("max_output_tokens", converter.is_integer, "an integer"),
    ("instructions", lambda value: isinstance(value, str), "a string"),
)
# Input items' text worth counting for an estimate, wherever it sits.
_INPUT_TEXT = ("text", "content", "output", "arguments", "summary", "name")


def parse_request(raw: bytes, default_model: str) -> Forwarded:
    return converter.parse_forwarded(raw, default_model, _FIELD_TYPES, _check_input, estimate_prompt_tokens)


def _check_input(body: dict[str, Any]) -> None:
    if "input" in body and not isinstance(body["input"], (str, list)):
        raise InvalidRequest("`input` must be a string or an array of input items.", "input")


def estimate_prompt_tokens(body: dict[str, Any]) -> int:
    """The prompt's tokens as a chat template would make them: instructions, every input item,
    and the tool definitions."""
    items = body.get("input")
    items = [items] if isinstance(items, str) else items or []
    tokens = converter.TOKENS_PER_REQUEST
    if isinstance(body.get("instructions"), str):
        tokens += converter.TOKENS_PER_MESSAGE + converter.tokens_for(
            converter.text_size(body["instructions"])
        )
    for item in items:
        text = (
            item
            if isinstance(item, str)
            else [item.get(key) for key in _INPUT_TEXT]
            if isinstance(item, dict)
            else None
        )
        tokens += converter.TOKENS_PER_MESSAGE + converter.tokens_for(converter.text_size(text))
    return tokens + converter.tools_tokens(body.get("tools"))


def usage_of(data: Any) -> Usage | None:
    """A response's `usage`: input and output tokens, and their cached and reasoning parts."""
    if not isinstance(data, dict):
        return None
    return Usage.counted(
        data.get("input_tokens"),
        data.get("output_tokens"),
        data.get("total_tokens"),
        cached=converter.detail(data, "input_tokens_details", "cached_tokens"),
        reasoning=converter.detail(data, "output_tokens_details", "reasoning_tokens"),
    )


def output_chars(response: dict[str, Any]) -> int:
    """Characters of generated text in a response's output items."""
    return converter.text_size([item for item in response.get("output") or () if isinstance(item, dict)])


def read_answer(raw: bytes) -> Answer:
    answer = converter.parse_answer(raw)
    if not isinstance(answer, dict):
        raise BadAnswer("the answer is not a JSON object")
    if "output" not in answer and "error" in answer:
        raise BadAnswer("the router answered with an error", error=answer)
    return Answer(
        str(answer.get("model") or ""),
        usage_of(answer.get("usage")),
        output_chars(answer),
        failure_of(answer),
    )


def failure_of(response: dict[str, Any]) -> str:
    """A failed response's error code (`status: failed`), else ""."""
    if response.get("status") != "failed":
        return ""
    error = response.get("error")
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, str) and code else "response_failed"


@dataclass
class ResponsesStream(Follower):
    """Follows a relayed Responses stream: typed events (`event: response.…`, each with a
    `sequence_number`) passed on as they came, until the one that ends the response."""

    LAST = "the response was completed"
    sequence_number: int = -1  # the last one seen: our own error event follows it

    def event(self, event: bytes) -> bytes:
        data = sse.data_of(event)
        if data is None:
            return event + b"\n\n"  # a comment (keep-alive): pass it on
        payload = event_payload(data)
        kind = payload.get("type")
        if kind == "error":
            raise BadAnswer("the router reported an error mid-stream", error=payload)
        if isinstance(payload.get("sequence_number"), int):
            self.sequence_number = payload["sequence_number"]
        if isinstance(kind, str):
            self._note(kind, payload)
        return event + b"\n\n"

    def _note(self, kind: str, payload: dict[str, Any]) -> None:
        if kind.endswith(".delta"):  # output text, reasoning, a tool call's arguments
            self.started = True
            delta = payload.get("delta")
            self.completion_chars += converter.text_size(delta)
            return
        response = payload.get("response")
        if not isinstance(response, dict):
            return
        if self.model is None and isinstance(response.get("model"), str):
            self.model = response["model"]
        if kind in _TERMINAL:
            self.done = True
            self.usage = usage_of(response.get("usage")) or self.usage
            self.failure = failure_of(response) or _TERMINAL[kind]

    def error_event(self, error: Any) -> bytes:
        return error.responses_event(self.sequence_number + 1)


RESPONSES = Api(follower=lambda request: ResponsesStream(), read_answer=read_answer)
