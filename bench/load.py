"""A load driver for OpenAI-compatible chat endpoints: requests/s, latency, TTFT and server CPU.

    python -m bench.load http://127.0.0.1:8000/v1 --key hfp_… --mode stream \
        --requests 2000 --concurrency 32 --pid 1234 [--json]

Sends N chat completions at concurrency C (non-stream or stream; `--mode responses`,
`responses-stream`: the Responses API, as Codex CLI calls it; `messages`, `messages-stream`:
Anthropic's Messages API, as Claude Code calls it) over aiohttp with keep-alive,
and reports requests/s, p50/p90/p99 latency, p50 time to first token (streams: the first
content event), errors, and the CPU seconds each `--pid` (with its child processes) spent
during the run, read from /proc. Speed is never asserted; `bench.compare` builds on this.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from dataclasses import asdict, dataclass, field

import aiohttp

MODEL = "openai/gpt-oss-120b:fireworks-ai"  # one the fake router serves
PROMPT = [{"role": "user", "content": "Say hello to the benchmark, in twenty words or so."}]
_TICKS = os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def process_tree(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(_children(current))
    return found


def cpu_ticks(pid: int) -> dict[int, int]:
    """CPU ticks so far of `pid` and each live descendant: user + system, with the children
    each has already reaped (a worker that exited still counts, in its parent)."""
    ticks = {}
    for p in process_tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks[p] = sum(int(fields[i]) for i in (11, 12, 13, 14))  # utime stime cutime cstime
    return ticks


def cpu_used(before: dict[int, int], after: dict[int, int]) -> float:
    """CPU seconds between two `cpu_ticks` readings; a process born meanwhile counts whole."""
    return sum(t - before.get(p, 0) for p, t in after.items()) / _TICKS


def rss_mib(pid: int) -> float:
    """Resident memory of `pid` and its live descendants, MiB."""
    total = 0
    for p in process_tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


@dataclass
class Result:
    target: str
    mode: str
    concurrency: int
    requests: int
    errors: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list, repr=False)
    ttfts_ms: list[float] = field(default_factory=list, repr=False)
    server_cpu_s: dict[str, float] = field(default_factory=dict)
    first_error: str = ""

    def summary(self) -> dict:
        ok = len(self.latencies_ms)
        data = {k: v for k, v in asdict(self).items() if k not in ("latencies_ms", "ttfts_ms", "first_error")}
        data.update(  # per answered request: errors are not throughput
            requests_per_s=round(ok / self.seconds, 1) if self.seconds else None,
            p50_ms=_round(percentile(self.latencies_ms, 50)),
            p90_ms=_round(percentile(self.latencies_ms, 90)),
            p99_ms=_round(percentile(self.latencies_ms, 99)),
            p50_ttft_ms=_round(percentile(self.ttfts_ms, 50)),
            cpu_ms_per_request={
                name: round(cpu / max(1, ok) * 1000, 3) for name, cpu in self.server_cpu_s.items()
            },
            ok=ok,
        )
        if self.first_error:
            data["first_error"] = self.first_error
        return data


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _has_content(line: bytes) -> bool:
    """An SSE event carrying generated text (not the opening role-only delta)."""
    if not line.startswith(b"data: {") or b'"content"' not in line:
        return False
    choices = json.loads(line[6:]).get("choices") or [{}]
    return bool((choices[0].get("delta") or {}).get("content"))


# Beside chat completions (non-stream, stream): the Responses API (what Codex CLI sends) and
# Anthropic's Messages API (what Claude Code sends), each answered whole or streamed.
RESPONSES = "responses"
RESPONSES_STREAM = "responses-stream"
MESSAGES = "messages"
MESSAGES_STREAM = "messages-stream"
MODES = ("non-stream", "stream", RESPONSES, RESPONSES_STREAM, MESSAGES, MESSAGES_STREAM)
# Each mode's path under the API root and the field every whole answer has.
_PATHS = {
    RESPONSES: "/responses",
    RESPONSES_STREAM: "/responses",
    MESSAGES: "/messages",
    MESSAGES_STREAM: "/messages",
}
_ANSWER_FIELDS = {RESPONSES: "output", MESSAGES: "content"}


def streams(mode: str) -> bool:
    return mode in ("stream", RESPONSES_STREAM, MESSAGES_STREAM)


def path(mode: str) -> str:
    return _PATHS.get(mode, "/chat/completions")


def _body(mode: str) -> bytes:
    stream = streams(mode)
    if mode in (RESPONSES, RESPONSES_STREAM):
        return json.dumps(
            {"model": MODEL, "input": PROMPT, "stream": stream, "max_output_tokens": 64}
        ).encode()
    return json.dumps({"model": MODEL, "messages": PROMPT, "stream": stream, "max_tokens": 64}).encode()


def _first_text(line: bytes, mode: str) -> bool:
    if mode == RESPONSES_STREAM:
        return line.startswith(b"data: {") and b'"response.output_text.delta"' in line
    if mode == MESSAGES_STREAM:
        return line.startswith(b"data: {") and b'"text_delta"' in line
    return _has_content(line)


def _last_event(line: bytes, mode: str) -> bool:
    if mode == RESPONSES_STREAM:
        return (
            line.startswith(b"data: ")
            and b"response.completed" in line
            and json.loads(line[6:]).get("type") == "response.completed"
        )
    if mode == MESSAGES_STREAM:
        return line.startswith(b"data: ") and b"message_stop" in line
    return line.startswith(b"data: [DONE]")


async def _one(session: aiohttp.ClientSession, url: str, headers: dict, body: bytes, mode: str, result):
    stream = streams(mode)
    started = time.perf_counter()
    try:
        async with session.post(url, data=body, headers=headers) as response:
            if not stream:
                payload = await response.read()
                if response.status != 200:
                    raise RuntimeError(f"{response.status}: {payload[:200]!r}")
                field = _ANSWER_FIELDS.get(mode, "choices")
                if field not in json.loads(payload):  # a real answer, not just bytes
                    raise RuntimeError(f"no {field} in the answer")
                result.ttfts_ms.append((time.perf_counter() - started) * 1000)
            else:
                if response.status != 200:
                    raise RuntimeError(f"{response.status}: {(await response.read())[:200]!r}")
                first, done = None, False
                async for line in response.content:
                    if first is None and _first_text(line, mode):
                        first = time.perf_counter()
                    if _last_event(line, mode):
                        done = True
                if not done:
                    raise RuntimeError(
                        "stream ended without its last event ([DONE], response.completed, message_stop)"
                    )
                result.ttfts_ms.append(((first or time.perf_counter()) - started) * 1000)
    except Exception as exc:  # counted and reported, never raised: a benchmark goes on
        result.errors += 1
        result.first_error = result.first_error or f"{type(exc).__name__}: {exc}"
        return
    result.latencies_ms.append((time.perf_counter() - started) * 1000)


async def run(
    base_url: str,
    key: str,
    mode: str,
    requests: int,
    concurrency: int,
    pids: dict[str, int] | None = None,
    target: str = "",
    session: aiohttp.ClientSession | None = None,
    after=None,
    headers: dict[str, str] | None = None,
) -> Result:
    """N requests of `mode` at concurrency C against `base_url` (…/v1), with `headers` beside the
    key's; the server CPU of `pids` (read once `after()`, if given, has been awaited)."""
    url = base_url.rstrip("/") + path(mode)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json", **(headers or {})}
    body = _body(mode)
    result = Result(target=target or base_url, mode=mode, concurrency=concurrency, requests=requests)
    owned = session is None
    if owned:
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=concurrency, force_close=False),
            timeout=aiohttp.ClientTimeout(total=120),
        )
    try:
        remaining = requests

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                await _one(session, url, headers, body, mode, result)

        cpu_before = {name: cpu_ticks(pid) for name, pid in (pids or {}).items()}
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        result.seconds = time.perf_counter() - started
        if after is not None:
            await after()  # work the servers still owe these requests (e.g. writing usage)
        result.server_cpu_s = {
            name: round(cpu_used(cpu_before[name], cpu_ticks(pid)), 3) for name, pid in (pids or {}).items()
        }
    finally:
        if owned:
            await session.close()
    return result


