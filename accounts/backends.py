"""Password sign-in under PASSWORD_LOGIN (`accounts.signin.password_login_allowed`)."""

from __future__ import annotations

from allauth.account.auth_backends import AuthenticationBackend

from accounts import signin


class PasswordLoginBackend(AuthenticationBackend):
    """Django's password check (through allauth's backend, which allauth's own sign-ins are
    recorded under), refusing a password PASSWORD_LOGIN does not allow. A refusal counts as a
    failed attempt for django-axes, like a wrong password."""

    def authenticate(self, request, **credentials):
        user = super().authenticate(request, **credentials)
        if user is not None and not signin.password_login_allowed(user):
            return None
        return user
