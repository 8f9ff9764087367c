"""The team's day in a real browser (issue 17): a member signs in with the company's OpenID
Connect provider, makes a key in the portal, calls the API with it (the openai SDK, through the
fake router), and sees the request in "My usage"; their team admin sees it on the team's page and
revokes the key, and the next call is a 401 within AUTH_CACHE_TTL."""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

import openai
import pytest

from tests.support.browser import BROWSER, local_page, served_site
from tests.support.harness import Router
from tests.support.oidc import oidc_provider
from tests.support.processes import free_port, manage

pytestmark = BROWSER

CLIENT = {"client_id": "hfproxy-team-flow", "client_secret": "a-client-secret-for-the-team-flow"}
ACCOUNTS = {
    "ann": {"email": "ann@example.com", "email_verified": True, "name": "Ann", "preferred_username": "ann"},
    "tess": {
        "email": "tess@example.com",
        "email_verified": True,
        "name": "Tess",
        "preferred_username": "tess",
    },
    # Outside SIGNUP_EMAIL_DOMAINS: ivy is invited, eve is not.
    "ivy": {"email": "ivy@elsewhere.org", "email_verified": True, "name": "Ivy", "preferred_username": "ivy"},
    "eve": {"email": "eve@elsewhere.org", "email_verified": True, "name": "Eve", "preferred_username": "eve"},
}
MODEL = "openai/gpt-oss-120b"


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    provider_port = free_port()
    providers = [
        {
            "id": "company",
            "name": "Company ID",
            "server_url": f"http://localhost:{provider_port}",
            "client_id": CLIENT["client_id"],
            "secret": CLIENT["client_secret"],
        }
    ]
    router = Router()
    router.start()
    with contextlib.ExitStack() as stack:
        stack.callback(router.stop)
        base, env = stack.enter_context(
            served_site(
                tmp_path_factory.mktemp("db"),
                router=router.url,
                OIDC_PROVIDERS=json.dumps(providers),
                SIGNUP_EMAIL_DOMAINS="example.com",
                SECURE_COOKIES="false",
                AUTH_CACHE_TTL="1",
                USAGE_FLUSH_INTERVAL="0.1",
            )
        )
        client = {
            **CLIENT,
            "redirect_uris": [f"{base}/accounts/oidc/company/login/callback/"],
            "token_endpoint_auth_method": "client_secret_post",
        }
        issuer = stack.enter_context(oidc_provider(provider_port, clients=[client], accounts=ACCOUNTS))
        manage("create_team", "ml", "--token-budget", "1000000", env=env)
        yield {"site": base, "issuer": issuer, "env": env}


