"""SIGKILL loses no usage record (issue 16, point 6): a worker killed mid-traffic, the whole
server killed, and the supervisor killed alone (its workers must not serve on as orphans)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.support.harness import (
    PrivatePostgres,
    _children,
    chat,
    launch_proxy,
    request_id,
    router_and_proxy,
    send,
)
from tests.support.processes import start

# Records wait in memory this long: the window a kill used to lose them in.
SLOW_FLUSH = {"WEB_CONCURRENCY": "2", "USAGE_FLUSH_INTERVAL": "2"}
BODIES = [
    chat("openai/gpt-oss-120b"),
    chat("slow/journal", stream=True),
    chat("openai/gpt-oss-120b", stream=True),
]


@dataclass
class Traffic:
    """Clients sending mixed requests until stopped: what each saw."""

    proxy: object
    complete: list[str] = field(default_factory=list)  # the whole answer came
    admitted_cut: list[str] = field(default_factory=list)  # a 200's headers came, then the cut
    other: list[str] = field(default_factory=list)  # refused connections, resets before headers
    stop: threading.Event = field(default_factory=threading.Event)

    def client(self, index: int) -> None:
        with httpx.Client(timeout=15) as client:
            n = index
            while not self.stop.is_set():
                body, n = BODIES[n % len(BODIES)], n + 1
                self.one(client, body)

    def one(self, client: httpx.Client, body: dict) -> None:
        rid = request_id()
        headers = {"X-Request-Id": rid, **self.proxy.auth(), "Content-Type": "application/json"}
        status, received = None, b""
        try:
            with client.stream(
                "POST", self.proxy.api + "/chat/completions", content=json.dumps(body), headers=headers
            ) as response:
                status = response.status_code
                for chunk in response.iter_bytes():
                    received += chunk
        except httpx.HTTPError:
            (self.admitted_cut if status == 200 else self.other).append(rid)
            return
        whole = status == 200 and (not body["stream"] or received.rstrip().endswith(b"data: [DONE]"))
        (self.complete if whole else self.other).append(rid)

    @contextlib.contextmanager
    def running(self, clients: int = 8):
        threads = [threading.Thread(target=self.client, args=(i,)) for i in range(clients)]
        for thread in threads:
            thread.start()
        try:
            yield self
        finally:
            self.stop.set()
            for thread in threads:
                thread.join()


def _workers(proxy) -> list[int]:
    """uvicorn's workers: the serve process's children started by multiprocessing (not its
    resource tracker)."""
    workers = []
    for pid in _children(proxy.process.pid):
        with contextlib.suppress(FileNotFoundError):
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                workers.append(pid)
    return workers


def _connections(pid: int) -> int:
    """Sockets a process holds (its clients' connections, mostly)."""
    count = 0
    with contextlib.suppress(FileNotFoundError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(FileNotFoundError):
                count += os.readlink(fd).startswith("socket:")
    return count


def _wait_for_workers(proxy, count: int, seconds: float = 30) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        workers = _workers(proxy)
        if len(workers) >= count:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(proxy.url + "/health", timeout=2).status_code == 200:
                    return workers
        time.sleep(0.1)
    raise AssertionError(f"{count} workers did not come up")


def _records_by_request(proxy, wanted: set[str], seconds: float = 60) -> dict[str, list[dict]]:
    """Every record of these requests, once all that must come have (or after `seconds`)."""
    deadline = time.monotonic() + seconds
    while True:
        rows = proxy.db.query("SELECT request_id, outcome, error_code, status FROM accounts_usagerecord")
        found: dict[str, list[dict]] = {}
        for row in rows:
            found.setdefault(row["request_id"], []).append(row)
        if wanted <= set(found) or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def check(traffic: Traffic, found: dict[str, list[dict]]) -> None:
    lost = [rid for rid in traffic.complete + traffic.admitted_cut if rid not in found]
    assert not lost, (
        f"{len(lost)} of {len(traffic.complete) + len(traffic.admitted_cut)} requests have no record"
    )
    assert not [rid for rid, rows in found.items() if len(rows) > 1], "requests with more than one record"
    for rid in traffic.complete:
        assert found[rid][0]["outcome"] == "ok", found[rid]
    for rid in traffic.admitted_cut:  # cut off by the kill, recorded as such
        assert (found[rid][0]["outcome"], found[rid][0]["error_code"]) == ("proxy_error", "worker_lost"), (
            found[rid]
        )
    lost_records = [rid for rid, rows in found.items() if rows[0]["error_code"] == "worker_lost"]
    assert not set(lost_records) & set(traffic.complete)


def test_a_worker_killed_mid_traffic_loses_no_record(tmp_path):
    with router_and_proxy(tmp_path, **SLOW_FLUSH) as (_, proxy):
        workers = _wait_for_workers(proxy, 2)
        traffic = Traffic(proxy)
        with traffic.running():
            time.sleep(1.5)
            victim = max(workers, key=_connections)  # the kernel may have given one worker most clients
            os.kill(victim, signal.SIGKILL)
            time.sleep(1.5)
        _wait_for_workers(proxy, 2)  # the supervisor replaced it; the new one replays
        found = _records_by_request(proxy, set(traffic.complete + traffic.admitted_cut))
        print(
            f"\n{len(traffic.complete)} complete, {len(traffic.admitted_cut)} cut, {len(traffic.other)} other"
        )
        assert traffic.admitted_cut, "the kill cut no stream off: nothing was tested"
        check(traffic, found)
        assert not list((tmp_path / "journal").glob(f"usage-*-{victim}-*")), (
            "the dead worker's journal was kept"
        )


def test_the_whole_server_killed_loses_no_record(tmp_path):
    with router_and_proxy(tmp_path, **SLOW_FLUSH) as (_, proxy):
        _wait_for_workers(proxy, 2)
        traffic = Traffic(proxy)
        with traffic.running():
            time.sleep(1.5)
            for pid in [proxy.process.pid, *_workers(proxy)]:
                os.kill(pid, signal.SIGKILL)
            proxy.process.wait()
        proxy.process = start(
            ["manage.py", "serve"], proxy.env, proxy.url + "/health", output=proxy.log.open("ab")
        )
        found = _records_by_request(proxy, set(traffic.complete + traffic.admitted_cut))
        print(
            f"\n{len(traffic.complete)} complete, {len(traffic.admitted_cut)} cut, {len(traffic.other)} other"
        )
        check(traffic, found)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def test_workers_exit_when_their_supervisor_is_killed(tmp_path):
    with router_and_proxy(tmp_path, WEB_CONCURRENCY="2") as (_, proxy):
        workers = _wait_for_workers(proxy, 2)
        os.kill(proxy.process.pid, signal.SIGKILL)
        proxy.process.wait()
        deadline = time.monotonic() + 15
        while [pid for pid in workers if _alive(pid)] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in workers if _alive(pid)], "workers serve on as orphans"
        with pytest.raises(httpx.HTTPError):
            httpx.get(proxy.url + "/health", timeout=2)


def _lag(proxy) -> dict:
    return httpx.get(proxy.url + "/health", timeout=10).json()["usage_writer"]


def _gauges(proxy) -> dict[str, float]:
    text = httpx.get(proxy.url + "/metrics", headers={"Authorization": "Bearer scrape"}, timeout=10).text
    return {
        name: float(line.split()[-1])
        for line in text.splitlines()
        for name in ("hfproxy_usage_queue_depth", "hfproxy_usage_oldest_unwritten_seconds")
        if line.startswith(name + " ")
    }


def test_with_postgresql_stopped_records_wait_on_disk_and_health_says_how_far_behind(router, tmp_path):
    """Issue 16, point 7: past USAGE_QUEUE_MAX the records wait in the journal only; /health and
    /metrics say how many wait and for how long; all are written once PostgreSQL is back."""
    with contextlib.ExitStack() as stack:
        postgres = stack.enter_context(PrivatePostgres.running())
        settings = {"AUTH_CACHE_TTL": "3600", "USAGE_QUEUE_MAX": "10", "METRICS_TOKEN": "scrape"}
        proxy = launch_proxy(router, postgres.url, tmp_path, **settings)
        stack.callback(proxy.stop)
        served = [send(proxy, chat("openai/gpt-oss-120b"), key="team")]
        assert served[0].status == 200
        proxy.record(served[0].request_id)

        postgres.stop()
        served += [send(proxy, chat("openai/gpt-oss-120b"), key="team") for _ in range(40)]
        assert {answer.status for answer in served} == {200}
        time.sleep(1.1)
        lag = _lag(proxy)
        print(f"\nPostgreSQL stopped: /health says {lag}, /metrics {_gauges(proxy)}")
        assert lag["pending"] == 40 and lag["oldest_seconds"] >= 1
        assert _gauges(proxy)["hfproxy_usage_queue_depth"] == 40
        assert _gauges(proxy)["hfproxy_usage_oldest_unwritten_seconds"] >= 1
        journaled = [
            json.loads(line) for path in (tmp_path / "journal").glob("*.jsonl") for line in path.open()
        ]
        assert len([line for line in journaled if line["k"] == "f"]) == 40

        postgres.start()
        for answer in served:
            assert proxy.record(answer.request_id, seconds=60)["outcome"] == "ok"
        assert _lag(proxy) == {"pending": 0, "oldest_seconds": 0}
