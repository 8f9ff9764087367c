"""One request's life, from authentication to its last byte: one report however it ended.

`Exchange.open()` admits the request against its key's share of the worker and its limits;
`send()` calls the router on its behalf; `finish()` gives the share back and reports the request
exactly once: a log line, the metrics, and its usage entry handed to `services.usage_record`,
which queues the record and settles the limits.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING

from accounts import limits, prices, services
from accounts.keys import Caller
from accounts.models import Outcome, UsageSource
from accounts.usage import UsageEntry
from gateway import metrics, scrub, share, upstream
from gateway.converter import Usage

if TYPE_CHECKING:
    import httpx

logger = logging.getLogger("hfproxy.requests")


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
    usage_source: str = UsageSource.MISSING
    units: Decimal | None = None  # images generated, seconds of audio: endpoints not counted in tokens
    first_token_at: float | None = None
    status: int | None = None
    outcome: str | None = None
    error_code: str = ""
    latency: float | None = None
    admission: limits.Admission | None = None
    holds_share: bool = False  # counted in its key's share of this worker (gateway.share)
    refused_by: str = ""  # the limit that refused it (a Refusal's kind)
    upstream_attempts: int = 0
    provider: str = ""  # the provider that answered, as the router said (x-inference-provider)
    server_shutdown: bool = False  # the server cut the request off (graceful shutdown timed out)
    failure: str = ""  # the answer said it failed (a Responses `status: failed`): its error code

    async def open(self, reservation: limits.Reservation = limits.NOTHING) -> None:
        """Count the request against its key's share and limits, `reservation` against its
        budgets; `limits.Refusal` when over one."""
        caller = self.caller
        services.usage_started(entry_id=self.id, **self.identity())
        try:
            self.holds_share = share.take(caller.key_id)  # first: no I/O, and nothing else to undo
            self.admission = await limits.admit(
                caller.key_id, caller.user_id, caller.limits, reservation, caller.scopes, holder=self.id.hex
            )
        except limits.Refusal as refusal:
            self.refused_by = refusal.kind
            raise

    def identity(self) -> dict:
        """The record's columns known from the start."""
        caller = self.caller
        return {
            "created_at": self.created_at,
            "request_id": self.request_id,
            "user_id": caller.user_id,
            "api_key_id": caller.key_id,
            "hf_token_id": caller.token_id,
            "team_id": caller.team_id,
            "bill_to": caller.bill_to,
            "endpoint": self.endpoint,
        }

    async def send(self, method: str, path: str, deadline: float, **options) -> httpx.Response:
        """`upstream.send` on this request's behalf: its caller's token, its id, each attempt
        counted. `options`: upstream.send's body, stream, base, headers, content_type, accept."""
        try:
            return await upstream.send(
                method,
                path,
                token=self.caller.upstream_token,
                bill_to=self.caller.bill_to,
                request_id=self.request_id,
                deadline=deadline,
                tried=self.count_attempt,
                **options,
            )
        except upstream.UpstreamError as error:
            if error.kind == upstream.UpstreamError.SATURATED:
                self.upstream_attempts -= 1  # it never left the proxy: the router saw nothing
            raise

    async def read(self, response: httpx.Response, deadline: float) -> bytes:
        """A whole answer of the router (the response closed), without this request's token:
        whatever the router quotes goes no further than here."""
        return scrub.raw(await upstream.read_body(response, deadline), self.secrets)

    @property
    def secrets(self) -> tuple[str, ...]:
        """What the router's words must never carry out: the token this request calls with."""
        return scrub.secrets_of(self.caller.upstream_token)

    def count_attempt(self) -> None:
        self.upstream_attempts += 1

    def mark_first_token(self) -> None:
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()

    def note_usage(self, usage: Usage | None, estimate: Usage | None = None) -> None:
        """The provider's counts when it gave them, else the estimate (if anything was made)."""
        if usage is not None and usage.total_tokens is not None:
            self.usage, self.usage_source = usage, UsageSource.PROVIDER
        elif estimate is not None:
            self.usage, self.usage_source = estimate, UsageSource.ESTIMATED

    @property
    def finished(self) -> bool:
        return self.outcome is not None

    def finish(self, status: int, outcome: str, error_code: str | None = None) -> None:
        """Record how the request ended; later calls are ignored (first word wins)."""
        if self.finished:
            return
        if self.holds_share:  # first: should anything below fail, the key still gets it back
            self.holds_share = False
            share.give_back(self.caller.key_id)
        if outcome == Outcome.OK and self.failure:  # delivered, but what came was a failure
            outcome, error_code = Outcome.UPSTREAM_ERROR, self.failure
        if self.server_shutdown and outcome == Outcome.CLIENT_DISCONNECTED:
            outcome, error_code = Outcome.PROXY_ERROR, "server_shutdown"  # not the client's doing
            status = 503 if status == 499 else status
        if error_code:
            # Stored and a metric label: a code of our vocabulary's shape, never the router's
            # free text (a Responses failure's code comes from the answer).
            error_code = scrub.code(error_code, self.secrets) or "upstream_error"
        self.status, self.outcome, self.error_code = status, outcome, error_code or ""
        self.latency = time.perf_counter() - self.started
        report(self)


def _ms(seconds: float | None) -> int | None:
    return None if seconds is None else max(0, round(seconds * 1000))


def report(exchange: Exchange) -> None:
    """The request's record (queued, its limits settled), metrics and log line."""
    usage = exchange.usage or Usage()
    # The router's words that are stored and logged as they came.
    secrets = exchange.secrets
    answered = scrub.text(exchange.model_answered, secrets)
    provider = scrub.text(exchange.provider, secrets)
    ttft = exchange.first_token_at - exchange.started if exchange.first_token_at else None
    entry = UsageEntry(
        id=exchange.id,
        **exchange.identity(),
        upstream_attempts=exchange.upstream_attempts,
        provider=prices.provider_of(exchange.model_requested, provider),
        model_requested=exchange.model_requested,
        model_answered=answered,
        stream=exchange.stream,
        status=exchange.status,
        outcome=exchange.outcome,
        error_code=exchange.error_code,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
        cached_tokens=usage.cached_tokens,
        reasoning_tokens=usage.reasoning_tokens,
        units=exchange.units,
        usage_source=(
            exchange.usage_source if exchange.usage or exchange.units is not None else UsageSource.MISSING
        ),
        latency_ms=_ms(exchange.latency),
        ttft_ms=_ms(ttft),
    )
    services.usage_record(entry=entry, admission=exchange.admission)
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
        refused_by=exchange.refused_by,
    )
    logger.info(
        "request_id=%s endpoint=%s user=%s key=%s model=%s answered_by=%s stream=%s status=%s "
        "outcome=%s latency_ms=%.1f ttft_ms=%s prompt_tokens=%s completion_tokens=%s usage=%s",
        exchange.request_id,
        exchange.endpoint,
        exchange.caller.username,
        exchange.caller.key_prefix,
        exchange.model_requested or None,
        answered or None,
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
