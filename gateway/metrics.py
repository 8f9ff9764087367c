"""Prometheus metrics, with the maintained client library (prometheus_client).

Observed once per request when its report is made, never per stream chunk. With several worker
processes (`manage.py serve --workers N`) the library's multiprocess mode is used: `serve` gives
the workers a shared PROMETHEUS_MULTIPROC_DIR before they start, each writes its own files, and
a scrape of any worker sums them all, so one port shows the whole server.
"""

from __future__ import annotations

import glob
import hmac
import ipaddress
import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from accounts.models import Outcome

MULTIPROCESS = "PROMETHEUS_MULTIPROC_DIR" in os.environ
if MULTIPROCESS:  # any process that imports this writes there (manage.py commands too)
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)


def _forget_dead_workers() -> None:
    """A worker that crashed never said so: its live gauges (queue depth) would count forever.
    Each new process clears those of processes no longer running."""
    for path in glob.glob(os.path.join(os.environ["PROMETHEUS_MULTIPROC_DIR"], "gauge_live*_*.db")):
        pid = int(path.rsplit("_", 1)[1].removesuffix(".db"))
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid)
        except PermissionError:
            pass  # running, as another user


if MULTIPROCESS:
    _forget_dead_workers()

# Model names come from clients: past this many per process, the rest share the label "other",
# so that made-up names cannot grow the metrics without bound.
MAX_MODELS = 200
_models: set[str] = set()

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
queue_depth = Gauge(
    "hfproxy_usage_queue_depth", "Usage records waiting to be written.", multiprocess_mode="livesum"
)
write_lag = Histogram(
    "hfproxy_usage_write_lag_seconds",
    "From a request's end to its record's write (each batch's oldest record).",
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)


def model_label(model: str) -> str:
    if model in _models:
        return model
    if len(_models) < MAX_MODELS:
        _models.add(model)
        return model
    return "other"


def observe(
    *, endpoint, model, status, outcome, error_code, stream, seconds, ttft, usage, source, attempts
) -> None:
    """One finished request."""
    model = model_label(model)
    requests.labels(endpoint, model, str(status), outcome).inc()
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
        upstream_errors.labels(error_code or "unknown").inc()


def exposition() -> bytes:
    """The metrics in Prometheus' text format: this process's, or every worker's summed."""
    if not MULTIPROCESS:
        return generate_latest()
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return generate_latest(registry)


def process_exited() -> None:
    """This worker is stopping: its live gauges no longer count."""
    if MULTIPROCESS:
        multiprocess.mark_process_dead(os.getpid())


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
