"""Checks of values typed by people, shared by the forms that take them and the services that
store them."""

from __future__ import annotations

from django.core.exceptions import ValidationError


def hf_token_value(value: str) -> str:
    """A Hugging Face token as typed, without the white space around it; ValidationError when
    it cannot be one (the router would refuse it on every request)."""
    value = value.strip()
    if not value or not value.isascii() or not value.isprintable() or " " in value:
        raise ValidationError("A Hugging Face token is one word of printable ASCII characters.")
    if len(value) < 8:
        raise ValidationError("That is too short to be a Hugging Face token.")
    return value
