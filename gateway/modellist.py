"""The router's model list in OpenAI's shape, and finding one model in it. Pure: no I/O."""

from __future__ import annotations

from typing import Any

from gateway.converter import BadAnswer


def models_list(answer: Any) -> dict[str, Any]:
    """The router's model list in OpenAI's shape, keeping its extra fields."""
    items = answer.get("data") if isinstance(answer, dict) else answer
    if not isinstance(items, list):
        raise BadAnswer("the model list is not a list")
    return {
        "object": "list",
        "data": [model_entry(item) for item in items if isinstance(item, dict) and item.get("id")],
    }


def model_entry(item: dict[str, Any]) -> dict[str, Any]:
    model_id = str(item["id"])
    created = item.get("created")
    return {
        **item,
        "id": model_id,
        "object": "model",
        "created": created if isinstance(created, int) and not isinstance(created, bool) else 0,
        "owned_by": item.get("owned_by") or model_id.split("/")[0],
    }


def find_model(listing: dict[str, Any], model_id: str) -> dict[str, Any] | None:
    """The listing's entry for a model id; a provider suffix (`:fastest`) names the same model."""
    wanted = model_id.rsplit(":", 1)[0] if ":" in model_id else model_id
    for entry in listing["data"]:
        if entry["id"] == model_id or entry["id"] == wanted:
            return entry
    return None
