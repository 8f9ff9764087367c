"""Measure the admin's usage dashboard against many usage rows.

    python -m bench.dashboard [--rows 1000000] [--days 30] [--database URL] [--repeat 3]

Fills a scratch database with synthetic usage rows spread evenly over the last `--days` days,
as the gateway would have written them (on PostgreSQL in SQL, generate_series with the indexes
built afterwards: ten million rows in minutes; on SQLite bulk_create in batches), then times
each of the dashboard's queries, the whole dashboard, the admin pages over usage, /api/usage,
`usage_report`, budget seeding and the portal's usage pages, and prints each one's median and
p95 (nearest rank over `--repeat` runs), and the usage table's bytes per record. Without `--database` the scratch database is a SQLite file in a temporary folder, or
a new PostgreSQL database when DATABASE_URL names a PostgreSQL server; either is removed at the
end. With `--database URL` that database is kept, and refilled only when its row count differs
from `--rows` (so a second run starts at once). Speed is never asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

BATCH = 5_000
USERS = 40
KEYS_PER_USER = 2
TEAMS = 4  # users in turn: bench-000 in team 0, bench-001 in team 1, …
MODELS = [
    "openai/gpt-oss-120b",
    "openai/gpt-oss-20b",
    "meta-llama/Llama-3.3-70B-Instruct",
    "Qwen/Qwen3-Coder-480B-A35B-Instruct",
    "deepseek-ai/DeepSeek-V3.1",
    "moonshotai/Kimi-K2-Instruct",
    "google/gemma-3-27b-it",
    "mistralai/Mistral-Small-3.2-24B-Instruct",
]


def configure(database_url: str) -> None:
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "hfproxy_site.settings",
            "ENV_FILE": "",
            "DEBUG": "false",
            "DATABASE_URL": database_url,
            "ALLOWED_HOSTS": "testserver",
        }
    )
    os.environ.setdefault("SECRET_KEY", "bench-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz")
    os.environ.setdefault("FIELD_ENCRYPTION_KEY", "Jl5dCJQpxBfIsBZV8vsj0mD8Q4QOEbbS3bQw9Dt1Rmo=")
    import django

    django.setup()


def fill(rows: int, days: int) -> None:
    from django.contrib.auth import get_user_model
    from django.db import connection, transaction
    from django.utils import timezone

    from accounts import services
    from accounts.models import ApiKey, Outcome, Team, TeamMember, UsageRecord, UsageSource

    UsageRecord.objects.all().delete()
    with connection.cursor() as cursor:  # what pruning leaves, if the tables exist
        tables = connection.introspection.table_names(cursor)
        for table in ("accounts_usagerollup", "accounts_usagehistogram"):
            if table in tables:
                cursor.execute(f"DELETE FROM {table}")
    ApiKey.objects.all().delete()
    TeamMember.objects.all().delete()
    Team.objects.filter(name__startswith="bench-").delete()
    get_user_model().objects.filter(username__startswith="bench-").delete()
    teams = [Team.objects.create(name=f"bench-team-{number}") for number in range(TEAMS)]
    keys = []
    for number in range(USERS):
        user = get_user_model().objects.create_user(f"bench-{number:03d}")
        team = teams[number % TEAMS]
        role = TeamMember.Role.ADMIN if number < TEAMS else TeamMember.Role.MEMBER
        TeamMember.objects.create(team=team, user=user, role=role)
        keys += [services.api_key_create(user=user, name=f"k{k}", team=team)[0] for k in range(KEYS_PER_USER)]
    if connection.vendor == "postgresql":
        _fill_in_sql(rows, days, keys)
        return

    rng = random.Random(3)
    now = timezone.now()
    start = now - timedelta(days=days)
    step = (now - start) / rows
    # A few heavy users and models, as in a real team.
    key_weights = [1 / (rank + 1) for rank in range(len(keys))]
    model_weights = [1 / (rank + 1) for rank in range(len(MODELS))]
    outcomes = [Outcome.OK, Outcome.UPSTREAM_ERROR, Outcome.CLIENT_DISCONNECTED, Outcome.TIMEOUT]
    started = time.perf_counter()
    for first in range(0, rows, BATCH):
        count = min(BATCH, rows - first)
        picked_keys = rng.choices(keys, key_weights, k=count)
        picked_models = rng.choices(MODELS, model_weights, k=count)
        picked_outcomes = rng.choices(outcomes, [95, 3, 1.5, 0.5], k=count)
        batch = []
        for offset in range(count):
            key, outcome = picked_keys[offset], picked_outcomes[offset]
            stream = rng.random() < 0.6
            prompt, completion = rng.randint(10, 4000), rng.randint(1, 1500)
            ok = outcome == Outcome.OK
            batch.append(
                UsageRecord(
                    id=uuid.UUID(int=rng.getrandbits(128), version=4),
                    created_at=start + step * (first + offset),
                    request_id=f"bench-{first + offset}",
                    user_id=key.user_id,
                    api_key_id=key.pk,
                    team_id=key.team_id,
                    endpoint="chat_completions",
                    model_requested=picked_models[offset],
                    model_answered=picked_models[offset],
                    stream=stream,
                    status=200 if ok else 502,
                    outcome=outcome,
                    prompt_tokens=prompt if ok else None,
                    completion_tokens=completion if ok else None,
                    total_tokens=prompt + completion if ok else None,
                    usage_source=UsageSource.PROVIDER if ok else UsageSource.MISSING,
                    latency_ms=int(rng.lognormvariate(7, 0.8)),
                    ttft_ms=int(rng.lognormvariate(5.5, 0.6)) if stream else None,
                )
            )
        with transaction.atomic():
            UsageRecord.objects.bulk_create(batch)
        if (first // BATCH) % 20 == 0:
            print(f"  {first + count:>9,} rows  {time.perf_counter() - started:6.1f} s", flush=True)
    print(f"filled {rows:,} rows in {time.perf_counter() - started:.1f} s")


def _fill_in_sql(rows: int, days: int, keys: list) -> None:
    """The same traffic as `fill`, made by PostgreSQL itself (generate_series); the table's
    indexes dropped first and built once at the end, which is much faster than keeping them."""
    from django.db import connection

    started = time.perf_counter()
    key_rows = ", ".join(
        f"({rank}, {key.pk}, {key.user_id}, {key.team_id or 'NULL'})" for rank, key in enumerate(keys)
    )
    models = ", ".join(f"({rank}, '{model}')" for rank, model in enumerate(MODELS))
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'accounts_usagerecord'"
            " AND indexname NOT LIKE '%%_pkey'"
        )
        indexes = cursor.fetchall()
        for name, _ in indexes:
            cursor.execute(f'DROP INDEX "{name}"')
        # Ranks drawn with density about 1/(rank + 1), as `fill`'s weights: a few heavy users and models.
        cursor.execute(
            f"""
            WITH keys(rank, id, user_id, team_id) AS (VALUES {key_rows}),
            models(rank, name) AS (VALUES {models}),
            draws AS (
                SELECT g,
                    floor(exp(random() * ln({len(keys)} + 1)) - 1)::int AS key_rank,
                    floor(exp(random() * ln({len(MODELS)} + 1)) - 1)::int AS model_rank,
                    random() AS o, random() < 0.6 AS stream,
                    10 + floor(random() * 3991)::int AS prompt, 1 + floor(random() * 1500)::int AS completion,
                    random() AS r1, random() AS r2, random() AS r3, random() AS r4
                FROM generate_series(0, %s - 1) AS g
            ),
            picked AS (
                SELECT d.*, CASE WHEN o < 0.95 THEN 'ok' WHEN o < 0.98 THEN 'upstream_error'
                    WHEN o < 0.995 THEN 'client_disconnected' ELSE 'timeout' END AS outcome
                FROM draws d
            )
            INSERT INTO accounts_usagerecord (
                id, created_at, request_id, user_id, api_key_id, team_id, bill_to, upstream_attempts,
                provider, endpoint, model_requested, model_answered, stream, status, outcome,
                error_code, prompt_tokens, completion_tokens, total_tokens, usage_source, latency_ms,
                ttft_ms
            )
            SELECT gen_random_uuid(),
                now() - interval '{days} days' + (interval '{days} days' / %s) * g,
                'bench-' || g, k.user_id, k.id, k.team_id, '', 1, '', 'chat_completions', m.name, m.name,
                stream, CASE WHEN outcome = 'ok' THEN 200 ELSE 502 END, outcome, '',
                CASE WHEN outcome = 'ok' THEN prompt END, CASE WHEN outcome = 'ok' THEN completion END,
                CASE WHEN outcome = 'ok' THEN prompt + completion END,
                CASE WHEN outcome = 'ok' THEN 'provider' ELSE 'missing' END,
                -- lognormal(7, 0.8) and (5.5, 0.6), by Box-Muller
                exp(7 + 0.8 * sqrt(-2 * ln(1 - r1)) * cos(2 * pi() * r2))::int,
                CASE WHEN stream THEN exp(5.5 + 0.6 * sqrt(-2 * ln(1 - r3)) * cos(2 * pi() * r4))::int END
            FROM picked JOIN keys k ON k.rank = key_rank JOIN models m ON m.rank = model_rank
            """,
            [rows, rows],
        )
        print(f"  {rows:,} rows inserted  {time.perf_counter() - started:6.1f} s", flush=True)
        cursor.execute("SET maintenance_work_mem = '512MB'")
        for _, definition in indexes:
            cursor.execute(definition)
        print(f"  indexes built  {time.perf_counter() - started:6.1f} s", flush=True)
    print(f"filled {rows:,} rows in {time.perf_counter() - started:.1f} s")


def timed(function: Callable[[], object], repeat: int) -> tuple[float, float]:
    """The median and p95 (nearest rank) wall time of `function`, in milliseconds, after one
    warm-up call."""
    function()
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        runs.append((time.perf_counter() - started) * 1000)
    runs.sort()
    return statistics.median(runs), runs[max(0, -(-95 * len(runs) // 100) - 1)]


def _show(name: str, function: Callable[[], object], repeat: int) -> None:
    median, p95 = timed(function, repeat)
    print(f"  {name:<24} {median:8.1f} {p95:8.1f}", flush=True)


def measure_period(key: str, now, repeat: int) -> None:
    from accounts import dashboard, histograms

    period = dashboard.PERIODS[key]
    since = now - period.span
    records = dashboard.usage_in(since=since)
    count = records.count()
    figures = {
        "series": lambda: dashboard.usage_series(since=since, until=now, step=period.step),
        "top users": lambda: dashboard.usage_top(since=since, by="user_id"),
        "top models": lambda: dashboard.usage_top(since=since, by="model_requested"),
    }
    figures["4 percentiles"] = lambda: [
        histograms.percentile(counted, fraction)
        for counted in histograms.counts(since=since).values()
        for fraction in (0.5, 0.95)
    ]
    figures["whole dashboard"] = lambda: dashboard.usage_dashboard(period=key, now=now)
    print(f"\n{key} ({count:,} rows in the period)")
    for name, function in figures.items():
        _show(name, function, repeat)


def measure(repeat: int) -> None:
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.utils import timezone

    from accounts import dashboard
    from accounts.models import UsageRecord

    print(
        f"database: {connection.vendor}, {UsageRecord.objects.count():,} usage rows;"
        f" median and p95 of {repeat}, ms"
    )
    now = timezone.now()
    for key in dashboard.PERIODS:
        measure_period(key, now, repeat)

    admin, _ = get_user_model().objects.get_or_create(
        username="bench-admin", defaults={"is_staff": True, "is_superuser": True}
    )
    client = Client()
    client.force_login(admin)
    heaviest = get_user_model().objects.get(username="bench-000")
    team_id = heaviest.api_keys.values_list("team_id", flat=True).first()
    pages = {
        "dashboard page 24h": "/admin/accounts/usagerecord/dashboard/?period=24h",
        "dashboard page 7d": "/admin/accounts/usagerecord/dashboard/?period=7d",
        "dashboard page 30d": "/admin/accounts/usagerecord/dashboard/?period=30d",
        "API key list": "/admin/accounts/apikey/",
        "usage list": "/admin/accounts/usagerecord/",
        "usage list, 1 day": "/admin/accounts/usagerecord/?created_at__gte="
        + (now - timedelta(days=1)).strftime("%Y-%m-%d+00:00:00%%2B00:00"),
        "usage list, a user": f"/admin/accounts/usagerecord/?user__id__exact={heaviest.pk}",
        "usage list, a model": f"/admin/accounts/usagerecord/?model_requested={MODELS[0]}",
        "usage list, a team": f"/admin/accounts/usagerecord/?team__id__exact={team_id}",
    }
    print("\nadmin pages (whole request)")
    for name, url in pages.items():
        _show(name, _getter(client, url), repeat)
    measure_member_pages(now, repeat)
    _sizes()


def _getter(client, url: str) -> Callable[[], None]:
    def get() -> None:
        response = client.get(url)
        assert response.status_code == 200, (url, response.status_code)

    return get


def measure_member_pages(now, repeat: int) -> None:
    """/api/usage, usage_report, budget seeding and the portal, for the heaviest user and team."""
    import io

    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.test import Client
    from rest_framework.test import APIClient

    from accounts import limits
    from accounts.models import ApiKey, TeamMember

    heaviest = get_user_model().objects.get(username="bench-000")  # holds the heaviest key
    key = ApiKey.objects.filter(user=heaviest).order_by("pk").first()
    membership = TeamMember.objects.filter(user=heaviest).select_related("team").first()
    api = APIClient()
    api.force_authenticate(user=heaviest)
    portal = Client()
    portal.force_login(heaviest)
    month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    team_scope = limits.Scope(team_id=membership.team_id, label="team", limits=None)
    member_scope = limits.Scope(team_id=membership.team_id, label="member", limits=None, user_id=heaviest.pk)
    figures = {
        "/api/usage (user)": _getter(api, "/api/usage"),
        "/api/usage (team)": _getter(api, f"/api/usage?team={membership.team.name}"),
        "usage_report": lambda: call_command("usage_report", stdout=io.StringIO()),
        "usage_report --user": lambda: call_command(
            "usage_report", user=heaviest.username, stdout=io.StringIO()
        ),
        "seed key month tokens": lambda: limits._tokens_in_db(key.pk, month_start),
        "seed key month USD": lambda: limits._microdollars_in_db(key.pk, month_start),
        "seed key lifetime": lambda: limits._tokens_in_db(key.pk, None),
        "seed team month tokens": lambda: team_scope.total(month_start, "total_tokens"),
        "seed member month USD": lambda: member_scope.total(month_start, "cost_usd"),
        "portal My usage": _getter(portal, "/portal/usage/"),
        "portal team page": _getter(portal, f"/portal/teams/{membership.team_id}/"),
        "portal My keys": _getter(portal, "/portal/keys/"),
    }
    print(f"\nmember pages and budgets ({heaviest.username}, {membership.team.name})")
    for name, function in figures.items():
        _show(name, function, repeat)


def _sizes() -> None:
    """Bytes per record on disk: each usage table with its indexes, over its rows."""
    from django.apps import apps
    from django.db import connection

    if connection.vendor != "postgresql":
        return
    print("\ntable sizes (pg_total_relation_size: table, indexes, TOAST)")
    with connection.cursor() as cursor:
        for name in ("usagerecord", "usagerollup", "usagehistogram"):
            table = f"accounts_{name}"
            if not any(model._meta.db_table == table for model in apps.get_models()):
                continue
            cursor.execute(
                f"SELECT count(*), pg_total_relation_size('{table}'), pg_relation_size('{table}') FROM {table}"
            )
            rows, total, heap = cursor.fetchone()
            per_row = f"{total / rows:,.0f} B/row ({heap / rows:,.0f} without indexes)" if rows else ""
            print(f"  {table:<24} {rows:>11,} rows {total / 2**20:10,.1f} MiB  {per_row}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--database", help="a database URL to use and keep (default: a scratch one)")
    options = parser.parse_args()

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.support.processes import scratch_database

    with contextlib.ExitStack() as stack:
        url = options.database
        if url is None:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hfproxy-bench-")))
            url = stack.enter_context(scratch_database(folder))
        configure(url)
        from django.core.management import call_command
        from django.db import connections

        from accounts.models import UsageRecord

        started = time.perf_counter()
        call_command("migrate", verbosity=0)
        print(f"migrated in {time.perf_counter() - started:.1f} s (backfilling the rollups, if new)")
        if UsageRecord.objects.count() != options.rows:
            fill(options.rows, options.days)
        if connections["default"].vendor == "postgresql":
            # What autovacuum does soon after a load: statistics, and the visibility map
            # that index-only scans need.
            with connections["default"].cursor() as cursor:
                tables = connections["default"].introspection.table_names(cursor)
                for table in ("accounts_usagerecord", "accounts_usagerollup", "accounts_usagehistogram"):
                    if table in tables:
                        cursor.execute(f"VACUUM ANALYZE {table}")
        measure(options.repeat)
        connections.close_all()  # before a scratch PostgreSQL database is dropped


if __name__ == "__main__":
    main()
