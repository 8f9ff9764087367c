import importlib
import math

from django.db import migrations, models

# The histograms are kept as the rollups are (0011): a trigger adds each insert's records to
# their hour's and their day's rows, in the inserting transaction (PostgreSQL: once a statement,
# from its transition table, one grouped upsert; SQLite: once a row). Records an insert skips
# (a retried batch) are in no transition table and never counted.

_rollups = importlib.import_module("accounts.migrations.0011_usage_rollups")

BAND = 24
# Each bucket's smallest value: 0, then ceil(10^((k - 0.5)/24)); frozen here, as
# accounts.histograms.EDGES.
EDGES = (0, *(math.ceil(10 ** ((k - 0.5) / BAND)) for k in range(225)))
POSITIONS = range(BAND)
GROUP = ("span", "start", "team_id", "metric", "band")
COLUMNS = ", ".join((*GROUP, *(f"b{n}" for n in POSITIONS)))
UPSERT = f"ON CONFLICT ({', '.join(GROUP)}) DO UPDATE SET " + ", ".join(
    f"b{n} = accounts_usagehistogram.b{n} + excluded.b{n}" for n in POSITIONS
)


def _search(column: str, low: int, high: int) -> str:
    """SQLite: the bucket of `column` (in [low, high]) by a binary search in nested CASEs."""
    if low == high:
        return str(low)
    middle = (low + high + 1) // 2
    return (
        f"CASE WHEN {column} < {EDGES[middle]} THEN {_search(column, low, middle - 1)} "
        f"ELSE {_search(column, middle, high)} END"
    )


def _grouped(source: str) -> str:
    """PostgreSQL: the histogram rows of the records in `source`, counted per hour and day."""
    edges = "'{" + ",".join(map(str, EDGES[1:])) + "}'::int[]"
    start = "date_trunc(CASE s.span WHEN 'h' THEN 'hour' ELSE 'day' END, r.created_at, 'UTC')"
    counts = ", ".join(f"count(*) FILTER (WHERE m.bucket % {BAND} = {n})" for n in POSITIONS)
    places = ", ".join(str(n) for n in range(1, len(GROUP) + 1))
    # Sorted: concurrent inserts lock shared rows in the same order and cannot deadlock.
    return (
        f"INSERT INTO accounts_usagehistogram ({COLUMNS}) "
        f"SELECT s.span, {start}, coalesce(r.team_id, 0), m.metric, m.bucket / {BAND}, {counts} "
        f"FROM {source} AS r CROSS JOIN LATERAL (VALUES ('latency_ms', width_bucket(r.latency_ms, {edges})), "
        f"('ttft_ms', width_bucket(r.ttft_ms, {edges}))) AS m(metric, bucket) CROSS JOIN {_rollups.SPANS} AS s "
        f"WHERE m.bucket IS NOT NULL GROUP BY {places} ORDER BY {places} {UPSERT}"
    )


def _per_row() -> str:
    """SQLite: the rows one record (NEW) adds to."""
    last = len(EDGES) - 1
    metrics = (
        f"SELECT 'latency_ms' AS metric, {_search('NEW.latency_ms', 0, last)} AS bucket UNION ALL "
        f"SELECT 'ttft_ms', {_search('NEW.ttft_ms', 0, last)} WHERE NEW.ttft_ms IS NOT NULL"
    )
    counts = ", ".join(f"m.bucket % {BAND} = {n}" for n in POSITIONS)
    return (
        f"INSERT INTO accounts_usagehistogram ({COLUMNS}) "
        f"SELECT s.span, {_rollups._sqlite_start('NEW.created_at')}, coalesce(NEW.team_id, 0), m.metric, "
        f"m.bucket / {BAND}, {counts} FROM ({metrics}) AS m CROSS JOIN {_rollups.SPANS} AS s WHERE true {UPSERT}"
    )


