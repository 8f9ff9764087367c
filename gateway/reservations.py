"""What a request may use at most, estimated from its body before it goes upstream, so that its
key's budgets can hold it while it runs (accounts.limits: budgets are caps).

Its prompt's estimate (the same as when a provider counts no usage) plus the most it may
generate: its `max_tokens` (or the API's name for it), else BUDGET_DEFAULT_RESERVATION; and those
tokens' cost at the dearest price listed for the model. Made only for a key with a budget: others
pay nothing for it.
"""

from __future__ import annotations

import math
from typing import Any

from django.conf import settings

from accounts import prices
from accounts.limits import MICRO, NOTHING, KeyLimits, Reservation
from gateway import converter
from gateway import messages as messages_api
from gateway import responses as responses_api


def _chat(body: dict[str, Any]) -> tuple[int, int]:
    n = body.get("n") if converter.is_integer(body.get("n")) else 1
    asked = _first_integer(body, "max_completion_tokens", "max_tokens")
    return converter.estimate_prompt_tokens(body["messages"], body.get("tools")), asked * max(1, int(n))


def _responses(body: dict[str, Any]) -> tuple[int, int]:
    return responses_api.estimate_prompt_tokens(body), _first_integer(body, "max_output_tokens")


def _messages(body: dict[str, Any]) -> tuple[int, int]:
    return messages_api.estimate_input_tokens(body), _first_integer(body, "max_tokens")


def _embeddings(body: dict[str, Any]) -> tuple[int, int]:
    return converter.tokens_for(converter.text_size(body.get("input"))), 0


# The endpoints that use tokens: (prompt, answer) tokens at most, from the parsed body.
_SIZES = {
    "chat_completions": _chat,
    "responses": _responses,
    "messages": _messages,
    "embeddings": _embeddings,
}


def _first_integer(body: dict[str, Any], *names: str) -> int:
    for name in names:
        value = body.get(name)
        if converter.is_integer(value) and value >= 0:
            return int(value)
    return settings.BUDGET_DEFAULT_RESERVATION


def _budgets(rules: list[KeyLimits]) -> tuple[bool, bool]:
    """(any budget, any USD budget) among these limits."""
    usd = any(r.usd_budget is not None for r in rules)
    return usd or any(r.token_budget is not None or r.lifetime_token_budget is not None for r in rules), usd


async def of(endpoint: str, raw: bytes, default_model: str, rules: list[KeyLimits]) -> Reservation:
    """The reservation of a request to `endpoint` with body `raw`, counted against `rules` (its
    key's limits and its team's): NOTHING when none has a budget, or the endpoint uses no
    tokens. A body the endpoint will refuse reserves nothing: its request ends with a 400 before
    going anywhere."""
    budgeted, usd = _budgets(rules)
    if not budgeted:
        return NOTHING
    # Loaded (once every PRICES_CACHE_TTL at most) for any request of a USD budget: its cost is
    # counted by this copy as it ends (services.usage_record).
    table = await prices.current() if usd else {}
    sizes = _SIZES.get(endpoint)
    if sizes is None:
        return NOTHING
    try:
        body = converter.parse_json_object(raw)
        prompt, answer = sizes(body)
    except (converter.InvalidRequest, TypeError, KeyError, AttributeError, ValueError):
        return NOTHING
    model = body.get("model", default_model)
    microdollars = 0
    if usd and isinstance(model, str):
        price = prices.price_for(table, model, prices.provider_of(model, ""), prompt, answer)
        if price is not None:
            microdollars = math.ceil(prices.cost(prompt, answer, price) * MICRO)
    return Reservation(prompt + answer, microdollars)
