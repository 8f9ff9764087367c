"""Many long streams at once through one hfproxy worker: memory, added TTFT, CPU per chunk.

    python -m bench.streams [--ttfb-ms 2000] [--chunk-delay-ms 50] [--tokens 200]
        [--ramp 10,1000,5000,10000] [--routers 2] [--drivers 4] [--json FILE]
        [--tracemalloc N]

Every stream is a chat completion whose answer (the fake router's `slow/…` model,
tests/support/fake_router.py) comes `--ttfb-ms` after the headers (a reasoning model thinking),
then one token per `--chunk-delay-ms`, `--tokens` of them. For each N of the ramp, N such
streams are opened at `--open-rate` per second (so that the listening queues keep up) by
`--drivers` processes, first against the router directly (the reference: what the router and
the drivers add by themselves), then through hfproxy, started as `bench.compare` starts it (one
uvicorn worker, DEBUG off, a real key with limits on, usage recorded in PostgreSQL when it
answers, else SQLite) with its connection caps raised to fit (MAX_CONNECTIONS,
UPSTREAM_MAX_CONNECTIONS, KEY_MAX_IN_FLIGHT: their defaults hold 2,000 streams per worker; two
open files per stream), REDIS_TIMEOUT at 10 s, READ_TIMEOUT at 600 s.
The router runs as `--routers` processes sharing one port (SO_REUSEPORT). hfproxy is pinned to
CPU 0, the router and the drivers to CPU 1 when there are two.

Per N: the most streams open at once (the drivers' count; "held": hfproxy's open sockets / 2),
hfproxy's RSS (VmRSS) before the ramp and at its highest during the run, and the growth per
open stream; time to first token (the first content
event) through hfproxy minus the router's measured directly at the same N, p50 and p99; hfproxy's
CPU time (user + system, /proc) per event relayed, over the whole stage (requests included) and
while all N streams were open ("held": no request being handled, only events); errors; and the
usage records against the streams sent (each recorded once). Nothing is asserted: figures only.

`--tracemalloc N` instead serves hfproxy under tracemalloc (bench.traced), holds N streams open
(a long `--ttfb-ms` is best: they are then all waiting at once) and prints the allocation sites
that grew between before and then, per stream, by line and by file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

from bench import compare, load
from gateway import connections
from tests.support.processes import answers, free_port, server_env, start, stop

MODEL = "slow/bench"  # the fake router's long answer: TTFB, then a token per SLOW seconds
# What marks a content event, in the fake router's JSON (json.dumps' separators) or compact.
CONTENT = (b'"content": "tok', b'"content":"tok')
NAME = "hfproxy-streams"  # its log's name (.bench/NAME.log)
# Its counters, outside bench.compare's prefix (a bench.compare of an older revision, run beside
# it, deletes every counter under that prefix: budgets seen as spent, spurious 429s), and this
# run's own (another bench.streams beside it deletes its own at start, and this one at its end).
REDIS_KEY_PREFIX = f"hfproxy-streams:{os.getpid()}:limits:"


def raise_file_limit(wanted: int) -> int:
    """Raise this process's open-file limit (its children inherit it) to `wanted`, beyond the
    hard limit when allowed (root may raise it up to fs.nr_open); the soft limit it got."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if wanted > hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            return wanted
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# --- The drivers: several processes, each opening its share of the N streams ---------------


async def _stream(session, url: str, headers: dict, body: bytes, counters, out: dict) -> None:
    started = time.perf_counter()
    with counters["opened"].get_lock():
        counters["opened"].value += 1
    first, done, events, tail = None, False, 0, b""
    try:
        async with session.post(url, data=body, headers=headers) as response:
            if response.status != 200:
                raise RuntimeError(f"{response.status}: {(await response.read())[:200]!r}")
            async for data in response.content.iter_any():
                seen = tail + data
                if first is None and any(marker in seen for marker in CONTENT):
                    first = time.perf_counter()
                new = seen.count(b"\n\n") - tail.count(b"\n\n")
                events += new
                if first is not None and new:
                    with counters["events"].get_lock():
                        counters["events"].value += new
                if b"data: [DONE]" in seen:
                    done = True
                tail = seen[-16:]
        if not done:
            raise RuntimeError("the stream ended without [DONE]")
        out["ttfts_ms"].append(((first or time.perf_counter()) - started) * 1000)
        out["events"] += events
    except Exception as exc:  # counted and reported, never raised: a benchmark goes on
        out["errors"] += 1
        out["first_error"] = out["first_error"] or f"{type(exc).__name__}: {exc}"[:300]
    finally:
        with counters["closed"].get_lock():
            counters["closed"].value += 1


