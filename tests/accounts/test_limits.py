"""Rate limits, concurrency and token budgets: the policy of accounts.limits (one process, the
memory counters; CI runs this file on Redis too)."""

import asyncio
import io
import time

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.management import call_command

from accounts import keys, runtime, services
from accounts.models import ApiKey, UserPolicy
from gateway import converter
from tests.support.answers import completion, sse_response, standard_stream
from tests.support.factories import make_usage

MESSAGES = [{"role": "user", "content": "hi"}]


async def new_key(user, **limits) -> str:
    return (await sync_to_async(services.api_key_create)(user=user, **limits))[1]


async def chat(client, key, stream=False, **fields):
    return await client.post(
        "/v1/chat/completions",
        {"messages": MESSAGES, "stream": stream, **fields},
        content_type="application/json",
        headers={"authorization": f"Bearer {key}"},
    )


async def test_exactly_rpm_requests_pass_then_429(anonymous_client, user, hf, reports):
    route = hf.post("/chat/completions").respond(200, json=completion())
    key = await new_key(user, rpm=3)
    responses = [await chat(anonymous_client, key) for _ in range(4)]
    assert [r.status_code for r in responses] == [200, 200, 200, 429]
    assert route.call_count == 3
    refused = responses[-1]
    assert refused.json()["error"]["type"] == refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert [r["x-ratelimit-remaining-requests"] for r in responses] == ["2", "1", "0", "0"]
    assert all(r["x-ratelimit-limit-requests"] == "3" for r in responses)
    assert responses[0]["x-ratelimit-reset-requests"].endswith("s")
    assert [r.outcome for r in reports][-1] == "refused"
    # The refused request's record keeps the model it asked for (the default, here).
    assert reports[-1].model_requested == settings.DEFAULT_MODEL


async def settled() -> None:
    """The finished requests' counts are in (they settle just after the response)."""
    await runtime.background()


async def test_tokens_per_minute(anonymous_client, user, hf):
    hf.post("/chat/completions").respond(200, json=completion(usage=(30, 20)))
    key = await new_key(user, tpm=100)
    if 60 - time.time() % 60 < 3:  # all four within one minute's window
        await asyncio.sleep(60 - time.time() % 60 + 0.1)
    statuses = []
    for _ in range(4):
        statuses.append((await chat(anonymous_client, key)).status_code)
        await settled()
    assert statuses == [200, 200, 429, 429]


async def test_max_parallel(anonymous_client, user, hf):
    def slow(request):
        return sse_response(standard_stream(), delay=0.1)[0]

    hf.post("/chat/completions").mock(side_effect=slow)
    key = await new_key(user, max_parallel=1)
    first = await chat(anonymous_client, key, stream=True)
    assert (await chat(anonymous_client, key)).status_code == 429
    b"".join([part async for part in first.streaming_content])
    await settled()
    assert (await chat(anonymous_client, key, stream=True)).status_code == 200


async def test_a_budget_already_used_in_the_database_refuses_at_once(anonymous_client, user, hf):
    route = hf.post("/chat/completions").respond(200, json=completion())
    key = await new_key(user, token_budget=100)
    api_key = await ApiKey.objects.aget(digest=keys.digest(key))
    await sync_to_async(make_usage)(api_key, "m", tokens=(60, 40))
    response = await chat(anonymous_client, key)
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "insufficient_quota"
    assert not route.called


def month_counter(key_id: int) -> str:
    return f"month:{key_id}:{time.strftime('%Y%m', time.gmtime())}"


async def counted(key: str) -> int:
    from accounts import counters

    api_key = await ApiKey.objects.aget(digest=keys.digest(key))
    return (await counters.store().run([("get", month_counter(api_key.pk))]))[0]


async def test_a_budget_counter_gone_beside_one_still_counted_is_seeded_not_refused(
    anonymous_client, user, hf
):
    """The lifetime counter lives 30 days, the month's until the month ends (and a team's or a
    user's budget may be set later): one can be gone while the other is counted."""
    from accounts import counters

    hf.post("/chat/completions").respond(200, json=completion(usage=(30, 20)))
    key = await new_key(user, token_budget=100_000, lifetime_token_budget=100_000)
    api_key = await ApiKey.objects.aget(digest=keys.digest(key))
    assert (await chat(anonymous_client, key)).status_code == 200
    await settled()
    store, life = counters.store(), f"life:{api_key.pk}"
    if isinstance(store, counters.MemoryCounters):
        del store._counts[life]
    else:
        await sync_to_async(counters.delete_all)(settings.REDIS_URL, store.prefix + life)
    assert (await store.run([("get", life)]))[0] is None
    await sync_to_async(make_usage)(api_key, "m", tokens=(600, 400))  # what seeding finds
    response = await chat(anonymous_client, key)
    assert response.status_code == 200, response.json()
    await settled()
    assert (await store.run([("get", life)]))[0] >= 1_000 + 50


