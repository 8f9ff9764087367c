"""Write operations on keys and tokens. Views, admin and commands call these, nothing else."""

from __future__ import annotations

from datetime import datetime

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from accounts import allowlist, crypto, keys, limits, usage
from accounts.limits import Admission
from accounts.models import ApiKey, HuggingFaceToken
from accounts.usage import UsageEntry


def validate_hf_token(value: str) -> str:
    value = value.strip()
    if not value or not value.isascii() or not value.isprintable() or " " in value:
        raise ValidationError("A Hugging Face token is one word of printable ASCII characters.")
    if len(value) < 8:
        raise ValidationError("That is too short to be a Hugging Face token.")
    return value


def hf_token_create(*, name: str, value: str, owner: AbstractBaseUser | None = None) -> HuggingFaceToken:
    token = HuggingFaceToken(name=name, owner=owner)
    token.set_value(validate_hf_token(value))
    token.full_clean()
    token.save()
    return token


def api_key_create(
    *,
    user: AbstractBaseUser,
    name: str = "",
    hf_token: HuggingFaceToken | None = None,
    expires_at: datetime | None = None,
    allowed_models: str = "",
    **limits: int | None,
) -> tuple[ApiKey, str]:
    """Create a key; returns it with the plaintext, which exists nowhere else from now on.

    `limits`: any of ApiKey.LIMIT_FIELDS (rpm, tpm, token_budget, …)."""
    if hf_token is not None and hf_token.owner_id not in (None, user.pk):
        raise ValidationError(f"The Hugging Face token {hf_token.name!r} belongs to another user.")
    plaintext = keys.generate()
    api_key = ApiKey.objects.create(
        user=user,
        name=name,
        prefix=plaintext[: keys.DISPLAY_LENGTH],
        digest=keys.digest(plaintext),
        hf_token=hf_token,
        expires_at=expires_at,
        allowed_models=", ".join(allowlist.parse_models(allowed_models)),
        **limits,
    )
    return api_key, plaintext


def api_key_revoke(*, api_key: ApiKey) -> ApiKey:
    if api_key.revoked_at is None:
        api_key.revoked_at = timezone.now()
        api_key.save(update_fields=["revoked_at"])
    # This process stops accepting it at once; other workers within AUTH_CACHE_TTL.
    keys.reset()
    return api_key


def api_key_find(key_or_prefix: str) -> ApiKey:
    """The key a full key or its display prefix names; ValidationError if none or several."""
    if keys.looks_like_a_key(key_or_prefix) and len(key_or_prefix) > keys.DISPLAY_LENGTH:
        found = ApiKey.objects.filter(digest=keys.digest(key_or_prefix))
    else:
        found = (
            ApiKey.objects.filter(prefix__startswith=key_or_prefix)
            if len(key_or_prefix) >= 6
            else ApiKey.objects.none()
        )
    matches = list(found[:2])
    if not matches:
        raise ValidationError(f"No API key matches {key_or_prefix[: keys.DISPLAY_LENGTH]!r}.")
    if len(matches) > 1:
        raise ValidationError(f"Several API keys match {key_or_prefix!r}; give more of it.")
    return matches[0]


def user_get_or_create(username: str) -> AbstractBaseUser:
    user_model = get_user_model()
    user, _ = user_model.objects.get_or_create(**{user_model.USERNAME_FIELD: username})
    return user


def hf_tokens_reencrypt() -> int:
    """Re-encrypt every stored token under the first FIELD_ENCRYPTION_KEY; returns the count.

    All or nothing: a token that no configured key decrypts aborts the whole run.
    """
    with transaction.atomic():
        tokens = list(HuggingFaceToken.objects.select_for_update())
        for token in tokens:
            token.encrypted_value = crypto.rotate(token.encrypted_value)
            token.save(update_fields=["encrypted_value"])
    keys.reset()
    return len(tokens)


def usage_record(*, entry: UsageEntry, admission: Admission | None) -> None:
    """A request is over: queue its usage record (priced and written off the event loop, in
    batches, by `usage.writer`) and settle its limits (its slot back, its tokens counted).

    Call it once per request, from the event loop; it neither waits nor touches the database.
    """
    usage.writer.record(entry)
    limits.settle(admission, entry.total_tokens or 0)
