"""A fake Hugging Face router: a raw ASGI app, fast enough never to be the bottleneck.

Serves `POST /v1/chat/completions` (JSON or SSE, CHUNKS content chunks, fewer when
`max_completion_tokens` or `max_tokens` asks: a provider stops there, `finish_reason: length`), `POST /v1/responses`
and `POST /v1/messages` (below), and `GET /v1/models`.

Like the real router, it answers only models it serves: the ids in MODELS, bare or with a
suffix (`:cerebras`, `:fastest`…), and the `fault/…` and `slow/…` names below. Any other model
gets the router's 400, `invalid_request_error` with `param: "model"`: an id that is no Hugging
Face repository (no `org/` part: `"m"`, or the `"dummy"` huggingface_hub sends when given only
a base URL) "does not exist" (`code: "model_not_found"`); an `org/name` that no provider
serves "is not supported by any provider you have enabled" (`code: "model_not_supported"`).

Streams end the way the provider the suffix names ends them (no suffix, or a policy such as
`:fastest`: OpenAI's way, `data: ` events, the usage chunk only when `stream_options.
include_usage` asks, then `data: [DONE]`):

    :cerebras       no [DONE]: the stream closes after the chunk with `finish_reason`, which
                    carries the usage, asked for or not
    :hf-inference   TGI's way: no [DONE], and no usage even when asked
    :nebius         [DONE], but no usage even when asked
    :novita         usage in every chunk, asked for or not, cumulative: the running totals
                    so far, the last chunk's being the answer's (what vLLM sends with its
                    continuous usage stats on). Which providers do this varies by model and
                    over time; novita is the fake's pick because it is one of the providers
                    whose recordings issue 13 drew on and no other style here uses it. A relay
                    must keep the last usage it saw, never add them up.
    :hyperbolic     `data:` without the space and `\r\n` line ends, both valid SSE that
                    strict parsers trip on; otherwise OpenAI's way

Non-streamed answers carry usage whatever the provider. The model id selects a misbehaviour:

    fault/status-N          answer status N with an OpenAI-shaped error body (429 and 503:
                            with `Retry-After: 7`)
    fault/status-N-empty    answer status N with no body at all
    fault/slow-status-N     wait SLOW_STATUS seconds, then as fault/status-N
    fault/echo-auth-401     401 whose message quotes the Authorization header it got
    fault/echo-auth-fields-N  status N with an error whose every field quotes the
                            Authorization header or the token alone: message, type, param,
                            code, nested objects and lists (Anthropic's shape on /v1/messages:
                            its type and message), and `Retry-After: <the token>`
    fault/echo-auth-stream  two chunks, then the router's error event quoting the token in its
                            code (type), message and param; not streamed: that error as the
                            answer (Responses: a failed Response whose error code is the token)
    fault/echo-auth-answer  a normal answer whose model and text are the Authorization header
    fault/echo-auth-escaped as fault/echo-auth-answer, the header spelled with `\\u` escapes only
                            (as JSON may spell any character: the client reads it decoded), and
                            streamed, each chunk that quotes it sent in two halves that cut it
    fault/hang              never send headers
    fault/hang-after-headers  send the headers (and, streaming, the first event), then nothing
    fault/drip              stream one chunk per DRIP seconds, forever
    fault/cut               stream two chunks, then end cleanly without [DONE]
    fault/break             stream two chunks, then drop the connection mid-body
    fault/not-json          200 with an HTML body
    fault/bad-sse           stream a chunk, then an event whose data is not JSON
    fault/redirect          307 to another host: localhost, this server, which counts visitors
    fault/no-usage          a normal answer without `usage`, stream or not
    fault/nul               a normal answer whose model and text contain NUL characters
    fault/big               stream BIG_CHUNKS chunks of 16 KB as fast as the reader takes them
    slow/...                a normal stream, one chunk per SLOW seconds (a long answer); its
                            first token TTFB seconds after the headers instead, when TTFB is
                            set (a reasoning model thinking first: bench.streams)

`POST /v1/responses` answers the OpenAI Responses API (built by tests/support/router_events.py,
whose docstring gives the usage rule): the same models as chat, refused with the same 400, a
Response object (`resp_…`, one assistant message with one output_text part, usage with
`input_tokens_details.cached_tokens` and `output_tokens_details.reasoning_tokens`), or with
`"stream": true` typed events (`event: <type>` and `data:` lines, each with its
`sequence_number`): response.created, response.in_progress, response.output_item.added,
response.content_part.added, response.output_text.delta ×CHUNKS, response.output_text.done,
response.content_part.done, response.output_item.done, response.completed (the whole response
with its usage), and no `[DONE]`. A request for structured output (`text.format` a
`json_schema`) is answered with a JSON object its schema accepts (router_events.structured_deltas). The answer names the model as asked, suffix included (HF's
Responses implementation echoes it); `previous_response_id` is accepted and echoed, nothing is
stored: `GET`/`DELETE /v1/responses/{id}`, `POST …/cancel` and `GET …/input_items` get the
404 of any unknown path. The faults above apply, stream or not, as they make sense:
fault/status-N(-empty), slow-status-N, echo-auth-401, hang, hang-after-headers (the first
event: response.created), drip, cut (two deltas, then the stream ends before
response.completed), break, not-json, bad-sse, redirect, no-usage (`usage: null`), nul, big,
slow/...; and

    fault/failed            two deltas, then `response.failed` (status failed, error
                            `server_error`, no usage); not streamed: that Response, status 200
                            (as HF's Responses implementation answers a failure)
    fault/incomplete        `response.incomplete` instead of response.completed (incomplete_details
                            `max_output_tokens`, the message item `incomplete`, with usage)
    fault/data-only         a normal stream framed as HF's responses.js frames it: `data:` lines
                            only, no `event:` lines

`POST /v1/messages` (any query string, such as Claude Code's `?beta=true`, is accepted and
kept in `_stats`) answers the Anthropic Messages API, built by router_events.py as well: the
same models as chat, but every error in Anthropic's shape, `{"type": "error", "error": {"type",
"message"}}`: an unknown model is an `invalid_request_error` 400 with the router's message, a
body without `max_tokens` the `invalid_request_error` 400 "max_tokens: Field required" (the
model is checked first, as the router routes before a provider reads the body). A Message
object (`msg_…`, one text block, stop_reason end_turn, usage with input_tokens, output_tokens,
cache_read_input_tokens, cache_creation_input_tokens), or streamed: message_start (usage with
output_tokens 1), content_block_start, ping, content_block_delta (text_delta) ×CHUNKS,
content_block_stop, message_delta (stop_reason; usage with the final output_tokens and the
input and cache counts repeated, as Anthropic's API does today), message_stop. The faults as
for Responses (status-N bodies typed by status: 429 rate_limit_error, 500 api_error, 529
overloaded_error…; echo-auth-401 an `authentication_error` quoting both the Authorization and
the x-api-key headers; no-usage: no `usage` in message_start, message_delta or the Message),
and

    fault/overloaded        529 `overloaded_error` "Overloaded", stream or not
    fault/failed            streamed: two deltas, then Anthropic's `error` event
                            (`overloaded_error`), as when a model is overloaded mid-answer;
                            not streamed: 500 `api_error`
    fault/incomplete        stop_reason `max_tokens`

Streamed Responses and Messages requests for `agent/…` models are a coding agent's turns
(Codex CLI, Claude Code; tests/e2e/test_agents.py): tests/support/agent_script.py scripts them
(one shell tool call, then a final text quoting its output, fixed usage per kind of answer),
and `_stats`' `agent_calls` lists them, each with the answer it got and the headers that tell
the proxy's request id and what it forwarded.

`POST /v1/messages/count_tokens` is not served (the 404 of any unknown path): the router is
assumed not to offer it, so a proxy has to estimate locally.

`POST /hf-inference/models/{model}/pipeline/feature-extraction` answers HF Inference's way: a bare
array with one DIM-long vector per input, made from the text's hash (normalised when asked),
for the models in EMBEDDING_MODELS; `fault/status-N...` models fail as above, `fault/tokens`
answers token-level vectors, and any other model gets HF Inference's 400
`{"error": "Model not supported by provider hf-inference"}`.

`POST /hf-inference/models/{model}` is HF Inference's automatic-speech-recognition for the models
in SPEECH_MODELS: the audio as the body (any content type), or, with parameters, JSON
`{"inputs": base64 audio, "parameters": {...}}` as huggingface_hub sends it. It answers
`{"text": transcript(audio)}`, with `return_timestamps` also `chunks` of `{"text", "timestamp":
[start, end]}`, the last one's end left open (null) as Whisper leaves it; an empty audio gets a
400 `{"error": …}`, `fault/status-N` fails as above, and any other model gets the 400 above.
`last_audio` in the stats says what the last one received (content type, bytes, parameters).

`POST /hf-inference/models/{model}` is HF Inference's text-to-image for the models in
IMAGE_MODELS that it serves: `{"inputs": prompt, "parameters": {"width", "height", ...}}` in, a
real PNG of that size (1024x1024 without one), one colour from the prompt's hash, out.
`POST /{together,nebius,nscale}/v1/images/generations` are those providers' OpenAI-shaped routes:
`model` must be the provider's id from the Hub's mapping (else the provider's 404
`model_not_available`), `response_format` its own word for base64 (Together `base64`, the
others `b64_json`; else a 400), and they answer `{"data": [{"b64_json"}]}` with `n` PNGs (Together
only; the others make one, whatever `n` says), sized by `width`/`height` or Nscale's `size`.
The real Together answers JPEG unless asked otherwise: PNG keeps the fake simple.
`last_image` in the stats says what the last image request received (path and body).

`GET /api/models/{id}` is the Hub's model info: with `expand[]=inferenceProviderMapping`, the
mapping in the object form the Hub sends for one model (`{provider: {"providerId", "status",
"task"}}`), for IMAGE_MODELS and MODELS (these for `conversational`); any other id gets the
Hub's 404 `{"error": "Repository not found"}` with `x-error-code: RepoNotFound`. Point
HF_HUB_URL at this server.

Connection refused is this server not running. `GET /_stats` reports what it saw: requests
(and chat_requests, responses_requests, messages_requests), attempts per model (refused ones
too), `refused` (by model), the last request's headers, body and query string, what fault/big
sent, `abandoned` (requests whose client went away before the answer was complete, with when it
noticed), `streams_abandoned` and `agent_calls`.
`POST /_reset` clears it. Run: `python -m tests.support.fake_router --port 9100`; with
`--reuse-port`, several such processes share the port (SO_REUSEPORT: the kernel spreads the
connections), each with its own `_stats`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import contextvars
import functools
import hashlib
import json
import os
import struct
import time
import zlib
from dataclasses import dataclass
from urllib.parse import parse_qs

from tests.support import agent_script
from tests.support.router_events import (
    MessageStream,
    ResponseStream,
    anthropic_error,
    anthropic_status_error,
    sse,
    structured_deltas,
)

CHUNKS = int(os.environ.get("FAKE_ROUTER_CHUNKS", "20"))
DRIP = float(os.environ.get("FAKE_ROUTER_DRIP", "1.0"))
SLOW = float(os.environ.get("FAKE_ROUTER_SLOW", "0.1"))
TTFB = float(os.environ.get("FAKE_ROUTER_TTFB", "0"))
SLOW_STATUS = float(os.environ.get("FAKE_ROUTER_SLOW_STATUS", "1.0"))
BIG_CHUNKS = int(os.environ.get("FAKE_ROUTER_BIG_CHUNKS", "4000"))
DIM = int(os.environ.get("FAKE_ROUTER_DIM", "16"))
HF_INFERENCE_MODELS = "/hf-inference/models/"  # its pipelines: feature-extraction, speech recognition
FEATURE_EXTRACTION = HF_INFERENCE_MODELS

MODELS = {
    "object": "list",
    "data": [
        {
            "id": "openai/gpt-oss-120b",
            "object": "model",
            "created": 1754000000,
            "owned_by": "openai",
            "providers": [
                {
                    "provider": "fireworks-ai",
                    "status": "live",
                    "context_length": 131072,
                    "pricing": {"input": 0.15, "output": 0.6},
                }
            ],
        },
        {
            "id": "meta-llama/Llama-3.1-8B-Instruct",
            "object": "model",
            "created": 1721000000,
            "owned_by": "meta-llama",
            "providers": [
                {"provider": "cerebras", "status": "live", "pricing": {"input": 0.1, "output": 0.1}},
                {"provider": "nebius", "status": "live", "pricing": {"input": 0.02, "output": 0.06}},
                {"provider": "novita", "status": "live", "pricing": {"input": 0.02, "output": 0.05}},
                {"provider": "hyperbolic", "status": "live", "pricing": {"input": 0.1, "output": 0.1}},
                {"provider": "hf-inference", "status": "live"},
            ],
        },
    ],
}
# What HF Inference's feature-extraction pipeline serves here (README: the default, and the one
# it recommends for Chinese text).
EMBEDDING_MODELS = ("sentence-transformers/all-MiniLM-L6-v2", "BAAI/bge-m3", "intfloat/multilingual-e5-large")
# What its automatic-speech-recognition serves (README: the default transcription model).
SPEECH_MODELS = ("openai/whisper-large-v3", "openai/whisper-large-v3-turbo")
# What the Hub maps for text-to-image: provider → the model's id there, in the Hub's order.
IMAGE_MODELS = {
    # The README's default: listed first on a provider hfproxy does not map.
    "black-forest-labs/FLUX.1-schnell": {
        "fal-ai": "fal-ai/flux/schnell",
        "together": "black-forest-labs/FLUX.1-schnell-Free",
        "hf-inference": "black-forest-labs/FLUX.1-schnell",
        "nebius": "black-forest-labs/flux-schnell",
        "nscale": "BlackForestLabs/FLUX.1-schnell",
    },
    "stabilityai/stable-diffusion-xl-base-1.0": {"hf-inference": "stabilityai/stable-diffusion-xl-base-1.0"},
    "Qwen/Qwen-Image": {"fal-ai": "fal-ai/qwen-image", "replicate": "qwen/qwen-image"},  # queues only
}
IMAGE_ROUTES = {"together": "base64", "nebius": "b64_json", "nscale": "b64_json"}  # their base64 word
IMAGE_GENERATIONS = {f"/{provider}/v1/images/generations": provider for provider in IMAGE_ROUTES}
SERVED = {entry["id"] for entry in MODELS["data"]}
POLICIES = ("fastest", "cheapest", "preferred", "auto")


@dataclass(frozen=True)
class Style:
    """How a provider's streams are framed and end (see the module docstring)."""

    done: bool = True  # ends with `data: [DONE]`
    usage: str = "asked"  # "asked": one usage chunk when asked; "last", "every", "never"
    prefix: bytes = b"data: "
    newline: bytes = b"\n"


