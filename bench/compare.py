"""Compare the router called directly, hfproxy, and optionally Portkey's gateway and the LiteLLM proxy, interleaved.

    python -m bench.compare [--requests 2000] [--rounds 3] [--portkey] [--litellm] [--soak 600] [--json FILE]

Starts the fake router (tests/support/fake_router.py: uvicorn, httptools, uvloop; 20 content chunks)
and hfproxy as in production: one uvicorn worker, DEBUG off, a real API key with limits on
(rpm, tpm, monthly budget, max_parallel: all counted, none reached), usage recorded in
PostgreSQL (a scratch database on DATABASE_URL's server, default the local one) and counters
in Redis when `--redis-url` answers. With `--portkey`, Portkey's open-source gateway (Node.js,
installed with npm under `.bench/` on first use, warmed with 3,000 requests for Node's JIT); with
`--litellm`, the LiteLLM proxy, from its own virtual environment under `.bench/` (installed on
first use). Neither is ever a project dependency.

The proxies are pinned to CPU 0; this driver and the router to CPU 1 (as `taskset` would), so a
proxy's figures are its own. Every scenario (c=1 and c=32; chat completions, the Responses API
and Anthropic's Messages API, each whole and streamed) runs for each target in turn, round after round (A B C A B C …), so that drift cancels out; the table shows
the median round. After every hfproxy run the usage records are counted against the requests.

`--soak SECONDS` then runs a mixed load (half streams) against hfproxy alone and compares its
RSS after the first minute with its RSS at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

from bench import load
from tests.support.processes import (
    ROOT,
    answers,
    free_port,
    manage,
    proxy_env,
    scratch_database,
    server_env,
    start,
    stop,
)

_CPUS = sorted(os.sched_getaffinity(0))
PROXY_CPUS, DRIVER_CPUS = ({_CPUS[0]}, {_CPUS[1]}) if len(_CPUS) >= 2 else (None, None)
LITELLM_HOME = ROOT / ".bench" / "litellm"
PORTKEY_HOME = ROOT / ".bench" / "portkey"
PORTKEY_VERSION = "1.15.2"
# Portkey declares `@hono/node-server` ^1.3.3, which npm resolves to the newest 1.x; from 1.14 on,
# a `new Response(stream, fetchResponse)` keeps the upstream response's Headers object, which
# undici made immutable, and Portkey's streams fail on adding its own headers ("TypeError:
# immutable"). 1.13.8, within Portkey's range, copies them.
PORTKEY_OVERRIDES = {"@hono/node-server": "1.13.8"}
PORTKEY_WARM_UP = 3000  # requests before measuring: Node's JIT needs a few thousand
SCENARIOS = [(c, mode) for c in (1, 32) for mode in load.MODES]
# The Responses and Messages APIs are measured for the router, hfproxy and Portkey (both relay
# them); the LiteLLM proxy's are its own implementations over chat: not the same work. The
# baseline (another revision of hfproxy, for before/after figures) runs chat only, to save time.
CHAT_ONLY = {"litellm", "baseline"}


def _log(stack: contextlib.ExitStack, name: str):
    """Where a server's output goes: `.bench/NAME.log` (the driver's terminal stays readable)."""
    (ROOT / ".bench").mkdir(exist_ok=True)
    return stack.enter_context(open(ROOT / ".bench" / f"{name}.log", "w"))


def start_router(stack: contextlib.ExitStack, port: int) -> subprocess.Popen:
    process = start(
        ["-m", "tests.support.fake_router", "--port", str(port)],
        server_env(),
        f"http://127.0.0.1:{port}/_stats",
        cpus=DRIVER_CPUS,
        output=_log(stack, "router"),
    )
    stack.callback(stop, process)
    return process


def start_hfproxy(
    stack: contextlib.ExitStack,
    port: int,
    router: str,
    database_url: str,
    redis_url: str,
    settings: dict[str, str] | None = None,
    runner: tuple[str, ...] = (),
    checkout: Path = ROOT,
    name: str = "hfproxy",
):
    """hfproxy served as in production from `checkout` (another revision's files, for
    `--baseline`), as `name`, with `settings` (environment variables) on top; `runner`: the
    module arguments that run manage.py (bench.traced), if not Python itself."""
    folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
    database = stack.enter_context(scratch_database(folder, database_url))
    # Each hfproxy its own counters (both have a key number 1), and each run its own: another
    # run beside this one (on the same Redis database) neither shares nor deletes them (deleting
    # every hfproxy counter made that one's budgets look spent: spurious 429s).
    prefix = f"hfproxy:limits:{name}:{os.getpid()}:"
    env = proxy_env(router, database, REDIS_URL=redis_url, **{"REDIS_KEY_PREFIX": prefix, **(settings or {})})
    if redis_url:
        from accounts import counters

        counters.delete_all(redis_url, env["REDIS_KEY_PREFIX"])  # never the rest of that database
        stack.callback(counters.delete_all, redis_url, env["REDIS_KEY_PREFIX"])
    manage("migrate", "--verbosity", "0", env=env, cwd=checkout)
    # Limits on, none reached: every request pays for the counting.
    key = manage(
        "create_api_key", "bench", "--rpm", "10000000", "--tpm", "1000000000",
        "--token-budget", "1000000000000", "--max-parallel", "100000", env=env, cwd=checkout,
    ).splitlines()[-1]  # fmt: skip
    process = start(
        [*runner, "manage.py", "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        env,
        f"http://127.0.0.1:{port}/health",
        seconds=120 if runner else 20,  # tracemalloc slows the start several times
        cpus=PROXY_CPUS,
        output=_log(stack, name),
        cwd=checkout,
    )
    stack.callback(stop, process)
    return process, key, database


def install_litellm() -> Path:
    python = LITELLM_HOME / "venv" / "bin" / "python"
    if not python.exists():
        print("installing the LiteLLM proxy into", LITELLM_HOME / "venv", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(LITELLM_HOME / "venv")], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "litellm[proxy]"], check=True)
    return python


def start_litellm(stack: contextlib.ExitStack, port: int, router: str):
    python = install_litellm()
    config = LITELLM_HOME / "config.yaml"
    config.write_text(
        "model_list:\n"
        f"  - model_name: {load.MODEL}\n"
        "    litellm_params:\n"
        f"      model: openai/{load.MODEL}\n"
        f"      api_base: {router}/v1\n"
        "      api_key: fake\n"
        "general_settings:\n"
        "  master_key: sk-bench\n"
        "litellm_settings:\n"
        "  set_verbose: false\n"
    )
    litellm = python.parent / "litellm"
    process = start(
        ["--config", str(config), "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"],
        server_env(LITELLM_LOG="ERROR"),
        f"http://127.0.0.1:{port}/health/liveliness",
        seconds=120,
        cpus=PROXY_CPUS,
        python=str(litellm),
        output=_log(stack, "litellm"),
    )
    stack.callback(stop, process)
    return process


def install_portkey() -> Path:
    """Portkey's gateway under `.bench/portkey` (npm, on first use); the path of its server."""
    server = PORTKEY_HOME / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"
    manifest = {
        "name": "hfproxy-bench-portkey",
        "private": True,
        "dependencies": {"@portkey-ai/gateway": PORTKEY_VERSION},
        "overrides": PORTKEY_OVERRIDES,
    }
    package = PORTKEY_HOME / "package.json"
    if not server.exists() or not package.exists() or json.loads(package.read_text()) != manifest:
        npm = shutil.which("npm")
        if not npm:
            raise SystemExit("--portkey needs Node.js and npm (Debian: apt-get install nodejs npm)")
        print("installing Portkey's gateway into", PORTKEY_HOME, flush=True)
        PORTKEY_HOME.mkdir(parents=True, exist_ok=True)
        package.write_text(json.dumps(manifest, indent=1))
        subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--loglevel=error"], cwd=PORTKEY_HOME, check=True
        )
    return server


