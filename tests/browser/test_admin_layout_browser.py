"""The admin as a team admin sees it, in a real browser at 1366×768 (a common laptop screen):
the key and usage lists fit without scrolling sideways, and a new key is shown once, with a copy
button that works."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.support.browser import BROWSER, CHROMIUM, CHROMIUM_ARGS, playwright_api, served_site

pytestmark = BROWSER

PASSWORD = "staff-password-for-the-layout-test"
SCREEN = {"width": 1366, "height": 768}
KEY_PATTERN = re.compile(r"hfp_[A-Za-z0-9_-]{40,}")

# Run inside the server's environment by `manage.py shell`: a superuser, keys and usage with the
# long model and provider names real traffic has.
SEED = f"""
from datetime import timedelta
from decimal import Decimal
import uuid
from django.contrib.auth import get_user_model
from django.utils import timezone
from accounts import services
from accounts.models import ApiKey, UsageRecord
users = get_user_model().objects
users.create_superuser("staff", "staff@example.com", {PASSWORD!r})
token = services.hf_token_create(name="team-production-token", value="hf_layout_token_value")
keys = [
    services.api_key_create(user=users.create_user(name), name=f"{{name}}'s laptop (work)", hf_token=token,
                            expires_at=timezone.now() + timedelta(days=90), token_budget=5_000_000)[0]
    for name in ("alice.longname", "bob", "carol")
]
models = (
    "Qwen/Qwen3-Coder-480B-A35B-Instruct:fireworks-ai",
    "meta-llama/Llama-3.3-70B-Instruct:sambanova",
    "openai/gpt-oss-120b:cerebras",
)
outcomes = ("ok", "ok", "ok", "refused", "upstream_error", "client_disconnected")
now = timezone.now()
ApiKey.objects.update(last_used_at=now)
UsageRecord.objects.bulk_create(
    UsageRecord(
        id=uuid.uuid4(),
        created_at=now - timedelta(minutes=7 * n),
        request_id=uuid.uuid4().hex,
        user_id=keys[n % 3].user_id,
        api_key=keys[n % 3],
        endpoint="chat_completions",
        model_requested=models[n % 3],
        model_answered=models[n % 3].split(":")[0],
        provider=models[n % 3].split(":")[1],
        stream=bool(n % 2),
        status={{"ok": 200, "refused": 429, "upstream_error": 502, "client_disconnected": 499}}[outcomes[n % 6]],
        outcome=outcomes[n % 6],
        prompt_tokens=1200 + n,
        completion_tokens=3400 + n,
        total_tokens=4600 + 2 * n,
        cost_usd=Decimal("0.00123456"),
        usage_source="provider",
        latency_ms=12000 + 13 * n,
        ttft_ms=450 + n,
    )
    for n in range(120)
)
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with served_site(tmp_path_factory.mktemp("db"), seed=SEED) as (base, _):
        yield base


@pytest.fixture
def browser_context(server):
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            context = browser.new_context(viewport=SCREEN)
            yield context
        finally:
            browser.close()


@pytest.fixture
def page(server, browser_context):
    page = browser_context.new_page()
    page.goto(server + "/admin/login/?next=/admin/")
    page.fill("#id_username", "staff")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(server + "/admin/")
    return page


@pytest.fixture
def screenshots(tmp_path) -> Path:
    folder = Path(os.environ.get("BROWSER_SCREENSHOTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def page_width(page) -> int:
    return page.evaluate("document.scrollingElement.scrollWidth")


def hidden_width(page) -> int:
    """How much of the list's table its box scrolls out of sight (the admin lets a wide table
    scroll inside the page rather than widen it)."""
    return page.evaluate(
        "(box => box.scrollWidth - box.clientWidth)(document.querySelector('#changelist .results'))"
    )


@pytest.mark.parametrize("path", ["/admin/accounts/apikey/", "/admin/accounts/usagerecord/"])
def test_the_lists_fit_a_1366_px_screen(server, page, screenshots, path):
    page.goto(server + path)
    rows = page.locator("#result_list tbody tr")
    assert rows.count() > 0
    name = path.strip("/").replace("/", "-")
    page.screenshot(path=str(screenshots / f"{name}.png"))
    print("screenshot:", screenshots / f"{name}.png")
    assert page_width(page) <= SCREEN["width"]
    assert hidden_width(page) == 0
    # One line a row: no cell wraps a model name or a date over several lines.
    heights = rows.evaluate_all("rows => rows.map(row => row.getBoundingClientRect().height)")
    line = page.evaluate("parseFloat(getComputedStyle(document.querySelector('#result_list td')).lineHeight)")
    assert max(heights) < 2.5 * line, heights


@pytest.mark.parametrize(
    "path",
    [
        "/admin/",
        "/admin/accounts/usagerecord/dashboard/?period=24h",
        "/admin/accounts/huggingfacetoken/",
        "/admin/auth/user/",
        "/admin/auth/user/2/delete/",  # alice's: refused, with what to do instead
        "first:/admin/accounts/apikey/",
        "first:/admin/accounts/usagerecord/",
    ],
)
def test_the_other_pages_fit_a_1366_px_screen(server, page, screenshots, path):
    if path.startswith("first:"):  # the page of the list's first row
        page.goto(server + path.removeprefix("first:"))
        with page.expect_navigation():
            page.click("#result_list tbody tr:first-child a")
    else:
        page.goto(server + path)
    name = page.url.removeprefix(server).strip("/").split("?")[0].replace("/", "-") or "index"
    page.screenshot(path=str(screenshots / f"{name}.png"), full_page=True)
    assert page_width(page) <= SCREEN["width"], page.url


def test_a_new_key_is_shown_once_with_a_copy_button(server, page, browser_context, screenshots):
    browser_context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server)
    page.goto(server + "/admin/accounts/apikey/add/")
    page.select_option("#id_user", label="carol")
    page.fill("#id_name", "notebook")
    page.click("input[name=_save]")
    page.wait_for_url("**/created/")
    page.screenshot(path=str(screenshots / "api-key-created.png"), full_page=True)
    plaintext = page.input_value("#new-api-key")
    assert KEY_PATTERN.fullmatch(plaintext)
    assert page_width(page) <= SCREEN["width"]

    page.click("button[data-copy=new-api-key]")
    page.wait_for_function("document.querySelector('button[data-copy=new-api-key]').textContent !== 'Copy'")
    assert page.evaluate("navigator.clipboard.readText()") == plaintext
    page.click("button[data-copy=snippet-python]")
    page.wait_for_function(
        "document.querySelector('button[data-copy=snippet-python]').textContent !== 'Copy'"
    )
    copied = page.evaluate("navigator.clipboard.readText()")
    assert f'OpenAI(base_url="{server}/v1", api_key="{plaintext}")' in copied

    page.reload()
    assert not KEY_PATTERN.search(page.content())
    assert "shown already" in page.inner_text("#key-shown-already")
    page.goto(server + "/admin/accounts/apikey/?q=notebook")
    assert page.locator("#result_list tbody tr").count() == 1
