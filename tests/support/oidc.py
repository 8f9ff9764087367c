"""A real OpenID Connect provider on localhost for the sign-in tests: panva's oidc-provider
(npm, OpenID-certified) run by Node.js from tests/support/oidc_provider, with its development
login and consent pages, requiring PKCE of every client."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.support.npm import missing, npm_ci
from tests.support.processes import stop

FOLDER = Path(__file__).resolve().parent / "oidc_provider"


@contextlib.contextmanager
def oidc_provider(port: int, *, clients: list[dict], accounts: dict[str, dict]) -> Iterator[str]:
    """The provider on `port`, knowing `clients` (oidc-provider's client metadata) and
    `accounts` (login → claims; any password is accepted): its issuer URL."""
    npm_ci(FOLDER, "oidc-provider")
    node = shutil.which("node")
    if node is None:
        missing("node is missing (apt-get install nodejs), needed for the OpenID Connect provider")
    env = {
        "PATH": "/usr/bin:/bin",
        "NODE_ENV": "development",
        "OIDC_TEST_PORT": str(port),
        "OIDC_TEST_CLIENTS": json.dumps(clients),
        "OIDC_TEST_ACCOUNTS": json.dumps(accounts),
    }
    process = subprocess.Popen([node, "server.mjs"], cwd=FOLDER, env=env)
    issuer = f"http://localhost:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the OpenID Connect provider exited with {process.returncode}")
            try:
                httpx.get(
                    f"http://127.0.0.1:{port}/.well-known/openid-configuration", timeout=1
                ).raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise RuntimeError("the OpenID Connect provider did not come up") from None
                time.sleep(0.1)
        yield issuer
    finally:
        stop(process)