STYLES = {
    "cerebras": Style(done=False, usage="last"),
    "hf-inference": Style(done=False, usage="never"),
    "nebius": Style(usage="never"),
    "novita": Style(usage="every"),
    "hyperbolic": Style(prefix=b"data:", newline=b"\r\n"),
}
OPENAI_STYLE = Style()


def new_stats() -> dict:
    return {
        "requests": 0,
        "chat_requests": 0,
        "responses_requests": 0,
        "messages_requests": 0,
        "attempts": {},
        "refused": {},
        "abandoned": [],
        "streams_abandoned": 0,
        "redirected": 0,
        "big_bytes_sent": 0,
        "last_headers": {},
        "last_query": "",
        "last_body": None,
        "last_body_sha256": None,
        "last_audio": None,
        "last_image": None,
        "agent_calls": [],
    }


stats = new_stats()


class Dropped(Exception):
    """Raised to make uvicorn drop the connection mid-body (fault/break)."""


async def _read_body(receive) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def _send_json(send, status: int, data, headers=()) -> None:
    body = b"" if data is None else json.dumps(data).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _chunk(
    model: str, created: int, delta: dict, finish=None, usage=None, choices=True, style=OPENAI_STYLE
) -> bytes:
    data = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}] if choices else [],
    }
    if usage is not None:
        data["usage"] = usage
    return style.prefix + json.dumps(data).encode() + style.newline * 2


