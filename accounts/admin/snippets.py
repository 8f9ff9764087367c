"""What a person pastes to make a first call with a new key (the page after the key's add form)."""

from __future__ import annotations

import json

from django.conf import settings
from django.utils.translation import gettext_lazy as _

from accounts import allowlist


def example_model(allowed: tuple[str, ...]) -> str:
    """A model a key with the allow-list `allowed` may use: DEFAULT_MODEL unless the list
    excludes it, then the list's first exact id."""
    if allowlist.model_allowed(allowed, settings.DEFAULT_MODEL):
        return settings.DEFAULT_MODEL
    return next((entry for entry in allowed if not set("*?[") & set(entry)), settings.DEFAULT_MODEL)


def usage_snippets(base_url: str, api_key: str, model: str) -> list[dict]:
    """curl, openai-python, and the environment variables the OpenAI SDKs read."""
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "Hello!"}]})
    curl = (
        f"curl {base_url}/chat/completions \\\n"
        f'  -H "Authorization: Bearer {api_key}" \\\n'
        '  -H "Content-Type: application/json" \\\n'
        f"  -d '{body}'"
    )
    python = (
        "from openai import OpenAI\n\n"
        f'client = OpenAI(base_url="{base_url}", api_key="{api_key}")\n'
        "answer = client.chat.completions.create(\n"
        f"    model={json.dumps(model)},\n"
        '    messages=[{"role": "user", "content": "Hello!"}],\n'
        ")\n"
        "print(answer.choices[0].message.content)"
    )
    environment = f"export OPENAI_BASE_URL={base_url}\nexport OPENAI_API_KEY={api_key}"
    codex = (
        "# ~/.codex/config.toml; then: export HFPROXY_KEY=" + api_key + "\n"
        f"model = {json.dumps(model)}\n"
        'model_provider = "hfproxy"\n\n'
        "[model_providers.hfproxy]\n"
        'name = "hfproxy"\n'
        f'base_url = "{base_url}"\n'
        'env_key = "HFPROXY_KEY"\n'
        'wire_api = "responses"'
    )
    # Claude Code adds /v1/messages itself.
    root = base_url.removesuffix(settings.API_PREFIX.rstrip("/")) if settings.API_PREFIX else base_url
    claude = f"export ANTHROPIC_BASE_URL={root}\nexport ANTHROPIC_AUTH_TOKEN={api_key}\nexport ANTHROPIC_MODEL={model}"
    return [
        {"id": "snippet-curl", "label": "curl", "text": curl},
        {"id": "snippet-python", "label": "openai-python", "text": python},
        {"id": "snippet-env", "label": _("Environment (any OpenAI SDK)"), "text": environment},
        {"id": "snippet-codex", "label": _("Codex CLI (config.toml)"), "text": codex},
        {"id": "snippet-claude", "label": _("Claude Code (environment)"), "text": claude},
    ]
