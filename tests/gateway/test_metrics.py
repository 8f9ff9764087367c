"""/metrics: Prometheus' text format after traffic, and only for whom it is meant."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from ipaddress import ip_network
from types import SimpleNamespace

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from accounts import services
from accounts.usage import writer
from gateway import metrics
from tests.accounts.test_usage import entry
from tests.support.answers import completion
from tests.support.clients import AsyncClient

TOKEN = "metrics-scrape-token-0123456789"


def samples(text: str) -> dict[tuple, float]:
    """Every sample of the exposition by (name, sorted labels)."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def scrape(**headers) -> dict[tuple, float]:
    response = await AsyncClient().get("/metrics", headers=headers)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    return samples(response.content.decode())


async def test_off_unless_configured():
    response = await AsyncClient().get("/metrics")
    assert response.status_code == 404


async def test_a_bearer_token_or_an_allowed_address(settings):
    settings.METRICS_TOKEN = TOKEN
    client = AsyncClient()
    assert (await client.get("/metrics")).status_code == 403
    assert (await client.get("/metrics", headers={"Authorization": "Bearer wrong"})).status_code == 403
    assert (await client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})).status_code == 200
    settings.METRICS_TOKEN = ""
    settings.METRICS_ALLOWED_IPS = [ip_network("10.0.0.0/8")]
    assert (await client.get("/metrics")).status_code == 403  # the test client is 127.0.0.1
    settings.METRICS_ALLOWED_IPS = [ip_network("10.0.0.0/8"), ip_network("127.0.0.1")]
    assert (await client.get("/metrics")).status_code == 200


@pytest.fixture
def one_a_minute(user) -> str:
    return services.api_key_create(user=user, name="one a minute", rpm=1)[1]


async def test_the_counters_after_traffic(settings, async_client, hf, one_a_minute):
    settings.METRICS_TOKEN = TOKEN
    auth = {"Authorization": f"Bearer {TOKEN}"}
    before = await scrape(**auth)
    hf.post("/chat/completions").mock(
        side_effect=[
            httpx.Response(200, json=completion(usage=(5, 3))),
            httpx.Response(200, json=completion(usage=(7, 2))),
            httpx.Response(503, text="busy"),
            httpx.Response(503, text="busy"),
            httpx.Response(200, json=completion(usage=(1, 1))),  # the limited key's first
        ]
    )
    body = json.dumps({"model": "org/metered", "messages": [{"role": "user", "content": "hi"}]}).encode()
    for _ in range(3):
        await async_client.post("/v1/chat/completions", body, content_type="application/json")
    limited = AsyncClient(authorization=f"Bearer {one_a_minute}")
    for _ in range(2):
        await limited.post("/v1/chat/completions", body, content_type="application/json")
    after = await scrape(**auth)

    def delta(name: str, **labels) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0) - before.get(key, 0)

    ok = {"endpoint": "chat_completions", "model": "org/metered", "status": "200", "outcome": "ok"}
    assert delta("hfproxy_requests_total", **ok) == 3
    assert delta("hfproxy_requests_total", **{**ok, "status": "502", "outcome": "upstream_error"}) == 1
    # Refused by a limit before its body was read: the model asked for is still known.
    assert delta("hfproxy_requests_total", **{**ok, "status": "429", "outcome": "refused"}) == 1
    assert delta("hfproxy_tokens_total", direction="prompt", model="org/metered", source="provider") == 13
    assert delta("hfproxy_tokens_total", direction="completion", model="org/metered", source="provider") == 6
    assert delta("hfproxy_upstream_errors_total", code="upstream_error") == 1
    assert delta("hfproxy_rate_limit_refusals_total", limit="requests") == 1
    assert delta("hfproxy_request_duration_seconds_count", endpoint="chat_completions", stream="false") == 5
    # The usage writer's queue is back where it was once the records are written.
    await writer.flush()
    final = await scrape(**auth)
    assert final[("hfproxy_usage_queue_depth", ())] == before.get(("hfproxy_usage_queue_depth", ()), 0)
    assert final[("hfproxy_usage_write_lag_seconds_count", ())] > before.get(
        ("hfproxy_usage_write_lag_seconds_count", ()), 0
    )


def test_made_up_model_names_cannot_grow_the_metrics(monkeypatch):
    monkeypatch.setattr(metrics, "_models", set())
    monkeypatch.setattr(metrics, "MAX_MODELS", 3)
    labels = [metrics.model_label(f"made/up-{i}") for i in range(6)]
    assert labels == ["made/up-0", "made/up-1", "made/up-2", "other", "other", "other"]
    assert metrics.model_label("made/up-1") == "made/up-1"


@pytest.mark.parametrize(
    ("address", "networks", "expected"),
    [
        ("127.0.0.1", ["127.0.0.1"], True),
        ("10.1.2.3", ["10.0.0.0/8"], True),
        ("::ffff:10.1.2.3", ["10.0.0.0/8"], True),  # IPv4 seen through an IPv6 socket
        ("10.1.2.3", ["192.168.0.0/16"], False),
        ("not an address", ["0.0.0.0/0"], False),
    ],
)
def test_the_allow_list(address, networks, expected):
    assert metrics.allowed(address, "", "", [ip_network(n) for n in networks]) is expected


def test_a_bad_allow_list_entry_stops_the_start_not_a_scrape():
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "hfproxy_site.settings",
            "ENV_FILE": "",
            "DEBUG": "true",
            "METRICS_ALLOWED_IPS": "10.0.0.0/8, not-an-ip",
        },
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0 and "METRICS_ALLOWED_IPS: 'not-an-ip'" in result.stderr


async def test_the_queue_depth_follows_the_usage_writer(settings, monkeypatch, tmp_path):
    settings.METRICS_TOKEN = TOKEN
    auth = {"Authorization": f"Bearer {TOKEN}"}
    depth = ("hfproxy_usage_queue_depth", ())
    before = (await scrape(**auth))[depth]
    monkeypatch.setattr(writer, "_worker", lambda: None)  # nothing writes meanwhile
    monkeypatch.setattr(writer, "_pending", [])
    settings.USAGE_JOURNAL_DIR = str(tmp_path)
    key = SimpleNamespace(user_id=1, pk=1)
    writer.record(entry(key))
    writer.record(entry(key))
    assert (await scrape(**auth))[depth] == before + 2
    await writer._written([], writer._pending)  # refused by the database: out of the queue too
    assert (await scrape(**auth))[depth] == before