def _provider(model: str) -> bytes:
    """Who answered, as the real router says in `x-inference-provider`: the suffix the model
    names, else (no suffix, or a policy such as :fastest) a provider of the fake's choosing."""
    suffix = model.partition(":")[2]
    return (suffix if suffix and suffix not in POLICIES else "fake-provider").encode()


def refusal(model: str) -> dict | None:
    """The router's 400 body for a model it does not serve, None for one it does."""
    if model.startswith(("fault/", "slow/", agent_script.MODEL_PREFIX)):
        return None
    repository = model.partition(":")[0]
    if repository in SERVED:
        return None
    if "/" in repository:
        message, code = (
            f"The requested model '{repository}' is not supported by any provider you have enabled.",
            "model_not_supported",
        )
    else:
        message, code = f"The requested model '{repository}' does not exist.", "model_not_found"
    return {"error": {"message": message, "type": "invalid_request_error", "param": "model", "code": code}}


def _usage(prompt: int, completion: int) -> dict:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _openai_status_error(status: int, message: str) -> dict:
    return {"error": {"message": message, "type": "fake", "code": status}}


# This request's headers (`last_headers` is whichever request came last).
_headers: contextvars.ContextVar[dict | None] = contextvars.ContextVar("headers", default=None)


def echoed() -> tuple[str, str]:
    """The Authorization header this request came with, and the token in it."""
    header = (_headers.get() or {}).get("authorization", "")
    return header, header.removeprefix("Bearer ")


