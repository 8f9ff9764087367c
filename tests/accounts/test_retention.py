"""prune_usage: old records go, and nothing that counts usage notices (it reads the rollups)."""

import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command

from accounts import keys, limits, retention, services
from accounts.models import ApiKey, UsageRecord, UsageRollup
from accounts.selectors import usage_by_user_and_model
from tests.support.factories import make_usage

# Midday today: the hours added below stay within their days, and the command (which prunes
# relative to the real now) sees the same ages.
NOW = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)


@pytest.fixture
def history(user):
    """alice's key: records 40 and 41 days ago (two models, a failure), and 3 days ago."""
    key = ApiKey.objects.get(digest=keys.digest(services.api_key_create(user=user, name="k")[1]))
    old = NOW - timedelta(days=40)
    make_usage(key, "m1", when=old, cost=Decimal("0.00012345"))
    make_usage(key, "m1", when=old + timedelta(hours=3), tokens=(7, 3), cost=Decimal("2.5"))
    make_usage(key, "m1", outcome="upstream_error", when=old, tokens=(0, 0))
    make_usage(key, "m2", when=old - timedelta(days=1), tokens=(100, 50))
    make_usage(key, "m1", when=NOW - timedelta(days=3), tokens=(1, 1))
    return key


def test_old_days_go_and_the_totals_do_not_change(history):
    report_before = usage_by_user_and_model()
    assert report_before[0]["cost_usd"] == Decimal("2.50012345")  # m1's costs, summed exactly
    lifetime_before = limits._tokens_in_db(history.pk, None)
    rollups_before = list(UsageRollup.objects.order_by("pk").values())

    pruned = retention.prune(35, now=NOW)

    assert (pruned.days, pruned.records) == (2, 4)
    assert list(UsageRecord.objects.values_list("model_requested", flat=True)) == ["m1"]  # the recent one
    assert list(UsageRollup.objects.order_by("pk").values()) == rollups_before
    assert usage_by_user_and_model() == report_before
    assert limits._tokens_in_db(history.pk, None) == lifetime_before == 25 + 150 + 2
    since = NOW - timedelta(days=40, hours=1)
    assert limits._tokens_in_db(history.pk, since) == 25 + 2  # a budget period's start counts too


def test_a_late_arrival_is_pruned_the_next_time_and_still_counted(history):
    retention.prune(35, now=NOW)
    make_usage(history, "m1", when=NOW - timedelta(days=40), tokens=(5, 5))
    assert retention.prune(35, now=NOW).records == 1
    assert limits._tokens_in_db(history.pk, None) == 25 + 150 + 2 + 10


def test_only_whole_days_older_than_n_days(history):
    make_usage(history, "edge", when=NOW - timedelta(days=35, hours=-1))  # within day N: kept
    retention.prune(35, now=NOW)
    assert UsageRecord.objects.filter(model_requested="edge").exists()


def test_the_command_its_dry_run_and_its_floor(history):
    out = io.StringIO()
    call_command("prune_usage", "--days", "32", "--dry-run", stdout=out)
    assert "Would delete 4 records of 2 days" in out.getvalue()
    assert UsageRecord.objects.count() == 5
    out = io.StringIO()
    call_command("prune_usage", "--days", "32", stdout=out)
    assert "Deleted 4 records of 2 days" in out.getvalue()
    assert UsageRecord.objects.count() == 1
    with pytest.raises(CommandError, match="at least 32 days"):
        call_command("prune_usage", "--days", "7")
