"""A fake Hugging Face router: a raw ASGI app, fast enough never to be the bottleneck.

Serves `POST /v1/chat/completions` (JSON or SSE, CHUNKS content chunks, the usage chunk when
asked) and `GET /v1/models`. A model id starting with `fault/` selects a misbehaviour:

    fault/status-503    answer that status with an OpenAI-shaped error body
    fault/hang          never send headers
    fault/drip          stream one chunk per DRIP seconds, forever
    fault/cut           stream two chunks, then end without [DONE]
    slow/...            a normal stream, one chunk per SLOW seconds (a long answer)

`GET /_stats` reports what it saw (requests, last headers, streams the client abandoned);
`POST /_reset` clears it. Run: `python -m tests.fake_router --port 9100`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time

CHUNKS = int(os.environ.get("FAKE_ROUTER_CHUNKS", "20"))
DRIP = float(os.environ.get("FAKE_ROUTER_DRIP", "1.0"))
SLOW = float(os.environ.get("FAKE_ROUTER_SLOW", "0.1"))

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
                {"provider": "cerebras", "status": "live", "pricing": {"input": 0.1, "output": 0.1}}
            ],
        },
    ],
}


def new_stats() -> dict:
    return {"requests": 0, "chat_requests": 0, "streams_abandoned": 0, "last_headers": {}, "last_body": None}


stats = new_stats()


async def _read_body(receive) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def _send_json(send, status: int, data, headers=()) -> None:
    body = json.dumps(data).encode()
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


def _chunk(model: str, created: int, delta: dict, finish=None, usage=None, choices=True) -> bytes:
    data = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}] if choices else [],
    }
    if usage is not None:
        data["usage"] = usage
    return b"data: " + json.dumps(data).encode() + b"\n\n"


def _usage(prompt: int, completion: int) -> dict:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


async def _chat(scope, receive, send) -> None:
    stats["chat_requests"] += 1
    raw = await _read_body(receive)
    stats["last_body"] = raw.decode("utf-8", "replace")
    request = json.loads(raw)
    model = request.get("model", "")
    prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in request.get("messages", [])) or 1
    created = int(time.time())

    if model.startswith("fault/status-"):
        status = int(model.rsplit("-", 1)[1])
        headers = [(b"retry-after", b"7")] if status == 429 else []
        error = {"error": {"message": f"fake router says {status}", "type": "fake", "code": status}}
        await _send_json(send, status, error, headers)
        return
    if model == "fault/hang":
        await asyncio.sleep(3600)
        return

    answered = model.split(":")[0]
    if not request.get("stream"):
        text = " ".join(f"tok{i}" for i in range(CHUNKS))
        await _send_json(
            send,
            200,
            {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "created": created,
                "model": answered,
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                ],
                "usage": _usage(prompt_tokens, CHUNKS),
            },
        )
        return

    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")],
        }
    )
    disconnected = asyncio.Event()

    async def watch() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        disconnected.set()

    watcher = asyncio.ensure_future(watch())
    try:
        await send(
            {
                "type": "http.response.body",
                "body": _chunk(answered, created, {"role": "assistant", "content": ""}),
                "more_body": True,
            }
        )
        if model == "fault/drip":
            i = 0
            while not disconnected.is_set():
                await send(
                    {
                        "type": "http.response.body",
                        "body": _chunk(answered, created, {"content": f"drip{i} "}),
                        "more_body": True,
                    }
                )
                i += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(disconnected.wait(), DRIP)
            stats["streams_abandoned"] += 1
            return
        count = 2 if model == "fault/cut" else CHUNKS
        for i in range(count):
            if model.startswith("slow/"):
                await asyncio.sleep(SLOW)
            await send(
                {
                    "type": "http.response.body",
                    "body": _chunk(answered, created, {"content": f"tok{i} "}),
                    "more_body": True,
                }
            )
        if model == "fault/cut":
            await send({"type": "http.response.body", "body": b""})
            return
        tail = _chunk(answered, created, {}, finish="stop")
        options = request.get("stream_options") or {}
        if options.get("include_usage"):
            tail += _chunk(answered, created, {}, usage=_usage(prompt_tokens, CHUNKS), choices=False)
        await send({"type": "http.response.body", "body": tail + b"data: [DONE]\n\n"})
    finally:
        watcher.cancel()


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
    if path == "/_reset":
        stats.clear()
        stats.update(new_stats())
        await _send_json(send, 200, {"ok": True})
        return
    stats["requests"] += 1
    stats["last_headers"] = {k.decode(): v.decode() for k, v in scope["headers"]}
    if path == "/v1/chat/completions" and method == "POST":
        await _chat(scope, receive, send)
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
    args = parser.parse_args()
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=1,
        http="httptools",
        loop="uvloop",
    )