def _sqlite_grouped() -> str:
    """SQLite: the histogram rows of every record, for the backfill."""
    last = len(EDGES) - 1
    values = " UNION ALL ".join(
        f"SELECT created_at, team_id, '{metric}' AS metric, {_search(metric, 0, last)} AS bucket "
        f"FROM accounts_usagerecord WHERE {metric} IS NOT NULL"
        for metric in ("latency_ms", "ttft_ms")
    )
    counts = ", ".join(f"sum(m.bucket % {BAND} = {n})" for n in POSITIONS)
    places = ", ".join(str(n) for n in range(1, len(GROUP) + 1))
    start = _rollups._sqlite_start("m.created_at")
    return (
        f"INSERT INTO accounts_usagehistogram ({COLUMNS}) "
        f"SELECT s.span, {start}, coalesce(m.team_id, 0), m.metric, m.bucket / {BAND}, {counts} "
        f"FROM ({values}) AS m CROSS JOIN {_rollups.SPANS} AS s WHERE true GROUP BY {places} {UPSERT}"
    )


def create_trigger_and_backfill(apps, schema_editor) -> None:
    vendor = schema_editor.connection.vendor
    with schema_editor.connection.cursor() as cursor:
        if vendor == "postgresql":
            cursor.execute(
                "CREATE FUNCTION accounts_usage_histogram() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                f"{_grouped('new_records')}; RETURN NULL; END $$"
            )
            cursor.execute(
                "CREATE TRIGGER accounts_usage_histogram AFTER INSERT ON accounts_usagerecord "
                "REFERENCING NEW TABLE AS new_records FOR EACH STATEMENT EXECUTE FUNCTION accounts_usage_histogram()"
            )
            # In the migration's transaction, which the trigger's creation has locked the records
            # against inserts: each record is counted once, by the backfill or by the trigger.
            cursor.execute(_grouped("accounts_usagerecord"))
        else:
            cursor.execute(
                f"CREATE TRIGGER accounts_usage_histogram AFTER INSERT ON accounts_usagerecord FOR EACH ROW BEGIN "
                f"{_per_row()}; END"
            )
            cursor.execute(_sqlite_grouped())


def drop_trigger(apps, schema_editor) -> None:
    with schema_editor.connection.cursor() as cursor:
        if schema_editor.connection.vendor == "postgresql":
            cursor.execute("DROP TRIGGER IF EXISTS accounts_usage_histogram ON accounts_usagerecord")
            cursor.execute("DROP FUNCTION IF EXISTS accounts_usage_histogram()")
        else:
            cursor.execute("DROP TRIGGER IF EXISTS accounts_usage_histogram")


class Migration(migrations.Migration):
    dependencies = [("accounts", "0011_usage_rollups")]

    operations = [
        migrations.CreateModel(
            name="UsageHistogram",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("span", models.CharField(choices=[("h", "hour"), ("d", "day")], max_length=1)),
                ("start", models.DateTimeField(help_text="The hour's or the day's first instant (UTC).")),
                ("team_id", models.PositiveIntegerField(default=0, help_text="The record's team; 0: none.")),
                (
                    "metric",
                    models.CharField(
                        choices=[("latency_ms", "latency"), ("ttft_ms", "time to first token")], max_length=10
                    ),
                ),
                ("band", models.PositiveSmallIntegerField()),
                *((f"b{n}", models.PositiveBigIntegerField(default=0)) for n in POSITIONS),
            ],
            options={
                "verbose_name": "usage histogram",
                "constraints": [
                    models.UniqueConstraint(fields=GROUP, name="usage_histogram_one_row_a_band"),
                ],
            },
        ),
        migrations.RunPython(create_trigger_and_backfill, drop_trigger),
        # The percentiles walked these; the histograms answer them now, and every insert
        # updated both.
        migrations.RemoveIndex(model_name="usagerecord", name="accounts_us_latency_ba0a26_idx"),
        migrations.RemoveIndex(model_name="usagerecord", name="accounts_us_ttft_ms_c49115_idx"),
    ]
