"""Every key's default share of this worker: at most KEY_MAX_IN_FLIGHT of its requests in
flight here, so that one key cannot take all of the worker's router connections
(UPSTREAM_MAX_CONNECTIONS) and starve the others.

The resource is per worker, so is the count: a dict in process memory, no I/O on the hot path.
A key's own `max_parallel` (`accounts.limits`, across workers) applies as well. A share is
taken by `take()` when a request is admitted and given back by `give_back()` when its exchange
finishes, however it ends.
"""

from __future__ import annotations

from django.conf import settings

from accounts import runtime
from accounts.limits import Refusal

REFUSAL = "share"  # the Refusal's kind, and the metrics' `limit` label

_in_flight: dict[int, int] = {}


def take(key_id: int) -> bool:
    """Count one more request of this key in flight; `Refusal` when its share is full.
    False when shares are off (KEY_MAX_IN_FLIGHT=0): there is nothing to give back."""
    limit = settings.KEY_MAX_IN_FLIGHT
    if not limit:
        return False
    held = _in_flight.get(key_id, 0)
    if held >= limit:
        raise Refusal(
            REFUSAL,
            f"Too many requests in flight for this key: at most {limit} at a time on each of "
            "the proxy's workers, so that one key cannot take all of its connections.",
            1,
            {},
        )
    _in_flight[key_id] = held + 1
    return True


def give_back(key_id: int) -> None:
    held = _in_flight.get(key_id, 0) - 1
    if held > 0:
        _in_flight[key_id] = held
    else:
        _in_flight.pop(key_id, None)  # idle keys take no memory


@runtime.resettable
def reset() -> None:
    _in_flight.clear()
