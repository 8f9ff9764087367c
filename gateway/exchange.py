"""What happened to each request: one report per authenticated request, however it ended.

`Exchange` follows a request from authentication to its last byte; `finish()` reports it
exactly once: a log line, and a usage record queued for the database.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from accounts import limits, prices
from accounts.keys import Caller
from accounts.models import Outcome
from accounts.usage import writer
from gateway import metrics
from gateway.converter import Usage

logger = logging.getLogger("hfproxy.requests")

PROVIDER, ESTIMATED, MISSING = "provider", "estimated", "missing"


@dataclass
class Exchange:
    request_id: str
    endpoint: str
    caller: Caller
    id: uuid.UUID = field(default_factory=uuid.uuid4)
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    started: float = field(default_factory=time.perf_counter)
    model_requested: str = ""
    model_answered: str = ""
    stream: bool = False
    usage: Usage | None = None
    usage_source: str = MISSING
    first_token_at: float | None = None
    status: int | None = None
    outcome: str | None = None
    error_code: str = ""
    latency: float | None = None
    admission: limits.Admission | None = None
    upstream_attempts: int = 0
    provider: str = ""  # the provider that answered, as the router said (x-inference-provider)
    server_shutdown: bool = False  # the server cut the request off (graceful shutdown timed out)

    def count_attempt(self) -> None:
        self.upstream_attempts += 1

    def mark_first_token(self) -> None:
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()

    def note_usage(self, usage: Usage | None, estimate: Usage | None = None) -> None:
        """The provider's counts when it gave them, else the estimate (if anything was made)."""
        if usage is not None and usage.total_tokens is not None:
            self.usage, self.usage_source = usage, PROVIDER
        elif estimate is not None:
            self.usage, self.usage_source = estimate, ESTIMATED

    @property
    def finished(self) -> bool:
        return self.outcome is not None

    def finish(self, status: int, outcome: str, error_code: str | None = None) -> None:
        """Record how the request ended; later calls are ignored (first word wins)."""
        if self.finished:
            return
        if self.server_shutdown and outcome == Outcome.CLIENT_DISCONNECTED:
            outcome, error_code = Outcome.PROXY_ERROR, "server_shutdown"  # not the client's doing
            status = 503 if status == 499 else status
        self.status, self.outcome, self.error_code = status, outcome, error_code or ""
        self.latency = time.perf_counter() - self.started
        report(self)
        limits.settle(self.admission, (self.usage.total_tokens or 0) if self.usage else 0)


def _text(value: str | None, limit: int = 200) -> str:
    # PostgreSQL refuses NUL in text; a column has a length. A record must always be writable.
    return (value or "").replace("\x00", "")[:limit]


def _ms(seconds: float | None) -> int | None:
    return None if seconds is None else max(0, round(seconds * 1000))


def report(exchange: Exchange) -> None:
    usage = exchange.usage or Usage()
    ttft = exchange.first_token_at - exchange.started if exchange.first_token_at else None
    writer.record(
        {
            "id": exchange.id,
            "created_at": exchange.created_at,
            "request_id": _text(exchange.request_id, 128),
            "user_id": exchange.caller.user_id,
            "api_key_id": exchange.caller.key_id,
            "hf_token_id": exchange.caller.token_id,
            "upstream_attempts": exchange.upstream_attempts,
            "provider": _text(prices.provider_of(exchange.model_requested, exchange.provider), 64),
            "endpoint": exchange.endpoint,
            "model_requested": _text(exchange.model_requested),
            "model_answered": _text(exchange.model_answered),
            "stream": exchange.stream,
            "status": exchange.status,
            "outcome": exchange.outcome,
            "error_code": _text(exchange.error_code, 40),
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens,
            "usage_source": exchange.usage_source if exchange.usage else MISSING,
            "latency_ms": _ms(exchange.latency),
            "ttft_ms": _ms(ttft),
        }
    )
    metrics.observe(
        endpoint=exchange.endpoint,
        model=exchange.model_requested,
        status=exchange.status,
        outcome=exchange.outcome,
        error_code=exchange.error_code,
        stream=exchange.stream,
        seconds=exchange.latency,
        ttft=ttft,
        usage=exchange.usage,
        source=exchange.usage_source,
        attempts=exchange.upstream_attempts,
    )
    logger.info(
        "request_id=%s endpoint=%s user=%s key=%s model=%s answered_by=%s stream=%s status=%s "
        "outcome=%s latency_ms=%.1f ttft_ms=%s prompt_tokens=%s completion_tokens=%s usage=%s",
        exchange.request_id,
        exchange.endpoint,
        exchange.caller.username,
        exchange.caller.key_prefix,
        exchange.model_requested or None,
        exchange.model_answered or None,
        exchange.stream,
        exchange.status,
        exchange.outcome,
        exchange.latency * 1000,
        f"{ttft * 1000:.1f}" if ttft is not None else None,
        usage.prompt_tokens,
        usage.completion_tokens,
        exchange.usage_source,
    )


__all__ = ["Exchange", "report"]