def echoing_error(api: str) -> dict:
    """An error body whose every field quotes the caller's credentials (fault/echo-auth-…)."""
    header, token = echoed()
    if api == "messages":
        error = anthropic_error(token, f"Invalid credentials in Authorization header: {header}")
        return {**error, "request": {"authorization": header}}
    return {
        "error": {
            "message": f"Invalid credentials in Authorization header: {header}",
            "type": token,
            "param": header,
            "code": token,
            "metadata": {"headers": {"authorization": header}, "tokens": [token]},
        },
        "detail": [{"loc": ["header", token], "msg": header}],
    }


async def _status(send, model: str, error=_openai_status_error) -> None:
    rest = model.removeprefix("fault/").removeprefix("slow-").removeprefix("status-")
    empty = rest.endswith("-empty")
    status = int(rest.removesuffix("-empty"))
    headers = [(b"retry-after", b"7")] if status in (429, 503) else []
    body = error(status, f"fake router says {status}")
    await _send_json(send, status, None if empty else body, headers)


async def _completion(receive, send, api: str) -> None:
    """Chat, Responses and Messages alike: record the request, refuse what the router refuses,
    then answer while listening for the client going away."""
    stats[f"{api}_requests"] += 1
    raw = await _read_body(receive)
    stats["last_body"] = raw.decode("utf-8", "replace")
    stats["last_body_sha256"] = hashlib.sha256(raw).hexdigest()
    request = json.loads(raw)
    model = request.get("model", "")
    stats["attempts"][model] = stats["attempts"].get(model, 0) + 1
    stream = bool(request.get("stream"))
    finished = False
    disconnected = asyncio.Event()

    async def watch() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        disconnected.set()
        if not finished:
            stats["abandoned"].append({"model": model, "stream": stream, "at": time.time()})
            stats["streams_abandoned"] += stream

    refused = refusal(model)
    if refused:
        stats["refused"][model] = stats["refused"].get(model, 0) + 1
        if api == "messages":
            refused = anthropic_error("invalid_request_error", refused["error"]["message"])
        return await _send_json(send, 400, refused)
    if api == "messages" and "max_tokens" not in request:
        return await _send_json(
            send, 400, anthropic_error("invalid_request_error", "max_tokens: Field required")
        )
    answer = ANSWERS[api]
    if stream and api != "chat" and agent_script.is_agent(model):
        answer = functools.partial(_agent_turn, api)
    if not stream and not model.startswith("fault/"):
        # A plain answer, sent at once: nothing to watch (and the benchmarks' reference stays lean).
        return await answer(send, request, model, stream, disconnected)
    if model == "fault/echo-auth-escaped":
        send = _escaping(send)
    watcher = asyncio.ensure_future(watch())
    try:
        await answer(send, request, model, stream, disconnected)
        finished = True
    finally:
        await asyncio.sleep(0)  # a disconnect that came with the last send is still heard
        watcher.cancel()


async def _misbehave(send, api: str, model: str, stream: bool, disconnected: asyncio.Event) -> bool:
    """The faults every API shares, up to the headers; True when the model named one and it
    has been played (the errors in the API's own shape)."""
    headers = stats["last_headers"]
    anthropic = api == "messages"
    if model.startswith("fault/slow-status-"):
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(disconnected.wait(), SLOW_STATUS)
        if disconnected.is_set():
            return True
    if model.startswith(("fault/status-", "fault/slow-status-")):
        await _status(send, model, anthropic_status_error if anthropic else _openai_status_error)
        return True
    if model == "fault/echo-auth-401":
        message = f"Invalid credentials in Authorization header: {headers.get('authorization', '')}"
        if anthropic:
            message += f", x-api-key: {headers.get('x-api-key', '')}"
            await _send_json(send, 401, anthropic_error("authentication_error", message))
        else:
            await _send_json(send, 401, {"error": message})
        return True
    if await _echo_error(send, api, model, stream):
        return True
    if anthropic and model == "fault/overloaded":
        await _send_json(send, 529, anthropic_error("overloaded_error", "Overloaded"))
        return True
    if model == "fault/redirect":
        # Another host name (localhost for 127.0.0.1) of this same server, which counts visitors.
        port = headers.get("host", "").rpartition(":")[2]
        location = f"http://localhost:{port}/_redirected".encode()
        await send({"type": "http.response.start", "status": 307, "headers": [(b"location", location)]})
        await send({"type": "http.response.body", "body": b""})
        return True
    if model == "fault/not-json":
        body = b"<html><body>502 Bad Gateway</body></html>"
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/html")]}
        )
        await send({"type": "http.response.body", "body": body})
        return True
    if model == "fault/hang" or (model == "fault/hang-after-headers" and not stream):
        if model != "fault/hang":
            start = {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"100")]}
            await send(start)
        await disconnected.wait()
        return True
    return False


