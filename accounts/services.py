"""Write operations on users, keys, tokens, prices and usage. The admin, the API, the commands
and the gateway call these, nothing else; each one also drops the caches its write makes stale
(the key lookups of `accounts.keys`, the prices of `accounts.prices`), so that no caller has to
remember to."""

from __future__ import annotations

import logging
import math
import smtplib
import uuid
from datetime import datetime

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.core.validators import validate_email
from django.db import transaction
from django.db.models import QuerySet
from django.db.models.functions import Lower
from django.utils import timezone

from accounts import allowlist, audit, crypto, keys, limits, permissions, prices, usage, validators
from accounts.limits import Admission
from accounts.models import ApiKey, HuggingFaceToken, ModelPrice, Team, TeamInvitation, TeamMember, UserPolicy
from accounts.usage import UsageEntry

logger = logging.getLogger("hfproxy.accounts")

# --- Users -------------------------------------------------------------------------------------


def user_get_or_create(*, username: str) -> AbstractBaseUser:
    """The user of that name; a new one only with a name the user model accepts (its field's
    validators and length, as the admin's forms check it), else ValidationError."""
    user_model = get_user_model()
    field = user_model.USERNAME_FIELD
    # First: a name the model refuses names nobody, and some (a NUL) PostgreSQL cannot even look up.
    user_model._meta.get_field(field).clean(username, None)
    user = user_model.objects.filter(**{field: username}).first()
    if user is None:
        user = user_model.objects.create(**{field: username})
    return user


def user_save(*, user: AbstractBaseUser) -> AbstractBaseUser:
    """Save a user changed by hand: their keys' lookups see it (a deactivation, a new name) at
    once here, elsewhere within AUTH_CACHE_TTL."""
    user.save()
    keys.reset()
    return user


# What a user's limits' audit entry compares when they change.
_POLICY_FIELDS = (
    *UserPolicy.LIMIT_FIELDS,
    "allowed_models",
    "total_rpm",
    "total_tpm",
    "total_token_budget",
    "total_usd_budget",
)


def user_policy_save(*, policy: UserPolicy, actor: AbstractBaseUser | None = None) -> UserPolicy:
    """Save a user's defaults for their keys and their limits on all of them; they apply at once
    here, elsewhere within AUTH_CACHE_TTL."""
    before = UserPolicy.objects.filter(pk=policy.pk).values(*_POLICY_FIELDS).first() if policy.pk else None
    policy.save()
    keys.reset()
    if changed := _changes(before, policy, _POLICY_FIELDS):
        audit.record(
            "user_limits_changed", actor=actor, target=f"user {policy.user.get_username()}", **changed
        )
    return policy


def user_deactivate(*, user: AbstractBaseUser) -> int:
    """Deactivate a user and revoke their keys; returns how many keys it revoked. Their usage
    stays: it is the team's history, and budgets and reports count it."""
    with transaction.atomic():
        revoked = ApiKey.objects.filter(user=user, revoked_at__isnull=True).update(revoked_at=timezone.now())
        if user.is_active:
            user.is_active = False
            user.save(update_fields=["is_active"])
    keys.reset()  # their keys stop at once here, elsewhere within AUTH_CACHE_TTL
    return revoked


# --- Hugging Face tokens -----------------------------------------------------------------------


def hf_token_check_new_owner(*, hf_token: HuggingFaceToken, owner: AbstractBaseUser | None) -> None:
    """`ApiKey.clean`'s rule from the token's side: a token that keys of other users call with
    can only stay shared or theirs."""
    if owner is not None and hf_token.pk is not None and hf_token.api_keys.exclude(user=owner).exists():
        raise ValidationError("Keys of other users use this token: it can only stay shared or theirs.")


def hf_token_create(*, name: str, value: str, owner: AbstractBaseUser | None = None) -> HuggingFaceToken:
    token = HuggingFaceToken(name=name, owner=owner)
    token.set_value(validators.hf_token_value(value))
    token.full_clean()
    token.save()
    return token


