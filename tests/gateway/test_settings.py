"""Start-up configuration (hfproxy_site.settings): what refuses to start."""

import os
import subprocess
import sys
from pathlib import Path

from gateway import upstream

ROOT = Path(__file__).resolve().parents[2]


def import_settings(show="s.DEBUG, bool(s.SECRET_KEY)", **env) -> subprocess.CompletedProcess:
    """Import the settings in a fresh interpreter with this environment; print `show`."""
    unset = ("SECRET_KEY", "DEBUG", "DJANGO_SETTINGS_MODULE", "HF_TOKEN", "CORS_ORIGINS", "ALLOWED_HOSTS")
    clean = {k: v for k, v in os.environ.items() if k not in unset}
    return subprocess.run(
        [sys.executable, "-c", f"import hfproxy_site.settings as s; print({show})"],
        cwd=ROOT,
        env={**clean, "ENV_FILE": "", **env},
        capture_output=True,
        text=True,
    )


def test_it_refuses_to_start_without_a_secret_key_in_production():
    result = import_settings(DEBUG="false")
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr


def test_debug_may_run_without_a_secret_key():
    result = import_settings(DEBUG="true")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True True"


def test_it_refuses_to_start_without_allowed_hosts_in_production():
    result = import_settings(DEBUG="false", SECRET_KEY="x" * 50)
    assert result.returncode != 0
    assert "ALLOWED_HOSTS is not set" in result.stderr
    show = "s.ALLOWED_HOSTS, s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, hasattr(s, 'SECURE_PROXY_SSL_HEADER')"
    production = import_settings(show, DEBUG="false", SECRET_KEY="x" * 50, ALLOWED_HOSTS="a.example,b")
    assert production.stdout.strip() == "['a.example', 'b'] True True False"
    proxied = import_settings("s.SECURE_PROXY_SSL_HEADER", DEBUG="true", TRUST_X_FORWARDED_PROTO="true")
    assert proxied.stdout.strip() == "('HTTP_X_FORWARDED_PROTO', 'https')"


def test_it_refuses_an_unknown_transport():
    result = import_settings(SECRET_KEY="x" * 50, ALLOWED_HOSTS="h", UPSTREAM_TRANSPORT="carrier-pigeon")
    assert result.returncode != 0
    assert "UPSTREAM_TRANSPORT" in result.stderr


def test_a_key_s_share_defaults_to_half_the_pool_and_is_never_negative():
    show = "s.KEY_MAX_IN_FLIGHT"
    assert import_settings(show, DEBUG="true", UPSTREAM_MAX_CONNECTIONS="50").stdout.strip() == "25"
    assert import_settings(show, DEBUG="true", UPSTREAM_MAX_CONNECTIONS="1").stdout.strip() == "1"
    refused = import_settings(SECRET_KEY="x" * 50, ALLOWED_HOSTS="h", KEY_MAX_IN_FLIGHT="-1")
    assert refused.returncode != 0 and "KEY_MAX_IN_FLIGHT" in refused.stderr


def test_cors_origins_are_a_comma_list_or_a_star():
    show = "s.CORS_ALLOW_ALL_ORIGINS, s.CORS_ALLOWED_ORIGINS"
    listed = import_settings(show, DEBUG="true", CORS_ORIGINS="https://a.example,https://b.example")
    assert listed.stdout.strip() == "False ['https://a.example', 'https://b.example']"
    assert import_settings(show, DEBUG="true").stdout.strip() == "True []"


def test_a_token_with_stray_whitespace_is_trimmed_and_a_broken_one_refused():
    assert (
        import_settings("repr(s.HF_TOKEN)", DEBUG="true", HF_TOKEN=" hf_abc\n").stdout.strip() == "'hf_abc'"
    )
    broken = import_settings("s.HF_TOKEN", DEBUG="true", HF_TOKEN="hf_abc def")
    assert broken.returncode != 0 and "HF_TOKEN" in broken.stderr
    assert "hf_abc def" not in broken.stderr


async def test_the_client_has_explicit_timeouts(settings):
    settings.CONNECT_TIMEOUT, settings.READ_TIMEOUT = 3, 7
    upstream.reset()
    try:
        timeout = upstream.client().timeout
        assert (timeout.connect, timeout.read, timeout.pool) == (3, 7, 3)
    finally:
        await upstream.aclose()


def test_the_sign_in_settings_refuse_what_cannot_work():
    refused = {
        "PASSWORD_LOGIN": import_settings(DEBUG="true", PASSWORD_LOGIN="sometimes"),
        "leaves no way to sign in": import_settings(DEBUG="true", PASSWORD_LOGIN="off"),
        "SIGNUP_HF_ORGS needs": import_settings(DEBUG="true", SIGNUP_HF_ORGS="acme"),
        "HF_OAUTH_CLIENT_SECRET": import_settings(DEBUG="true", HF_OAUTH_CLIENT_ID="id"),
        "OIDC_PROVIDERS is not valid JSON": import_settings(DEBUG="true", OIDC_PROVIDERS="[{"),
    }
    for message, result in refused.items():
        assert result.returncode != 0 and message in result.stderr, (message, result.stderr[-300:])
    show = "s.PASSWORD_LOGIN, [a['provider_id'] for a in s.SOCIALACCOUNT_PROVIDERS['openid_connect']['APPS']]"
    off = import_settings(
        show, DEBUG="true", PASSWORD_LOGIN="off", HF_OAUTH_CLIENT_ID="i", HF_OAUTH_CLIENT_SECRET="s"
    )
    assert off.stdout.strip() == "off ['huggingface']", off.stderr
    assert import_settings(show, DEBUG="true").stdout.strip() == "everyone []"