async def test_a_burst_cannot_overshoot_the_budget(anonymous_client, user, hf):
    def answer(request):
        return sse_response(standard_stream(usage=(5, 5)), delay=0.002)[0]

    hf.post("/chat/completions").mock(side_effect=answer)
    key = await new_key(user, token_budget=100)
    in_flight = asyncio.Semaphore(4)

    async def one():
        async with in_flight:
            response = await chat(anonymous_client, key, stream=True, max_tokens=10)
            if response.status_code == 200:
                b"".join([part async for part in response.streaming_content])
            await settled()
            return response.status_code

    statuses = await asyncio.gather(*(one() for _ in range(30)))
    passed = statuses.count(200)
    # Each holds its prompt's estimate plus max_tokens while it runs: never more than fits.
    assert passed >= 1 and passed * 10 <= 100
    assert set(statuses) == {200, 429}
    await settled()
    assert await counted(key) == passed * 10  # every reservation replaced by what was used


async def test_a_request_is_refused_when_its_reservation_does_not_fit(anonymous_client, user, hf, settings):
    route = hf.post("/chat/completions").respond(200, json=completion(usage=(5, 5)))
    key = await new_key(user, token_budget=100)
    api_key = await ApiKey.objects.aget(digest=keys.digest(key))
    await sync_to_async(make_usage)(api_key, "m", tokens=(30, 30))
    refused = await chat(anonymous_client, key, max_tokens=50)
    assert refused.status_code == 429 and not route.called
    error = refused.json()["error"]
    assert error["code"] == "insufficient_quota"
    assert "40 left" in error["message"] and "may use up to" in error["message"]
    # With no max_tokens, the default reservation stands in for it.
    prompt = converter.estimate_prompt_tokens(MESSAGES)  # what the prompt reserves
    settings.BUDGET_DEFAULT_RESERVATION = 40 - prompt + 1
    assert (await chat(anonymous_client, key)).status_code == 429
    settings.BUDGET_DEFAULT_RESERVATION = 40 - prompt
    assert (await chat(anonymous_client, key)).status_code == 200
    await settled()
    assert await counted(key) == 60 + 10  # what it used, not what it reserved
    assert (await chat(anonymous_client, key, max_tokens=30 - prompt)).status_code == 200
    await settled()
    assert await counted(key) == 60 + 10 + 10


async def test_a_failed_request_gives_its_reservation_back(anonymous_client, user, hf):
    hf.post("/chat/completions").respond(500, json={"error": "down"})
    key = await new_key(user, token_budget=100)
    assert (await chat(anonymous_client, key, max_tokens=50)).status_code >= 500
    await settled()
    assert await counted(key) == 0


async def test_a_disconnected_stream_counts_what_it_used_not_its_reservation(user, hf, reports):
    import json

    from tests.support.answers import chunk
    from tests.support.asgi import asgi_request

    answer, upstream_body = sse_response([chunk(f"w{i}") for i in range(50)], delay=0.02)
    hf.post("/chat/completions").mock(return_value=answer)
    key = await new_key(user, token_budget=10_000)
    body = {"messages": MESSAGES, "stream": True, "max_tokens": 5000}
    result = await asgi_request(
        "POST",
        "/v1/chat/completions",
        json.dumps(body).encode(),
        headers={"authorization": f"Bearer {key}"},
        disconnect_after_chunks=3,
    )
    assert result.status == 200 and upstream_body.closed
    [report] = reports
    assert report.outcome == "client_disconnected" and report.usage.total_tokens
    await settled()
    assert await counted(key) == report.usage.total_tokens  # estimated from what was sent


