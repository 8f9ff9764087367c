"""The site's sign-in page (/accounts/login/): the providers' buttons, and the password form
that PASSWORD_LOGIN allows. allauth serves the providers' flows and the sign-out."""

from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.core.exceptions import PermissionDenied

from accounts import signin


class SignInView(auth_views.LoginView):
    template_name = "accounts/signin.html"
    redirect_authenticated_user = True

    def post(self, request, *args, **kwargs):
        if not signin.password_form_shown():
            raise PermissionDenied("PASSWORD_LOGIN=off")
        return super().post(request, *args, **kwargs)

    def get_context_data(self, **kwargs):
        return {**super().get_context_data(**kwargs), **signin.page_context(self.request)}
