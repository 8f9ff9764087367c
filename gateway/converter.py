"""Chat shapes in and out (requests, whole answers, usage and its estimate), and what every API
relayed as it came shares: the request preamble (`parse_body`), `Usage`, and the relay's contract
with each API (`Api`, `Follower`, `Answer`).

Pure functions and small state objects: no Django, no I/O. Bad client input raises
`InvalidRequest`; an answer from the router that cannot be relayed raises `BadAnswer`.
`gateway.errors` turns both into error bodies. The other shapes live beside this:
`gateway.chatstream` (a relayed chat stream, event by event), `gateway.responses`,
`gateway.messages`, `gateway.embeddings`, `gateway.images`, `gateway.audio`, `gateway.modellist`.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway import sse


class InvalidRequest(ValueError):
    """The client's request cannot be forwarded; `param` names the offending field."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class BadAnswer(Exception):
    """The router's answer cannot be relayed. `error` is the router's own error object, if any."""

    def __init__(self, detail: str, error: Any = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.error = error


@dataclass
class Follower:
    """Follows one API's relayed event stream: what to pass on, what it told us. The base of
    `gateway.chatstream.ChatStream`, `gateway.responses.ResponsesStream` and
    `gateway.messages.MessagesStream`, each of which says what its events mean (`event`), how
    its stream ends (`LAST`, `end`) and how it tells a failure (`error_event`). Pure: the relay
    feeds it the router's bytes and sends on what it returns."""

    LAST = "its last event"  # what a whole stream ends with, for the cut-off message

    model: str | None = None
    usage: Usage | None = None
    done: bool = False  # the answer is complete: nothing more is relayed
    started: bool = False  # generated output has been seen (time to first token)
    completion_chars: int = 0
    failure: str = ""  # the answer completed as a failure (its error code), else ""
    # The provider's count of the prompt before its final usage (Anthropic's `message_start`):
    # what an estimate of a stream cut off starts from, rather than ours.
    prompt_tokens: int | None = None
    _splitter: sse.EventSplitter = field(default_factory=sse.EventSplitter)

    def feed(self, chunk: bytes) -> bytes:
        """Bytes to send on for this chunk of the router's stream (possibly none)."""
        out = b""
        for event in self._splitter.feed(chunk):
            if self.done:
                break
            out += self.event(event)
        return out

    def event(self, event: bytes) -> bytes:
        """What to send on for one event (its text, without the blank line after it)."""
        raise NotImplementedError

    def end(self) -> bytes:
        """At the end of the router's stream: what is left to send (a last event without its
        blank line still counts), or `BadAnswer` when the stream was cut off before the answer
        was complete."""
        out = b"" if self.done else self.feed(b"\n\n")
        if not self.done:
            raise BadAnswer(f"the stream ended before {self.LAST}")
        return out

    def error_event(self, error: Any) -> bytes:
        """A failure once the headers are sent (an `ApiError`), as this API's last event."""
        raise NotImplementedError


def router_json(data: bytes) -> Any:
    """The router's JSON (an answer, a stream event): orjson's parse, several times faster than
    the json module's; what orjson refuses goes to the json module, so that whatever it took
    still is (NaN, UTF-16, a lone surrogate) and the rest fails as it did. (An integer past 64
    bits comes back a float: no count either way.)"""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


def event_payload(data: bytes) -> dict[str, Any]:
    """A stream event's JSON object, or `BadAnswer`."""
    try:
        payload = router_json(data)
    except (ValueError, RecursionError):
        raise BadAnswer("a stream event is not JSON") from None
    if not isinstance(payload, dict):
        raise BadAnswer("a stream event is not a JSON object")
    return payload


@dataclass(frozen=True)
class Answer:
    """What a whole (non-streamed) answer told about itself."""

    model: str
    usage: Usage | None
    chars: int  # characters of generated text, for the estimate when there is no usage
    failure: str = ""  # the answer says it failed (its error code), as a Follower's `failure`


@dataclass(frozen=True)
class Api:
    """An API relayed as it came: how to follow its streams and read its answers."""

    follower: Callable[[Any], Follower]  # the parsed request → a fresh follower
    read_answer: Callable[[bytes], Answer]  # a whole answer, or `BadAnswer`


@dataclass
class ChatRequest:
    body: dict[str, Any]
    model: str
    stream: bool
    # The client asked for the usage chunk itself (we always ask the router for it).
    wants_usage: bool
    # The raw body can be forwarded as it came (nothing to fill in, strip or add).
    raw: bytes | None = None

    @functools.cached_property
    def prompt_tokens(self) -> int:
        """The prompt's size in tokens, estimated when needed: what is recorded when the provider
        counts none (agents resend whole conversations: not worth counting on every request)."""
        return estimate_prompt_tokens(self.body["messages"], self.body.get("tools"))


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def is_boolean(value: Any) -> bool:
    return isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_integer(value: Any) -> bool:
    """An integer, or a float with an integral value (JSON has one number type); not a boolean."""
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


def _is_object(value: Any) -> bool:
    return isinstance(value, dict)


def _typed(names: tuple[str, ...], fits: Callable[[Any], bool], kind: str):
    return tuple((name, fits, kind) for name in names)


# The fields whose type we check (a null is always allowed), in the order they are checked: the
# first wrong one is the one reported. Everything else is the router's to judge.
_FIELD_TYPES = (
    *_typed(("stream", "logprobs", "parallel_tool_calls"), is_boolean, "a boolean"),
    *_typed(("temperature", "top_p", "presence_penalty", "frequency_penalty"), _is_number, "a number"),
    *_typed(("max_tokens", "max_completion_tokens", "n", "seed", "top_logprobs"), is_integer, "an integer"),
    ("stream_options", _is_object, "an object"),
)
# Fields that would steer a client library, never the router: not honoured, not forwarded
# (a client's `api_key` must not travel to Hugging Face).
_CONTROL_FIELDS = ("api_key", "api_base", "base_url")


def parse_body(raw: bytes, default_model: str, field_types: tuple, check: Callable[[dict], None]) -> tuple:
    """What every API's request shares: a JSON object, its `model` (the default when none),
    `check(body)` of the API's own, the types of `field_types` ((name, fits, kind); a null is
    always allowed; the first wrong one is reported), the client library's fields dropped.
    (body, model, changed): changed, the body is no longer the bytes that came."""
    body = parse_json_object(raw)
    model = body.get("model")
    filled = model is None
    if filled:
        model = body["model"] = default_model
    else:
        check_model(model)
    check(body)
    for name, fits, kind in field_types:
        value = body.get(name)
        if value is not None and not fits(value):
            raise InvalidRequest(f"`{name}` must be {kind}.", name)
    dropped = drop_control_fields(body)
    return body, model, filled or dropped


@dataclass
class Forwarded:
    """A request of an API relayed as it came (Responses, Messages): its body, the bytes to send
    when nothing changed, and its prompt's estimate, made only if needed (`estimate(body)`)."""

    body: dict[str, Any]
    model: str
    stream: bool
    raw: bytes | None
    estimate: Callable[[dict[str, Any]], int]

    @functools.cached_property
    def prompt_tokens(self) -> int:
        return self.estimate(self.body)


def parse_forwarded(
    raw: bytes, default_model: str, field_types: tuple, check: Callable[[dict], None], estimate
) -> Forwarded:
    body, model, changed = parse_body(raw, default_model, field_types, check)
    return Forwarded(body, model, bool(body.get("stream")), None if changed else raw, estimate)


def parse_chat_request(raw: bytes, default_model: str) -> ChatRequest:
    """Validate a chat completion request, without judging what only the router can judge."""
    body, model, changed = parse_body(raw, default_model, _FIELD_TYPES, _check_chat)

    stream = bool(body.get("stream"))
    stream_options = body.get("stream_options")
    wants_usage = bool(stream_options and stream_options.get("include_usage"))
    asks_usage = stream and not wants_usage
    if asks_usage:
        # Always ask for usage so the exact token count can be recorded; the relay drops the
        # usage chunk before it reaches a client that did not ask for it.
        body["stream_options"] = {**(stream_options or {}), "include_usage": True}
    return ChatRequest(
        body=body,
        model=model,
        stream=stream,
        wants_usage=wants_usage,
        raw=None if changed or asks_usage else raw,
    )


def check_model(model: Any) -> None:
    if not isinstance(model, str) or not model.strip() or not model.isprintable():
        raise InvalidRequest("`model` must be a non-empty string of printable characters.", "model")


# A Hugging Face model id (`org/name`, or a bare `name`) as a URL path takes it: nothing that
# could leave the path (`..`, a third segment, a query).
_MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?")


def is_model_id(model: str) -> bool:
    """Whether `model` is a Hugging Face model id that can go into a URL's path as it is."""
    return bool(_MODEL_ID.fullmatch(model)) and ".." not in model


def drop_control_fields(body: dict[str, Any]) -> bool:
    """Take out the fields meant for a client library (`_CONTROL_FIELDS`); True if there were."""
    return bool([body.pop(name) for name in _CONTROL_FIELDS if name in body])


def _check_chat(body: dict[str, Any]) -> None:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("`messages` must be a non-empty array of message objects.", "messages")
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise InvalidRequest(f"`messages[{index}]` must be an object.", f"messages[{index}]")
        role = message.get("role")
        if not isinstance(role, str) or not role:
            raise InvalidRequest(
                f"`messages[{index}].role` must be a non-empty string.", f"messages[{index}].role"
            )


# --- Token estimates ---------------------------------------------------------------------------
# Used only when the provider gave no counts (hf-inference/TGI and some providers never do; a
# stream cut short has none). Measured against real tokenizers and chat templates, and the
# expected error, in docs/estimates.md.

# About four characters a token for English and code in the tokenizers of the models the router
# serves; a character outside ASCII (Chinese, Japanese…) is about a token of its own.
CHARS_PER_TOKEN = 4
# A chat template wraps every message in role markers and separators (ChatML's
# `<|im_start|>user\n…<|im_end|>\n`, Llama 3's `<|start_header_id|>user<|end_header_id|>\n\n…<|eot_id|>`).
TOKENS_PER_MESSAGE = 5
# The template's start (BOS, a default system header) and the header that primes the reply.
TOKENS_PER_REQUEST = 8
# Tool definitions are rendered as JSON, after a preamble saying how to call them.
TOKENS_FOR_TOOLS = 20
_MESSAGE_TEXT = ("text", "content", "reasoning_content", "arguments", "function", "tool_calls", "name")


def text_size(content: Any, keys: tuple[str, ...] = _MESSAGE_TEXT) -> int:
    """Characters of text in a message's or a delta's fields (strings, parts, tool calls; in an
    object, those of `keys`), a character outside ASCII counted as CHARS_PER_TOKEN characters."""
    # A loop, not recursion: a client's nesting may go as deep as the JSON parser does.
    total, pending = 0, [content]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            total += _chars(item)
        elif isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, dict):
            pending.extend(item.get(key) for key in keys)
    return total