def hf_token_save(
    *, hf_token: HuggingFaceToken, value: str = "", actor: AbstractBaseUser | None = None
) -> HuggingFaceToken:
    """Save a new or changed token (the admin's form); `value`, when given, replaces the stored
    one. Keys using a changed token call with it at once here, elsewhere within AUTH_CACHE_TTL.
    `actor`: the staff user saving it (ValidationError unless they may give it its owner)."""
    changed = hf_token.pk is not None
    if changed:
        stored = HuggingFaceToken.objects.get(pk=hf_token.pk)
        permissions.check_token_owner(actor=actor, hf_token=stored, owner=hf_token.owner)
    else:
        permissions.check_token_owner(actor=actor, hf_token=hf_token, owner=hf_token.owner)
    if value:
        hf_token.set_value(validators.hf_token_value(value))
    hf_token_check_new_owner(hf_token=hf_token, owner=hf_token.owner)
    hf_token.save()
    if changed:
        keys.reset()
    return hf_token


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


# --- API keys ----------------------------------------------------------------------------------


def api_key_create(
    *,
    user: AbstractBaseUser,
    actor: AbstractBaseUser | None = None,
    name: str = "",
    hf_token: HuggingFaceToken | None = None,
    expires_at: datetime | None = None,
    allowed_models: str = "",
    team: Team | None = None,
    **limits: int | None,
) -> tuple[ApiKey, str]:
    """Create a key; returns it with the plaintext, which exists nowhere else from now on.

    `actor`: the staff user creating it (PermissionDenied unless they may create keys of
    `user`); none for the command line. ValidationError for another user's Hugging Face token.
    `team`: one of the user's teams (ValidationError if not theirs). `limits`: any of
    ApiKey.LIMIT_FIELDS (rpm, tpm, token_budget, …)."""
    permissions.check_key_user(actor=actor, user=user, creating=True)
    plaintext = keys.generate()
    api_key = ApiKey(
        user=user,
        name=name,
        prefix=plaintext[: keys.DISPLAY_LENGTH],
        digest=keys.digest(plaintext),
        hf_token=hf_token,
        expires_at=expires_at,
        allowed_models=", ".join(allowlist.parse_models(allowed_models)),
        team=team,
        **limits,
    )
    api_key.clean()
    api_key.save(force_insert=True)
    audit.record(
        "key_created",
        actor=actor,
        target=_key_target(api_key),
        team=team,
        user=user.get_username(),
        **{name: str(value) for name, value in limits.items() if value is not None},
    )
    return api_key, plaintext


def _key_target(api_key: ApiKey) -> str:
    return f"key {api_key.prefix} of {api_key.user.get_username()}"


# What a key's audit entry compares when it changes (never its digest).
_KEY_FIELDS = ("name", "hf_token_id", "team_id", "expires_at", "allowed_models", *ApiKey.LIMIT_FIELDS)


def _changes(before: dict | None, after, fields: tuple[str, ...]) -> dict:
    """field → [before, after] of what differs, as text."""
    before = before or {}
    pairs = {name: [_text(before.get(name)), _text(getattr(after, name))] for name in fields}
    # As text: a form's "50.00" is the database's Decimal("50.00").
    return {name: pair for name, pair in pairs.items() if pair[0] != pair[1]}


def _text(value) -> str | None:
    return None if value is None or value == "" else str(value)


def api_key_update(*, api_key: ApiKey, actor: AbstractBaseUser | None = None) -> ApiKey:
    """Save a key's changed name, token, expiry, allowed models or limits (the admin's form): they
    apply at once here, elsewhere within AUTH_CACHE_TTL. `actor` as for `api_key_create`."""
    permissions.check_key_user(actor=actor, user=api_key.user, creating=False)
    api_key.clean()
    before = ApiKey.objects.filter(pk=api_key.pk).values(*_KEY_FIELDS).first()
    api_key.save()
    keys.reset()
    if changed := _changes(before, api_key, _KEY_FIELDS):
        audit.record("key_changed", actor=actor, target=_key_target(api_key), team=api_key.team, **changed)
    return api_key


