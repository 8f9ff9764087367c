"""A new key's first call: the snippets shown with it, and the model they use."""

from __future__ import annotations

import json

from accounts.admin import snippets


def test_the_example_model_is_the_default_unless_the_allow_list_excludes_it(settings):
    settings.DEFAULT_MODEL = "openai/gpt-oss-120b"
    assert snippets.example_model(()) == "openai/gpt-oss-120b"
    assert snippets.example_model(("openai/*",)) == "openai/gpt-oss-120b"
    assert snippets.example_model(("meta-llama/*", "meta-llama/Llama-3.3-70B")) == "meta-llama/Llama-3.3-70B"
    assert snippets.example_model(("meta-llama/*",)) == "openai/gpt-oss-120b"  # no exact id to offer


def test_the_snippets_carry_the_base_url_the_key_and_the_model():
    shown = snippets.usage_snippets("https://proxy.example/v1", "hfp_secret", "m/one")
    assert [snippet["id"] for snippet in shown] == [
        "snippet-curl",
        "snippet-python",
        "snippet-env",
        "snippet-codex",
        "snippet-claude",
    ]
    curl, python, environment, codex, claude = (snippet["text"] for snippet in shown)
    assert 'base_url = "https://proxy.example/v1"' in codex and 'wire_api = "responses"' in codex
    assert "export ANTHROPIC_BASE_URL=https://proxy.example\n" in claude
    assert curl.startswith("curl https://proxy.example/v1/chat/completions")
    assert json.loads(curl.split("-d '")[1].rstrip("'"))["model"] == "m/one"
    assert 'OpenAI(base_url="https://proxy.example/v1", api_key="hfp_secret")' in python
    assert environment == "export OPENAI_BASE_URL=https://proxy.example/v1\nexport OPENAI_API_KEY=hfp_secret"