async def test_user_defaults_apply_to_keys_without_their_own(anonymous_client, user, hf):
    hf.post("/chat/completions").respond(200, json=completion())
    await UserPolicy.objects.acreate(user=user, rpm=1)
    plain, own = await new_key(user), await new_key(user, rpm=5)
    assert [(await chat(anonymous_client, plain)).status_code for _ in range(2)] == [200, 429]
    assert [(await chat(anonymous_client, own)).status_code for _ in range(2)] == [200, 200]


async def test_no_limits_no_headers(async_client, hf):
    hf.post("/chat/completions").respond(200, json=completion())
    response = await async_client.post(
        "/v1/chat/completions", {"messages": MESSAGES}, content_type="application/json"
    )
    assert "x-ratelimit-limit-requests" not in response


@pytest.mark.django_db(transaction=True)
def test_create_api_key_takes_the_limit_flags(usage_db):
    out = io.StringIO()
    call_command(
        "create_api_key",
        "pat",
        "--rpm",
        "60",
        "--tpm",
        "1000",
        "--token-budget",
        "50000",
        "--max-parallel",
        "2",
        stdout=out,
        stderr=io.StringIO(),
    )
    stored = ApiKey.objects.get(digest=keys.digest(out.getvalue().splitlines()[-1]))
    assert (stored.rpm, stored.tpm, stored.token_budget, stored.max_parallel) == (60, 1000, 50000, 2)


async def test_refusals_are_recorded_with_their_reason_and_shown_on_the_dashboard(anonymous_client, user, hf):
    from accounts import dashboard, usage
    from accounts.models import UsageRecord

    hf.post("/chat/completions").respond(200, json=completion())
    key = await new_key(user, rpm=1, allowed_models="m")
    await chat(anonymous_client, key)  # model DEFAULT_MODEL: not allowed
    await anonymous_client.post(
        "/v1/chat/completions",
        {"model": "m", "messages": MESSAGES},
        content_type="application/json",
        headers={"authorization": f"Bearer {key}"},
    )
    assert await usage.writer.flush(deadline=10)
    codes = sorted([r.error_code async for r in UsageRecord.objects.filter(outcome="refused")])
    assert codes == ["model_not_allowed", "rate_limit_exceeded"]
    board = await sync_to_async(dashboard.usage_dashboard)(period="24h")
    assert {row["error_code"]: row["requests"] for row in board.refused} == {
        "model_not_allowed": 1,
        "rate_limit_exceeded": 1,
    }


def test_the_key_list_shows_this_months_use_against_the_budget(admin_client, usage_db):
    from accounts.models import ApiKey

    admin_user = ApiKey._meta.get_field("user").related_model.objects.get(username="admin")
    api_key, _ = services.api_key_create(user=admin_user, token_budget=50_000)
    make_usage(api_key, "m", tokens=(10_000, 2_300))
    page = admin_client.get("/admin/accounts/apikey/").content.decode()
    assert "12.3k / 50k" in page


def test_the_month_and_the_seconds_until_the_next_one():
    from datetime import UTC, datetime

    from accounts.limits import _month

    last_seconds = datetime(2026, 2, 28, 23, 59, 30, tzinfo=UTC).timestamp()
    assert _month(last_seconds)[0::2] == ("202602", 30)
    assert _month(last_seconds)[1] == datetime(2026, 2, 1, tzinfo=UTC)
    first = datetime(2026, 3, 1, tzinfo=UTC).timestamp()
    assert _month(first)[0::2] == ("202603", 31 * 86400)
    assert _month(first + 0.5)[2] == 31 * 86400  # a part second still counts as one


@pytest.mark.parametrize("failure", ["database", "cancelled"])
async def test_a_request_that_fails_during_admission_gives_its_slot_back(user, monkeypatch, failure):
    """The slot is taken with the first counters; a budget seeded from the database after
    that can fail, or the client can leave while it is read."""
    from accounts import limits
    from accounts.limits import KeyLimits

    rules = KeyLimits(max_parallel=1, token_budget=1000)
    api_key = await ApiKey.objects.aget(digest=keys.digest(await new_key(user)))

    async def failing_run(function, *args):
        if failure == "database":
            from django.db import OperationalError

            raise OperationalError("the database is down")
        await asyncio.sleep(3600)  # the client leaves meanwhile

    monkeypatch.setattr(limits.offloop, "run", failing_run)
    attempt = asyncio.ensure_future(limits.admit(api_key.pk, user.pk, rules))
    if failure == "cancelled":
        await asyncio.sleep(0.01)
        attempt.cancel()
    with pytest.raises(Exception if failure == "database" else asyncio.CancelledError):
        await attempt
    monkeypatch.undo()
    admission = await limits.admit(api_key.pk, user.pk, rules)  # the slot is free again
    assert admission.holds_slot


