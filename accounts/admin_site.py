"""The admin site: hfproxy's name on its pages, no side menu, and an index that links to the
usage dashboard and warns of Hugging Face tokens the router refused.

`accounts.apps.HfproxyAdminConfig` makes it Django's `admin.site`, so `@admin.register` and the
URLconf work as with the stock site. It lives outside the `accounts.admin` package on purpose:
Django builds the site when the admin first asks for it, while importing the package's
modules, and the package's `__init__` would import them again before the site exists.
"""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.utils.translation import gettext_lazy as _

from accounts import permissions, selectors, signin


class HfproxyAdminSite(admin.AdminSite):
    site_header = _("hfproxy administration")
    site_title = _("hfproxy admin")
    index_title = _("Keys, tokens and usage")
    # The side menu repeats the index and takes a fifth of a laptop's screen from every list.
    enable_nav_sidebar = False
    # The dashboard is linked from the index page.
    index_template = "admin/accounts/index.html"
    # Django's, offering the providers' sign-in too (staff sign in as everyone does).
    login_template = "admin/accounts/login.html"

    def index(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        # The index warns of Hugging Face tokens the router refused: every request with one fails.
        allowed = permissions.may_view_usage(request.user)
        warnings = {
            "token_rejections": selectors.recent_rejections() if allowed else [],
            "rejection_hours": int(selectors.REJECTIONS_SHOWN_FOR.total_seconds() // 3600),
        }
        return super().index(request, {**warnings, **(extra_context or {})})

    def login(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        # Its template offers the providers' sign-in, and the password form unless PASSWORD_LOGIN=off.
        return super().login(request, {**signin.page_context(request), **(extra_context or {})})