def start_portkey(stack: contextlib.ExitStack, port: int) -> subprocess.Popen:
    server = install_portkey()
    node = shutil.which("node")
    if not node:
        raise SystemExit("--portkey needs Node.js (Debian: apt-get install nodejs)")
    process = start(
        [str(server), f"--port={port}"],
        server_env(TRUSTED_CUSTOM_HOSTS="127.0.0.1", NODE_ENV="production"),
        f"http://127.0.0.1:{port}/",
        seconds=60,
        cpus=PROXY_CPUS,
        python=node,
        output=_log(stack, "portkey"),
    )
    stack.callback(stop, process)
    return process


def portkey_headers(router: str) -> dict[str, dict[str, str]]:
    """Portkey's routing headers, per mode: the fake router as an OpenAI-compatible (or, for
    Messages, Anthropic) custom host."""
    headers = {"x-portkey-provider": "openai", "x-portkey-custom-host": f"{router}/v1"}
    anthropic = {**headers, "x-portkey-provider": "anthropic"}
    return {
        mode: anthropic if mode in (load.MESSAGES, load.MESSAGES_STREAM) else headers for mode in load.MODES
    }


def service_pid(name: str) -> int | None:
    """The top process of a local server called `name` (postgres, redis-server), to count the
    CPU that hfproxy's usage writes and limit counters cost there too."""
    comms = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                # The name may hold spaces and parentheses: the fields after it follow the last ")".
                comm, after = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 1 :]
                comms[int(entry.name)] = (comm, int(after.split()[1]))
    tops = [
        pid for pid, (comm, parent) in comms.items() if comm == name and comms.get(parent, ("",))[0] != name
    ]
    return min(tops, default=None)


