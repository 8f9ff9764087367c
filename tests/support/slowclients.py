"""Clients that send a request slowly or never finish it (slowloris), on raw sockets."""

from __future__ import annotations

import contextlib
import selectors
import socket
import time

# A request whose headers never end.
HALF_HEADER = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "


def connect_raw(server, first: bytes) -> socket.socket | None:
    """A connection to `server` (anything with a `url`) that has sent `first`; None if refused."""
    host, port = server.url.removeprefix("http://").split(":")
    connection = socket.socket()
    connection.settimeout(3)
    try:
        connection.connect((host, int(port)))
        connection.sendall(first)
    except OSError:
        connection.close()
        return None
    return connection


def still_open(connections: list[socket.socket], seconds: float, dribble: bytes = b"") -> int:
    """Wait up to `seconds` for the server to close every connection (sending `dribble` on each,
    twice a second, meanwhile); how many it left open."""
    selector = selectors.DefaultSelector()
    for connection in connections:
        connection.setblocking(False)
        selector.register(connection, selectors.EVENT_READ)
    open_ = set(connections)
    deadline, next_drip = time.monotonic() + seconds, 0.0
    while open_ and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=0.1):
            with contextlib.suppress(BlockingIOError):
                try:
                    if key.fileobj.recv(65536):
                        continue
                except OSError:
                    pass
                selector.unregister(key.fileobj)
                open_.discard(key.fileobj)
        if dribble and time.monotonic() > next_drip:
            next_drip = time.monotonic() + 0.5
            for connection in list(open_):
                with contextlib.suppress(OSError):
                    connection.send(dribble)
    selector.close()
    for connection in connections:
        connection.close()
    return len(open_)
