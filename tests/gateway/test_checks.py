"""System checks: ours (gateway.checks), and Django's own, which look at the site's MIDDLEWARE."""

import os
import secrets
import subprocess
import sys
from pathlib import Path

from cryptography.fernet import Fernet
from django.core import checks

ROOT = Path(__file__).resolve().parents[2]
SESSIONS = "django.contrib.sessions.middleware.SessionMiddleware"


def ids(**kwargs) -> set[str]:
    return {message.id for message in checks.run_checks(**kwargs)}


def test_it_warns_when_no_upstream_token_is_set(settings):
    settings.HF_TOKEN = ""
    assert "hfproxy.W001" in ids()
    settings.HF_TOKEN = "hf_x"
    assert "hfproxy.W001" not in ids()


def test_a_site_without_sessions_fails_djangos_admin_checks(settings):
    assert "admin.E410" not in ids()
    settings.MIDDLEWARE = [path for path in settings.MIDDLEWARE if path != SESSIONS]
    assert "admin.E410" in ids()


def test_djangos_deploy_checks_look_at_https(settings):
    settings.SECURE_HSTS_SECONDS, settings.SECURE_SSL_REDIRECT = 0, False
    assert {"security.W004", "security.W008"} <= ids(include_deployment_checks=True)
    settings.SECURE_HSTS_SECONDS, settings.SECURE_SSL_REDIRECT = 31536000, True
    assert not {"security.W004", "security.W008"} & ids(include_deployment_checks=True)


def test_production_settings_pass_the_deploy_checks():
    """As .ci/run checks them (docs/deployment.md's production settings): warnings fail."""
    unset = ("DJANGO_SETTINGS_MODULE", "DATABASE_URL", "REDIS_URL")
    env = {k: v for k, v in os.environ.items() if k not in unset} | {
        "ENV_FILE": "",
        "DEBUG": "false",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "FIELD_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "ALLOWED_HOSTS": "proxy.example.com",
        "HF_TOKEN": "hf_ci_token",
        "TRUST_X_FORWARDED_PROTO": "true",
        "SECURE_SSL_REDIRECT": "true",
        "SECURE_HSTS_SECONDS": "31536000",
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": "true",
        "SECURE_HSTS_PRELOAD": "true",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