async def _echo_error(send, api: str, model: str, stream: bool) -> bool:
    """fault/echo-auth-fields-N, and fault/echo-auth-stream not streamed; True if played."""
    if model.startswith("fault/echo-auth-fields-"):
        status = int(model.removeprefix("fault/echo-auth-fields-"))
        retry_after = [(b"retry-after", echoed()[1].encode())]
        await _send_json(send, status, echoing_error(api), retry_after)
        return True
    if model != "fault/echo-auth-stream" or stream:
        return False
    if api == "responses":
        header, token = echoed()
        answer = ResponseStream({}, model).failed(f"the model failed: {header}")[0]["response"]
        answer["error"]["code"] = token
        await _send_json(send, 200, answer)
    else:
        await _send_json(send, 200, echoing_error(api))
    return True


def _chat_answered(model: str) -> str:
    """The model a chat answer names: the one asked for without its suffix (fault/nul: with NUL
    characters; fault/echo-auth-answer: the Authorization header)."""
    if model in ECHO_ANSWERS:
        return echoed()[0]
    return "fault/nul\u0000model" if model == "fault/nul" else model.split(":")[0]


ECHO_ANSWERS = ("fault/echo-auth-answer", "fault/echo-auth-escaped")


def _escaping(send):
    """`send` with the Authorization header, wherever the JSON quotes it, spelled with `\\u`
    escapes only; a body that quotes it is sent in two halves, cut inside it."""
    header = json.dumps(echoed()[0])[1:-1].encode()
    spelled = "".join(f"\\u{ord(character):04x}" for character in echoed()[0]).encode()

    async def escaping(message: dict) -> None:
        if message["type"] == "http.response.start":
            headers = [(name, value) for name, value in message["headers"] if name != b"content-length"]
            return await send({**message, "headers": headers})
        body = message.get("body", b"")
        if not header or header not in body:
            return await send(message)
        body = body.replace(header, spelled)
        cut = body.index(spelled) + len(spelled) // 2
        await send({"type": "http.response.body", "body": body[:cut], "more_body": True})
        await send({**message, "body": body[cut:]})

    return escaping


def _chat_length(request: dict) -> int:
    """How many tokens a chat answer has: CHUNKS, or fewer when `max_completion_tokens` (or
    `max_tokens`) says so, as a provider stops there (finish_reason `length`)."""
    for name in ("max_completion_tokens", "max_tokens"):
        if isinstance(request.get(name), int) and not isinstance(request.get(name), bool):
            return max(0, min(CHUNKS, request[name]))
    return CHUNKS


def _chat_text(model: str, length: int = CHUNKS) -> str:
    text = " ".join(f"tok{i}" for i in range(length)) + ("\u0000" if model == "fault/nul" else "")
    return text + " " + echoed()[0] if model in ECHO_ANSWERS else text


async def _chat(send, request: dict, model: str, stream: bool, disconnected: asyncio.Event) -> None:
    if await _misbehave(send, "chat", model, stream, disconnected):
        return

    prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in request.get("messages", [])) or 1
    created = int(time.time())
    answered = _chat_answered(model)
    length = _chat_length(request)
    finish = "stop" if length == CHUNKS else "length"
    usage = None if model == "fault/no-usage" else _usage(prompt_tokens, length)
    if not stream:
        text = _chat_text(model, length)
        answer = {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": created,
            "model": answered,
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}
            ],
        }
        if usage:
            answer["usage"] = usage
        return await _send_json(send, 200, answer, [(b"x-inference-provider", _provider(model))])

    await _start_stream(send, model)

    async def event(body: bytes) -> None:
        await send({"type": "http.response.body", "body": body, "more_body": True})

    style = STYLES.get(model.partition(":")[2], OPENAI_STYLE)

    def running(completion: int) -> dict | None:
        """The usage a chunk carries on its way, in the styles that send it in every chunk."""
        return _usage(prompt_tokens, completion) if usage and style.usage == "every" else None

    await event(
        _chunk(answered, created, {"role": "assistant", "content": ""}, usage=running(0), style=style)
    )
    if model == "fault/hang-after-headers":
        await disconnected.wait()
        return
    if model == "fault/drip":
        i = 0
        while not disconnected.is_set():
            await event(_chunk(answered, created, {"content": f"drip{i} "}))
            i += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(disconnected.wait(), DRIP)
        return
    if model == "fault/big":
        filler = "x" * 16384
        for _ in range(BIG_CHUNKS):
            chunk = _chunk(answered, created, {"content": filler})
            await event(chunk)
            stats["big_bytes_sent"] += len(chunk)
            # uvicorn's send returns at once once the client is gone: let the watcher hear it.
            await asyncio.sleep(0)
            if disconnected.is_set():
                return
        count = 0
    else:
        count = 2 if model in CHAT_SHORT_STREAMS else length
    for i in range(count):
        if model.startswith("slow/"):
            await asyncio.sleep(TTFB if TTFB and i == 0 else SLOW)
        if disconnected.is_set():
            return
        await event(_chunk(answered, created, {"content": f"tok{i} "}, usage=running(i + 1), style=style))
    if model in CHAT_SHORT_STREAMS:
        await asyncio.sleep(SLOW)  # what came so far reaches the client first
    if model == "fault/cut":
        return await send({"type": "http.response.body", "body": b""})
    if model == "fault/break":
        raise Dropped("fault/break")
    if model == "fault/bad-sse":
        await event(b"data: {this is not json\n\n")
    if model == "fault/echo-auth-stream":
        error = json.dumps(echoing_error("chat")).encode()
        return await send({"type": "http.response.body", "body": b"data: " + error + b"\n\n"})
    suffix = "\u0000" if model == "fault/nul" else ""
    last_usage = usage if style.usage in ("last", "every") else None
    tail = _chunk(answered, created, {"content": suffix}, finish=finish, usage=last_usage, style=style)
    options = request.get("stream_options") or {}
    if style.usage == "asked" and options.get("include_usage") and usage:
        tail += _chunk(answered, created, {}, usage=usage, choices=False, style=style)
    if style.done:
        tail += style.prefix + b"[DONE]" + style.newline * 2
    await send({"type": "http.response.body", "body": tail})


