"""uvicorn's HTTP protocol (httptools) with the limits on connections that uvicorn lacks.

uvicorn bounds neither the time nor the size of a request's headers, nor the number of
connections a worker holds: half-sent headers kept a connection (and a file descriptor) forever,
and an 8 MB header was read into memory whole. Here a connection that owes request headers — a
new one, one between two requests, one whose headers are arriving — must deliver them whole
within HEADER_TIMEOUT seconds and MAX_HEADER_BYTES bytes (else it is closed; too large: 431
first), and a worker holds at most MAX_CONNECTIONS: one more evicts the connection that has owed
its headers longest, else the one whose request body has been arriving longest (a body sent a
byte at a time, each within CLIENT_BODY_TIMEOUT, needs no key), so that a flood of idle or
dribbling connections cannot keep real requests (and `/health`) out. A connection whose request
has arrived whole is never evicted; with all of them so, the newcomer is closed.
`manage.py serve` passes this class as uvicorn's `http`.
"""

from __future__ import annotations

import itertools
import json
import resource

from django.conf import settings
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

# Descriptors a worker needs besides its clients' connections: the router's (its pool), the
# database's and Redis's, logs, the usage journal, the listening socket.
OTHER_FILE_DESCRIPTORS = 100
_BODIES = itertools.count()  # the order in which request bodies began to arrive


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.header_deadline = None  # a timer while the connection owes request headers
        self.header_bytes = 0
        self.body_since = None  # its request's place in the order bodies began to arrive, until whole

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._await_headers()
        if len(self.connections) > settings.MAX_CONNECTIONS:
            _evict_one(self.connections, self)

    def connection_lost(self, exc) -> None:
        self._stop_awaiting()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # Counted after parsing, so that a read holding the end of the headers and a body is not.
        if self.header_deadline is not None and not self.transport.is_closing():
            self.header_bytes += len(data)
            if self.header_bytes > settings.MAX_HEADER_BYTES:
                self._refuse_headers()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self.header_deadline is None:  # a request pipelined behind one being served
            self._await_headers()

    def on_headers_complete(self) -> None:
        self._stop_awaiting()
        self.body_since = next(_BODIES)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self.body_since = None
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # Idle (uvicorn's keep-alive), unless a pipelined request is being served or arriving.
        if self.cycle.response_complete and self.header_deadline is None and not self.transport.is_closing():
            self._await_headers()

    def _await_headers(self) -> None:
        self._stop_awaiting()
        self.header_deadline = self.loop.call_later(settings.HEADER_TIMEOUT, self.drop)

    def _stop_awaiting(self) -> None:
        if self.header_deadline is not None:
            self.header_deadline.cancel()
            self.header_deadline = None
        self.header_bytes = 0

    def drop(self) -> None:
        self._stop_awaiting()
        self.transport.close()

    def _refuse_headers(self) -> None:
        from gateway import errors  # the app's modules, once the app is loaded

        body = json.dumps(errors.headers_too_large(settings.MAX_HEADER_BYTES).body()).encode()
        self.transport.write(
            STATUS_LINE[431]
            + b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % len(body)
            + body
        )
        self.drop()


def _evict_one(connections: set, newcomer) -> None:
    """Close the connection that has owed its headers longest, else the one whose body has been
    arriving longest, else the newcomer (every other has its request whole). A scan, only ever
    made at the cap."""
    others = [c for c in connections if c is not newcomer]
    owing = [c for c in others if getattr(c, "header_deadline", None) is not None]
    sending = [c for c in others if getattr(c, "body_since", None) is not None]
    if owing:
        min(owing, key=lambda c: c.header_deadline.when()).drop()
    elif sending:
        min(sending, key=lambda c: c.body_since).drop()
    else:
        newcomer.drop()


def reserve_file_descriptors() -> int:
    """Raise this process's (and its workers') open-file limit to the hard limit, and check that
    MAX_CONNECTIONS fits in it; the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    needed = settings.MAX_CONNECTIONS + settings.UPSTREAM_MAX_CONNECTIONS + OTHER_FILE_DESCRIPTORS
    if hard != resource.RLIM_INFINITY and needed > hard:
        from django.core.management.base import CommandError

        raise CommandError(
            f"MAX_CONNECTIONS={settings.MAX_CONNECTIONS} (plus UPSTREAM_MAX_CONNECTIONS="
            f"{settings.UPSTREAM_MAX_CONNECTIONS} and {OTHER_FILE_DESCRIPTORS} more) needs {needed} open "
            f"files; this process may have {hard} (ulimit -n): lower MAX_CONNECTIONS (or "
            "UPSTREAM_MAX_CONNECTIONS) or raise the limit."
        )
    return hard