def screenshot(page, tmp_path, name: str) -> None:
    folder = Path(os.environ.get("BROWSER_SCREENSHOTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / name), full_page=True)


@contextlib.contextmanager
def signed_in(servers, login: str, lands_on: str = "/portal/"):
    """A browser page signed in as `login` through the provider's login and consent pages."""
    with local_page(
        servers["site"],
        servers["issuer"],
        ignored=("https://fonts.googleapis.com/",),
        viewport={"width": 1000, "height": 800},
    ) as page:
        page.goto(servers["site"] + "/portal/")
        page.wait_for_url("**/accounts/login/?next=/portal/")
        page.click("button[data-provider=company]")
        page.wait_for_url(servers["issuer"] + "/interaction/**")
        page.fill("input[name=login]", login)
        page.fill("input[name=password]", "any password: the test provider takes it")
        page.click("button[type=submit]")
        page.wait_for_url(servers["issuer"] + "/interaction/**")
        page.click("button[type=submit]")  # consent
        page.wait_for_url(servers["site"] + lands_on)
        yield page


def call(servers, key: str):
    client = openai.OpenAI(base_url=servers["site"] + "/v1", api_key=key, max_retries=0, timeout=20)
    return client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=5
    )


def test_a_member_makes_a_key_uses_it_and_their_team_admin_revokes_it(servers, tmp_path):
    env = servers["env"]
    with signed_in(servers, "tess"):
        pass  # her first sign-in makes her user
    with signed_in(servers, "ann") as page:
        manage("add_team_member", "ml", "ann", env=env)
        manage("add_team_member", "ml", "tess", "--admin", env=env)
        page.goto(servers["site"] + "/portal/keys/")
        page.fill("input[name=name]", "laptop")
        page.select_option("select[name=team]", label="ml")
        page.click("text=Create key")
        page.wait_for_url("**/portal/keys/*/created/")
        key = page.input_value("#new-api-key")
        assert key.startswith("hfp_") and page.locator("#snippet-codex").count() == 1
        screenshot(page, tmp_path, "team-flow-key-created.png")
        page.reload()  # a reload shows it no more, and makes no other
        assert page.locator("#new-api-key").count() == 0 and page.locator("#key-shown-already").count() == 1

        answer = call(servers, key)
        assert answer.choices[0].message.content

        deadline = time.monotonic() + 20
        while True:  # written within USAGE_FLUSH_INTERVAL
            page.goto(servers["site"] + "/portal/usage/")
            # Both of the page's reads: the record may be written between them.
            if (
                page.locator("#recent tbody tr[data-request-id]").count() == 1
                and MODEL in page.locator("#by-model").inner_text()
            ):
                break
            assert time.monotonic() < deadline, "the request never showed in My usage"
            time.sleep(0.3)
        assert MODEL in page.locator("#recent").inner_text()
        assert page.locator("#by-model").inner_text().count(MODEL) == 1
        screenshot(page, tmp_path, "team-flow-my-usage.png")

    with signed_in(servers, "tess") as page:
        page.click("text=Team ml")
        page.wait_for_url("**/portal/teams/*/")
        assert "ann" in page.locator("#members").inner_text()
        assert MODEL in page.locator("#recent").inner_text() and "ann" in page.locator("#recent").inner_text()
        row = page.locator(f"#team-keys tr[data-prefix='{key[:12]}']")
        assert row.count() == 1
        screenshot(page, tmp_path, "team-flow-team-page.png")
        row.locator("button.danger").click()
        page.wait_for_url("**/portal/teams/*/")
        assert "revoked" in page.locator(f"#team-keys tr[data-prefix='{key[:12]}']").inner_text()

    deadline = time.monotonic() + 10  # AUTH_CACHE_TTL is 1 s here
    while True:
        try:
            call(servers, key)
        except openai.AuthenticationError as refused:
            assert refused.status_code == 401
            break
        assert time.monotonic() < deadline, "the revoked key still works"
        time.sleep(0.2)


def test_a_team_admin_invites_an_address_and_its_owner_joins_at_sign_in(servers, tmp_path):
    env = servers["env"]
    with signed_in(servers, "tess") as page:
        manage("add_team_member", "ml", "tess", "--admin", env=env)
        page.goto(servers["site"] + "/portal/")
        page.click("text=Team ml")
        page.wait_for_url("**/portal/teams/*/")
        page.fill("input[name=add_member]", "ivy@elsewhere.org")
        page.click("#members ~ form button[type=submit]")
        page.wait_for_url("**/portal/teams/*/")
        assert page.locator("#invitations tr[data-email='ivy@elsewhere.org']").count() == 1
        screenshot(page, tmp_path, "team-flow-invitation.png")
    # Not invited, outside the allowed domains: refused with a page that says why.
    with signed_in(servers, "eve", lands_on="/accounts/oidc/company/login/callback/**") as page:
        assert page.locator("h1").count() == 1 and "/portal/" not in page.url
    with signed_in(servers, "ivy") as page:  # invited: she joins, and may put a key on the team
        page.goto(servers["site"] + "/portal/keys/")
        assert "ml" in page.locator("select[name=team]").inner_text()
    with signed_in(servers, "tess") as page:
        page.click("text=Team ml")
        page.wait_for_url("**/portal/teams/*/")
        assert page.locator("#members tr[data-member='ivy']").count() == 1
        assert page.locator("#invitations").count() == 0