def _chars(text: str) -> int:
    if text.isascii():
        return len(text)
    wide = len(text) - len(text.encode("ascii", "ignore"))
    return len(text) + (CHARS_PER_TOKEN - 1) * wide


def tokens_for(chars: int) -> int:
    """Characters of text as tokens (CHARS_PER_TOKEN to a token, rounded up)."""
    return -(-chars // CHARS_PER_TOKEN)


def estimate_prompt_tokens(messages: list[dict[str, Any]], tools: Any = None) -> int:
    """The prompt's tokens as a chat template would make them: every message's role, name,
    content and tool calls, a few tokens of markers a message, and the tool definitions."""
    tokens = TOKENS_PER_REQUEST
    for message in messages:
        tokens += TOKENS_PER_MESSAGE + tokens_for(
            _chars(str(message.get("role", "")))
            + text_size([message.get("content"), message.get("name")])
            + text_size(message.get("tool_calls"))
        )
    return tokens + tools_tokens(tools)


def tools_tokens(tools: Any) -> int:
    """Tool definitions, rendered as JSON after a preamble saying how to call them."""
    if not isinstance(tools, list) or not tools:
        return 0
    return TOKENS_FOR_TOOLS + tokens_for(_chars(json.dumps(tools, ensure_ascii=False)))


def estimate_usage(prompt_tokens: int, completion_chars: int) -> Usage:
    """Counts for an answer the provider did not count: the prompt's estimate and the
    generated text's size."""
    completion = tokens_for(completion_chars)
    return Usage(prompt_tokens, completion, prompt_tokens + completion)


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """A request's body as a JSON object, or `InvalidRequest`. Refused besides bad JSON: a body
    not in UTF-8 (RFC 8259 requires it between systems; the bytes go to the router as they came),
    a key twice in one object (which of the two counts is each parser's guess: the allow-list
    would check one `model` and the router could run the other), a number too large for a float
    (`1e309`: it would reach the router as `Infinity`, which is not JSON)."""
    if not raw.strip():
        raise InvalidRequest("The request body is empty; send a JSON object.")
    encoding = json.detect_encoding(raw)
    if encoding != "utf-8":
        raise InvalidRequest(
            f"The request body must be JSON in UTF-8 without a byte order mark; this is {encoding}."
        )
    try:
        text = raw.decode()
        body = _decoder.decode(text)
    # ValueError covers bad UTF-8; RecursionError, nesting deeper than the parser goes.
    except (ValueError, RecursionError):
        raise InvalidRequest(
            "We could not parse the JSON body of your request. Send valid JSON (UTF-8)."
        ) from None
    except _DuplicateKey as duplicate:
        raise InvalidRequest(
            f"The request body has the key `{duplicate.key}` more than once in one object; "
            "send each key once."
        ) from None
    except _NonFinite:
        where = _non_finite(json.loads(text))
        raise InvalidRequest(f"`{where}` must be a finite number.", where) from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    return body


class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


class _NonFinite(Exception):
    pass


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # The parser's hook for every object: its pairs, in order.
    built = dict(pairs)
    if len(built) != len(pairs):
        seen = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return built


def _finite(text: str) -> float:
    # The parser's hook for every number with a fraction or an exponent.
    number = float(text)
    if not math.isfinite(number):
        raise _NonFinite
    return number


# Built once: json.loads with any option builds a decoder per call (1.5 µs of a 2 KB body's 6).
_decoder = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite, object_pairs_hook=_unique)


