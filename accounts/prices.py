"""Prices per model and provider, and what a request cost by them.

The router's `GET /v1/models` lists, for each model, its providers with `pricing.input` and
`pricing.output` in USD per million tokens (and, for some, a cached-input price). `refresh()` keeps the `ModelPrice` table in step with
it (never touching prices an admin set); the usage writer prices each record as it writes it, from
a copy of the table reloaded every PRICES_CACHE_TTL seconds: nothing on the request's path.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from django.conf import settings

from accounts import runtime

if TYPE_CHECKING:
    from accounts.usage import UsageEntry

# Provider suffixes that choose a provider rather than name one (`model:fastest`).
ROUTING_POLICIES = {"fastest", "cheapest", "preferred", "auto"}
MILLION = Decimal(1_000_000)
CENT_MILLIONTHS = Decimal("0.00000001")  # the cost column's precision


@dataclass(frozen=True)
class Price:
    input: Decimal  # USD per million tokens
    output: Decimal
    cached_input: Decimal | None = None  # prompt tokens read from the cache; None: as input
    per_unit: Decimal | None = None  # models priced per image or per second of audio


def split_route(model: str) -> tuple[str, str]:
    """`org/model:provider` → (`org/model`, `provider`); no suffix → (model, "")."""
    base, _, suffix = model.partition(":")
    return base, suffix


def provider_of(model_requested: str, answered_by: str) -> str:
    """The provider that served a request: the one the router named, else the one the request
    named (a suffix that is not a routing policy), else unknown ("")."""
    if answered_by:
        return answered_by
    suffix = split_route(model_requested)[1]
    return "" if suffix in ROUTING_POLICIES else suffix


def price_for(
    table: dict[str, dict[str, Price]],
    model_requested: str,
    provider: str,
    prompt: int = 0,
    completion: int = 0,
) -> Price | None:
    """The price to bill: the provider's for the model. For a provider unknown (a policy such
    as `:fastest`) or unpriced, the offer that makes these tokens dearest, so that a budget is
    never under-counted. None: the model has no price at all (the request costs nothing)."""
    offers = table.get(split_route(model_requested)[0], {})
    if provider in offers:
        return offers[provider]
    if not offers:
        return None
    return max(
        offers.values(), key=lambda price: (cost(prompt, completion, price), price.input + price.output)
    )


def cost(
    prompt_tokens: int | None, completion_tokens: int | None, price: Price, cached_tokens: int | None = None
) -> Decimal:
    """USD for these tokens; cached prompt tokens at the cached price, where there is one."""
    prompt = Decimal(prompt_tokens or 0)
    cached = min(Decimal(cached_tokens or 0), prompt) if price.cached_input is not None else Decimal(0)
    total = (
        (prompt - cached) * price.input
        + cached * (price.cached_input or 0)
        + Decimal(completion_tokens or 0) * price.output
    ) / MILLION
    return total.quantize(CENT_MILLIONTHS)


def price_entry(entry: UsageEntry, table: dict[str, dict[str, Price]]) -> None:
    """Fill a usage entry's price and cost (the usage writer, as it writes the record)."""
    found, entry.cost_usd = priced(entry, table)
    if found is not None and entry.units is None:
        entry.price_input, entry.price_output = found.input, found.output


def priced(entry: UsageEntry, table: dict[str, dict[str, Price]]) -> tuple[Price | None, Decimal | None]:
    """The price a usage entry is billed at and its cost (None, None: it costs nothing).
    Images or audio seconds at the provider's price per unit (else the dearest listed for the
    model, as for tokens)."""
    if entry.units is not None:
        offers = {
            provider: price
            for provider, price in table.get(split_route(entry.model_requested)[0], {}).items()
            if price.per_unit is not None
        }
        found = offers.get(entry.provider) or max(offers.values(), key=lambda p: p.per_unit, default=None)
        if found is None:
            return None, None
        return found, (Decimal(entry.units) * found.per_unit).quantize(CENT_MILLIONTHS)
    if entry.total_tokens is None:
        return None, None
    prompt, completion = entry.prompt_tokens, entry.completion_tokens
    found = price_for(table, entry.model_requested, entry.provider, prompt, completion)
    if found is None:
        return None, None
    return found, cost(prompt, completion, found, entry.cached_tokens)


