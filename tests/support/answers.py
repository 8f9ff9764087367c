"""The Hugging Face router's answers, as the respx fixture (`hf`) replays them: completions,
stream chunks, and a body that arrives chunk by chunk, slowly or never finishing."""

from __future__ import annotations

import asyncio
import json

import httpx


def completion(content="Hello!", model="openai/gpt-oss-120b", usage=(5, 3)):
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1700000000,
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": sum(usage)},
    }


def chunk(content=None, model="openai/gpt-oss-120b", finish=None, usage=None):
    data = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": model,
        "choices": [] if usage else [{"index": 0, "delta": {"content": content}, "finish_reason": finish}],
    }
    if usage:
        data["usage"] = {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": sum(usage)}
    return b"data: " + json.dumps(data).encode() + b"\n\n"


def standard_stream(words=("Hel", "lo"), usage=(5, 2)) -> list[bytes]:
    return [*(chunk(w) for w in words), chunk(finish="stop"), chunk(usage=usage), b"data: [DONE]\n\n"]


class ChunkStream(httpx.AsyncByteStream):
    """A router body that arrives chunk by chunk, optionally slowly or never finishing."""

    def __init__(self, chunks, delay: float = 0.0, hang_after: bool = False) -> None:
        self.chunks = list(chunks)
        self.delay = delay
        self.hang_after = hang_after
        self.sent = 0
        self.closed = False

    async def __aiter__(self):
        for data in self.chunks:
            if self.delay:
                await asyncio.sleep(self.delay)
            self.sent += 1
            yield data
        if self.hang_after:
            await asyncio.sleep(3600)

    async def aclose(self) -> None:
        self.closed = True


def sse_response(chunks, **kwargs) -> tuple[httpx.Response, ChunkStream]:
    stream = ChunkStream(chunks, **kwargs)
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=stream), stream


def events_of(body: bytes) -> list[bytes]:
    return [event for event in body.split(b"\n\n") if event]
