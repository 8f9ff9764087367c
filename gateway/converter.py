"""OpenAI shapes in and out: the one place that understands requests, answers and stream chunks.

Pure functions and small state objects: no Django, no I/O. Bad client input raises
`InvalidRequest`; an answer from the router that cannot be relayed raises `BadAnswer`.
`gateway.errors` turns both into OpenAI error bodies.
"""

from __future__ import annotations

import base64
import json
import math
import re
import struct
from dataclasses import dataclass, field
from typing import Any

from gateway import sse

# Fields that would steer a client library, never the router: not honoured, not forwarded
# (a client's `api_key` must not travel to Hugging Face).
_CONTROL_FIELDS = ("api_key", "api_base", "base_url")
_NUMBER_FIELDS = ("temperature", "top_p", "presence_penalty", "frequency_penalty")
_INTEGER_FIELDS = ("max_tokens", "max_completion_tokens", "n", "seed", "top_logprobs")
_BOOLEAN_FIELDS = ("stream", "logprobs", "parallel_tool_calls")


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
class ChatRequest:
    body: dict[str, Any]
    model: str
    stream: bool
    # The client asked for the usage chunk itself (we always ask the router for it).
    wants_usage: bool
    # The raw body can be forwarded as it came (nothing to fill in, strip or add).
    raw: bytes | None = None
    # The prompt's size in tokens, estimated: what is recorded when the provider counts none.
    prompt_tokens: int = 0


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_chat_request(raw: bytes, default_model: str) -> ChatRequest:
    """Validate a chat completion request, without judging what only the router can judge."""
    body = parse_json_object(raw)
    unchanged = True

    model = body.get("model")
    if model is None:
        model = default_model
        body["model"] = model
        unchanged = False
    elif not isinstance(model, str) or not model.strip() or not model.isprintable():
        raise InvalidRequest("`model` must be a non-empty string of printable characters.", "model")

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

    for name in _BOOLEAN_FIELDS:
        value = body.get(name)
        if value is not None and not isinstance(value, bool):
            raise InvalidRequest(f"`{name}` must be a boolean.", name)
    for name in _NUMBER_FIELDS:
        value = body.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise InvalidRequest(f"`{name}` must be a number.", name)
    for name in _INTEGER_FIELDS:
        value = body.get(name)
        if value is not None and not _is_integer(value):
            raise InvalidRequest(f"`{name}` must be an integer.", name)

    stream_options = body.get("stream_options")
    if stream_options is not None and not isinstance(stream_options, dict):
        raise InvalidRequest("`stream_options` must be an object.", "stream_options")

    for name in _CONTROL_FIELDS:
        if name in body:
            del body[name]
            unchanged = False

    stream = bool(body.get("stream"))
    wants_usage = bool(stream_options and stream_options.get("include_usage"))
    if stream and not wants_usage:
        # Always ask for usage so the exact token count can be recorded; the relay drops the
        # usage chunk before it reaches a client that did not ask for it.
        body["stream_options"] = {**(stream_options or {}), "include_usage": True}
        unchanged = False
    return ChatRequest(
        body=body,
        model=model,
        stream=stream,
        wants_usage=wants_usage,
        raw=raw if unchanged else None,
        prompt_tokens=estimate_prompt_tokens(messages, body.get("tools")),
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


def text_size(content: Any) -> int:
    """Characters of text in a message's or a delta's fields (strings, parts, tool calls), a
    character outside ASCII counted as CHARS_PER_TOKEN characters."""
    # A loop, not recursion: a client's nesting may go as deep as the JSON parser does.
    total, pending = 0, [content]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            total += _chars(item)
        elif isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, dict):
            pending.extend(item.get(key) for key in _MESSAGE_TEXT)
    return total


def _chars(text: str) -> int:
    if text.isascii():
        return len(text)
    wide = len(text) - len(text.encode("ascii", "ignore"))
    return len(text) + (CHARS_PER_TOKEN - 1) * wide