CHAT_SHORT_STREAMS = ("fault/cut", "fault/break", "fault/bad-sse", "fault/echo-auth-stream")
SHORT_STREAMS = (*CHAT_SHORT_STREAMS, "fault/failed")


async def _start_stream(send, model: str) -> None:
    """An event stream's headers, as the provider `model` names sends them."""
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"text/event-stream"),
                (b"cache-control", b"no-cache"),
                (b"x-inference-provider", _provider(model)),
            ],
        }
    )


def _deltas(model: str) -> list[str]:
    """The text deltas of a Responses or Messages answer: "tok0", " tok1"…"""
    count = 2 if model in SHORT_STREAMS else CHUNKS
    deltas = [f"tok{i}" if i == 0 else f" tok{i}" for i in range(count)]
    if model in ECHO_ANSWERS:
        deltas[-1] += " " + echoed()[0]
    if model == "fault/nul":
        deltas[-1] += "\u0000"
    return deltas


def _answered(model: str) -> str:
    """The model a Responses or Messages answer names: the one asked for, as HF's Responses
    implementation echoes it (fault/nul: with NUL characters)."""
    if model in ECHO_ANSWERS:
        return echoed()[0]
    return "fault/nul\u0000model" if model == "fault/nul" else model


def _failure(builder, model: str) -> list[dict]:
    """How a typed stream of fault/failed or fault/echo-auth-stream ends."""
    if model == "fault/failed":
        return builder.failed("fake router says the model failed")
    header, token = echoed()
    if isinstance(builder, MessageStream):
        return [anthropic_error(token, f"Invalid credentials: {header}")]
    return [{"type": "error", "code": token, "message": f"Invalid credentials: {header}", "param": header}]


async def _typed_stream(
    send, model: str, builder, tail, disconnected: asyncio.Event, event_line=True, deltas=None
):
    """A stream of typed events (Responses, Messages): the builder's head, one delta per chunk
    (`deltas`, else `_deltas(model)`), then `tail()`'s events, unless the model names a fault
    that ends it otherwise."""
    await _start_stream(send, model)

    async def emit(events: list[dict], more: bool = True) -> None:
        body = b"".join(sse(event, event_line) for event in events)
        await send({"type": "http.response.body", "body": body, "more_body": more})

    head = builder.head()
    if model == "fault/hang-after-headers":
        await emit(head[:1])
        await disconnected.wait()
        return
    await emit(head)
    if model == "fault/drip":
        i = 0
        while not disconnected.is_set():
            await emit([builder.delta(f"drip{i} ")])
            i += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(disconnected.wait(), DRIP)
        return
    if model == "fault/big":
        filler = "x" * 16384
        for _ in range(BIG_CHUNKS):
            event = sse(builder.delta(filler), event_line)
            await send({"type": "http.response.body", "body": event, "more_body": True})
            stats["big_bytes_sent"] += len(event)
            await asyncio.sleep(0)  # uvicorn's send returns at once once the client is gone
            if disconnected.is_set():
                return
    else:
        for i, text in enumerate(deltas or _deltas(model)):
            if model.startswith("slow/"):
                await asyncio.sleep(TTFB if TTFB and i == 0 else SLOW)
            if disconnected.is_set():
                return
            await emit([builder.delta(text)])
    if model in SHORT_STREAMS:
        await asyncio.sleep(SLOW)  # what came so far reaches the client first
    if model == "fault/cut":
        return await send({"type": "http.response.body", "body": b""})
    if model == "fault/break":
        raise Dropped("fault/break")
    if model == "fault/bad-sse":
        event = f"event: {builder.DELTA}\ndata: {{this is not json\n\n".encode()
        return await send({"type": "http.response.body", "body": event})
    if model in ("fault/failed", "fault/echo-auth-stream"):
        return await emit(_failure(builder, model), more=False)
    await emit(tail(), more=False)