def _non_finite(data: Any) -> str:
    """Where the first number that is no float is (`temperature`, `messages[0].x`); only ever
    called on the way to a 400."""
    pending = [("", data)]
    while pending:
        where, value = pending.pop()
        if isinstance(value, float) and not math.isfinite(value):
            return where or "body"
        if isinstance(value, dict):
            pending.extend((f"{where}.{key}" if where else key, item) for key, item in value.items())
        elif isinstance(value, list):
            pending.extend((f"{where}[{index}]", item) for index, item in enumerate(value))
    return "body"


def upstream_body(request: Any) -> bytes:
    """The bytes to send to the router: the client's own when nothing was changed (a parsed
    request's `raw`), else its `body` written back."""
    if request.raw is not None:
        return request.raw
    return dump_json(request.body)


def dump_json(data: Any) -> bytes:
    try:
        return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
    except UnicodeEncodeError:
        # Lone surrogates (valid JSON escapes, not valid UTF-8) go on escaped as they came.
        return json.dumps(data, separators=(",", ":")).encode()
    except RecursionError:
        # Parsed just within the parser's depth, too deep to write back: no model takes that.
        raise InvalidRequest("The request is nested too deeply.") from None


# --- Answers ---------------------------------------------------------------------------------


@dataclass
class Usage:
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    # Parts of the two above, where the provider reports them.
    cached_tokens: int | None = None  # prompt tokens read from the provider's prompt cache
    reasoning_tokens: int | None = None  # completion tokens spent reasoning

    @classmethod
    def of(cls, data: Any) -> Usage | None:
        """Chat completions' usage: `prompt_tokens`, `completion_tokens`, and their details."""
        if not isinstance(data, dict):
            return None
        return cls.counted(
            data.get("prompt_tokens"),
            data.get("completion_tokens"),
            data.get("total_tokens"),
            cached=detail(data, "prompt_tokens_details", "cached_tokens"),
            reasoning=detail(data, "completion_tokens_details", "reasoning_tokens"),
        )

    @classmethod
    def counted(
        cls, prompt: Any, completion: Any, total: Any = None, *, cached: Any = None, reasoning: Any = None
    ) -> Usage:
        """Usage from a provider's numbers, each checked (anything but a count is None); the
        total is the sum when the provider gave none."""
        usage = cls(count(prompt), count(completion), count(total), count(cached), count(reasoning))
        if usage.total_tokens is None and None not in (usage.prompt_tokens, usage.completion_tokens):
            usage.total_tokens = usage.prompt_tokens + usage.completion_tokens
        return usage


