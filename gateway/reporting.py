"""What happened to each request: one report per authenticated request, however it ended.

`Exchange` follows a request from authentication to its last byte; `finish()` reports it
exactly once. For now a report is a log line; the usage writer takes over this seam.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from gateway.auth import Caller
from gateway.converter import Usage

logger = logging.getLogger("hfproxy.requests")


@dataclass
class Exchange:
    request_id: str
    endpoint: str
    caller: Caller
    started: float = field(default_factory=time.perf_counter)
    model_requested: str | None = None
    model_answered: str | None = None
    stream: bool = False
    usage: Usage | None = None
    first_token_at: float | None = None
    status: int | None = None
    outcome: str | None = None
    latency: float | None = None

    def mark_first_token(self) -> None:
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()

    @property
    def finished(self) -> bool:
        return self.outcome is not None

    def finish(self, status: int, outcome: str) -> None:
        """Record how the request ended; later calls are ignored (first word wins)."""
        if self.finished:
            return
        self.status, self.outcome = status, outcome
        self.latency = time.perf_counter() - self.started
        report(self)


def report(exchange: Exchange) -> None:
    usage = exchange.usage or Usage()
    ttft = exchange.first_token_at - exchange.started if exchange.first_token_at else None
    logger.info(
        "request_id=%s endpoint=%s caller=%s model=%s answered_by=%s stream=%s status=%s "
        "outcome=%s latency_ms=%.1f ttft_ms=%s prompt_tokens=%s completion_tokens=%s",
        exchange.request_id,
        exchange.endpoint,
        exchange.caller.name,
        exchange.model_requested,
        exchange.model_answered,
        exchange.stream,
        exchange.status,
        exchange.outcome,
        exchange.latency * 1000,
        f"{ttft * 1000:.1f}" if ttft is not None else None,
        usage.prompt_tokens,
        usage.completion_tokens,
    )
