"""Prometheus in every process of the server, with the maintained client (prometheus_client).

With several worker processes (`manage.py serve --workers N`) the library's multiprocess mode is
used: `serve` gives the workers a shared PROMETHEUS_MULTIPROC_DIR before they start, each writes
its own files, and a scrape of any worker sums them all, so one port shows the whole server.
The folder is made ready here, before any metric exists (a metric opens its file as it is
created); both apps import this first. Here too: the usage writer's own metrics.
"""

from __future__ import annotations

import glob
import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

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

queue_depth = Gauge(
    "hfproxy_usage_queue_depth",
    "Usage records waiting to be written (in memory, or spilled to the journal).",
    multiprocess_mode="livesum",
)
oldest_unwritten = Gauge(
    "hfproxy_usage_oldest_unwritten_seconds",
    "Age of the oldest usage record waiting to be written (0: none waits), the worst worker's.",
    multiprocess_mode="livemax",
)
write_lag = Histogram(
    "hfproxy_usage_write_lag_seconds",
    "From a request's end to its record's write (each batch's oldest record).",
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)


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


__all__ = [
    "CONTENT_TYPE_LATEST",
    "exposition",
    "oldest_unwritten",
    "process_exited",
    "queue_depth",
    "write_lag",
]
