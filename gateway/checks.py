"""System checks for a misconfigured gateway."""

from __future__ import annotations

from django.conf import settings
from django.core import checks

# The admin's own checks look for these in MIDDLEWARE; here they live in SITE_MIDDLEWARE.
_ADMIN_NEEDS = {
    "hfproxy.E001": "django.contrib.sessions.middleware.SessionMiddleware",
    "hfproxy.E002": "django.contrib.auth.middleware.AuthenticationMiddleware",
    "hfproxy.E003": "django.contrib.messages.middleware.MessageMiddleware",
    # And Django's deploy checks security.W001-W003:
    "hfproxy.E004": "django.middleware.security.SecurityMiddleware",
    "hfproxy.E005": "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "hfproxy.E006": "django.middleware.csrf.CsrfViewMiddleware",
}


@checks.register()
def check_site_middleware(app_configs, **kwargs):
    return [
        checks.Error(f"{path} must be in SITE_MIDDLEWARE for the admin to work.", id=check_id)
        for check_id, path in _ADMIN_NEEDS.items()
        if path not in settings.SITE_MIDDLEWARE
    ]


@checks.register()
def check_upstream_token(app_configs, **kwargs):
    if settings.HF_TOKEN:
        return []
    return [
        checks.Warning(
            "HF_TOKEN is not set: keys without a Hugging Face token of their own will get 502.",
            hint="Set HF_TOKEN in the environment or .env, or give every key its own token.",
            id="hfproxy.W001",
        )
    ]


@checks.register(deploy=True)
def check_https(app_configs, **kwargs):
    """Django's own HTTPS checks (security.W004, W008) pass trivially when SecurityMiddleware is
    not in MIDDLEWARE, which it never is here: the same checks on SITE_MIDDLEWARE's."""
    found = []
    if not settings.SECURE_HSTS_SECONDS:
        found.append(
            checks.Warning(
                "SECURE_HSTS_SECONDS is not set: browsers are not told to use HTTPS only.",
                hint="Set SECURE_HSTS_SECONDS (e.g. 31536000), or send Strict-Transport-Security "
                "from your TLS proxy and ignore this (docs/deployment.md).",
                id="hfproxy.W002",
            )
        )
    if not settings.SECURE_SSL_REDIRECT:
        found.append(
            checks.Warning(
                "SECURE_SSL_REDIRECT is off: the admin may be reached over plain HTTP.",
                hint="Set SECURE_SSL_REDIRECT=true (with TRUST_X_FORWARDED_PROTO=true behind a TLS "
                "proxy), or redirect at your TLS proxy and ignore this (docs/deployment.md).",
                id="hfproxy.W003",
            )
        )
    return found
