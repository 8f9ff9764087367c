from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Accounts and usage"

    def ready(self) -> None:
        # Their receivers: sign-ins in the audit trail, and into the teams of their organisations.
        from accounts import adapters, audit  # noqa: F401


class HfproxyAdminConfig(admin_apps.AdminConfig):
    """django.contrib.admin with hfproxy's site as `admin.site` (in INSTALLED_APPS in its place)."""

    default = False  # "accounts" stays AccountsConfig
    default_site = "accounts.admin_site.HfproxyAdminSite"
