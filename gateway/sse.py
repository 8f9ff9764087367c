"""Server-sent events: splitting a byte stream into events and framing our own."""

from __future__ import annotations

DONE = b"data: [DONE]\n\n"


class EventSplitter:
    """Incrementally splits bytes into SSE events (the text between blank lines).

    Chunks may cut an event anywhere, or hold several; CRLF and CR line ends (both allowed by
    the SSE format) are normalised to LF.
    """

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        data = self._pending + chunk if self._pending else chunk
        held = b""
        if b"\r" in data:
            if data.endswith(b"\r"):  # its LF may come with the next chunk
                data, held = data[:-1], b"\r"
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        events = data.split(b"\n\n")
        self._pending = events.pop() + held
        return [event for event in events if event.strip(b"\n")]


def data_of(event: bytes) -> bytes | None:
    """The event's data (its `data:` lines joined, with or without the space after the colon),
    or None when it has none (a comment)."""
    if event.startswith(b"data:") and b"\n" not in event.strip(b"\n"):
        # The common case: one data line.
        value = event.strip(b"\n")[5:]
        return value[1:] if value.startswith(b" ") else value
    lines = []
    for line in event.split(b"\n"):
        if line.startswith(b"data:"):
            value = line[5:]
            lines.append(value[1:] if value.startswith(b" ") else value)
    return b"\n".join(lines) if lines else None
