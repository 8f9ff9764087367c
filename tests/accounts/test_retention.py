"""prune_usage: old records become daily sums, and nothing that counts usage notices."""

import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command

from accounts import keys, limits, retention, services
from accounts.models import ApiKey, UsageDaily, UsageRecord
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


def test_old_days_become_daily_sums_and_the_totals_do_not_change(history):
    report_before = usage_by_user_and_model()
    assert report_before[0]["cost_usd"] == Decimal("2.50012345")  # m1's costs, summed exactly
    lifetime_before = limits._tokens_in_db(history.pk, None)

    pruned = retention.prune(35, now=NOW)

    assert (pruned.days, pruned.records, pruned.groups) == (2, 4, 3)
    assert UsageRecord.objects.count() == 1  # the recent one stays
    day = (NOW - timedelta(days=40)).date()
    rows = {(r.day, r.model_requested, r.outcome): r for r in UsageDaily.objects.all()}
    ok = rows[(day, "m1", "ok")]
    assert (ok.requests, ok.prompt_tokens, ok.completion_tokens, ok.total_tokens) == (2, 17, 8, 25)
    assert rows[(day, "m1", "upstream_error")].requests == 1
    assert rows[(day - timedelta(days=1), "m2", "ok")].total_tokens == 150
    assert {r.user_id for r in rows.values()} == {history.user_id}

    assert usage_by_user_and_model() == report_before
    assert limits._tokens_in_db(history.pk, None) == lifetime_before == 25 + 150 + 2
    since = NOW - timedelta(days=40, hours=1)
    assert limits._tokens_in_db(history.pk, since) == 25 + 2  # a budget period's start counts too


def test_pruning_again_adds_to_a_days_sums(history):
    retention.prune(35, now=NOW)
    make_usage(history, "m1", when=NOW - timedelta(days=40), tokens=(5, 5))  # a late arrival
    retention.prune(35, now=NOW)
    day = (NOW - timedelta(days=40)).date()
    row = UsageDaily.objects.get(day=day, model_requested="m1", outcome="ok")
    assert (row.requests, row.total_tokens) == (3, 35)


def test_only_whole_days_older_than_n_days(history):
    make_usage(history, "edge", when=NOW - timedelta(days=35, hours=-1))  # within day N: kept
    retention.prune(35, now=NOW)
    assert UsageRecord.objects.filter(model_requested="edge").exists()


def test_the_command_its_dry_run_and_its_floor(history):
    out = io.StringIO()
    call_command("prune_usage", "--days", "32", "--dry-run", stdout=out)
    assert "Would sum and delete 4 records of 2 days" in out.getvalue()
    assert UsageRecord.objects.count() == 5
    out = io.StringIO()
    call_command("prune_usage", "--days", "32", stdout=out)
    assert "Summed 4 records of 2 days" in out.getvalue()
    assert UsageRecord.objects.count() == 1
    with pytest.raises(CommandError, match="at least 32 days"):
        call_command("prune_usage", "--days", "7")


def test_the_daily_sums_are_listed_read_only_in_the_admin(history, admin_client):
    retention.prune(35, now=NOW)
    page = admin_client.get("/admin/accounts/usagedaily/")
    assert page.status_code == 200
    assert b"m2" in page.content and history.prefix.encode() in page.content
    assert admin_client.get("/admin/accounts/usagedaily/add/").status_code == 403


def test_a_concurrent_prune_rolls_back_instead_of_counting_a_day_twice(history, monkeypatch):
    from django.db.models.query import QuerySet

    real_delete = QuerySet.delete

    def another_prune_got_one_first(self):
        self.order_by("created_at")[:1].get().delete()  # as if the other run deleted it
        return real_delete(self)

    monkeypatch.setattr(QuerySet, "delete", another_prune_got_one_first)
    with pytest.raises(retention.ConcurrentPrune):
        retention.prune(35, now=NOW)
    monkeypatch.undo()
    assert not UsageDaily.objects.exists()  # the day's sums were rolled back with it