async def _responses(send, request: dict, model: str, stream: bool, disconnected: asyncio.Event) -> None:
    if await _misbehave(send, "responses", model, stream, disconnected):
        return
    builder = ResponseStream(request, _answered(model), usage=model != "fault/no-usage")
    status = "incomplete" if model == "fault/incomplete" else "completed"
    deltas = structured_deltas(request) or _deltas(model)
    if stream:
        tail = functools.partial(builder.tail, status)
        return await _typed_stream(
            send, model, builder, tail, disconnected, model != "fault/data-only", deltas
        )
    if model == "fault/failed":
        for text in _deltas(model):
            builder.delta(text)
        answer = builder.failed("fake router says the model failed")[0]["response"]
    else:
        answer = builder.answer(deltas, status)
    await _send_json(send, 200, answer, [(b"x-inference-provider", _provider(model))])


async def _messages(send, request: dict, model: str, stream: bool, disconnected: asyncio.Event) -> None:
    if await _misbehave(send, "messages", model, stream, disconnected):
        return
    stop_reason = "max_tokens" if model == "fault/incomplete" else "end_turn"
    builder = MessageStream(request, _answered(model), model != "fault/no-usage", stop_reason)
    if stream:
        return await _typed_stream(send, model, builder, builder.tail, disconnected)
    if model == "fault/failed":
        return await _send_json(send, 500, anthropic_error("api_error", "Internal server error"))
    await _send_json(send, 200, builder.answer(_deltas(model)), [(b"x-inference-provider", _provider(model))])


