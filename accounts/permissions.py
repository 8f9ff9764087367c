"""Whose keys a staff user may create and change, and whose usage they may read: the one place the
admin, the services and the API ask.

A key acts as its user, calling upstream with its Hugging Face token, so creating one for
someone is acting as them: a staff user creates keys for themselves with `add_apikey`, for
other users only with `add_apikey_for_others` too, and for a superuser only as a superuser.
Changing or revoking a superuser's key takes a superuser as well. Which token a key may call
with is the model's rule, whoever asks (`ApiKey.clean`: shared, or its own user's); so that a
personal token stays its owner's, only a superuser gives one to someone else or shares it.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Q, QuerySet

from accounts.models import HuggingFaceToken

ADD_KEYS_FOR_OTHERS = "accounts.add_apikey_for_others"
VIEW_USAGE = "accounts.view_usagerecord"
VIEW_AUDIT = "accounts.view_auditentry"


def key_users(actor: AbstractBaseUser, *, creating: bool) -> QuerySet:
    """The users whose keys `actor` may create (`creating`) or change and revoke."""
    users = get_user_model().objects.all()
    if actor.is_superuser:
        return users
    if creating and not actor.has_perm(ADD_KEYS_FOR_OTHERS):
        return users.filter(pk=actor.pk)
    return users.filter(Q(is_superuser=False) | Q(pk=actor.pk))


def key_tokens(actor: AbstractBaseUser, *, creating: bool) -> QuerySet[HuggingFaceToken]:
    """The Hugging Face tokens keys `actor` may create (or change) can call with."""
    return HuggingFaceToken.objects.usable_by(key_users(actor, creating=creating))


def check_key_user(*, actor: AbstractBaseUser | None, user: AbstractBaseUser, creating: bool) -> None:
    """PermissionDenied unless `actor` may create (or change) keys of `user`; no actor is the
    command line, which may do anything."""
    if actor is not None and not key_users(actor, creating=creating).filter(pk=user.pk).exists():
        raise PermissionDenied(f"You may not {'create' if creating else 'change'} keys of {user}.")


def check_token_owner(
    *, actor: AbstractBaseUser | None, hf_token: HuggingFaceToken, owner: AbstractBaseUser | None
) -> None:
    """ValidationError unless `actor` may make `owner` (None: shared) the owner of `hf_token`,
    new or as it is stored: a new token theirs, shared, or of a user they may create keys for;
    a personal one to someone else or shared only as a superuser."""
    owner_id = owner.pk if owner is not None else None
    if actor is None or actor.is_superuser or (hf_token.pk is not None and hf_token.owner_id == owner_id):
        return
    if hf_token.pk is not None and hf_token.owner_id is not None:
        raise ValidationError("Only a superuser may give a personal token to someone else or share it.")
    if owner is not None and not key_users(actor, creating=True).filter(pk=owner_id).exists():
        raise ValidationError(f"You may not give tokens to {owner}.")


def may_view_usage(actor: AbstractBaseUser) -> bool:
    """Whether `actor` may read other users' usage and keys: the admin's usage pages and the key
    list's usage columns, and `/api/*?user=`."""
    return actor.is_staff and actor.has_perm(VIEW_USAGE)


def may_view_team(actor: AbstractBaseUser, team) -> bool:
    """Whether `actor` may read a team's usage: staff who may view usage, and its team admins."""
    from accounts.models import TeamMember

    if may_view_usage(actor):
        return True
    return TeamMember.objects.filter(team=team, user=actor, role=TeamMember.Role.ADMIN).exists()


def may_view_audit(actor: AbstractBaseUser, team=None) -> bool:
    """Whether `actor` may read the audit trail: all of it, staff with the view permission on it;
    a team's (`team`), also its team admins."""
    from accounts.models import TeamMember

    if actor.is_staff and actor.has_perm(VIEW_AUDIT):
        return True
    return (
        team is not None
        and TeamMember.objects.filter(team=team, user=actor, role=TeamMember.Role.ADMIN).exists()
    )


def may_manage_key(actor: AbstractBaseUser, api_key) -> bool:
    """Whether `actor` may revoke `api_key` or change its caps in the portal: their own, or a key
    on a team they are an admin of (a superuser's key only as a superuser, as in the admin)."""
    from accounts.models import TeamMember

    if api_key.user_id == actor.pk:
        return True
    if api_key.user.is_superuser and not actor.is_superuser:
        return False
    return (
        api_key.team_id is not None
        and TeamMember.objects.filter(
            team_id=api_key.team_id, user=actor, role=TeamMember.Role.ADMIN
        ).exists()
    )


def admin_of_teams(actor: AbstractBaseUser):
    """The teams `actor` is an admin of."""
    from accounts.models import Team, TeamMember

    return Team.objects.filter(members__user=actor, members__role=TeamMember.Role.ADMIN)
