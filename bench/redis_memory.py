"""Measure the Redis memory hfproxy's limit counters take per 1,000 API keys in use.

    python -m bench.redis_memory [--keys 1000] [--in-flight 4] [--redis redis://127.0.0.1:6379/13]

Each key has every limit (rpm, tpm, a monthly token budget, a lifetime one, a USD budget,
max-parallel). The counters are made by the proxy's own code (accounts.limits.admit and asettle,
on a scratch SQLite database for the budgets' seeding): each key first has `--in-flight`
requests in flight at once (its max-parallel sorted set holding as many members), then they end
(slots given back, tokens counted). The memory is Redis's own account of our keys (MEMORY USAGE,
summed, by kind of counter: it leaves out their entries in the expiry table) and INFO's
used_memory: its growth, and what deleting the counters frees (the whole server's figure: other
clients' activity shows in it; `--redis` a server of your own for a clean one). The counters live under a prefix of their own in that database
and are deleted at the end; nothing else there is touched. Figures only, nothing asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

DEFAULT_REDIS = "redis://127.0.0.1:6379/13"  # the benchmarks' database


def configure(database_url: str, redis_url: str, prefix: str) -> None:
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "hfproxy_site.settings",
            "ENV_FILE": "",
            "DEBUG": "false",
            "DATABASE_URL": database_url,
            "ALLOWED_HOSTS": "testserver",
            "REDIS_URL": redis_url,
            "REDIS_KEY_PREFIX": prefix,
        }
    )
    os.environ.setdefault("SECRET_KEY", "bench-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz")
    os.environ.setdefault("FIELD_ENCRYPTION_KEY", "Jl5dCJQpxBfIsBZV8vsj0mD8Q4QOEbbS3bQw9Dt1Rmo=")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def footprint(client, prefix: str) -> dict[str, int]:
    """Bytes Redis accounts to our keys, by kind (rpm, tpm, month, life, usd, slots)."""
    sizes: dict[str, int] = defaultdict(int)
    sizes["keys"] = 0
    for key in client.scan_iter(match=prefix + "*", count=1000):
        kind = key.decode().removeprefix(prefix).split(":")[0]
        sizes[kind] += client.memory_usage(key, samples=0) or 0
        sizes["keys"] += 1
    return dict(sizes)


async def use(keys: int, in_flight: int) -> tuple[list, callable]:
    """Every key's counters with `in_flight` requests admitted; a coroutine function ending them."""
    from accounts import limits

    rules = limits.KeyLimits(
        rpm=1000,
        tpm=1_000_000,
        token_budget=10_000_000,
        lifetime_token_budget=100_000_000,
        usd_budget=Decimal("100"),
        max_parallel=in_flight,
    )
    reservation = limits.Reservation(tokens=4_200, microdollars=2_500)
    admissions = []
    # Each key's first request seeds its budgets from the database; then the others. A hundred
    # keys at a time: the pool has 50 connections.
    for requests in ([0], range(1, in_flight)):
        for start in range(0, keys, 100):
            batch = [
                limits.admit(key_id, key_id, rules, reservation, holder=f"bench-{key_id}-{n}")
                for key_id in range(start + 1, min(keys, start + 100) + 1)
                for n in requests
            ]
            admissions += await asyncio.gather(*batch)

    async def end() -> None:
        for start in range(0, len(admissions), 400):
            await asyncio.gather(*(limits.asettle(a, 1_200, 700) for a in admissions[start : start + 400]))

    return admissions, end


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--in-flight", type=int, default=4, help="requests in flight per key (max-parallel)")
    parser.add_argument("--redis", default=DEFAULT_REDIS, help="a Redis database of the benchmarks' own")
    args = parser.parse_args(argv)

    import redis

    prefix = f"hfproxy-bench:redis-memory:{os.getpid()}:"
    client = redis.Redis.from_url(args.redis)
    folder = Path(tempfile.mkdtemp(prefix="hfproxy-bench-redis-"))
    configure(f"sqlite:///{folder / 'db.sqlite3'}", args.redis, prefix)
    from accounts import counters

    async def measure() -> list[tuple[str, dict[str, int]]]:
        _, end = await use(args.keys, args.in_flight)
        rows = [(f"{args.in_flight} requests in flight per key", footprint(client, prefix))]
        await end()
        rows.append(("all requests ended (idle keys)", footprint(client, prefix)))
        # Its connections' buffers (~40 KiB each, up to REDIS_MAX_CONNECTIONS per worker) are no key's.
        await counters.store().client.aclose()
        await counters.store().client.connection_pool.disconnect()
        return rows

    try:
        before = client.info("memory")["used_memory"]
        rows = asyncio.run(measure())
        after = client.info("memory")["used_memory"]
    finally:
        counters.delete_all(args.redis, prefix)
    freed = after - client.info("memory")["used_memory"]
    client.close()
    per = 1000 / args.keys
    print(f"Redis memory of the limit counters, {args.keys} keys with every limit (per 1,000 keys):")
    for label, sizes in rows:
        total = sum(v for k, v in sizes.items() if k != "keys")
        kinds = ", ".join(f"{k} {v * per / 1024:.0f}" for k, v in sorted(sizes.items()) if k != "keys")
        print(
            f"  {label}: {total * per / 1024:.0f} KiB in {sizes['keys'] * per:.0f} counters "
            f"({total / args.keys:.0f} B a key; KiB by kind: {kinds})"
        )
    print(
        f"  INFO used_memory: {(after - before) * per / 1024:+.0f} KiB from before the first counter to the"
        f" idle keys, {freed * per / 1024:.0f} KiB freed when they are deleted (the whole server's figure:"
        " with the expiry table and the allocator's rounding, and whatever other clients did meanwhile)"
    )
    print(
        "  at most, a key also has last minute's rpm and tpm (120 s) and last month's budgets (an hour):"
        " the rpm, tpm, month and usd lines twice"
    )


if __name__ == "__main__":
    sys.exit(main())