async def _agent_turn(
    api: str, send, request: dict, model: str, stream: bool, disconnected: asyncio.Event
) -> None:
    """A coding agent's turn, answered as tests/support/agent_script.py scripts it."""
    stats["agent_calls"].append(agent_script.call(api, request, stats["last_headers"], stats["last_query"]))
    headers = [(b"content-type", b"text/event-stream"), (b"x-inference-provider", _provider(model))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": agent_script.stream(api, request)})


ANSWERS = {"chat": _chat, "responses": _responses, "messages": _messages}


def vector(text: str, normalize: bool) -> list[float]:
    """A deterministic stand-in for a sentence embedding."""
    digest = hashlib.sha256(text.encode()).digest()
    values = [(digest[i % len(digest)] - 127.5) / 127.5 * (1 + i // len(digest)) for i in range(DIM)]
    norm = sum(v * v for v in values) ** 0.5
    return [v / norm for v in values] if normalize else values


async def _feature_extraction(path: str, receive, send) -> None:
    model = path.removeprefix(FEATURE_EXTRACTION).removesuffix("/pipeline/feature-extraction")
    request = json.loads(await _read_body(receive))
    stats["attempts"][model] = stats["attempts"].get(model, 0) + 1
    stats["last_body"] = json.dumps(request)
    if model.startswith("fault/status-"):
        return await _status(send, model)
    if model not in (*EMBEDDING_MODELS, "fault/tokens"):
        stats["refused"][model] = stats["refused"].get(model, 0) + 1
        return await _send_json(send, 400, {"error": "Model not supported by provider hf-inference"})
    inputs = request["inputs"] if isinstance(request["inputs"], list) else [request["inputs"]]
    vectors = [vector(text, bool(request.get("normalize"))) for text in inputs]
    if model == "fault/tokens":
        vectors = [[v, v] for v in vectors]  # one vector per token: not a sentence embedding
    await _send_json(send, 200, vectors)


def transcript(audio: bytes) -> str:
    """A deterministic stand-in for what a speech model heard (with Whisper's leading space)."""
    return f" I heard {len(audio)} bytes. Thank you."


async def _speech_recognition(path: str, headers: dict[str, str], receive, send) -> None:
    model = path.removeprefix(HF_INFERENCE_MODELS)
    body = await _read_body(receive)
    content_type = headers.get("content-type", "")
    audio, parameters = body, {}
    if content_type.startswith("application/json"):
        request = json.loads(body)
        audio, parameters = base64.b64decode(request["inputs"]), request.get("parameters") or {}
    stats["attempts"][model] = stats["attempts"].get(model, 0) + 1
    stats["last_audio"] = {"content_type": content_type, "bytes": len(audio), "parameters": parameters}
    if model.startswith("fault/status-"):
        return await _status(send, model)
    if model not in SPEECH_MODELS:
        stats["refused"][model] = stats["refused"].get(model, 0) + 1
        return await _send_json(send, 400, {"error": "Model not supported by provider hf-inference"})
    if not audio:
        return await _send_json(send, 400, {"error": "Malformed soundfile"})
    text = transcript(audio)
    answer = {"text": text}
    if parameters.get("return_timestamps"):
        first, _, rest = text.partition(".")
        answer["chunks"] = [
            {"text": first + ".", "timestamp": [0.0, 1.0]},
            {"text": rest, "timestamp": [1.0, None]},
        ]
    await _send_json(send, 200, answer, [(b"x-inference-provider", b"hf-inference")])


def png(width: int, height: int, prompt: str) -> bytes:
    """A real PNG of one colour, the prompt's."""
    colour = hashlib.sha256(prompt.encode()).digest()[:3]
    pixels = zlib.compress((b"\x00" + colour * width) * height)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def _image(prompt: str, fields: dict) -> bytes:
    width, height = fields.get("width", 1024), fields.get("height", 1024)
    if "size" in fields:
        width, height = (int(side) for side in fields["size"].split("x"))
    return png(width, height, prompt)


async def _text_to_image(model: str, receive, send) -> None:
    request = json.loads(await _read_body(receive))
    stats["attempts"][model] = stats["attempts"].get(model, 0) + 1
    stats["last_image"] = {"path": f"{HF_INFERENCE_MODELS}{model}", "body": request}
    image = _image(request["inputs"], request.get("parameters") or {})
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"image/png"),
                (b"content-length", str(len(image)).encode()),
                (b"x-inference-provider", b"hf-inference"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": image})


async def _images_generations(provider: str, receive, send) -> None:
    request = json.loads(await _read_body(receive))
    model = request.get("model")
    stats["attempts"][model] = stats["attempts"].get(model, 0) + 1
    stats["last_image"] = {"path": f"/{provider}/v1/images/generations", "body": request}
    if not any(ids.get(provider) == model for ids in IMAGE_MODELS.values()):
        message = f"Unable to access model {model}. Please visit https://{provider}.example/models."
        error = {
            "message": message,
            "type": "invalid_request_error",
            "param": None,
            "code": "model_not_available",
        }
        return await _send_json(send, 404, {"error": error})
    if request.get("response_format") != IMAGE_ROUTES[provider]:
        error = {
            "message": f"response_format must be {IMAGE_ROUTES[provider]!r}",
            "type": "invalid_request_error",
        }
        return await _send_json(send, 400, {"error": error})
    count = request.get("n", 1) if provider == "together" else 1
    image = base64.b64encode(_image(request["prompt"], request)).decode()
    data = [{"index": i, "b64_json": image, "type": None} for i in range(count)]
    answer = {"id": f"img-{stats['requests']}", "model": model, "object": "list", "data": data}
    await _send_json(send, 200, answer, [(b"x-inference-provider", provider.encode())])


def hub_mapping(model: str) -> dict | None:
    """The Hub's inferenceProviderMapping of a model, None for a model it does not know."""
    if model in IMAGE_MODELS:
        return {
            provider: {"status": "live", "providerId": provider_id, "task": "text-to-image"}
            for provider, provider_id in IMAGE_MODELS[model].items()
        }
    for entry in MODELS["data"]:
        if entry["id"] == model:
            return {
                offer["provider"]: {"status": offer["status"], "providerId": model, "task": "conversational"}
                for offer in entry["providers"]
            }
    return None


async def _hub_model(model: str, query: str, send) -> None:
    mapping = hub_mapping(model)
    if mapping is None:
        headers = [(b"x-error-code", b"RepoNotFound")]
        return await _send_json(send, 404, {"error": "Repository not found"}, headers)
    info = {"_id": hashlib.sha256(model.encode()).hexdigest()[:24], "id": model}
    if "inferenceProviderMapping" in parse_qs(query).get("expand[]", []):
        info["inferenceProviderMapping"] = mapping
    await _send_json(send, 200, info)


async def app(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    path, method = scope["path"], scope["method"]
    if path == "/_stats":
        await _send_json(send, 200, stats)
        return
    if path == "/_redirected":
        stats["redirected"] += 1
        await _send_json(send, 200, {"redirected": True})
        return
    if path == "/_reset":
        stats.clear()
        stats.update(new_stats())
        await _send_json(send, 200, {"ok": True})
        return
    stats["requests"] += 1
    stats["last_headers"] = {k.decode(): v.decode() for k, v in scope["headers"]}
    _headers.set(stats["last_headers"])
    stats["last_query"] = scope.get("query_string", b"").decode()
    if path == "/v1/chat/completions" and method == "POST":
        await _completion(receive, send, "chat")
    elif path == "/v1/responses" and method == "POST":
        await _completion(receive, send, "responses")
    elif path == "/v1/messages" and method == "POST":
        await _completion(receive, send, "messages")
    elif (
        path.startswith(FEATURE_EXTRACTION)
        and path.endswith("/pipeline/feature-extraction")
        and method == "POST"
    ):
        await _feature_extraction(path, receive, send)
    elif (
        path.startswith(HF_INFERENCE_MODELS)
        and method == "POST"
        and "hf-inference" in IMAGE_MODELS.get(path.removeprefix(HF_INFERENCE_MODELS), {})
    ):
        await _text_to_image(path.removeprefix(HF_INFERENCE_MODELS), receive, send)
    elif path.startswith(HF_INFERENCE_MODELS) and method == "POST":
        await _speech_recognition(path, stats["last_headers"], receive, send)
    elif path in IMAGE_GENERATIONS and method == "POST":
        await _images_generations(IMAGE_GENERATIONS[path], receive, send)
    elif path.startswith("/api/models/") and method == "GET":
        await _hub_model(path.removeprefix("/api/models/"), stats["last_query"], send)
    elif path == "/v1/models" and method == "GET":
        await _send_json(send, 200, MODELS)
    else:
        await _send_json(send, 404, {"error": "Not Found"})


if __name__ == "__main__":
    import argparse

    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--reuse-port", action="store_true", help="share the port with other processes")
    parser.add_argument("--backlog", type=int, default=2048)
    args = parser.parse_args()
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=1,
        http="httptools",
        loop="uvloop",
        backlog=args.backlog,
    )
    sockets = None
    if args.reuse_port:
        import socket

        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        listener.bind((args.host, args.port))
        listener.listen(args.backlog)
        listener.set_inheritable(True)
        sockets = [listener]
    uvicorn.Server(config).run(sockets=sockets)
