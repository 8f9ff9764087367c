"""Measure the upstream client's transports: CPU per request against the fake router.

    python -m bench.transport [--requests 3000] [--concurrency 32]

Starts the fake router (tests/support/fake_router.py) under uvicorn, then, in this process, sends the
same requests through `httpx.AsyncClient` on httpx's own transport and on httpx-aiohttp's,
non-streaming and streaming, and prints requests/s and the CPU this process spent per request.
Speed is never asserted; CI runs it with a tiny count to keep it working.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import httpx
from httpx_aiohttp import AiohttpTransport

from tests.support.processes import free_port, start, stop

BODY = json.dumps(
    {"model": "openai/gpt-oss-120b:fireworks-ai", "messages": [{"role": "user", "content": "hello there"}]}
).encode()
STREAM_BODY = json.dumps(
    {
        "model": "openai/gpt-oss-120b:fireworks-ai",
        "stream": True,
        "messages": [{"role": "user", "content": "hello there"}],
    }
).encode()


def make_transport(name: str, limits: httpx.Limits) -> httpx.AsyncBaseTransport:
    return AiohttpTransport(limits=limits) if name == "aiohttp" else httpx.AsyncHTTPTransport(limits=limits)


async def run(base: str, transport: str, stream: bool, requests: int, concurrency: int) -> dict:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(transport=make_transport(transport, limits), timeout=30) as client:
        url = base + "/v1/chat/completions"
        remaining = requests

        async def one() -> None:
            if stream:
                async with client.stream("POST", url, content=STREAM_BODY) as response:
                    async for _ in response.aiter_raw():
                        pass
            else:
                response = await client.post(url, content=BODY)
                response.json()

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                await one()

        for _ in range(concurrency):  # warm the pool
            await one()
        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {
        "transport": transport,
        "mode": "stream" if stream else "non-stream",
        "requests_per_s": round(requests / wall),
        "cpu_ms_per_request": round(cpu / requests * 1000, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    router = start(["-m", "tests.support.fake_router", "--port", str(port)], None, base + "/_stats")
    try:
        results = []
        for stream in (False, True):
            for transport in ("httpx", "aiohttp", "httpx", "aiohttp"):  # interleaved: drift cancels out
                results.append(asyncio.run(run(base, transport, stream, args.requests, args.concurrency)))
    finally:
        stop(router)

    print(json.dumps(results))
    print(f"\n{'transport':<10}{'mode':<12}{'req/s':>8}{'CPU ms/req':>12}   (c={args.concurrency})")
    for r in results:
        print(f"{r['transport']:<10}{r['mode']:<12}{r['requests_per_s']:>8}{r['cpu_ms_per_request']:>12}")


if __name__ == "__main__":
    main()
