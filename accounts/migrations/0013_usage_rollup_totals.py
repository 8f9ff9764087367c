import importlib

from django.db import migrations, models

# Totals of every key, per hour ("H") and per day ("D"), team and outcome: rollup rows with no
# key, user, endpoint or model, what the dashboard's series read (tens of rows an hour where
# the full rollups have a thousand). Kept by a trigger as the rollups are (0011), and
# backfilled from those, so records pruned before count too.

_rollups = importlib.import_module("accounts.migrations.0011_usage_rollups")

SPANS = "(SELECT 'H' AS span UNION ALL SELECT 'D')"
# The group's columns (0011's GROUP) without key, user, endpoint or model.
KEYS = "s.span, {start}, 0, 0, coalesce({r}.team_id, 0), '', '', {r}.outcome"
PLACES = "1, 2, 5, 8"  # the columns that vary: span, start, team, outcome


def _grouped() -> str:
    """PostgreSQL: the totals of the records of a statement (its transition table)."""
    start = "date_trunc(CASE s.span WHEN 'H' THEN 'hour' ELSE 'day' END, r.created_at, 'UTC')"
    aggregates = ", ".join(pg for pg, _, _ in _rollups.SUMS.values())
    # Sorted: concurrent inserts lock shared rows in the same order and cannot deadlock.
    return (
        f"INSERT INTO accounts_usagerollup ({_rollups.COLUMNS}) SELECT {KEYS.format(start=start, r='r')}, "
        f"{aggregates} FROM new_records AS r CROSS JOIN {SPANS} AS s WHERE true "
        f"GROUP BY {PLACES} ORDER BY {PLACES} {_rollups.UPSERT}"
    )


def _per_row() -> str:
    """SQLite: the totals one record (NEW) adds to."""
    start = _rollups._sqlite_start("NEW.created_at").replace("WHEN 'h'", "WHEN 'H'")
    values = ", ".join(row for _, _, row in _rollups.SUMS.values())
    return (
        f"INSERT INTO accounts_usagerollup ({_rollups.COLUMNS}) SELECT {KEYS.format(start=start, r='NEW')}, "
        f"{values} FROM {SPANS} AS s WHERE true {_rollups.UPSERT}"
    )


def _backfill() -> str:
    """The totals of the hourly and daily rollups (both databases)."""
    sums = ", ".join(f"sum({name})" for name in _rollups.SUMS)
    return (
        f"INSERT INTO accounts_usagerollup ({_rollups.COLUMNS}) SELECT upper(span), start, 0, 0, team_id, '', '', "
        f"outcome, {sums} FROM accounts_usagerollup WHERE span IN ('h', 'd') "
        f"GROUP BY span, start, team_id, outcome {_rollups.UPSERT}"
    )


def create_trigger_and_backfill(apps, schema_editor) -> None:
    with schema_editor.connection.cursor() as cursor:
        if schema_editor.connection.vendor == "postgresql":
            cursor.execute(
                "CREATE FUNCTION accounts_usage_totals() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                f"{_grouped()}; RETURN NULL; END $$"
            )
            cursor.execute(
                "CREATE TRIGGER accounts_usage_totals AFTER INSERT ON accounts_usagerecord "
                "REFERENCING NEW TABLE AS new_records FOR EACH STATEMENT EXECUTE FUNCTION accounts_usage_totals()"
            )
        else:
            cursor.execute(
                "CREATE TRIGGER accounts_usage_totals AFTER INSERT ON accounts_usagerecord FOR EACH ROW BEGIN "
                f"{_per_row()}; END"
            )
        # In the migration's transaction, which the trigger's creation has locked the records
        # against inserts (and so the rollups against change): nothing counted twice or missed.
        cursor.execute(_backfill())


def drop_trigger_and_totals(apps, schema_editor) -> None:
    with schema_editor.connection.cursor() as cursor:
        if schema_editor.connection.vendor == "postgresql":
            cursor.execute("DROP TRIGGER IF EXISTS accounts_usage_totals ON accounts_usagerecord")
            cursor.execute("DROP FUNCTION IF EXISTS accounts_usage_totals()")
        else:
            cursor.execute("DROP TRIGGER IF EXISTS accounts_usage_totals")
        cursor.execute("DELETE FROM accounts_usagerollup WHERE span IN ('H', 'D')")


class Migration(migrations.Migration):
    dependencies = [("accounts", "0012_usage_histograms")]

    operations = [
        migrations.AlterField(
            model_name="usagerollup",
            name="span",
            field=models.CharField(
                choices=[("h", "hour"), ("d", "day"), ("H", "hour, every key"), ("D", "day, every key")],
                max_length=1,
            ),
        ),
        migrations.RunPython(create_trigger_and_backfill, drop_trigger_and_totals),
    ]
