from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Accounts and usage"

    def ready(self) -> None:
        from accounts import audit  # noqa: F401 (connects the sign-in signals to the audit trail)


class HfproxyAdminConfig(admin_apps.AdminConfig):
    """django.contrib.admin with hfproxy's site as `admin.site` (in INSTALLED_APPS in its place)."""

    default = False  # "accounts" stays AccountsConfig
    default_site = "accounts.admin_site.HfproxyAdminSite"
