"""System checks for a misconfigured gateway."""

from __future__ import annotations

from django.conf import settings
from django.core import checks

# The admin's own checks look for these in MIDDLEWARE; here they live in SITE_MIDDLEWARE.
_ADMIN_NEEDS = {
    "hfproxy.E001": "django.contrib.sessions.middleware.SessionMiddleware",
    "hfproxy.E002": "django.contrib.auth.middleware.AuthenticationMiddleware",
    "hfproxy.E003": "django.contrib.messages.middleware.MessageMiddleware",
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
