"""The usage writer when the database refuses a record: the others are written all the same."""

import logging

from accounts import keys, usage
from accounts.models import ApiKey, UsageRecord
from tests.accounts.test_usage import entry


async def test_a_record_the_database_refuses_does_not_hold_back_the_others(api_key, caplog):
    key = await ApiKey.objects.aget(digest=keys.digest(api_key))
    poison = entry(key, api_key_id=key.pk + 1000)  # a key that does not exist
    usage.writer.record(poison)
    usage.writer.record(entry(key))
    with caplog.at_level(logging.ERROR, logger="hfproxy.usage"):
        assert await usage.writer.flush(deadline=15)
    assert await UsageRecord.objects.acount() == 1
    assert any("refuses" in r.getMessage() and str(poison.id) in r.getMessage() for r in caplog.records)
