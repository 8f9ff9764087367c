"""Usage records: one per authenticated request, however it ended, written off the hot path,
and the others written when the database refuses one."""

import asyncio
import dataclasses
import json
import logging
import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection

from accounts import keys, usage
from accounts.models import ApiKey, UsageRecord
from gateway import converter
from gateway.asgi import GatewayASGI
from tests.support.answers import chunk, completion, sse_response, standard_stream
from tests.support.asgi import asgi_request
from tests.support.clients import bearer

URL = "/v1/chat/completions"
MESSAGES = [{"role": "user", "content": "Say hello to everyone in the room"}]


async def post(client, payload, **headers):
    return await client.post(
        URL, json.dumps(payload).encode(), content_type="application/json", headers=headers
    )


async def records() -> list[UsageRecord]:
    assert await usage.writer.flush(deadline=10)
    return [r async for r in UsageRecord.objects.select_related("user", "api_key").order_by("created_at")]


async def test_a_completion_leaves_one_full_record(async_client, api_key, hf):
    hf.post("/chat/completions").respond(200, json=completion(usage=(12, 5)))
    await post(async_client, {"model": "org/m:fastest", "messages": MESSAGES}, x_request_id="req-1")
    [record] = await records()
    assert record.user.username == "alice"
    assert record.api_key.prefix == api_key[:12]
    assert (record.request_id, record.endpoint, record.stream) == ("req-1", "chat_completions", False)
    assert (record.model_requested, record.model_answered) == ("org/m:fastest", "openai/gpt-oss-120b")
    assert (record.status, record.outcome) == (200, "ok")
    assert (record.prompt_tokens, record.completion_tokens, record.total_tokens) == (12, 5, 17)
    assert record.usage_source == "provider"
    assert record.latency_ms >= 0 and record.ttft_ms is None


async def test_a_stream_records_the_routers_usage_and_time_to_first_token(async_client, hf):
    answer, _ = sse_response(standard_stream(usage=(9, 2)), delay=0.01)
    hf.post("/chat/completions").mock(return_value=answer)
    response = await post(async_client, {"messages": MESSAGES, "stream": True})
    b"".join([part async for part in response.streaming_content])
    [record] = await records()
    assert (record.stream, record.outcome, record.usage_source) == (True, "ok", "provider")
    assert (record.prompt_tokens, record.completion_tokens, record.total_tokens) == (9, 2, 11)
    assert record.ttft_ms is not None and record.ttft_ms <= record.latency_ms


async def test_failures_are_recorded_too(async_client, hf):
    hf.post("/chat/completions").respond(503, text="down")
    await post(async_client, {"messages": []})  # bad request
    await post(async_client, {"messages": MESSAGES})  # upstream error
    bad, failed = await records()
    assert (bad.status, bad.outcome, bad.usage_source, bad.total_tokens) == (
        400,
        "bad_request",
        "missing",
        None,
    )
    assert (failed.status, failed.outcome) == (502, "upstream_error")


async def test_a_disconnect_mid_stream_leaves_one_record_with_estimated_tokens(api_key, hf):
    answer, _ = sse_response([chunk("word " * 10) for _ in range(50)], delay=0.02)
    hf.post("/chat/completions").mock(return_value=answer)
    body = json.dumps({"messages": MESSAGES, "stream": True}).encode()
    await asgi_request("POST", URL, body, headers=bearer(api_key), disconnect_after_chunks=3)
    [record] = await records()
    assert record.outcome == "client_disconnected"
    assert record.usage_source == "estimated"
    # Three chunks of 50 characters reached the client before it left: about 12 tokens each.
    assert 30 <= record.completion_tokens <= 60
    assert record.prompt_tokens == converter.estimate_prompt_tokens(MESSAGES)


