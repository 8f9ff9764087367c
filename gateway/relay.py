"""One chat completion, from validated request to the client's last byte."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing

import httpx
from django.http import HttpResponse, StreamingHttpResponse

from gateway import converter, errors, outcomes, upstream
from gateway.converter import ChatRequest, Usage
from gateway.reporting import Exchange

STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class EventStreamResponse(StreamingHttpResponse):
    """A stream of bytes that closes its source when the client goes away.

    Django closes only its own wrapper generators, so without this the relay would learn of
    a disconnect (and close the router's stream) only when garbage collection gets to it.
    """

    def __init__(self, events: AsyncIterator[bytes]) -> None:
        super().__init__(events, content_type="text/event-stream", headers=STREAM_HEADERS)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async with aclosing(self._iterator) as events:
            async for event in events:
                yield event


async def chat(chat: ChatRequest, exchange: Exchange) -> HttpResponse | StreamingHttpResponse:
    """Forward a chat completion; a stream's exchange is finished by the stream itself."""
    exchange.model_requested, exchange.stream = chat.model, chat.stream
    if not exchange.caller.upstream_token:
        raise errors.no_upstream_token()
    deadline = upstream.deadline()
    response = await upstream.send(
        "POST",
        "/chat/completions",
        token=exchange.caller.upstream_token,
        request_id=exchange.request_id,
        deadline=deadline,
        body=converter.upstream_body(chat),
        stream=chat.stream,
    )
    if chat.stream:
        if upstream.is_event_stream(response):
            return EventStreamResponse(_relay(response, chat, exchange, deadline))
        await response.aclose()
        raise errors.BadAnswer("a stream was asked for and the answer is not an event stream")

    raw = await upstream.read_body(response, deadline)
    answer = converter.parse_completion(raw)
    exchange.model_answered = answer.get("model")
    exchange.usage = Usage.of(answer.get("usage"))
    # The router's bytes go back untouched: nothing to convert, nothing to re-encode.
    return HttpResponse(raw, content_type="application/json", headers={"Content-Length": str(len(raw))})


async def _relay(
    response: httpx.Response, chat: ChatRequest, exchange: Exchange, deadline: float
) -> AsyncIterator[bytes]:
    """Pass the router's events on as they arrive; finish the exchange however it ends."""
    stream = converter.ChatStream(wants_usage=chat.wants_usage)
    outcome = outcomes.OK
    try:
        async for chunk in upstream.iter_chunks(response, deadline):
            out = stream.feed(chunk)
            if stream.started:
                exchange.mark_first_token()
            if out:
                yield out
            if stream.done:
                break
        else:
            stream.check_finished()
    except (asyncio.CancelledError, GeneratorExit):
        # The client went away (Django cancels the task or closes this generator).
        if not stream.done:
            outcome = outcomes.CLIENT_DISCONNECTED
        raise
    except Exception as exc:
        # Headers are sent: the failure becomes the stream's last event, and no [DONE].
        error = errors.from_exception(exc)
        outcome = error.outcome
        yield error.sse_event()
    finally:
        # Closing an unfinished response drops its connection: the router stops generating.
        await response.aclose()
        exchange.model_answered = stream.model
        exchange.usage = stream.usage
        exchange.finish(200, outcome)