def conversation(kib: int) -> list[dict]:
    """The messages of a request: the benchmark's one-line prompt, after `kib` KiB of earlier
    turns (a coding agent resends its whole conversation every turn), 1 KiB a message."""
    words = " ".join(f"word{i}" for i in range(140))[:1000]
    turns = [{"role": ("user", "assistant")[i % 2], "content": f"{i} {words}"} for i in range(kib)]
    return [*turns, *load.PROMPT]


async def _drive(url, key, count: int, interval: float, start_at: float, counters, request: dict):
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    body = json.dumps(request).encode()
    out = {"ttfts_ms": [], "events": 0, "errors": 0, "first_error": ""}
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    timeout = aiohttp.ClientTimeout(total=900, sock_connect=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        tasks = []
        for i in range(count):
            delay = start_at + i * interval - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(_stream(session, url, headers, body, counters, out)))
        await asyncio.gather(*tasks)
    return out


def _driver(url, key, count, interval, start_at, counters, request, results) -> None:
    raise_file_limit(count + 1000)
    results.put(asyncio.run(_drive(url, key, count, interval, start_at, counters, request)))


def open_files(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def run_stage(url: str, key: str, n: int, args, pid: int | None, cpus, model: str = MODEL) -> dict:
    """N streams, spread over the drivers; while they run, hfproxy's (`pid`) RSS, its open files
    and the streams open are sampled every 50 ms. `model`: the router's slow one (TTFB, then a
    token per chunk delay), or a fast one for a warm-up."""
    request = {
        "model": model,
        "messages": conversation(args.prompt_kib),
        "stream": True,
        "max_tokens": args.tokens,
    }
    context = multiprocessing.get_context("spawn")
    counters = {
        "opened": context.Value("i", 0),
        "closed": context.Value("i", 0),
        "events": context.Value("q", 0),
    }
    results = context.Queue()
    drivers_n = max(1, min(args.drivers, n // 50 or 1))
    interval = drivers_n / args.open_rate  # each driver's gap between two streams it opens
    start_at = time.time() + 1.0  # time to start the drivers
    processes = []
    for d in range(drivers_n):
        share = n // drivers_n + (d < n % drivers_n)
        process = context.Process(
            target=_driver,
            args=(
                url,
                key,
                share,
                interval,
                start_at + d / args.open_rate,
                counters,
                request,
                results,
            ),
        )
        process.start()
        if cpus:
            os.sched_setaffinity(process.pid, cpus)
        processes.append(process)
    cpu_before = load.cpu_ticks(pid) if pid else None
    files_before = open_files(pid) if pid else 0
    peak_open, peak_rss, rss_at_peak_open, peak_files = 0, 0.0, 0.0, 0
    held = []  # (CPU ticks, content events) while every stream is open: no request being handled
    outs = []
    while len(outs) < len(processes):
        with contextlib.suppress(Exception):
            outs.append(results.get(timeout=0.05))
            continue
        if not any(process.is_alive() for process in processes):
            with contextlib.suppress(Exception):
                while True:
                    outs.append(results.get(timeout=1))
            if len(outs) < len(processes):
                raise RuntimeError(f"{len(processes) - len(outs)} driver process(es) died: see above")
        open_now = counters["opened"].value - counters["closed"].value
        rss = load.rss_mib(pid) if pid else 0.0
        peak_rss = max(peak_rss, rss)
        peak_files = max(peak_files, open_files(pid) if pid else 0)
        if open_now > peak_open:
            peak_open, rss_at_peak_open = open_now, rss
        if pid and open_now >= n and counters["opened"].value == n:
            held.append((load.cpu_ticks(pid), counters["events"].value))
    for process in processes:
        process.join()
    return {
        "n": n,
        "peak_open": peak_open,
        # Each stream the proxy holds is two sockets: its client's and the router's.
        "proxy_open": max(0, peak_files - files_before) // 2,
        "peak_rss_mib": peak_rss,
        "rss_at_peak_open_mib": rss_at_peak_open,
        "ttfts_ms": [t for o in outs for t in o["ttfts_ms"]],
        "events": sum(o["events"] for o in outs),
        "errors": sum(o["errors"] for o in outs),
        "first_error": next((o["first_error"] for o in outs if o["first_error"]), ""),
        "cpu_before": cpu_before,
        "held_cpu_s": load.cpu_used(held[0][0], held[-1][0]) if len(held) > 1 else 0.0,
        "held_events": held[-1][1] - held[0][1] if len(held) > 1 else 0,
    }


# --- The servers ------------------------------------------------------------------------------


def start_routers(stack: contextlib.ExitStack, port: int, args) -> list[subprocess.Popen]:
    env = server_env(
        FAKE_ROUTER_TTFB=str(args.ttfb_ms / 1000),
        FAKE_ROUTER_SLOW=str(args.chunk_delay_ms / 1000),
        FAKE_ROUTER_CHUNKS=str(args.tokens),
    )
    routers = []
    for i in range(args.routers):
        process = start(
            ["-m", "tests.support.fake_router", "--port", str(port), "--reuse-port", "--backlog", "4096"],
            env,
            f"http://127.0.0.1:{port}/_stats",
            cpus=compare.DRIVER_CPUS,
            output=compare._log(stack, f"router-{i}"),
        )
        stack.callback(stop, process)
        routers.append(process)
    return routers


def proxy_settings(most: int) -> dict[str, str]:
    """The caps that must fit `most` streams on one worker (their defaults hold 2,000), within
    the open files the worker may have (two per stream, and gateway.connections' reserve)."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    fits = (hard - connections.OTHER_FILE_DESCRIPTORS) // 2 if hard != resource.RLIM_INFINITY else most * 2
    room = str(min(most + most // 10 + 100, fits))
    return {
        "MAX_CONNECTIONS": room,  # client connections per worker (default 4000)
        "UPSTREAM_MAX_CONNECTIONS": room,  # router connections per worker (default 2000)
        "KEY_MAX_IN_FLIGHT": "0",  # one key's share of the worker (default 1000): one key here
        # Redis's answers wait behind a busy event loop: on a shared machine, past the default
        # second, and then every request is refused (503) for the next second.
        "REDIS_TIMEOUT": "10",
        # Generous beside the benchmark's waits: a loaded machine must not time them out.
        "READ_TIMEOUT": "600",
        "REQUEST_TIMEOUT": "900",
        "REDIS_KEY_PREFIX": REDIS_KEY_PREFIX,
    }


def _forget_counters(stack: contextlib.ExitStack, redis_url: str) -> None:
    """This run's counters are deleted at its end (they are its own: REDIS_KEY_PREFIX)."""
    if redis_url:
        from accounts import counters

        stack.callback(counters.delete_all, redis_url, REDIS_KEY_PREFIX)


def _percentiles(values: list[float]) -> tuple[float | None, float | None]:
    return load.percentile(values, 50), load.percentile(values, 99)


def measure(args) -> dict:
    most = max(args.ramp)
    files = raise_file_limit(2 * most + 2000)
    if compare.DRIVER_CPUS:
        os.sched_setaffinity(0, compare.DRIVER_CPUS)
    database_url = args.database_url if answers(args.database_url) else ""
    redis_url = args.redis_url if args.redis_url and answers(args.redis_url) else ""
    rows = []
    with contextlib.ExitStack() as stack:
        router_port = free_port()
        router_url = f"http://127.0.0.1:{router_port}"
        start_routers(stack, router_port, args)
        port = free_port()
        proxy, key, database = compare.start_hfproxy(
            stack, port, router_url, database_url, redis_url, proxy_settings(most), name=NAME
        )
        pid = proxy.pid
        _forget_counters(stack, redis_url)
        proxy_url = f"http://127.0.0.1:{port}/v1/chat/completions"
        direct_url = f"{router_url}/v1/chat/completions"
        sent = 0
        # Imports, pools, caches: streams of a fast model (the slow one's are as long as the stages').
        warm = run_stage(proxy_url, key, 10, args, pid, compare.DRIVER_CPUS, load.MODEL)
        sent += 10
        asyncio.run(compare._wait_for_records(database, sent, 30))
        baseline = load.rss_mib(pid)
        print(
            f"hfproxy RSS before the ramp: {baseline:.1f} MiB (warm-up errors: {warm['errors']})", flush=True
        )
        for n in args.ramp:
            direct = None if args.no_direct else run_stage(direct_url, "none", n, args, None, None)
            stage = run_stage(proxy_url, key, n, args, pid, compare.DRIVER_CPUS)
            sent += n
            recorded = asyncio.run(compare._wait_for_records(database, sent, 60))
            cpu = load.cpu_used(stage["cpu_before"], load.cpu_ticks(pid))
            p50, p99 = _percentiles(stage["ttfts_ms"])
            reference = _percentiles(direct["ttfts_ms"]) if direct else (args.ttfb_ms, args.ttfb_ms)
            row = {
                "n": n,
                "peak_open": stage["peak_open"],
                "proxy_open": stage["proxy_open"],
                "rss_mib_peak": round(stage["peak_rss_mib"], 1),
                "rss_kib_per_stream": round(
                    (stage["peak_rss_mib"] - baseline) * 1024 / max(1, stage["peak_open"]),
                    1,
                ),
                "ttft_p50_ms": _round(p50),
                "ttft_p99_ms": _round(p99),
                "router_ttft_p50_ms": _round(reference[0]),
                "router_ttft_p99_ms": _round(reference[1]),
                "added_ttft_p50_ms": _round(p50 - reference[0]) if p50 is not None else None,
                "added_ttft_p99_ms": _round(p99 - reference[1]) if p99 is not None else None,
                "events": stage["events"],
                "cpu_s": round(cpu, 2),
                "cpu_us_per_event": round(cpu / max(1, stage["events"]) * 1e6, 1),
                # Only while all N were open (no request being handled): what an event costs.
                "held_events": stage["held_events"],
                "held_cpu_us_per_event": (
                    round(stage["held_cpu_s"] / stage["held_events"] * 1e6, 1)
                    if stage["held_events"]
                    else None
                ),
                "errors": stage["errors"],
                "direct_errors": direct["errors"] if direct else None,
                "first_error": stage["first_error"] or (direct["first_error"] if direct else ""),
                "recorded": recorded - (sent - n),
                "records_total": recorded,
                "sent_total": sent,
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
        setup = _setup(args, baseline, files, database_url, redis_url)
    return {"setup": setup, "baseline_rss_mib": round(baseline, 1), "rows": rows}


def _round(value):
    return None if value is None else round(value, 1)


def _setup(args, baseline, files, database_url, redis_url) -> str:
    return (
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {compare.machine()}; load average at the end "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}\n"
        + (
            f"hfproxy pinned to CPU {min(compare.PROXY_CPUS)}, {args.routers} router processes and up to "
            f"{args.drivers} drivers to CPU {min(compare.DRIVER_CPUS)}; "
            if compare.PROXY_CPUS
            else "ONE CPU: nothing pinned; "
        )
        + f"hfproxy: 1 uvicorn worker, DEBUG off, key auth, limits on, usage in "
        f"{'PostgreSQL' if database_url else 'SQLite'}, counters in {'Redis' if redis_url else 'process memory'}; "
        f"streams: first token {args.ttfb_ms} ms after the headers, then {args.tokens} tokens "
        f"{args.chunk_delay_ms} ms apart, opened at {args.open_rate}/s, {args.prompt_kib} KiB of earlier "
        f"turns in each request; open files allowed {files}; "
        f"hfproxy RSS before the ramp {baseline:.1f} MiB"
    )


def table(result: dict) -> str:
    head = (
        f"{'N':>7}{'open':>7}{'held':>7}{'RSS MiB':>9}{'KiB/strm':>10}{'TTFT p50':>10}{'p99':>9}"
        f"{'added p50':>11}{'p99':>9}{'CPU us/ev':>11}{'held':>7}{'errors':>8}  recorded"
    )
    lines = [head, "-" * len(head)]
    for r in result["rows"]:
        lines.append(
            f"{r['n']:>7}{r['peak_open']:>7}{r['proxy_open']:>7}{r['rss_mib_peak']:>9.1f}{r['rss_kib_per_stream']:>10.1f}"
            f"{r['ttft_p50_ms'] or 0:>10.0f}{r['ttft_p99_ms'] or 0:>9.0f}"
            f"{r['added_ttft_p50_ms'] or 0:>11.1f}{r['added_ttft_p99_ms'] or 0:>9.1f}"
            f"{r['cpu_us_per_event']:>11.1f}{r.get('held_cpu_us_per_event') or 0:>7.0f}{r['errors']:>8}"
            f"  {r['recorded']} of {r['n']}"
        )
    for r in result["rows"]:
        if r["first_error"]:
            lines.append(f"N={r['n']}: first error: {r['first_error']}")
    return "\n".join(lines)


# --- Where the memory goes: tracemalloc -------------------------------------------------------


def _snapshot(pid: int, prefix: str, number: int, seconds: float = 300):
    import tracemalloc

    os.kill(pid, signal.SIGUSR1)
    path = f"{prefix}.{number}"
    deadline = time.monotonic() + seconds
    while not os.path.exists(f"{path}.done"):
        if time.monotonic() > deadline:
            raise RuntimeError("no tracemalloc snapshot in time")
        time.sleep(0.2)
    return tracemalloc.Snapshot.load(path)


def trace(args) -> str:
    """hfproxy under tracemalloc; a snapshot before and one with `args.tracemalloc` streams open."""
    import threading

    n = args.tracemalloc
    raise_file_limit(2 * n + 2000)
    if compare.DRIVER_CPUS:
        os.sched_setaffinity(0, compare.DRIVER_CPUS)
    database_url = args.database_url if answers(args.database_url) else ""
    redis_url = args.redis_url if args.redis_url and answers(args.redis_url) else ""
    folder = tempfile.mkdtemp(prefix="hfproxy-tracemalloc-")
    prefix = os.path.join(folder, "snapshot")
    settings = {**proxy_settings(n), "TRACEMALLOC_DUMP": prefix, "REDIS_TIMEOUT": "30"}  # slower, traced
    with contextlib.ExitStack() as stack:
        router_port = free_port()
        router_url = f"http://127.0.0.1:{router_port}"
        start_routers(stack, router_port, args)
        port = free_port()
        proxy, key, _ = compare.start_hfproxy(
            stack,
            port,
            router_url,
            database_url,
            redis_url,
            settings,
            runner=("-m", "bench.traced"),
            name=NAME,
        )
        _forget_counters(stack, redis_url)
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        run_stage(url, key, 10, args, proxy.pid, compare.DRIVER_CPUS, load.MODEL)
        before = _snapshot(proxy.pid, prefix, 1)
        rss_before = load.rss_mib(proxy.pid)
        files_before = open_files(proxy.pid)
        peak = {}

        def streams() -> None:
            peak.update(run_stage(url, key, n, args, proxy.pid, compare.DRIVER_CPUS))

        thread = threading.Thread(target=streams)
        thread.start()
        # All open once the proxy holds two sockets per stream (its client's, the router's),
        # or, at the latest, halfway through the wait for the first token.
        deadline = time.monotonic() + 1.0 + n / args.open_rate + args.ttfb_ms / 2000
        while open_files(proxy.pid) < files_before + 2 * n and time.monotonic() < deadline:
            time.sleep(0.5)
        held = (open_files(proxy.pid) - files_before) // 2
        rss_peak = load.rss_mib(proxy.pid)
        during = _snapshot(proxy.pid, prefix, 2)
        thread.join()
    shutil.rmtree(folder, ignore_errors=True)
    lines = [
        f"tracemalloc, {held} of {n} streams held by hfproxy: RSS {rss_before:.1f} -> {rss_peak:.1f} MiB "
        f"({(rss_peak - rss_before) * 1024 / n:.1f} KiB per stream, tracemalloc's own included); "
        f"traced Python allocations per stream, by site (errors: {peak.get('errors')}):"
    ]
    total = sum(s.size_diff for s in during.compare_to(before, "filename"))
    lines.append(f"  all Python allocations: {total / 1024 / n:+.2f} KiB per stream")
    for kind, top in (("lineno", args.top), ("filename", args.top)):
        lines.append(f"by {kind}:")
        for stat in during.compare_to(before, kind)[:top]:
            frame = stat.traceback[0]
            where = frame.filename.split("site-packages/")[-1].replace(str(compare.ROOT) + "/", "")
            place = where if kind == "filename" else f"{where}:{frame.lineno}"
            lines.append(
                f"  {stat.size_diff / 1024 / n:+8.2f} KiB  {stat.count_diff / n:+6.1f} blocks  {place}"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ttfb-ms", type=float, default=2000)
    parser.add_argument("--chunk-delay-ms", type=float, default=50)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--ramp", default="10,1000,5000,10000", help="the Ns, comma-separated")
    parser.add_argument(
        "--prompt-kib", type=int, default=0, help="KiB of earlier turns each request resends (an agent's)"
    )
    parser.add_argument("--open-rate", type=float, default=2000, help="streams opened per second")
    parser.add_argument("--routers", type=int, default=2, help="fake router processes (one port)")
    parser.add_argument("--drivers", type=int, default=4, help="driver processes, at most")
    parser.add_argument("--no-direct", action="store_true", help="no reference run against the router")
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/test")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/13", help="'' for in-process counters")
    parser.add_argument(
        "--tracemalloc", type=int, default=0, metavar="N", help="where the memory of N streams goes"
    )
    parser.add_argument("--top", type=int, default=25, help="allocation sites shown (--tracemalloc)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    args.ramp = [int(n) for n in args.ramp.split(",")]
    if args.tracemalloc:
        print(trace(args))
        return
    result = measure(args)
    print(result["setup"])
    print(table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    sys.exit(main())