class _Table:
    """The copy of the price table, and when it was read (None: read it next time)."""

    def __init__(self) -> None:
        self.prices: dict[str, dict[str, Price]] = {}
        self.loaded_at: float | None = None


_copy = _Table()


def table() -> dict[str, dict[str, Price]]:
    """The price table by model and provider; read from the database at most every
    PRICES_CACHE_TTL seconds (call it from a thread that may use the database)."""
    if _copy.loaded_at is None or time.monotonic() - _copy.loaded_at > settings.PRICES_CACHE_TTL:
        from accounts.models import ModelPrice

        fresh: dict[str, dict[str, Price]] = {}
        for row in ModelPrice.objects.all():
            per_unit = row.per_unit if row.unit != ModelPrice.Unit.TOKENS else None
            fresh.setdefault(row.model, {})[row.provider] = Price(
                row.input_per_million, row.output_per_million, row.cached_input_per_million, per_unit
            )
        _copy.prices, _copy.loaded_at = fresh, time.monotonic()
    return _copy.prices


async def current() -> dict[str, dict[str, Price]]:
    """`table()` from the event loop: the copy as it is, read from the database (off the loop)
    only when it is stale: once every PRICES_CACHE_TTL seconds at most."""
    if _copy.loaded_at is None or time.monotonic() - _copy.loaded_at > settings.PRICES_CACHE_TTL:
        from accounts import offloop

        return await offloop.run(table)
    return _copy.prices


def cached() -> dict[str, dict[str, Price]]:
    """The copy as it is, never read afresh (synchronous code on the event loop)."""
    return _copy.prices


@runtime.resettable
def reset() -> None:
    """Read the table afresh next time (after a change; tests)."""
    _copy.loaded_at = None


def offers(listing: Any) -> dict[tuple[str, str], Price]:
    """(model, provider) → price from the router's model list; entries without a usable price
    are skipped."""
    found = {}
    for model in listing.get("data", []) if isinstance(listing, dict) else []:
        if not isinstance(model, dict) or not isinstance(model.get("id"), str):
            continue
        for offer in model.get("providers") or []:
            pricing = offer.get("pricing") if isinstance(offer, dict) else None
            name = offer.get("provider") if isinstance(offer, dict) else None
            if not isinstance(pricing, dict) or not isinstance(name, str) or not name:
                continue
            price = _price(pricing)
            if price is not None:
                found[(model["id"][:200], name[:64])] = price
    return found


# Names a listing may give the cached-input price under (the router lists it for some providers).
_CACHED_PRICE_KEYS = ("cached_input", "input_cache_read", "cache_read")


def _price(pricing: dict[str, Any]) -> Price | None:
    """A listed price, or None when its input or output price is missing or not a finite
    non-negative number (a bad cached price is dropped alone)."""
    amounts = [_amount(pricing.get("input")), _amount(pricing.get("output"))]
    if None in amounts:
        return None
    cached = next((_amount(pricing[key]) for key in _CACHED_PRICE_KEYS if key in pricing), None)
    return Price(*amounts, cached)


def _amount(value: Any) -> Decimal | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        return None
    return amount if amount.is_finite() and amount >= 0 else None


def refresh(listing: Any) -> tuple[int, int]:
    """Bring the router's prices into the table: (written, kept because an admin set them).
    Only rows the router owns are updated, in one statement each, so that a price an admin saves
    meanwhile is never overwritten."""
    from django.db import IntegrityError, transaction

    from accounts.models import ModelPrice

    written = kept = 0
    for (model, provider), price in offers(listing).items():
        values = {
            "input_per_million": price.input,
            "output_per_million": price.output,
            "cached_input_per_million": price.cached_input,
        }
        mine = ModelPrice.objects.filter(model=model, provider=provider, source=ModelPrice.Source.ROUTER)
        if mine.update(**values):
            written += 1
            continue
        try:
            with transaction.atomic():
                ModelPrice.objects.create(
                    model=model, provider=provider, source=ModelPrice.Source.ROUTER, **values
                )
            written += 1
        except IntegrityError:  # an admin's price for it
            kept += 1
    reset()
    return written, kept
