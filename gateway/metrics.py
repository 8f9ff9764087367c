"""The gateway's Prometheus metrics: observed once per request when its report is made, never
per stream chunk; and who may scrape them. The process's side (multiprocess mode, the
exposition, the usage writer's metrics) is `accounts.metrics`.
"""

from __future__ import annotations

import hmac
import ipaddress

from prometheus_client import Counter, Histogram

# First, so that the multiprocess folder is ready before the metrics below open their files.
from accounts.metrics import CONTENT_TYPE_LATEST, exposition, process_exited
from accounts.models import Outcome

# Model names come from clients, error codes partly from the router: past this many of each per
# process, the rest share the label "other", so that made-up names cannot grow the metrics
# without bound.
MAX_MODELS = 200
MAX_CODES = 50
_models: set[str] = set()
_codes: set[str] = set()

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

requests = Counter(
    "hfproxy_requests",
    "Requests that passed authentication, by how they ended.",
    ["endpoint", "model", "status", "outcome"],
)
latency = Histogram(
    "hfproxy_request_duration_seconds",
    "From the request's arrival to its last byte.",
    ["endpoint", "stream"],
    buckets=LATENCY_BUCKETS,
)
first_token = Histogram(
    "hfproxy_time_to_first_token_seconds",
    "From the request's arrival to the first generated text.",
    ["endpoint", "model"],
    buckets=LATENCY_BUCKETS,
)
tokens = Counter(
    "hfproxy_tokens",
    "Tokens used, as the provider counted them or as estimated.",
    ["direction", "model", "source"],
)
upstream_errors = Counter(
    "hfproxy_upstream_errors", "Requests the router failed, by the error's code.", ["code"]
)
refusals = Counter("hfproxy_rate_limit_refusals", "Requests refused by a key's limits.", ["limit"])


def _bounded(value: str, seen: set[str], limit: int) -> str:
    if value in seen:
        return value
    if len(seen) < limit:
        seen.add(value)
        return value
    return "other"


def model_label(model: str) -> str:
    return _bounded(model, _models, MAX_MODELS)


def observe(
    *,
    endpoint,
    model,
    status,
    outcome,
    error_code,
    stream,
    seconds,
    ttft,
    usage,
    source,
    attempts,
    refused_by="",
) -> None:
    """One finished request. `refused_by`: the limit that refused it, if one did."""
    model = model_label(model)
    requests.labels(endpoint, model, str(status), outcome).inc()
    if refused_by:
        refusals.labels(refused_by).inc()
    latency.labels(endpoint, "true" if stream else "false").observe(seconds)
    if ttft is not None:
        first_token.labels(endpoint, model).observe(ttft)
    if usage is not None:
        for direction, count in (("prompt", usage.prompt_tokens), ("completion", usage.completion_tokens)):
            if count:
                tokens.labels(direction, model, source).inc(count)
    if attempts and outcome in (
        Outcome.UPSTREAM_ERROR,
        Outcome.TIMEOUT,
    ):  # the router was called, and failed
        # error_code has a code's shape (Exchange.finish); how many there are is bounded here.
        upstream_errors.labels(_bounded(error_code or "unknown", _codes, MAX_CODES)).inc()


def allowed(remote_addr: str, authorization: str, token: str, allowed_networks: list) -> bool:
    """METRICS_TOKEN as a bearer token, or an address in METRICS_ALLOWED_IPS."""
    if token and hmac.compare_digest(authorization.encode(), f"Bearer {token}".encode()):
        return True
    try:
        address = ipaddress.ip_address(remote_addr)
    except ValueError:
        return False
    address = getattr(address, "ipv4_mapped", None) or address  # ::ffff:10.0.0.1 is 10.0.0.1
    return any(address in network for network in allowed_networks)


__all__ = ["CONTENT_TYPE_LATEST", "allowed", "exposition", "observe", "process_exited", "refusals"]
