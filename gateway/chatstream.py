"""A relayed chat stream, event by event: what to pass on, and what it told us.

Pure like the converter: no I/O. The relay feeds it the router's bytes and sends on what it returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway import converter, sse
from gateway.converter import (
    Answer,
    Api,
    BadAnswer,
    ChatRequest,
    Follower,
    Usage,
    completion_chars,
    event_payload,
)


@dataclass
class ChatStream(Follower):
    """Follows a relayed chat stream event by event: what to pass on, and what it told us."""

    wants_usage: bool = False
    finished: bool = False  # a choice has finished (its `finish_reason` is set)

    def event(self, event: bytes) -> bytes:
        data = sse.data_of(event)
        if data is None:
            return event + b"\n\n"  # a comment (keep-alive): pass it on
        if data.strip() == b"[DONE]":
            self.done = True
            return sse.DONE
        chunk = event_payload(data)
        choices = chunk.get("choices")
        if "error" in chunk and not choices:
            raise BadAnswer("the router reported an error mid-stream", error=chunk)
        self._note(chunk, choices)
        if not choices and chunk.get("usage") and not self.wants_usage:
            return b""
        return event + b"\n\n"

    def _note(self, chunk: dict[str, Any], choices: Any) -> None:
        """What a chunk tells about the answer: its model, its usage, how far it got."""
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

    def error_event(self, error: Any) -> bytes:
        return error.sse_event()


def read_completion(raw: bytes) -> Answer:
    answer = converter.parse_completion(raw)
    return Answer(str(answer.get("model") or ""), Usage.of(answer.get("usage")), completion_chars(answer))


def _follower(request: ChatRequest) -> ChatStream:
    return ChatStream(wants_usage=request.wants_usage)


CHAT = Api(follower=_follower, read_answer=read_completion)