def api_key_revoke(*, api_key: ApiKey, actor: AbstractBaseUser | None = None) -> ApiKey:
    """`actor` as for `api_key_create`."""
    permissions.check_key_user(actor=actor, user=api_key.user, creating=False)
    if api_key.revoked_at is None:
        api_key.revoked_at = timezone.now()
        api_key.save(update_fields=["revoked_at"])
        audit.record("key_revoked", actor=actor, target=_key_target(api_key), team=api_key.team)
    # This process stops accepting it at once; other workers within AUTH_CACHE_TTL.
    keys.reset()
    return api_key


# --- Prices ------------------------------------------------------------------------------------


def model_price_save(*, price: ModelPrice) -> ModelPrice:
    """Save a price set by an admin: a custom one, which refreshing from the router leaves alone.
    This process prices with it at once; others within PRICES_CACHE_TTL."""
    price.source = ModelPrice.Source.CUSTOM
    price.save()
    prices.reset()
    return price


def model_prices_delete(*, model_prices: QuerySet[ModelPrice]) -> None:
    """Delete prices: this process stops pricing with them at once, others within
    PRICES_CACHE_TTL."""
    model_prices.delete()
    prices.reset()


# --- Teams -------------------------------------------------------------------------------------


def team_create(*, name: str, actor: AbstractBaseUser | None = None, **fields) -> Team:
    """A team; `fields`: its budgets, caps per member, allowed models, token, bill_to."""
    team = Team(name=name, **fields)
    team.full_clean()
    team.save(force_insert=True)
    given = {field: str(value) for field, value in fields.items() if value not in (None, "")}
    audit.record("team_created", actor=actor, target=f"team {team.name}", team=team, **given)
    return team


# What a team's audit entry compares when it changes.
_TEAM_FIELDS = (
    "name",
    "token_budget",
    "usd_budget",
    "member_rpm",
    "member_tpm",
    "member_token_budget",
    "member_usd_budget",
    "allowed_models",
    "hf_token_id",
    "bill_to",
)


def team_update(*, team: Team, actor: AbstractBaseUser | None = None) -> Team:
    """Save a team's changed limits: its keys see them at once here, elsewhere within
    AUTH_CACHE_TTL."""
    team.full_clean()
    before = Team.objects.filter(pk=team.pk).values(*_TEAM_FIELDS).first()
    team.save()
    keys.reset()
    if changed := _changes(before, team, _TEAM_FIELDS):
        audit.record("team_changed", actor=actor, target=f"team {team.name}", team=team, **changed)
    return team


def team_member_add(
    *, team: Team, user: AbstractBaseUser, admin: bool = False, actor: AbstractBaseUser | None = None
) -> TeamMember:
    """Add a user to a team, or change their role there."""
    role = TeamMember.Role.ADMIN if admin else TeamMember.Role.MEMBER
    member, _ = TeamMember.objects.update_or_create(team=team, user=user, defaults={"role": role})
    audit.record("member_added", actor=actor, target=f"user {user.get_username()}", team=team, role=role)
    return member


def team_member_remove(*, team: Team, user: AbstractBaseUser, actor: AbstractBaseUser | None = None) -> None:
    """Remove a user from a team: their keys on it stop working (revoked), within AUTH_CACHE_TTL."""
    with transaction.atomic():
        removed, _ = TeamMember.objects.filter(team=team, user=user).delete()
        revoked = ApiKey.objects.filter(team=team, user=user, revoked_at__isnull=True).update(
            revoked_at=timezone.now()
        )
        if removed:
            target = f"user {user.get_username()}"
            audit.record("member_removed", actor=actor, target=target, team=team, keys_revoked=revoked)
    keys.reset()


