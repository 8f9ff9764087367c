"""Streams under load with faults: CONCURRENCY clients each opening one stream after another
for SECONDS; a share of them leave mid-stream, a share of the router's streams are cut.

    python -m tests.faults.load --seconds 120 --concurrency 200

starts its own fake router and hfproxy (`manage.py serve`, PostgreSQL when DATABASE_URL names
one) and prints the figures; tests/faults/test_load.py runs it briefly and checks them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from tests.support.harness import Proxy, router_and_proxy
from tests.support.processes import manage

STREAM = "slow/load"  # 20 chunks, FAKE_ROUTER_SLOW apart
CUT = "fault/cut"
DB_POOL_SIZE = 4


@dataclass
class Figures:
    seconds: float = 0.0
    sent: Counter = field(default_factory=Counter)  # by kind: whole, left, cut
    statuses: Counter = field(default_factory=Counter)
    error_codes: Counter = field(default_factory=Counter)  # error events in streams, by kind:code
    failures: list[str] = field(default_factory=list)  # anything not as injected
    request_ids: dict[str, str] = field(default_factory=dict)  # request id → kind
    max_db_connections: int | None = None
    rss_baseline: float = 0.0
    rss_peak: float = 0.0
    rss_after: float = 0.0
    records: dict[str, Counter] = field(default_factory=dict)  # kind → outcomes of its records

    def table(self) -> str:
        total = sum(self.sent.values())
        lines = [
            f"streams: {total} in {self.seconds:.0f} s ({total / self.seconds:.0f}/s): "
            + ", ".join(f"{kind} {n}" for kind, n in sorted(self.sent.items())),
            f"statuses: {dict(self.statuses)}; error events: {dict(self.error_codes)}",
            f"usage records: {sum(sum(c.values()) for c in self.records.values())} for {total} requests: "
            + "; ".join(f"{kind} {dict(outcomes)}" for kind, outcomes in sorted(self.records.items())),
            f"PostgreSQL connections at most: {self.max_db_connections} (bound: DB_POOL_SIZE={DB_POOL_SIZE})",
            f"proxy RSS: {self.rss_baseline:.1f} MiB before, {self.rss_peak:.1f} MiB at peak, "
            f"{self.rss_after:.1f} MiB after",
            f"unexpected: {len(self.failures)} {self.failures[:5]}",
        ]
        return "\n".join(lines)


async def _one(
    session: aiohttp.ClientSession, proxy: Proxy, key: str, figures: Figures, rng: random.Random
) -> None:
    roll = rng.random()
    kind = "cut" if roll < 0.1 else "left" if roll < 0.3 else "whole"
    rid = f"load-{time.time_ns()}-{rng.randrange(1 << 30)}"
    figures.request_ids[rid] = kind
    figures.sent[kind] += 1
    body = {
        "model": CUT if kind == "cut" else STREAM,
        "messages": [{"role": "user", "content": "go"}],
        "stream": True,
    }
    headers = {"Authorization": f"Bearer {key}", "X-Request-Id": rid}
    leave_after = rng.randint(1, 5)  # of 22 events over a second: the stream is still running
    events: list[bytes] = []
    async with session.post(proxy.api + "/chat/completions", json=body, headers=headers) as response:
        figures.statuses[response.status] += 1
        if response.status != 200:
            figures.failures.append(f"{kind}: HTTP {response.status} {(await response.read())[:200]!r}")
            return
        async for line in response.content:
            if not line.startswith(b"data: "):
                continue
            events.append(line[6:].strip())
            if kind == "left" and len(events) >= leave_after:
                response.close()  # the client goes away mid-stream
                return
    errors = [json.loads(event)["error"]["code"] for event in events if event.startswith(b'{"error"')]
    for code in errors:
        figures.error_codes[f"{kind}:{code}"] += 1
    expected_end = [b"[DONE]"] if kind == "whole" else []
    if (kind == "cut") != bool(errors) or (kind == "whole" and events[-1:] != expected_end):
        figures.failures.append(f"{kind}: ended with {events[-2:]!r}")


async def _client(proxy: Proxy, key: str, until: float, figures: Figures, seed: int) -> None:
    rng = random.Random(seed)
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=90)) as session:
        while time.monotonic() < until:
            try:
                await _one(session, proxy, key, figures, rng)
            except (aiohttp.ClientError, TimeoutError) as exc:
                figures.failures.append(f"client error: {exc!r}")


def _watch_database(proxy: Proxy, figures: Figures, stop: threading.Event) -> None:
    if proxy.db.url.startswith("sqlite"):
        return
    name = proxy.db.url.rsplit("/", 1)[1]
    figures.max_db_connections = 0
    while not stop.is_set():
        rows = proxy.db.query(
            "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", name
        )
        figures.max_db_connections = max(figures.max_db_connections, rows[0]["n"])
        stop.wait(0.25)


def _watch_memory(proxy: Proxy, figures: Figures, stop: threading.Event) -> None:
    while not stop.is_set():
        figures.rss_peak = max(figures.rss_peak, proxy.rss_mib())
        stop.wait(0.25)


async def _drive(proxy: Proxy, key: str, seconds: float, concurrency: int, figures: Figures) -> None:
    until = time.monotonic() + seconds
    await asyncio.gather(*(_client(proxy, key, until, figures, seed) for seed in range(concurrency)))


def run(proxy: Proxy, key: str, seconds: float, concurrency: int, warm_up: float = 10) -> Figures:
    """Drive the load; count what the proxy recorded for it once the writer caught up.

    Memory is compared with its level after a short warm-up at the same concurrency: by then
    the process holds the buffers that many streams need, which Python keeps for reuse."""
    figures = Figures()
    asyncio.run(_drive(proxy, key, warm_up, concurrency, Figures()))
    time.sleep(2)
    figures.rss_baseline = proxy.rss_mib()
    stop = threading.Event()
    watchers = [
        threading.Thread(target=watch, args=(proxy, figures, stop), daemon=True)
        for watch in (_watch_database, _watch_memory)
    ]
    for watcher in watchers:
        watcher.start()
    started = time.monotonic()
    try:
        asyncio.run(_drive(proxy, key, seconds, concurrency, figures))
    finally:
        figures.seconds = time.monotonic() - started
        stop.set()
        for watcher in watchers:
            watcher.join()
    figures.records = _records(proxy, figures)
    time.sleep(2)  # streams' cleanups, the last flush, then memory settles
    figures.rss_after = proxy.rss_mib()
    return figures


def _records(proxy: Proxy, figures: Figures) -> dict[str, Counter]:
    """Outcomes of this run's usage records by what was done to their requests, waiting (up to
    60 s) until there is one per request."""
    deadline = time.monotonic() + 60
    while True:
        rows = proxy.db.query(
            "SELECT request_id, outcome FROM accounts_usagerecord WHERE request_id LIKE 'load-%%'"
        )
        mine = [row for row in rows if row["request_id"] in figures.request_ids]
        if len(mine) >= len(figures.request_ids) or time.monotonic() > deadline:
            by_kind: dict[str, Counter] = {}
            for row in mine:
                by_kind.setdefault(figures.request_ids[row["request_id"]], Counter())[row["outcome"]] += 1
            return by_kind
        time.sleep(0.5)


@contextlib.contextmanager
def servers(folder: Path):
    """A fake router and hfproxy on a fresh database (PostgreSQL when DATABASE_URL names one),
    with a key whose limits are all on: (proxy, key)."""
    # Timeouts with headroom: this is no timeout test, and a busy machine must not make it one.
    settings = {"CONNECT_TIMEOUT": "10", "READ_TIMEOUT": "30", "REQUEST_TIMEOUT": "60"}
    # One key plays every client: no share per key (KEY_MAX_IN_FLIGHT) to refuse it.
    settings.update(DB_POOL_SIZE=str(DB_POOL_SIZE), LOG_LEVEL="WARNING", KEY_MAX_IN_FLIGHT="0")
    with router_and_proxy(folder, **settings) as (_, proxy):
        key = manage(
            "create_api_key", "load", "--rpm", "1000000", "--tpm", "100000000",
            "--token-budget", "1000000000", "--max-parallel", "1000", env=proxy.env,
        ).splitlines()[-1]  # fmt: skip
        yield proxy, key


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--concurrency", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder, servers(Path(folder)) as (proxy, key):
        print(run(proxy, key, args.seconds, args.concurrency).table())


if __name__ == "__main__":
    main()
