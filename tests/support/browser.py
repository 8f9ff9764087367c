"""What the browser tests share: Debian's Chromium driven by Playwright, and a real hfproxy
served by uvicorn on a scratch database."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator

import pytest

from tests.support.processes import free_port, manage, proxy_env, scratch_database, start, stop

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

playwright_api = pytest.importorskip(
    "playwright.sync_api", reason="Playwright is not installed (pip install playwright)"
)
# Each browser test module sets `pytestmark = BROWSER`. Without Chromium the tests are skipped,
# saying how to get it; under CI (which installs it) they fail instead.
BROWSER = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        shutil.which(CHROMIUM) is None and os.environ.get("CI") != "true",
        reason=f"{CHROMIUM} is missing: apt-get install chromium (Playwright's own download is not used)",
    ),
]


@contextlib.contextmanager
def served_site(
    folder, *, router: str = "http://127.0.0.1:9", seed: str = "", **settings: str
) -> Iterator[tuple[str, dict]]:
    """hfproxy under uvicorn on a scratch database (migrated, then `seed` run by `manage.py
    shell`), reached over plain HTTP on loopback: (base URL, its environment). The default
    router address answers nothing: pages that never call it."""
    port = free_port()
    with scratch_database(folder) as database:
        env = proxy_env(router, database, **settings)
        manage("migrate", "--verbosity", "0", env=env)
        if seed:
            manage("shell", "--command", seed, env=env)
        base = f"http://127.0.0.1:{port}"
        process = start(
            ["-m", "uvicorn", "hfproxy_site.asgi:application", "--port", str(port), "--lifespan", "on"],
            env,
            base + "/health",
        )
        try:
            yield base, env
        finally:
            stop(process)


@contextlib.contextmanager
def local_page(*origins: str, ignored: tuple[str, ...] = (), **page_options) -> Iterator:
    """A headless Chromium page that may reach only `origins`: any other request is refused,
    and fails the test when the page closes (unless its URL starts with one of `ignored`:
    refused all the same, but no fault of the page under test)."""
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(**page_options)
            elsewhere: list[str] = []
            allowed = tuple(origin.rstrip("/") + "/" for origin in origins)

            def only_local(route):
                url = route.request.url
                if url.startswith(allowed):
                    route.continue_()
                else:
                    if not url.startswith(ignored):
                        elsewhere.append(url)
                    route.abort()

            page.route("**/*", only_local)
            yield page
            assert not elsewhere, elsewhere
        finally:
            browser.close()