@pytest.fixture
def redis_down(settings):
    """REDIS_URL names a port where nothing listens."""
    from tests.support.processes import free_port

    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    settings.REDIS_TIMEOUT = 0.5


async def test_redis_down_fails_closed_with_a_503_in_the_apis_format(
    anonymous_client, user, hf, reports, redis_down
):
    hf.post("/chat/completions").respond(200, json=completion())
    key = await new_key(user, max_parallel=2)
    response = await chat(anonymous_client, key)
    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    assert response.json()["error"]["code"] == "limits_unavailable"
    messages = await anonymous_client.post(
        "/v1/messages",
        {"model": "m", "max_tokens": 5, "messages": MESSAGES},
        content_type="application/json",
        headers={"x-api-key": key},
    )
    assert messages.status_code == 503
    assert messages.json()["type"] == "error" and messages.json()["error"]["type"] == "overloaded_error"
    # Recorded as any refusal is, with the model asked for.
    assert [(r.status, r.error_code, r.model_requested) for r in reports] == [
        (503, "limits_unavailable", settings.DEFAULT_MODEL),
        (503, "limits_unavailable", "m"),
    ]
    assert not hf.calls
    # A key without limits never needs Redis.
    assert (await chat(anonymous_client, await new_key(user))).status_code == 200


async def test_redis_down_fails_open_to_each_workers_count(anonymous_client, user, hf, redis_down, settings):
    settings.LIMITS_FAIL_OPEN = True
    hf.post("/chat/completions").respond(200, json=completion())
    key = await new_key(user, rpm=2)
    if 60 - time.time() % 60 < 3:  # all three within one minute's window
        await asyncio.sleep(60 - time.time() % 60 + 0.1)
    assert [(await chat(anonymous_client, key)).status_code for _ in range(3)] == [200, 200, 429]


async def test_a_slot_whose_settlement_failed_is_given_back_once_the_store_answers(user, monkeypatch):
    from accounts import counters, limits
    from accounts.limits import KeyLimits

    memory = counters.MemoryCounters()
    failing = {"frees": 2}  # Redis down for the settlement and the first try after it

    class Flaky:
        async def run(self, ops):
            if any(op[0] == "free" for op in ops) and failing["frees"]:
                failing["frees"] -= 1
                raise counters.Unavailable("down")
            return await memory.run(ops)

        run_together = run

    monkeypatch.setattr(counters, "store", Flaky)
    rules = KeyLimits(max_parallel=1)
    admission = await limits.admit(1, user.pk, rules)
    await limits.asettle(admission, 0)
    with pytest.raises(limits.Refusal):
        await limits.admit(1, user.pk, rules)  # still held
    deadline = time.monotonic() + 10
    while True:
        await asyncio.sleep(0.2)
        try:
            assert (await limits.admit(1, user.pk, rules)).holds_slot
            break
        except limits.Refusal:
            assert time.monotonic() < deadline, "the slot never came back"


@pytest.mark.parametrize("fail_open", [False, True])
async def test_a_slot_a_lost_reply_may_have_taken_is_given_back(monkeypatch, settings, fail_open):
    from accounts import counters, limits

    settings.LIMITS_FAIL_OPEN = fail_open
    freed = []

    class TimedOut:  # Redis took the batch, and its answer never came
        async def run(self, ops):
            if ops[0][0] == "free":
                freed.append(ops[0][2])
                return [None]
            raise counters.Unavailable("timed out", maybe_ran=True)

    monkeypatch.setattr(counters, "store", TimedOut)
    pause = asyncio.sleep
    monkeypatch.setattr(limits.asyncio, "sleep", lambda seconds: pause(0))  # the retry's second
    rules = limits.KeyLimits(max_parallel=1)
    if fail_open:
        admission = await limits.admit(1, 1, rules)  # counted in memory instead
        assert admission.holds_slot and admission.store is counters._memory
        await limits.asettle(admission, 0)
    else:
        with pytest.raises(counters.Unavailable):
            admission = await limits.admit(1, 1, rules)
    for _ in range(10):
        await pause(0)
    assert len(freed) == 1  # in Redis, where it may be held