def table(rows: list[dict]) -> str:
    head = (
        f"{'target':<10}{'mode':<18}{'c':>4}{'req/s':>9}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}"
        f"{'ttft p50':>10}{'errors':>8}  server CPU ms/req"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        cpu = ", ".join(f"{k} {v}" for k, v in r["cpu_ms_per_request"].items())
        lines.append(
            f"{r['target']:<10}{r['mode']:<18}{r['concurrency']:>4}{r['requests_per_s'] or 0:>9.0f}"
            f"{r['p50_ms'] or 0:>9.2f}{r['p90_ms'] or 0:>9.2f}{r['p99_ms'] or 0:>9.2f}"
            f"{r['p50_ttft_ms'] or 0:>10.2f}{r['errors']:>8}  {cpu}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base_url", help="the API root, e.g. http://127.0.0.1:8000/v1")
    parser.add_argument("--key", default="none", help="API key sent as a Bearer token")
    parser.add_argument("--mode", choices=MODES, default="non-stream")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--pid", type=int, action="append", default=[], help="a server process to measure")
    parser.add_argument("--json", action="store_true", help="print JSON only")
    args = parser.parse_args()

    pids = {str(pid): pid for pid in args.pid}
    result = asyncio.run(run(args.base_url, args.key, args.mode, args.requests, args.concurrency, pids))
    summary = result.summary()
    print(json.dumps(summary) if args.json else table([summary]))


if __name__ == "__main__":
    main()