def detail(data: dict[str, Any], details: str, name: str) -> Any:
    """A usage's detail (`prompt_tokens_details.cached_tokens`…), if it has it."""
    found = data.get(details)
    return found.get(name) if isinstance(found, dict) else None


def count(value: Any) -> int | None:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or not 0 <= value < 2**31  # what a usage column holds; anything else is nonsense
    ):
        return None
    return int(value)


def completion_chars(answer: dict[str, Any]) -> int:
    """Characters of generated text in a completion or a stream chunk."""
    total = 0
    for choice in answer.get("choices") or ():
        if isinstance(choice, dict):
            total += text_size(choice.get("message")) + text_size(choice.get("delta"))
    return total


def parse_answer(raw: bytes) -> Any:
    """A whole (non-streamed) router answer: JSON or `BadAnswer`."""
    try:
        return router_json(raw)
    except (ValueError, RecursionError):
        raise BadAnswer("the answer is not JSON") from None


def parse_completion(raw: bytes) -> dict[str, Any]:
    """A non-streaming chat answer must be a completion object."""
    answer = parse_answer(raw)
    if not isinstance(answer, dict):
        raise BadAnswer("the answer is not a JSON object")
    if "choices" not in answer and "error" in answer:
        raise BadAnswer("the router answered with an error", error=answer)
    return answer
