"""The APIs relayed as they came (chat, Responses, Messages), from the validated request to the
client's last byte: `forward` and its `StreamRelay`, the stored responses, count_tokens. The
Hugging Face tasks behind OpenAI endpoints, converted both ways, are `gateway.tasks`."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

from asgiref.sync import async_to_sync
from django.http import HttpResponse, StreamingHttpResponse

from accounts import allowlist, runtime
from accounts.models import Outcome
from gateway import chatstream, converter, errors, scrub, upstream
from gateway.converter import Api, BadAnswer, ChatRequest, Follower
from gateway.exchange import Exchange

if TYPE_CHECKING:
    import httpx

STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def may_call(exchange: Exchange, model: str | None = None) -> None:
    """The key may use this model (if the call names one), and has a Hugging Face token to call
    with."""
    caller = exchange.caller
    if model is not None and not allowlist.model_allowed(caller.allowed_models, model):
        raise errors.model_not_allowed(model)
    if not caller.upstream_token:
        raise errors.no_upstream_token(caller.token_problem, caller.token_name)


async def forward(
    request: Any, exchange: Exchange, path: str, api: Api, *, headers: dict[str, str] | None = None
) -> HttpResponse | StreamingHttpResponse:
    """Forward a parsed request of `api` (its `model`, `stream`, `prompt_tokens`, and `raw` or
    `body`) and relay the answer as it came; a stream's exchange is finished by the stream."""
    exchange.model_requested, exchange.stream = request.model, request.stream
    may_call(exchange, request.model)
    deadline = upstream.deadline()
    body = converter.upstream_body(request)
    response = await exchange.send("POST", path, deadline, body=body, stream=request.stream, headers=headers)
    exchange.provider = response.headers.get("x-inference-provider", "")
    if request.stream:
        if not upstream.is_event_stream(response):
            await response.aclose()
            raise BadAnswer("a stream was asked for and the answer is not an event stream")
        relay = StreamRelay(response, api.follower(request), exchange, deadline, Prompt(request, body))
        await relay.start()
        return EventStreamResponse(relay)

    raw = await exchange.read(response, deadline)
    answer = api.read_answer(raw)
    exchange.model_answered, exchange.failure = answer.model, answer.failure
    exchange.note_usage(
        answer.usage, None if answer.usage else converter.estimate_usage(request.prompt_tokens, answer.chars)
    )
    # The router's bytes go back as they came (but for the token): nothing to convert or re-encode.
    return HttpResponse(raw, content_type="application/json", headers={"Content-Length": str(len(raw))})


def _not_served(error: Exception) -> bool:
    """The router answered that it has no such path (or method): a 405 or 501, or a 404 that
    is not about a model (the router's 404 for an unknown model names it)."""
    if not isinstance(error, upstream.UpstreamError) or error.kind != upstream.UpstreamError.STATUS:
        return False
    return error.status in (405, 501) or (error.status == 404 and b"model" not in error.body.lower())


async def stored_response(exchange: Exchange, method: str, path: str, response_id: str) -> HttpResponse:
    """A stored response's endpoints (retrieve, delete, cancel, input items), forwarded; a router
    that keeps no such response, or none at all, is a clear 404."""
    may_call(exchange)
    deadline = upstream.deadline()
    try:
        response = await exchange.send(method, path, deadline)
    except upstream.UpstreamError as error:
        if _not_served(error):
            raise errors.not_found(
                f"No response with id `{response_id}` at the Hugging Face router (it keeps only "
                "responses created with `store: true`, if any). Keep the conversation in the "
                "request's `input` instead.",
                code="response_not_found",
            ) from None
        raise
    raw = await exchange.read(response, deadline)
    content_type = response.headers.get("content-type", "application/json")
    return HttpResponse(raw, status=response.status_code, content_type=content_type)


async def count_tokens(
    request: Any, exchange: Exchange, path: str, *, headers: dict[str, str]
) -> HttpResponse:
    """The router's count of a Messages request's input tokens, or, where the router has no such
    endpoint, our estimate, said so in `X-Hfproxy-Estimate`. Counting uses no tokens."""
    exchange.model_requested = request.model
    may_call(exchange, request.model)
    deadline = upstream.deadline()
    try:
        response = await exchange.send(
            "POST", path, deadline, body=converter.upstream_body(request), headers=headers
        )
    except upstream.UpstreamError as error:
        if not _not_served(error):
            raise
        body = converter.dump_json({"input_tokens": request.prompt_tokens})
        return HttpResponse(body, content_type="application/json", headers={"X-Hfproxy-Estimate": "true"})
    raw = await exchange.read(response, deadline)
    return HttpResponse(raw, content_type="application/json")


async def chat(chat: ChatRequest, exchange: Exchange) -> HttpResponse | StreamingHttpResponse:
    return await forward(chat, exchange, "/chat/completions", chatstream.CHAT)


class Prompt:
    """A stream's request, for the estimate of its prompt made only when the router counts none:
    the bytes sent, parsed again if needed, rather than the parsed request, which a stream would
    hold until its end (an agent resends its whole conversation, and as Python objects it takes
    several times its size; the bytes are the upstream request's, held anyway)."""

    __slots__ = ("_counted", "_request", "_sent")

    def __init__(self, request: Any, sent: bytes) -> None:
        self._counted = request.__dict__.get("prompt_tokens")  # estimated already (cached)
        self._request = dataclasses.replace(request, body={}, raw=None)
        self._sent = sent

    @property
    def prompt_tokens(self) -> int:
        if self._counted is None:
            self._counted = dataclasses.replace(self._request, body=json.loads(self._sent)).prompt_tokens
        return self._counted


