"""The ASGI layer around Django: what Django's handlers cannot do for us.

- Lifespan: Django has none; on startup a worker ties its life to its supervisor's and replays
  dead workers' usage journals; on shutdown queued usage records are written and the upstream
  client closes its connections.
- The request body limit, on the bytes actually received: Django reads a whole body (to disk if
  need be) before any view runs, and trusts `Content-Length` when it checks size.

Which Django handler serves a request is gateway.routing's decision.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import json
import multiprocessing
import os
import signal
import sys

from django.conf import settings

from accounts import alerts, runtime, usage
from gateway import catalog, errors, metrics
from gateway.middleware import request_id_from


class GatewayASGI:
    """Wraps an ASGI app (gateway.routing.Router): lifespan, and the body limit on HTTP requests."""

    def __init__(self, app) -> None:
        self.app = app
        self.in_flight: set[asyncio.Task] = set()  # HTTP requests being served

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        else:
            await self.app(scope, receive, send)

    async def _http(self, scope, receive, send) -> None:
        limit = settings.MAX_REQUEST_BYTES
        declared = _header(scope, b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await _refuse(scope, send, errors.request_too_large(limit))
            return

        received = 0
        refusal = None  # an ApiError to answer once Django has given up on the request
        body_done = False

        async def limited_receive():
            nonlocal received, refusal, body_done
            if body_done:  # Django listening for a disconnect while the view runs: no limit
                return await receive()
            try:
                # A client that stops sending its body must not hold a request open forever.
                async with asyncio.timeout(settings.CLIENT_BODY_TIMEOUT):
                    message = await receive()
            except TimeoutError:
                refusal = errors.body_timeout(settings.CLIENT_BODY_TIMEOUT)
                return {"type": "http.disconnect"}
            if message["type"] == "http.request":
                body_done = not message.get("more_body", False)
                received += len(message.get("body", b""))
                if received > limit:
                    # Django stops reading at a disconnect and sends nothing; we answer.
                    refusal = errors.request_too_large(limit)
                    return {"type": "http.disconnect"}
            return message

        task = asyncio.current_task()
        self.in_flight.add(task)
        try:
            await self.app(scope, limited_receive, send)
        finally:
            self.in_flight.discard(task)
        if refusal is not None:
            await _refuse(scope, send, refusal)

    async def _lifespan(self, receive, send) -> None:
        background: list[asyncio.Task] = []
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                _die_with_parent()
                _tune_gc()
                usage.writer.replay_orphans()
                if settings.PRICES_REFRESH_INTERVAL > 0 and settings.HF_TOKEN:
                    background.append(
                        asyncio.create_task(catalog.refresh_prices_every(settings.PRICES_REFRESH_INTERVAL))
                    )
                if settings.ALERTS_INTERVAL > 0 and (settings.EMAIL_URL or settings.ALERT_WEBHOOK_URL):
                    background.append(asyncio.create_task(alerts.check_every(settings.ALERTS_INTERVAL)))
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                for task in background:
                    task.cancel()
                await _shutdown(settings.USAGE_SHUTDOWN_TIMEOUT, self.in_flight)
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _shutdown(seconds: float, in_flight: set[asyncio.Task]) -> None:
    """uvicorn has let in-flight requests finish, and cancelled those still running at its
    graceful-shutdown timeout, without waiting for them to unwind. They end first (each is
    recorded as it ends), then what they left running (closing a stream whose client left,
    giving back limit slots); then the queued usage records are written and the connections
    closed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    if in_flight:
        await asyncio.wait(list(in_flight), timeout=max(0.1, seconds))
    await runtime.stop(deadline - loop.time())
    metrics.process_exited()


def _tune_gc() -> None:
    """The cyclic GC walks every object it tracks in each full collection, with the loop stopped:
    the app's own (Django, its modules, ~50,000 of them) and every open stream's (~150 each:
    coroutines, tasks, contexts). Frozen, the app's are no longer walked. (A larger youngest
    generation made full collections rarer still, but let cycles holding streams' buffers wait
    longer: 15-20 MiB more under tests/faults/test_load.py's 200 streams.)"""
    gc.collect()
    gc.freeze()


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """A worker of uvicorn's supervisor (`--workers`, `--reload`: it starts them with
    multiprocessing) gets SIGTERM when the supervisor dies, even of SIGKILL, rather than
    serving on as an orphan: it shuts down as on any SIGTERM, writing its records (Linux)."""
    parent = multiprocessing.parent_process()
    if parent is None or not sys.platform.startswith("linux"):
        return
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent.pid:  # it died before the call
        os.kill(os.getpid(), signal.SIGTERM)


def _header(scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1").strip()
    return None


async def _refuse(scope, send, error: errors.ApiError) -> None:
    """Answer a request refused before Django saw all of it, and close the connection."""
    headers = {key.decode("latin-1").lower(): value for key, value in scope["headers"]}
    anthropic = errors.speaks_anthropic(scope["path"], headers)
    body = json.dumps(error.anthropic_body() if anthropic else error.body()).encode()
    request_id = request_id_from(_header(scope, b"x-request-id"))
    await send(
        {
            "type": "http.response.start",
            "status": error.anthropic_status if anthropic else error.status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"x-request-id", request_id.encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