def count_records(database: str) -> int:
    if database.startswith("sqlite:///"):
        import sqlite3

        with contextlib.closing(sqlite3.connect(database.removeprefix("sqlite:///"))) as db:
            return db.execute("SELECT count(*) FROM accounts_usagerecord").fetchone()[0]
    import psycopg

    with psycopg.connect(database.replace("postgres://", "postgresql://", 1)) as db:
        return db.execute("SELECT count(*) FROM accounts_usagerecord").fetchone()[0]


def _merge(results: list[load.Result]) -> dict:
    """Throughput and CPU of the median round (by requests/s; the lower middle of an even
    count); latency percentiles over every round's requests; counts summed over rounds."""
    rows = [r.summary() for r in results]
    median = sorted(rows, key=lambda r: r["requests_per_s"] or 0)[(len(rows) - 1) // 2]
    merged = load.Result(
        target=results[0].target,
        mode=results[0].mode,
        concurrency=results[0].concurrency,
        requests=sum(r.requests for r in results),
        errors=sum(r.errors for r in results),
        latencies_ms=[x for r in results for x in r.latencies_ms],
        ttfts_ms=[x for r in results for x in r.ttfts_ms],
        first_error=next((r.first_error for r in results if r.first_error), ""),
    ).summary()
    merged.update(
        requests_per_s=median["requests_per_s"],
        server_cpu_s=median["server_cpu_s"],
        cpu_ms_per_request=median["cpu_ms_per_request"],
        rounds=len(rows),
    )
    return merged


async def measure(targets: dict, args) -> tuple[list[dict], dict]:
    runs: dict[tuple, list[load.Result]] = {}
    sent = dict.fromkeys(targets, 0)  # requests sent to each target
    records = {"runs_checked": 0, "mismatches": [], "sent": 0, "recorded": None}
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=120)
    ) as session:
        for name, target in targets.items():  # warm up: pools, caches, imports, a JIT
            modes = _modes(name, args.modes)
            each = -(-PORTKEY_WARM_UP // len(modes)) if name == "portkey" else 64
            for mode in modes:
                await load.run(
                    target["url"], target["key"], mode, each, 32, session=session,
                    headers=target.get("headers", {}).get(mode),
                )  # fmt: skip
                sent[name] += each
        for round_no in range(args.rounds):
            for concurrency, mode in SCENARIOS:
                if mode not in args.modes:
                    continue
                requests = args.requests if concurrency > 1 else max(1, args.requests // 4)
                for name, target in targets.items():
                    if mode not in _modes(name, args.modes):
                        continue
                    found = None

                    async def flushed(target=target, expected=sent[name] + requests):
                        # Every request leaves its record: counted after each run, and the
                        # CPU that writing them took is the run's.
                        nonlocal found
                        found = await _wait_for_records(target["database"], expected)

                    result = await load.run(
                        target["url"], target["key"], mode, requests, concurrency,
                        pids=target["pids"], target=name, session=session,
                        after=flushed if "database" in target else None,
                        headers=target.get("headers", {}).get(mode),
                    )  # fmt: skip
                    runs.setdefault((name, concurrency, mode), []).append(result)
                    sent[name] += requests
                    if "database" in target:
                        records["runs_checked"] += 1
                        if found != sent[name]:
                            records["mismatches"].append(
                                f"{name} {mode} c={concurrency}: {found} for {sent[name]}"
                            )
            print(f"round {round_no + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    records.update(sent=sent["hfproxy"], recorded=count_records(targets["hfproxy"]["database"]))
    if "baseline" in targets:
        records["baseline"] = (sent["baseline"], count_records(targets["baseline"]["database"]))
    order = list(targets)
    rows = [
        _merge(runs[(name, c, mode)])
        for c, mode in sorted(SCENARIOS, key=lambda s: (s[0], load.MODES.index(s[1])))
        for name in order
        if (name, c, mode) in runs
    ]
    return rows, records


def _modes(target: str, chosen: list[str]) -> list[str]:
    return [m for m in chosen if target not in CHAT_ONLY or m in ("non-stream", "stream")]


async def _wait_for_records(database: str, expected: int, seconds: float = 10) -> int:
    deadline = time.monotonic() + seconds
    while True:
        found = count_records(database)
        if found >= expected or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.2)


async def soak(target: dict, seconds: float, already_sent: int, concurrency: int = 32) -> dict:
    """Half streams, half not, for `seconds`; RSS sampled every 10 s."""
    pid = target["pids"]["hfproxy"]
    samples: list[tuple[float, float]] = []
    stop_at = time.monotonic() + seconds
    started = time.monotonic()
    sent = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        while time.monotonic() < stop_at:
            for mode in ("non-stream", "stream"):
                await load.run(target["url"], target["key"], mode, 500, concurrency, session=session)
                sent += 500
            elapsed = time.monotonic() - started
            if not samples or elapsed - samples[-1][0] >= 10:
                samples.append((elapsed, load.rss_mib(pid)))
    after_first_minute = next((rss for t, rss in samples if t >= 60), samples[-1][1])
    end = load.rss_mib(pid)
    recorded = await _wait_for_records(target["database"], already_sent + sent)
    return {
        "seconds": round(seconds),
        "requests": sent,
        "rss_mib_after_1_min": round(after_first_minute, 1),
        "rss_mib_at_end": round(end, 1),
        "growth_percent": round((end / after_first_minute - 1) * 100, 1),
        "usage_records": f"{recorded} in the database for {already_sent + sent} requests sent",
        "rss_samples": [(round(t), round(r, 1)) for t, r in samples],
    }


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return f"{os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}, {platform.system()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="per run at c=32 (c=1 runs a quarter)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--portkey", action="store_true", help="also Portkey's gateway (npm, installed on first use)"
    )
    parser.add_argument(
        "--litellm", action="store_true", help="also the LiteLLM proxy (installed on first use)"
    )
    parser.add_argument(
        "--modes", nargs="+", choices=load.MODES, default=list(load.MODES), help="default: all"
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        help="also hfproxy as served from this folder: another revision's files (git archive REV | tar -x -C DIR)",
    )
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/test")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/13", help="'' for in-process counters")
    parser.add_argument("--soak", type=float, default=0, help="seconds of mixed load afterwards (memory)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    if DRIVER_CPUS:
        os.sched_setaffinity(0, DRIVER_CPUS)
    redis_url = args.redis_url if args.redis_url and answers(args.redis_url) else ""

    with contextlib.ExitStack() as stack:
        router_port = free_port()
        router_url = f"http://127.0.0.1:{router_port}"
        router = start_router(stack, router_port)
        targets = {"direct": {"url": f"{router_url}/v1", "key": "none", "pids": {"router": router.pid}}}

        port = free_port()
        proxy, key, database = start_hfproxy(stack, port, router_url, args.database_url, redis_url)
        targets["hfproxy"] = {
            "url": f"http://127.0.0.1:{port}/v1",
            "key": key,
            "pids": {"hfproxy": proxy.pid, "router": router.pid},
            "database": database,
        }
        for name, url in (("postgres", database), ("redis-server", redis_url)):
            if "127.0.0.1" in url or "localhost" in url:
                pid = service_pid(name)
                if pid:
                    targets["hfproxy"]["pids"][name.removesuffix("-server")] = pid
        if args.baseline:
            port = free_port()
            before, before_key, before_database = start_hfproxy(
                stack,
                port,
                router_url,
                args.database_url,
                redis_url,
                checkout=args.baseline.resolve(),
                name="baseline",
            )
            targets["baseline"] = {
                "url": f"http://127.0.0.1:{port}/v1",
                "key": before_key,
                "pids": {"baseline": before.pid, "router": router.pid},
                "database": before_database,
            }
        if args.portkey:
            port = free_port()
            portkey = start_portkey(stack, port)
            targets["portkey"] = {
                "url": f"http://127.0.0.1:{port}/v1",
                "key": "fake",
                "pids": {"portkey": portkey.pid, "router": router.pid},
                "headers": portkey_headers(router_url),
            }
        if args.litellm:
            port = free_port()
            litellm = start_litellm(stack, port, router_url)
            targets["litellm"] = {
                "url": f"http://127.0.0.1:{port}/v1",
                "key": "sk-bench",
                "pids": {"litellm": litellm.pid, "router": router.pid},
            }

        rows, records = asyncio.run(measure(targets, args))
        soaked = asyncio.run(soak(targets["hfproxy"], args.soak, records["sent"])) if args.soak else None

    setup = (
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {machine()}\n"
        + (
            f"proxies pinned to CPU {min(PROXY_CPUS)}, driver and router to CPU {min(DRIVER_CPUS)}; "
            if PROXY_CPUS
            else "ONE CPU: nothing pinned, the proxy shares its core with the driver and the router; "
        )
        + "PostgreSQL and Redis unpinned; "
        + f"hfproxy: 1 uvicorn worker, DEBUG off, key auth, limits on, usage in "
        f"{'PostgreSQL' if args.database_url.startswith('postgres') else 'SQLite'}, counters in "
        f"{'Redis' if redis_url else 'process memory'}; {args.rounds} interleaved rounds, "
        f"{args.requests} requests per c=32 run, {max(1, args.requests // 4)} per c=1 run"
        + (
            f"; Portkey's gateway {PORTKEY_VERSION} on Node.js {_node_version()}, warmed with "
            f"{PORTKEY_WARM_UP} requests"
            if args.portkey
            else ""
        )
        + f"; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} at the end"
    )
    print(setup)
    print(load.table(rows))
    added = _added_latency(rows)
    for line in added:
        print(line)
    for line in _ratios(rows):
        print(line)
    print(
        f"usage records: {records['recorded']} in the database for {records['sent']} requests sent; "
        f"counted after each of {records['runs_checked']} runs: "
        + ("; ".join(records["mismatches"]) or "every run matched")
    )
    if "baseline" in records:
        print(
            "baseline's usage records: {1} in the database for {0} requests sent".format(*records["baseline"])
        )
    if soaked:
        print(
            f"soak {soaked['seconds']} s, {soaked['requests']} requests: RSS {soaked['rss_mib_after_1_min']} MiB "
            f"after 1 min, {soaked['rss_mib_at_end']} MiB at the end ({soaked['growth_percent']:+}%); "
            f"usage records: {soaked['usage_records']}"
        )
    if args.json:
        args.json.write_text(
            json.dumps({"setup": setup, "rows": rows, "usage_records": records, "soak": soaked}, indent=1)
        )


def _node_version() -> str:
    return subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip().lstrip("v")


def _ratios(rows: list[dict]) -> list[str]:
    """The issue's targets, as ratios within this run: hfproxy against Portkey (the proxy
    process's CPU per request) and LiteLLM (requests/s), and the Responses and Messages
    endpoints against chat completions. (Added latency at c=1: `_added_latency`.)"""
    by = {(r["target"], r["concurrency"], r["mode"]): r for r in rows}

    def cpu(target: str, c: int, mode: str) -> float | None:
        row = by.get((target, c, mode))
        return row and row["cpu_ms_per_request"].get(target)

    def rate(target: str, c: int, mode: str) -> float | None:
        row = by.get((target, c, mode))
        return row and row["requests_per_s"]

    lines = []
    for mode in load.MODES:
        ours, theirs = cpu("hfproxy", 32, mode), cpu("portkey", 32, mode)
        if ours and theirs:
            lines.append(
                f"CPU per request, c=32, {mode}: hfproxy {ours:.2f} ms, portkey {theirs:.2f} ms "
                f"(hfproxy/portkey {ours / theirs:.2f})"
            )
    for mode in load.MODES:
        ours, before = cpu("hfproxy", 32, mode), cpu("baseline", 32, mode)
        if ours and before:
            lines.append(f"CPU per request, c=32, {mode}: hfproxy/baseline {ours / before:.2f}")
    for other in ("portkey", "litellm"):
        for mode in ("non-stream", "stream"):
            ours, theirs = rate("hfproxy", 32, mode), rate(other, 32, mode)
            if ours and theirs:
                lines.append(f"requests/s, c=32, {mode}: hfproxy/{other} {ours / theirs:.2f}")
    for mode, chat in (
        (load.RESPONSES, "non-stream"),
        (load.RESPONSES_STREAM, "stream"),
        (load.MESSAGES, "non-stream"),
        (load.MESSAGES_STREAM, "stream"),
    ):
        for target in ("hfproxy", "portkey"):
            new, old = rate(target, 32, mode), rate(target, 32, chat)
            new_cpu, old_cpu = cpu(target, 32, mode), cpu(target, 32, chat)
            if new and old and new_cpu and old_cpu:
                lines.append(
                    f"{target} {mode} against chat {chat}, c=32: requests/s {new / old:.2f}, "
                    f"CPU per request {new_cpu / old_cpu:.2f}"
                )
    return lines


def _added_latency(rows: list[dict]) -> list[str]:
    by = {(r["target"], r["concurrency"], r["mode"]): r for r in rows}
    lines = []
    for (target, c, mode), row in by.items():
        direct = by.get(("direct", c, mode))
        if target == "direct" or c != 1 or not direct or row["p50_ms"] is None:
            continue
        lines.append(f"added p50 latency at c=1, {mode}: {target} {row['p50_ms'] - direct['p50_ms']:+.2f} ms")
    return lines


if __name__ == "__main__":
    main()