def team_invite(
    *,
    team: Team,
    email: str,
    admin: bool = False,
    actor: AbstractBaseUser | None = None,
    sign_in_url: str = "",
) -> TeamInvitation:
    """Invite someone by email address: they join the team when they sign in with it verified
    (`team_invitations_accept`), and may sign up with it whatever the sign-up rules. With email
    configured they are told, with `sign_in_url`; a failed delivery does not undo the invitation."""
    email = email.strip().lower()
    validate_email(email)
    role = TeamMember.Role.ADMIN if admin else TeamMember.Role.MEMBER
    with transaction.atomic():
        invitation, _ = TeamInvitation.objects.update_or_create(
            team=team,
            email__iexact=email,
            accepted_at__isnull=True,
            defaults={"email": email, "role": role, "invited_by": actor},
        )
        audit.record("member_invited", actor=actor, target=email, team=team, role=role)
    if settings.EMAIL_URL:
        inviter = actor.get_username() if actor is not None else "An administrator"
        text = (
            f"{inviter} invited you to the team {team.name} on hfproxy. Sign in with {email}: {sign_in_url}"
        )
        try:
            send_mail(f"hfproxy: join the team {team.name}", text, settings.DEFAULT_FROM_EMAIL, [email])
        except (OSError, smtplib.SMTPException) as error:
            logger.warning("the invitation to %s could not be emailed: %s", team.name, type(error).__name__)
    return invitation


def team_invitation_cancel(*, invitation: TeamInvitation, actor: AbstractBaseUser | None = None) -> None:
    if invitation.accepted_at is None and invitation.delete()[0]:
        audit.record("invitation_cancelled", actor=actor, target=invitation.email, team=invitation.team)


def verified_emails(user: AbstractBaseUser) -> set[str]:
    """The addresses `user` is known by for certain: those a sign-in provider verified, and the
    one an administrator set on an account that signs in with no provider."""
    from allauth.account.models import EmailAddress
    from allauth.socialaccount.models import SocialAccount

    found = {
        e.lower()
        for e in EmailAddress.objects.filter(user=user, verified=True).values_list("email", flat=True)
    }
    if user.email and not SocialAccount.objects.filter(user=user).exists():
        found.add(user.email.lower())
    return found


def team_invitations_accept(*, user: AbstractBaseUser) -> list[Team]:
    """Make `user` a member of every team that invited one of their verified addresses (at
    sign-in). The teams joined."""
    emails = verified_emails(user)
    if not emails:
        return []
    joined = []
    open_ones = TeamInvitation.objects.filter(accepted_at__isnull=True).select_related("team", "invited_by")
    for invitation in open_ones.annotate(address=Lower("email")).filter(address__in=emails):
        with transaction.atomic():
            if TeamInvitation.objects.filter(pk=invitation.pk, accepted_at__isnull=True).update(
                accepted_at=timezone.now(), accepted_by=user
            ):
                team_member_add(
                    team=invitation.team,
                    user=user,
                    admin=invitation.role == TeamMember.Role.ADMIN
                    or TeamMember.objects.filter(
                        team=invitation.team, user=user, role=TeamMember.Role.ADMIN
                    ).exists(),
                    actor=invitation.invited_by,
                )
                joined.append(invitation.team)
    return joined


# --- Usage -------------------------------------------------------------------------------------


def usage_started(*, entry_id: uuid.UUID, **fields) -> None:
    """A request is admitted: journal it (`fields`: its record's columns known by then), so that
    it is recorded even if this worker dies before it ends. One `write()`, no database."""
    usage.writer.started(entry_id, **fields)


def usage_record(*, entry: UsageEntry, admission: Admission | None) -> None:
    """A request is over: queue its usage record (priced and written off the event loop, in
    batches, by `usage.writer`) and settle its limits (its slot back, its tokens counted).

    Call it once per request, from the event loop; it neither waits nor touches the database.
    """
    cost = None
    if admission is not None and any(counter.startswith("usd:") for counter in admission.reserved):
        # Priced now, as the writer will price it (the same copy of the table): the USD budget
        # swaps the request's reservation for its cost at once, not when the record is written.
        cost = prices.priced(entry, prices.cached())[1]
    usage.writer.record(entry)
    limits.settle(admission, entry.total_tokens or 0, math.ceil(cost * limits.MICRO) if cost else 0)