class StreamRelay:
    """Relays the router's event stream and finishes the exchange however the stream ends.

    `stream` follows the events in its API's terms (`converter.Follower`): what to pass on, when
    the answer is complete, its usage, and how a failure is told once the headers are sent.
    """

    def __init__(
        self,
        response: httpx.Response,
        stream: Follower,
        exchange: Exchange,
        deadline: float,
        request: Any,
    ) -> None:
        self.response = response
        self.exchange = exchange
        self.stream = stream
        self.request = request  # its `prompt_tokens` (a `Prompt`): estimated only when needed
        self.chunks = upstream.iter_chunks(response, deadline)
        self.secrets = exchange.secrets
        self.first = b""
        self.started = False
        self.events = self._events()

    def _feed(self, chunk: bytes) -> bytes:
        # Whole events: a token quoted in one is never split across two.
        out = scrub.raw(self.stream.feed(chunk), self.secrets)
        if self.stream.started:
            self.exchange.mark_first_token()
        return out

    async def start(self) -> None:
        """Wait for the first event worth sending. Until then nothing is sent to the client, so
        a failure keeps its own status (504, 502, the router's 4xx) instead of becoming an
        error event behind a 200."""
        try:
            async for chunk in self.chunks:
                self.first = self._feed(chunk)
                if self.first:
                    return
            self.first = self.stream.end()
        except BaseException:
            await self._close_upstream()
            raise

    async def _events(self) -> AsyncIterator[bytes]:
        self.started = True
        outcome, error_code = Outcome.OK, ""
        # The request is recorded (journaled) before the answer's last bytes go out, not after
        # the router's connection is closed: a worker killed meanwhile loses no delivered answer.
        try:
            if self.stream.done:
                self._finish(Outcome.OK)
            yield self.first
            if not self.stream.done:
                async for chunk in self.chunks:
                    out = self._feed(chunk)
                    if self.stream.done:
                        self._finish(Outcome.OK)
                    if out:
                        yield out
                    if self.stream.done:
                        break
                else:
                    out = self.stream.end()
                    self._finish(Outcome.OK)  # the router ended it (providers send no [DONE])
                    if out:
                        yield out
        except (asyncio.CancelledError, GeneratorExit):
            # The client went away: Django cancels the task, or closes this generator.
            if not self.stream.done:
                outcome = Outcome.CLIENT_DISCONNECTED
            raise
        except Exception as exc:
            # Headers are sent: the failure becomes the stream's last event (for chat, no [DONE]).
            caller = self.exchange.caller
            error = errors.from_exception(exc, caller.token_name, caller.upstream_token)
            outcome, error_code = error.outcome, error.code
            self._finish(outcome, error_code)
            yield self.stream.error_event(error)
        finally:
            try:
                await self._close_upstream()
            finally:
                self._finish(outcome, error_code)

    async def _close_upstream(self) -> None:
        # Closing an unfinished response drops its connection: the router stops generating.
        await self.chunks.aclose()
        await self.response.aclose()

    def _finish(self, outcome: str, error_code: str | None = None) -> None:
        stream = self.stream
        self.exchange.model_answered = stream.model or ""
        # Without the router's usage chunk (the client left, the stream broke), what was
        # generated so far is estimated; a stream that produced nothing has no counts.
        estimate = (
            converter.estimate_usage(
                stream.prompt_tokens or self.request.prompt_tokens, stream.completion_chars
            )
            if stream.started and (stream.usage is None or stream.usage.total_tokens is None)
            else None
        )
        self.exchange.note_usage(stream.usage, estimate)
        self.exchange.failure = stream.failure
        self.exchange.finish(200, outcome, error_code)

    def close(self) -> None:
        """The response is closed. If the relay has not finished, the client is gone: it left
        while the headers were sent (Django then never iterates the response), or something
        between Django and the relay dropped the stream without closing it."""
        if self.exchange.finished:
            return
        cleanup = self.events.aclose if self.started else self._abandon
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # Django's worker thread: run it on the server's loop, and wait
            async_to_sync(cleanup)()
        else:
            runtime.spawn(cleanup())

    async def _abandon(self) -> None:
        try:
            await self._close_upstream()
        finally:
            self._finish(Outcome.CLIENT_DISCONNECTED)


class EventStreamResponse(StreamingHttpResponse):
    """The relay's events as `text/event-stream`, closing the relay whatever the client does.

    Django closes only its own wrapper generators on a disconnect, and never iterates a
    response whose client left while its headers were sent; `__aiter__` and `close()` make
    sure the relay hears of both at once.
    """

    def __init__(self, relay: StreamRelay) -> None:
        super().__init__(relay.events, content_type="text/event-stream", headers=STREAM_HEADERS)
        self._relay = relay

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async with aclosing(self._iterator) as events:
            async for event in events:
                yield event

    def close(self) -> None:
        self._relay.close()
        super().close()
