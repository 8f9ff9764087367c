"""gateway.exchange: a request's life, admitted on open, reported once on finish."""

import pytest

from accounts import limits, runtime, usage
from accounts.limits import KeyLimits
from accounts.models import Outcome, UsageSource
from gateway import exchange as exchanges
from gateway import metrics
from gateway.converter import Usage
from gateway.exchange import Exchange
from tests.support.factories import caller


@pytest.fixture
def handed(monkeypatch):
    """What the exchanges hand to services.usage_record, instead of the writer."""
    made = []
    monkeypatch.setattr(
        exchanges.services, "usage_record", lambda *, entry, admission: made.append((entry, admission))
    )
    return made


async def test_finish_reports_one_entry_with_the_records_columns(handed, reports):
    exchange = Exchange(request_id="req-1", endpoint="chat_completions", caller=caller(token_id=5))
    exchange.model_requested, exchange.provider = "org/m:cerebras", ""
    exchange.note_usage(Usage(4, 2, 6))
    exchange.count_attempt()
    exchange.finish(200, Outcome.OK)
    exchange.finish(500, Outcome.PROXY_ERROR)  # later words are ignored
    [(entry, admission)] = handed
    assert reports == [exchange] and admission is None
    assert isinstance(entry, usage.UsageEntry)
    assert (entry.id, entry.request_id, entry.user_id, entry.api_key_id, entry.hf_token_id) == (
        exchange.id,
        "req-1",
        3,
        7,
        5,
    )
    assert (entry.status, entry.outcome, entry.provider, entry.upstream_attempts) == (
        200,
        "ok",
        "cerebras",
        1,
    )
    assert (entry.total_tokens, entry.usage_source) == (6, UsageSource.PROVIDER)
    assert entry.latency_ms >= 0 and entry.ttft_ms is None


async def test_an_estimate_counts_when_the_provider_gave_none(handed):
    exchange = Exchange(request_id="r", endpoint="chat_completions", caller=caller())
    exchange.note_usage(Usage(None, None, None), Usage(3, 1, 4))
    exchange.finish(200, Outcome.OK)
    assert (handed[0][0].total_tokens, handed[0][0].usage_source) == (4, UsageSource.ESTIMATED)


async def test_a_request_the_server_cut_off_is_not_the_clients_doing(handed):
    exchange = Exchange(request_id="r", endpoint="chat_completions", caller=caller())
    exchange.server_shutdown = True
    exchange.finish(499, Outcome.CLIENT_DISCONNECTED)
    [(entry, _)] = handed
    assert (entry.status, entry.outcome, entry.error_code) == (503, "proxy_error", "server_shutdown")


async def test_open_admits_and_finish_settles(monkeypatch):
    queued = []
    monkeypatch.setattr(usage.writer, "record", queued.append)
    rules = KeyLimits(max_parallel=1)
    first = Exchange(request_id="r1", endpoint="chat_completions", caller=caller(limits=rules))
    await first.open()
    assert first.admission.holds_slot
    second = Exchange(request_id="r2", endpoint="chat_completions", caller=caller(limits=rules))
    with pytest.raises(limits.Refusal):
        await second.open()
    assert second.refused_by == "parallel"
    first.finish(200, Outcome.OK)
    await runtime.background()  # the settlement gives the slot back
    third = Exchange(request_id="r3", endpoint="chat_completions", caller=caller(limits=rules))
    await third.open()
    assert [entry.request_id for entry in queued] == ["r1"]


async def test_a_refusal_is_counted_once_when_it_is_reported(handed):
    counted = metrics.refusals.labels("budget")
    before = counted._value.get()
    exchange = Exchange(request_id="r", endpoint="chat_completions", caller=caller())
    exchange.refused_by = "budget"
    exchange.finish(429, Outcome.REFUSED, "insufficient_quota")
    assert counted._value.get() == before + 1


async def test_send_calls_the_router_on_the_requests_behalf(hf):
    route = hf.get("/models").respond(200, json={"data": []})
    exchange = Exchange(request_id="req-9", endpoint="models", caller=caller())
    response = await exchange.send("GET", "/models", exchanges.upstream.deadline())
    await response.aclose()
    sent = route.calls.last.request
    assert sent.headers["authorization"] == "Bearer hf_secret"
    assert sent.headers["x-request-id"] == "req-9"
    assert exchange.upstream_attempts == 1
