"""Prices per provider from a recorded router model list, admin overrides, and the cost of
each usage record in Decimal."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from django.conf import settings
from django.core.management import call_command
from django.utils import timezone

from accounts import counters, limits, prices, runtime, services
from accounts.models import ModelPrice, UsageRecord
from accounts.prices import Price
from accounts.usage import writer
from tests.support.answers import completion
from tests.support.clients import AsyncClient

LISTING = Path(__file__).parent / "golden" / "router_models.json"


@pytest.fixture(autouse=True)
def _fresh_table():
    prices.reset()
    yield
    prices.reset()


def test_offers_from_a_recorded_router_answer():
    offers = prices.offers(json.loads(LISTING.read_text()))
    assert offers == {
        ("openai/gpt-oss-120b", "fireworks-ai"): Price(Decimal("0.15"), Decimal("0.6")),
        ("openai/gpt-oss-120b", "cerebras"): Price(Decimal("0.25"), Decimal("0.69")),
        ("meta-llama/Llama-3.1-8B-Instruct", "cerebras"): Price(Decimal("0.1"), Decimal("0.1")),
    }  # no pricing, a price that is not a number, a negative one: skipped


def test_cost_is_exact_decimal_arithmetic():
    price = Price(Decimal("0.15"), Decimal("0.6"))
    # (1234 * 0.15 + 567 * 0.6) / 1e6 = (185.1 + 340.2) / 1e6
    assert prices.cost(1234, 567, price) == Decimal("0.00052530")
    assert prices.cost(None, 10, price) == Decimal("0.00000600")
    assert prices.cost(3, 0, Price(Decimal("0.1"), Decimal("0.1"))) == Decimal("0.00000030")
    many = sum((prices.cost(1, 1, Price(Decimal("0.1"), Decimal("0.2"))) for _ in range(10)), Decimal(0))
    assert many == Decimal("0.00000300")  # no binary float drift


def test_cached_prompt_tokens_cost_the_cached_price_where_there_is_one():
    price = Price(Decimal("1"), Decimal("2"), cached_input=Decimal("0.1"))
    # 600 uncached * 1 + 400 cached * 0.1 + 100 * 2 = 840 per million
    assert prices.cost(1000, 100, price, cached_tokens=400) == Decimal("0.00084000")
    # No cached price: every prompt token at the input price, cached or not.
    assert prices.cost(1000, 100, Price(Decimal("1"), Decimal("2")), cached_tokens=400) == Decimal("0.0012")
    # A provider's nonsense (more cached than prompt) never makes a cost negative.
    assert prices.cost(10, 0, price, cached_tokens=50) == Decimal("0.00000100")


def test_a_listed_cached_price_is_taken_and_a_bad_one_dropped_alone():
    listing = {
        "data": [
            {
                "id": "m",
                "providers": [
                    {"provider": "a", "pricing": {"input": 1, "output": 2, "input_cache_read": 0.25}},
                    {"provider": "b", "pricing": {"input": 1, "output": 2, "cached_input": "x"}},
                    {"provider": "c", "pricing": {"input": True, "output": 2}},
                ],
            }
        ]
    }
    assert prices.offers(listing) == {
        ("m", "a"): Price(Decimal("1"), Decimal("2"), Decimal("0.25")),
        ("m", "b"): Price(Decimal("1"), Decimal("2")),
    }


@pytest.mark.django_db
def test_images_and_audio_cost_their_price_per_unit():
    from accounts.usage import UsageEntry

    for provider, amount in (("together", "0.003"), ("nebius", "0.0013")):
        ModelPrice.objects.create(
            model="org/flux", provider=provider, unit=ModelPrice.Unit.IMAGES, per_unit=Decimal(amount)
        )
    ModelPrice.objects.create(model="org/tokens", provider="p", input_per_million=1, output_per_million=1)
    table = prices.table()

    def priced(model, provider, units):
        entry = UsageEntry(
            id=None, created_at=None, request_id="r", user_id=1, api_key_id=1, endpoint="e",
            status=200, outcome="ok", usage_source="provider", latency_ms=1,
            model_requested=model, provider=provider, units=Decimal(units),
        )  # fmt: skip
        prices.price_entry(entry, table)
        return entry.cost_usd

    assert priced("org/flux:together", "together", 2) == Decimal("0.006")
    assert priced("org/flux", "", 1) == Decimal("0.003")  # provider unknown: the dearest
    assert priced("org/tokens", "p", 3) is None  # priced in tokens only: no unit price


def test_which_provider_and_which_price():
    table = {"m": {"a": Price(Decimal(1), Decimal(2)), "b": Price(Decimal(3), Decimal(1))}}
    assert prices.provider_of("m:a", "b") == "b"  # what the router says it used wins
    assert prices.provider_of("m:a", "") == "a"
    assert prices.provider_of("m:fastest", "") == prices.provider_of("m", "") == ""
    assert prices.price_for(table, "m:a", "a") == Price(Decimal(1), Decimal(2))
    assert prices.price_for(table, "m:fastest", "") == Price(Decimal(3), Decimal(1))  # the dearest
    assert prices.price_for(table, "m", "c") == Price(Decimal(3), Decimal(1))  # named, but unpriced
    assert prices.price_for(table, "other", "") is None  # no price at all: it costs nothing
    # Dearest for these tokens, not by the list price: many prompt tokens, few completion ones.
    uneven = {"m": {"a": Price(Decimal(1), Decimal(10)), "b": Price(Decimal(5), Decimal(5))}}
    assert prices.price_for(uneven, "m", "", 1000, 10) == Price(Decimal(5), Decimal(5))
    assert prices.price_for(uneven, "m", "", 10, 1000) == Price(Decimal(1), Decimal(10))


@pytest.mark.django_db
def test_refresh_keeps_what_an_admin_set(capsys):
    ModelPrice.objects.create(
        model="openai/gpt-oss-120b",
        provider="cerebras",
        input_per_million=Decimal("9"),
        output_per_million=Decimal("9"),
    )
    call_command("refresh_prices", "--file", str(LISTING))
    assert "2 prices from the router's list; 1 set in the admin kept" in capsys.readouterr().out
    table = prices.table()
    assert table["openai/gpt-oss-120b"]["cerebras"] == Price(Decimal("9"), Decimal("9"))
    assert table["openai/gpt-oss-120b"]["fireworks-ai"] == Price(Decimal("0.15"), Decimal("0.6"))
    # A changed router price is taken on the next refresh.
    changed = json.loads(LISTING.read_text())
    changed["data"][0]["providers"][0]["pricing"]["input"] = 0.2
    prices.refresh(changed)
    assert ModelPrice.objects.get(provider="fireworks-ai").input_per_million == Decimal("0.2")


async def test_each_record_gets_its_provider_price_and_cost(async_client, hf, usage_db):
    from asgiref.sync import sync_to_async

    await sync_to_async(call_command)("refresh_prices", "--file", str(LISTING))
    route = hf.post("/chat/completions")
    route.side_effect = [
        httpx.Response(200, json=completion(usage=(1000, 500)), headers={"x-inference-provider": "cerebras"}),
        httpx.Response(200, json=completion(usage=(1000, 500))),
        httpx.Response(200, json=completion(usage=(1000, 500))),
    ]
    for model, rid in (
        ("openai/gpt-oss-120b:fastest", "named-by-router"),
        ("openai/gpt-oss-120b:fireworks-ai", "named-by-suffix"),
        ("openai/gpt-oss-120b:cheapest", "unknown"),
    ):
        body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]}).encode()
        response = await async_client.post(
            "/v1/chat/completions", body, content_type="application/json", headers={"x-request-id": rid}
        )
        assert response.status_code == 200
    await writer.flush()
    rows = {
        r.request_id: (r.provider, r.price_input, r.price_output, r.cost_usd)
        async for r in UsageRecord.objects.all()
    }
    assert rows == {
        # 1000 * 0.25 + 500 * 0.69 = 595 per million
        "named-by-router": ("cerebras", Decimal("0.25"), Decimal("0.69"), Decimal("0.000595")),
        # 1000 * 0.15 + 500 * 0.6 = 450 per million
        "named-by-suffix": ("fireworks-ai", Decimal("0.15"), Decimal("0.6"), Decimal("0.00045")),
        # unknown provider: the dearest price listed for the model, and said so
        "unknown": ("", Decimal("0.25"), Decimal("0.69"), Decimal("0.000595")),
    }


@pytest.fixture
def usd_key(user) -> str:
    return services.api_key_create(user=user, name="dollar", usd_budget=Decimal("0.01"))[1]


async def test_a_record_keeps_cached_and_reasoning_tokens_and_prices_the_cached_ones(
    async_client, hf, usage_db
):
    await ModelPrice.objects.acreate(
        model="m/cached",
        provider="p",
        input_per_million=Decimal("2"),
        output_per_million=Decimal("4"),
        cached_input_per_million=Decimal("0.5"),
    )
    answer = completion(model="m/cached", usage=(1000, 300))
    answer["usage"]["prompt_tokens_details"] = {"cached_tokens": 800}
    answer["usage"]["completion_tokens_details"] = {"reasoning_tokens": 200}
    hf.post("/chat/completions").respond(200, json=answer, headers={"x-inference-provider": "p"})
    body = json.dumps({"model": "m/cached", "messages": [{"role": "user", "content": "hi"}]}).encode()
    response = await async_client.post("/v1/chat/completions", body, content_type="application/json")
    assert response.status_code == 200
    await writer.flush()
    record = await UsageRecord.objects.aget()
    assert (record.prompt_tokens, record.cached_tokens, record.reasoning_tokens) == (1000, 800, 200)
    # 200 * 2 + 800 * 0.5 + 300 * 4 = 2000 per million
    assert record.cost_usd == Decimal("0.002")


async def test_a_usd_budget_refuses_once_the_costs_reach_it(usd_key, hf, usage_db):
    from asgiref.sync import sync_to_async

    await sync_to_async(call_command)("refresh_prices", "--file", str(LISTING))
    hf.post("/chat/completions").respond(
        200, json=completion(usage=(10000, 5000)), headers={"x-inference-provider": "fireworks-ai"}
    )
    client = AsyncClient(authorization=f"Bearer {usd_key}")
    # A request reserves its prompt's estimate and max_tokens at the dearest price; the provider
    # then counts far more (10,000 + 5,000: a provider's word wins), so the third one crosses it.
    body = json.dumps(
        {"model": "openai/gpt-oss-120b", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    ).encode()

    async def ask() -> int:
        response = await client.post("/v1/chat/completions", body, content_type="application/json")
        await writer.flush()
        await runtime.background()  # its cost is counted as it ends
        return response.status_code

    # $0.0045 a request against $0.01: the third one crosses it, the fourth is refused.
    assert [await ask() for _ in range(4)] == [200, 200, 200, 429]
    refused = await client.post("/v1/chat/completions", body, content_type="application/json")
    assert refused.json()["error"]["code"] == "insufficient_quota"
    assert "$0.01 used up" in refused.json()["error"]["message"]
    # A process that starts counting afresh starts from what the records cost.
    counters.reset()
    assert await ask() == 429


async def test_a_usd_budget_counts_images_at_their_price_each(usd_key, hf, usage_db):
    await ModelPrice.objects.acreate(
        model="org/flux", provider="hf-inference", unit=ModelPrice.Unit.IMAGES, per_unit=Decimal("0.003")
    )
    hf.post(f"{settings.HF_INFERENCE_URL}/models/org/flux").respond(
        200, content=b"\x89PNG\r\n\x1a\n", headers={"content-type": "image/png"}
    )
    client = AsyncClient(authorization=f"Bearer {usd_key}")
    body = json.dumps({"model": "org/flux:hf-inference", "prompt": "a cat", "n": 2}).encode()

    async def ask() -> int:
        response = await client.post("/v1/images/generations", body, content_type="application/json")
        await writer.flush()
        return response.status_code

    # Two images at $0.003 are $0.006 a request against $0.01: the second crosses it.
    assert [await ask() for _ in range(3)] == [200, 200, 429]
    records = [r async for r in UsageRecord.objects.filter(outcome="ok")]
    assert [(r.units, r.usage_source, r.cost_usd) for r in records] == [(2, "provider", Decimal("0.006"))] * 2


def test_the_usd_budget_seed_sums_the_months_records_rounded_up(user):
    key, _ = services.api_key_create(user=user, name="k")
    base = {"user": user, "api_key": key, "endpoint": "chat_completions", "outcome": "ok"}
    for request_id, cost in (("a", "0.00000151"), ("b", "2.5")):
        UsageRecord.objects.create(
            request_id=request_id,
            status=200,
            usage_source="provider",
            latency_ms=1,
            total_tokens=1,
            cost_usd=Decimal(cost),
            **base,
        )
    month_start = timezone.now().replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    assert limits._microdollars_in_db(key.pk, month_start) == 2_500_002  # rounded up, never down


async def test_the_server_refreshes_the_table_from_the_router(hf, usage_db):
    from gateway import catalog

    route = hf.get("/models").respond(200, json=json.loads(LISTING.read_text()))
    assert await catalog.refresh_prices() == (3, 0)
    assert route.calls.last.request.headers["authorization"] == f"Bearer {settings.HF_TOKEN}"
    assert await ModelPrice.objects.filter(source=ModelPrice.Source.ROUTER).acount() == 3
