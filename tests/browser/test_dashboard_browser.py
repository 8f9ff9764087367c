"""The usage dashboard in a real browser: uvicorn serving hfproxy, headless Chromium (Debian's
package, driven by Playwright) logging in as staff and checking that the charts are drawn."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.browser import BROWSER, local_page, served_site

PASSWORD = "staff-password-for-the-browser-test"
pytestmark = BROWSER

# Run inside the server's environment by `manage.py shell`: a superuser and a day of usage.
SEED = f"""
from datetime import timedelta
import uuid
from django.contrib.auth import get_user_model
from django.utils import timezone
from accounts import services
from accounts.models import UsageRecord
users = get_user_model().objects
users.create_superuser("staff", "staff@example.com", {PASSWORD!r})
keys = [services.api_key_create(user=users.create_user(name))[0] for name in ("alice", "bob", "carol")]
now = timezone.now()
UsageRecord.objects.bulk_create(
    UsageRecord(
        id=uuid.uuid4(),
        created_at=now - timedelta(minutes=17 * n),
        request_id=f"seed-{{n}}",
        user_id=keys[n % 3].user_id,
        api_key=keys[n % 3],
        endpoint="chat_completions",
        model_requested=("openai/gpt-oss-120b", "Qwen/Qwen3-Coder")[n % 2],
        status=200 if n % 9 else 502,
        outcome="ok" if n % 9 else "upstream_error",
        total_tokens=40 + n if n % 9 else None,
        usage_source="provider" if n % 9 else "missing",
        latency_ms=200 + 13 * n,
        ttft_ms=50 + n if n % 2 else None,
    )
    for n in range(80)
)
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with served_site(tmp_path_factory.mktemp("db"), seed=SEED, HF_TOKEN="hf_browser_token_value") as (
        base,
        _,
    ):
        yield base


@pytest.fixture
def page(server):
    # Nothing but the server under test: any other request fails the test.
    with local_page(server, viewport={"width": 1280, "height": 1600}) as page:
        yield page


def test_staff_sees_the_dashboard_charts(server, page, tmp_path):
    page.goto(server + "/admin/accounts/usagerecord/dashboard/?period=24h")
    assert "/admin/login/" in page.url  # not logged in yet
    page.fill("#id_username", "staff")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url("**/admin/accounts/usagerecord/dashboard/**")

    charts = page.locator("svg.usage-chart")
    assert charts.count() == 3
    for index in range(3):
        chart = charts.nth(index)
        box = chart.bounding_box()
        assert box and box["width"] > 100 and box["height"] > 50, chart.get_attribute("data-chart")
        assert int(chart.get_attribute("data-total")) > 0
        bars = chart.locator("rect.bar")
        values = [int(value) for value in bars.evaluate_all("rects => rects.map(r => r.dataset.value)")]
        assert sum(values) == int(chart.get_attribute("data-total"))
        drawn = chart.locator("rect.bar:not([data-value='0'])")
        assert drawn.count() > 0
        for bar in range(drawn.count()):
            bar_box = drawn.nth(bar).bounding_box()
            assert bar_box and bar_box["width"] > 0 and bar_box["height"] > 0
    assert page.locator(".figure[data-figure=requests] .value").inner_text() == "80"
    assert page.locator("table.top-user tbody tr").count() == 3
    folder = Path(os.environ.get("BROWSER_SCREENSHOTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    shots = [folder / "usage-dashboard-24h.png", folder / "usage-dashboard-7d.png"]
    page.screenshot(path=str(shots[0]), full_page=True)

    page.click("a[data-period='7d']")
    page.wait_for_url("**period=7d")
    assert page.locator("svg.usage-chart[data-chart=requests]").get_attribute("data-total") == "80"
    page.screenshot(path=str(shots[1]), full_page=True)
    print("screenshots:", *shots)