def _tokens(chars: int) -> int:
    return -(-chars // CHARS_PER_TOKEN)


def estimate_prompt_tokens(messages: list[dict[str, Any]], tools: Any = None) -> int:
    """The prompt's tokens as a chat template would make them: every message's role, name,
    content and tool calls, a few tokens of markers a message, and the tool definitions."""
    tokens = TOKENS_PER_REQUEST
    for message in messages:
        tokens += TOKENS_PER_MESSAGE + _tokens(
            _chars(str(message.get("role", "")))
            + text_size([message.get("content"), message.get("name")])
            + text_size(message.get("tool_calls"))
        )
    if isinstance(tools, list) and tools:
        tokens += TOKENS_FOR_TOOLS + _tokens(_chars(json.dumps(tools, ensure_ascii=False)))
    return tokens


def estimate_usage(prompt_tokens: int, completion_chars: int) -> Usage:
    """Counts for an answer the provider did not count: the prompt's estimate and the
    generated text's size."""
    completion = _tokens(completion_chars)
    return Usage(prompt_tokens, completion, prompt_tokens + completion)


def _is_integer(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


def parse_json_object(raw: bytes) -> dict[str, Any]:
    if not raw.strip():
        raise InvalidRequest("The request body is empty; send a JSON object.")
    try:
        body = json.loads(raw, parse_constant=_reject_constant)
    # ValueError covers bad UTF-8; RecursionError, nesting deeper than the parser goes.
    except (ValueError, RecursionError):
        raise InvalidRequest(
            "We could not parse the JSON body of your request. Send valid JSON (UTF-8)."
        ) from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    return body


def upstream_body(request: ChatRequest) -> bytes:
    """The bytes to send to the router."""
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

    @classmethod
    def of(cls, data: Any) -> Usage | None:
        if not isinstance(data, dict):
            return None
        usage = cls(
            *(_count(data.get(key)) for key in ("prompt_tokens", "completion_tokens", "total_tokens"))
        )
        if usage.total_tokens is None and None not in (usage.prompt_tokens, usage.completion_tokens):
            usage.total_tokens = usage.prompt_tokens + usage.completion_tokens
        return usage


def _count(value: Any) -> int | None:
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
        return json.loads(raw)
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


@dataclass
class ChatStream:
    """Follows a relayed chat stream event by event: what to pass on, and what it told us."""

    wants_usage: bool
    model: str | None = None
    usage: Usage | None = None
    done: bool = False
    started: bool = False  # a chunk with choices has been seen (time to first token)
    finished: bool = False  # a choice has finished (its `finish_reason` is set)
    completion_chars: int = 0
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
        data = sse.data_of(event)
        if data is None:
            return event + b"\n\n"  # a comment (keep-alive): pass it on
        if data.strip() == b"[DONE]":
            self.done = True
            return sse.DONE
        try:
            chunk = json.loads(data)
        except (ValueError, RecursionError):
            raise BadAnswer("a stream event is not JSON") from None
        if not isinstance(chunk, dict):
            raise BadAnswer("a stream event is not a JSON object")
        choices = chunk.get("choices")
        if "error" in chunk and not choices:
            raise BadAnswer("the router reported an error mid-stream", error=chunk)
        if self.model is None and isinstance(chunk.get("model"), str):
            self.model = chunk["model"]
        if chunk.get("usage"):
            # Some providers send (cumulative) usage in every chunk: the last one counts.
            self.usage = Usage.of(chunk["usage"]) or self.usage
        if choices:
            self.started = True
            self.completion_chars += completion_chars(chunk)
            if not self.finished and isinstance(choices, list):
                for choice in choices:
                    if isinstance(choice, dict) and choice.get("finish_reason"):
                        self.finished = True
        elif chunk.get("usage") and not self.wants_usage:
            return b""
        return event + b"\n\n"

    def end(self) -> bytes:
        """At the end of the router's stream: what is left to send. A stream that ended after
        a choice finished is complete, with or without [DONE] (Cerebras and TGI never send it):
        the client gets its [DONE] from us. One that ended before is cut off. A last event
        without its blank line still counts."""
        out = b"" if self.done else self.feed(b"\n\n")
        if not self.done:
            if not self.finished:
                raise BadAnswer("the stream ended before the answer was finished")
            self.done = True
            out += sse.DONE
        return out


# --- Models ------------------------------------------------------------------------------------


def models_list(answer: Any) -> dict[str, Any]:
    """The router's model list in OpenAI's shape, keeping its extra fields."""
    items = answer.get("data") if isinstance(answer, dict) else answer
    if not isinstance(items, list):
        raise BadAnswer("the model list is not a list")
    return {
        "object": "list",
        "data": [model_entry(item) for item in items if isinstance(item, dict) and item.get("id")],
    }


def model_entry(item: dict[str, Any]) -> dict[str, Any]:
    model_id = str(item["id"])
    created = item.get("created")
    return {
        **item,
        "id": model_id,
        "object": "model",
        "created": created if isinstance(created, int) and not isinstance(created, bool) else 0,
        "owned_by": item.get("owned_by") or model_id.split("/")[0],
    }


def find_model(listing: dict[str, Any], model_id: str) -> dict[str, Any] | None:
    """The listing's entry for a model id; a provider suffix (`:fastest`) names the same model."""
    wanted = model_id.rsplit(":", 1)[0] if ":" in model_id else model_id
    for entry in listing["data"]:
        if entry["id"] == model_id or entry["id"] == wanted:
            return entry
    return None


# --- Embeddings --------------------------------------------------------------------------------
# OpenAI's embeddings API in, Hugging Face's feature-extraction pipeline out, and back.

MAX_EMBEDDING_INPUTS = 2048  # OpenAI's limit per request
# An HF model id (`org/name`) as the pipeline URL's path takes it: nothing that could leave it.
_MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?")


@dataclass
class EmbeddingsRequest:
    model: str
    inputs: list[str]
    single: bool  # `input` was one string (the router is sent a list either way)
    encoding_format: str = "float"
    dimensions: int | None = None
    prompt_chars: int = 0


def parse_embeddings_request(raw: bytes, default_model: str) -> EmbeddingsRequest:
    body = parse_json_object(raw)
    model = body.get("model", default_model)
    if not isinstance(model, str) or not model.strip():
        raise InvalidRequest("`model` must be a non-empty string.", "model")
    # The feature-extraction pipeline is HF Inference's own: a provider suffix names nothing more.
    model = model.removesuffix(":hf-inference")
    if not _MODEL_ID.fullmatch(model) or ".." in model:
        raise InvalidRequest(
            "`model` must be a Hugging Face model id such as `org/name` (feature-extraction "
            "runs on HF Inference: no provider suffix).",
            "model",
        )

    value = body.get("input")
    single = isinstance(value, str)
    inputs = [value] if single else value
    if not isinstance(inputs, list) or not inputs:
        raise InvalidRequest("`input` must be a non-empty string or a non-empty array of strings.", "input")
    if any(isinstance(item, (int, list)) and not isinstance(item, bool) for item in inputs):
        raise InvalidRequest(
            "Token ids cannot be embedded here: Hugging Face models have their own tokenizers, "
            "and which tokenizer made these ids cannot be known. Send the text instead "
            "(LangChain's OpenAIEmbeddings: pass check_embedding_ctx_length=False).",
            "input",
        )
    if not all(isinstance(item, str) and item for item in inputs):
        raise InvalidRequest("Every `input` must be a non-empty string.", "input")
    if len(inputs) > MAX_EMBEDDING_INPUTS:
        raise InvalidRequest(f"`input` may hold at most {MAX_EMBEDDING_INPUTS} strings.", "input")

    encoding = body.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        raise InvalidRequest("`encoding_format` must be `float` or `base64`.", "encoding_format")
    dimensions = body.get("dimensions")
    if dimensions is not None and (not _is_integer(dimensions) or dimensions < 1):
        raise InvalidRequest("`dimensions` must be a positive integer.", "dimensions")
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise InvalidRequest("`user` must be a string.", "user")
    return EmbeddingsRequest(
        model=model,
        inputs=inputs,
        single=single,
        encoding_format=encoding,
        dimensions=int(dimensions) if dimensions is not None else None,
        prompt_chars=sum(_chars(item) for item in inputs),
    )


def feature_extraction_body(request: EmbeddingsRequest) -> bytes:
    """HF Inference's feature-extraction request: normalised vectors (as OpenAI's are), and
    inputs longer than the model takes truncated rather than refused."""
    return dump_json({"inputs": request.inputs, "normalize": True, "truncate": True})


def embeddings_answer(raw: bytes, request: EmbeddingsRequest) -> dict[str, Any]:
    """The pipeline's bare array of vectors as OpenAI's embeddings answer (usage estimated:
    the pipeline counts nothing)."""
    vectors = parse_answer(raw)
    if isinstance(vectors, dict):
        raise BadAnswer("the router answered with an error", error=vectors)
    if request.single and _is_vector(vectors):
        vectors = [vectors]  # some models answer one input with one vector, not a list of them
    if not isinstance(vectors, list) or len(vectors) != len(request.inputs):
        raise BadAnswer(f"expected {len(request.inputs)} vectors")
    if not all(_is_vector(vector) for vector in vectors):
        raise BadAnswer("the answer is not one vector of numbers per input (a token-level model?)")
    data = []
    for index, vector in enumerate(vectors):
        vector = shorten(vector, request.dimensions) if request.dimensions is not None else normalized(vector)
        embedding = encode_base64(vector) if request.encoding_format == "base64" else vector
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    tokens = _tokens(request.prompt_chars)
    return {
        "object": "list",
        "data": data,
        "model": request.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _is_vector(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in value)
    )


def shorten(vector: list[float], dimensions: int) -> list[float]:
    """The first `dimensions` values, scaled back to length 1: how OpenAI's `dimensions` works,
    right for models trained for it (Matryoshka embeddings), a plain cut for others."""
    if dimensions > len(vector):
        raise InvalidRequest(
            f"`dimensions` is {dimensions}, but this model's embeddings have {len(vector)}.", "dimensions"
        )
    return normalized(vector[:dimensions])


def normalized(vector: list[float]) -> list[float]:
    """The vector scaled to length 1, as OpenAI's embeddings are: some models ignore the
    pipeline's `normalize` (answers with norms of 6 and 17 have been seen)."""
    norm = math.sqrt(math.fsum(x * x for x in vector))
    if not norm or abs(norm - 1.0) < 1e-4:
        return vector
    return [x / norm for x in vector]


def encode_base64(vector: list[float]) -> str:
    """OpenAI's `base64` format: little-endian float32s, base64-encoded."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