async def test_concurrent_streams_each_leave_one_record(api_key, hf):
    def answer(request):
        return sse_response(standard_stream(usage=(3, 2)), delay=0.005)[0]

    hf.post("/chat/completions").mock(side_effect=answer)
    body = json.dumps({"messages": MESSAGES, "stream": True}).encode()
    results = await asyncio.gather(
        *(asgi_request("POST", URL, body, headers=bearer(api_key)) for _ in range(50))
    )
    assert all(result.status == 200 and result.body.endswith(b"data: [DONE]\n\n") for result in results)
    stored = await records()
    assert len(stored) == 50
    assert len({record.id for record in stored}) == 50
    assert all(record.total_tokens == 5 for record in stored)


async def test_records_hold_no_secret(async_client, api_key, hf):
    hf.post("/chat/completions").respond(200, json=completion())
    await post(async_client, {"messages": MESSAGES})
    await records()
    dump = await sync_to_async(_dump_tables)()
    assert api_key not in dump and settings.HF_TOKEN not in dump


def _dump_tables() -> str:
    with connection.cursor() as cursor:
        rows = []
        for table in ("accounts_usagerecord", "accounts_apikey", "accounts_huggingfacetoken"):
            cursor.execute(f"SELECT * FROM {table}")
            rows.append(repr(cursor.fetchall()))
    return "\n".join(rows)


async def test_the_key_remembers_when_it_was_last_used(async_client, api_key, hf):
    hf.post("/chat/completions").respond(200, json=completion())
    await post(async_client, {"messages": MESSAGES})
    [record] = await records()
    key = await ApiKey.objects.aget(pk=record.api_key_id)
    assert key.last_used_at == record.created_at


async def test_a_failed_write_is_retried_not_dropped(async_client, hf, monkeypatch):
    hf.post("/chat/completions").respond(200, json=completion())
    real_write, attempts = usage._write, []

    def flaky(batch):
        attempts.append(len(batch))
        if len(attempts) < 3:
            raise RuntimeError("database went away")
        real_write(batch)

    monkeypatch.setattr(usage, "_write", flaky)
    await post(async_client, {"messages": MESSAGES})
    await post(async_client, {"messages": MESSAGES})
    assert len(await records()) == 2
    assert len(attempts) >= 3


async def test_writing_is_not_on_the_response_path(async_client, hf, monkeypatch):
    hf.post("/chat/completions").respond(200, json=completion())
    monkeypatch.setattr(
        usage, "_write", lambda batch: (_ for _ in ()).throw(AssertionError("written inline"))
    )
    response = await post(async_client, {"messages": MESSAGES})
    assert response.status_code == 200
    assert usage.writer.pending == 1
    monkeypatch.undo()


async def test_shutdown_writes_what_is_queued(async_client, hf, settings):
    settings.USAGE_FLUSH_INTERVAL = 3600  # nothing would be written before shutdown
    hf.post("/chat/completions").respond(200, json=completion())
    for _ in range(3):
        await post(async_client, {"messages": MESSAGES})
    assert usage.writer.pending == 3
    messages = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]

    async def receive():
        return messages.pop(0)

    async def send(message):
        pass

    await GatewayASGI(None)({"type": "lifespan"}, receive, send)
    assert usage.writer.pending == 0
    assert await UsageRecord.objects.acount() == 3


def test_an_entry_has_exactly_the_records_columns():
    from dataclasses import fields

    columns = {field.attname for field in UsageRecord._meta.concrete_fields}
    assert {field.name for field in fields(usage.UsageEntry)} == columns


def entry(api_key: ApiKey, **changes) -> usage.UsageEntry:
    return usage.UsageEntry(
        **{
            "id": uuid.uuid4(),
            "created_at": datetime.now(UTC),
            "request_id": "r",
            "user_id": api_key.user_id,
            "api_key_id": api_key.pk,
            "endpoint": "chat_completions",
            "status": 200,
            "outcome": "ok",
            "usage_source": "provider",
            "latency_ms": 3,
            **changes,
        }
    )


def test_an_entry_is_always_writable():
    made = usage.UsageEntry(
        id=uuid.uuid4(),
        created_at=datetime.now(UTC),
        request_id="r\x00" + "x" * 200,
        user_id=1,
        api_key_id=1,
        endpoint="chat_completions",
        status=200,
        outcome="ok",
        usage_source="missing",
        latency_ms=0,
        model_requested="m\x00" * 300,
        error_code="e" * 50,
    )
    assert made.request_id == "r" + "x" * 127
    assert made.model_requested == "m" * 200
    assert made.error_code == "e" * 40


