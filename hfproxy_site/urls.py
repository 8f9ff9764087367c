"""The site's URLs, on Django's own handler with MIDDLEWARE. The API and the probes are
gateway.urls, on the API handler (gateway.routing decides)."""

from django.contrib import admin
from django.urls import include, path

from accounts.views import SignInView
from gateway import views

urlpatterns = [
    path("api/", include("accounts.urls")),
    path("admin/", admin.site.urls),
    # hfproxy's sign-in page in place of allauth's (which, with SOCIALACCOUNT_ONLY, has no password form).
    path("accounts/login/", SignInView.as_view(), name="account_login"),
    path("accounts/", include("allauth.urls")),
    path("portal/", include("portal.urls")),
    path("", views.index, name="index"),
]
