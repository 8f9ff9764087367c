"""System checks for a misconfigured gateway."""

from __future__ import annotations

from django.conf import settings
from django.core import checks


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