async def test_usage_record_queues_the_record_and_settles_the_limits(api_key):
    from accounts import limits, runtime, services
    from accounts.limits import KeyLimits

    key = await ApiKey.objects.aget(digest=keys.digest(api_key))
    rules = KeyLimits(max_parallel=1, tpm=1000)
    admission = await limits.admit(key.pk, key.user_id, rules)
    with pytest.raises(limits.Refusal):  # the slot is taken
        await limits.admit(key.pk, key.user_id, rules)

    services.usage_record(
        entry=entry(key, prompt_tokens=30, completion_tokens=12, total_tokens=42), admission=admission
    )
    assert usage.writer.pending >= 1  # queued, not written: nothing waited for the database
    await runtime.background()  # the settlement
    again = await limits.admit(key.pk, key.user_id, rules)  # the slot is back
    assert again.headers["x-ratelimit-remaining-tokens"] == str(1000 - 42)
    [record] = await records()
    assert (record.total_tokens, record.latency_ms) == (42, 3)


async def test_usage_record_without_an_admission_only_queues(api_key):
    from accounts import services

    key = await ApiKey.objects.aget(digest=keys.digest(api_key))
    services.usage_record(entry=entry(key, outcome="bad_request", status=400), admission=None)
    [record] = await records()
    assert (record.status, record.outcome) == (400, "bad_request")


async def test_a_record_the_database_refuses_does_not_hold_back_the_others(api_key, caplog):
    key = await ApiKey.objects.aget(digest=keys.digest(api_key))
    poison = entry(key, api_key_id=key.pk + 1000)  # a key that does not exist
    usage.writer.record(poison)
    usage.writer.record(entry(key))
    with caplog.at_level(logging.ERROR, logger="hfproxy.usage"):
        assert await usage.writer.flush(deadline=15)
    assert await UsageRecord.objects.acount() == 1
    assert any("refuses" in r.getMessage() and str(poison.id) in r.getMessage() for r in caplog.records)


@pytest.mark.django_db
def test_a_batch_updates_its_keys_last_use_in_one_statement_and_one_order(user):
    # Two workers' batches that lock the same keys in opposite orders deadlock (issue 16, point 5):
    # every batch locks them in ascending id order; and one statement does it, however many keys.
    from django.db import connection as db
    from django.test.utils import CaptureQueriesContext

    from accounts import services

    made = [services.api_key_create(user=user, name=f"k{n}")[0] for n in range(3)]
    ids = [key.id for key in made]
    arrival = [ids[2], ids[0], ids[1], ids[2]]
    start = datetime.now(UTC).replace(microsecond=0)
    batch = [
        usage.UsageEntry(
            id=uuid.uuid4(), created_at=start + timedelta(seconds=n), request_id=f"r{n}", user_id=user.id,
            api_key_id=key_id, endpoint="chat_completions", status=200, outcome="ok",
            usage_source="missing", latency_ms=1,
        )
        for n, key_id in enumerate(arrival)
    ]  # fmt: skip
    with CaptureQueriesContext(db) as queries:
        usage._write(batch)
    touching = [query["sql"] for query in queries.captured_queries if "accounts_apikey" in query["sql"]]
    assert len(touching) == 1
    assert [int(found) for found in re.findall(r"\((\d+)(?:::bigint)?, ", touching[0])] == sorted(ids)
    used = dict(ApiKey.objects.filter(pk__in=ids).values_list("pk", "last_used_at"))
    assert used == {ids[0]: start + timedelta(seconds=1), ids[1]: start + timedelta(seconds=2),
                    ids[2]: start + timedelta(seconds=3)}  # fmt: skip
    late = dataclasses.replace(batch[0], id=uuid.uuid4(), created_at=start - timedelta(hours=1))
    usage._write([late])  # an older record, written late, moves nothing back
    assert ApiKey.objects.get(pk=ids[2]).last_used_at == start + timedelta(seconds=3)
