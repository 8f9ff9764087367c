"""allauth's adapters: nobody signs up with a password; a provider's sign-in passes the rules of
`accounts.signin` or ends on a page that says why; a Hugging Face sign-in joins the teams its
organisations map to (HF_ORG_TEAMS); every sign-in accepts the user's team invitations."""

from __future__ import annotations

from allauth.account.adapter import DefaultAccountAdapter
from allauth.account.signals import user_logged_in as allauth_logged_in
from allauth.core.exceptions import ImmediateHttpResponse
from allauth.socialaccount.adapter import DefaultSocialAccountAdapter
from django.contrib.auth.signals import user_logged_in
from django.dispatch import receiver
from django.shortcuts import render

from accounts import signin


class AccountAdapter(DefaultAccountAdapter):
    def is_open_for_signup(self, request) -> bool:
        return False  # accounts come from a provider's sign-in, or from an admin


class SocialAccountAdapter(DefaultSocialAccountAdapter):
    def pre_social_login(self, request, sociallogin) -> None:
        # Every sign-in, not only the first: someone who left the organisation keeps their
        # Hugging Face account, and must not keep signing in here.
        reason = signin.refusal(signin.Claims.from_sociallogin(sociallogin))
        if reason is not None:
            response = render(request, "accounts/signin_refused.html", {"reason": reason}, status=403)
            raise ImmediateHttpResponse(response)

    def is_open_for_signup(self, request, sociallogin) -> bool:
        return signin.refusal(signin.Claims.from_sociallogin(sociallogin)) is None


@receiver(allauth_logged_in)
def _join_teams(sender, request, user, sociallogin=None, **kwargs) -> None:
    if sociallogin is not None:
        signin.join_teams(user, signin.Claims.from_sociallogin(sociallogin))


@receiver(user_logged_in)
def _accept_invitations(sender, request, user, **kwargs) -> None:
    """At every sign-in, a provider's or a password's (allauth's goes through Django's)."""
    from accounts import services

    services.team_invitations_accept(user=user)
