"""Who may sign in, and how: the rules behind the sign-in settings, in one place.

- Password login (PASSWORD_LOGIN): `everyone` who holds a password, only `superusers`, or
  nobody (`off`). Enforced by `accounts.backends.PasswordLoginBackend` on every password form.
- Sign-in with a provider: a person joins (and, for a Hugging Face organisation, signs in again)
  when their verified email address is in SIGNUP_EMAIL_DOMAINS, or, signing in with Hugging
  Face, when they belong to an organisation of SIGNUP_HF_ORGS; with neither set, only when
  SIGNUP_OPEN is true. A verified address a team invited may always join. Enforced by `accounts.adapters.SocialAccountAdapter`.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

from accounts.providers import HUGGING_FACE_ID

PASSWORD_LOGIN_CHOICES = ("everyone", "superusers", "off")


def password_login_allowed(user) -> bool:
    """Whether `user` may sign in with their password under PASSWORD_LOGIN."""
    mode = settings.PASSWORD_LOGIN
    return mode == "everyone" or (mode == "superusers" and user.is_superuser)


def password_form_shown() -> bool:
    return settings.PASSWORD_LOGIN != "off"


def page_context(request) -> dict:
    """What the sign-in pages (the site's and the admin's) show besides the providers' buttons."""
    from allauth.socialaccount.adapter import get_adapter  # its models need the app registry

    return {
        "password_form_shown": password_form_shown(),
        "has_providers": bool(get_adapter().list_providers(request)),
    }


@dataclass(frozen=True)
class Claims:
    """What a provider said about the person signing in, as the rules read it."""

    provider: str
    email: str = ""
    email_verified: bool = False
    orgs: frozenset[str] = frozenset()

    @classmethod
    def from_sociallogin(cls, sociallogin) -> Claims:
        account = sociallogin.account
        data = account.extra_data or {}
        claims = {**(data.get("id_token") or {}), **(data.get("userinfo") or {})}
        trust_email = account.get_provider().app.settings.get("trust_email", False)
        email = str(claims.get("email") or "").strip().lower()
        orgs = claims.get("orgs") if isinstance(claims.get("orgs"), list) else []
        return cls(
            provider=account.provider,
            email=email,
            email_verified=bool(email) and (trust_email or claims.get("email_verified") is True),
            orgs=frozenset(
                str(org["preferred_username"]).lower()
                for org in orgs
                if isinstance(org, dict) and org.get("preferred_username")
            ),
        )


def refusal(claims: Claims) -> str | None:
    """Why this person may not sign in, or None when they may."""
    from accounts.models import TeamInvitation

    domains = {domain.lower().lstrip("@") for domain in settings.SIGNUP_EMAIL_DOMAINS}
    orgs = {org.lower() for org in settings.SIGNUP_HF_ORGS}
    if (
        claims.email_verified
        and TeamInvitation.objects.filter(email__iexact=claims.email, accepted_at=None).exists()
    ):
        return None  # a team invited this address
    if not domains and not orgs:
        return None if settings.SIGNUP_OPEN else "closed"
    if domains and claims.email_verified and claims.email.rpartition("@")[2] in domains:
        return None
    if orgs and claims.provider == HUGGING_FACE_ID and claims.orgs & orgs:
        return None
    return "not_allowed"


def org_teams() -> set[tuple[str, str]]:
    """HF_ORG_TEAMS ("org:team,…"): (organisation, team) pairs; an organisation may map to several."""
    pairs = (entry.partition(":") for entry in settings.HF_ORG_TEAMS)
    return {(org.strip().lower(), team.strip()) for org, _, team in pairs if org.strip() and team.strip()}


def join_teams(user, claims: Claims) -> list[str]:
    """Make a Hugging Face user a member of the teams their organisations map to (HF_ORG_TEAMS),
    at each sign-in; a role they have there already stays. The teams joined."""
    from accounts import services
    from accounts.models import Team, TeamMember

    if claims.provider != HUGGING_FACE_ID:
        return []
    names = {team for org, team in org_teams() if org in claims.orgs}
    joined = []
    for team in Team.objects.filter(name__in=names):
        if not TeamMember.objects.filter(team=team, user=user).exists():
            services.team_member_add(team=team, user=user)
            joined.append(team.name)
    return joined
