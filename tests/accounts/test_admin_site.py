"""The admin site: hfproxy's AdminSite is Django's `admin.site`, with every model on it (the
pages themselves are tested in test_admin.py)."""

from __future__ import annotations

from django.apps import apps
from django.contrib import admin
from django.contrib.auth import get_user_model

from accounts.admin.users import HfproxyUserAdmin
from accounts.admin_site import HfproxyAdminSite


def test_admin_site_is_hfproxys_and_holds_every_model():
    assert isinstance(admin.site, HfproxyAdminSite)
    assert apps.get_app_config("admin").name == "django.contrib.admin"  # the stock app, configured
    registered = {model._meta.label for model in admin.site._registry}
    assert {
        f"accounts.{name}" for name in ("ApiKey", "HuggingFaceToken", "ModelPrice", "UsageRecord")
    } <= registered
    assert isinstance(admin.site._registry[get_user_model()], HfproxyUserAdmin)
    assert not admin.site.enable_nav_sidebar
