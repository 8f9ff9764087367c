import re

from django.conf import settings
from django.contrib import admin
from django.urls import include, path, re_path

from gateway import views

_api = re.escape(settings.API_PREFIX.strip("/"))

urlpatterns = [
    path(settings.API_PREFIX.strip("/") + "/", include("gateway.urls")),
    # Any other API path is a 404 in OpenAI's shape, in every mode (DEBUG's 404 page is HTML).
    re_path(rf"^{_api}(/.*)?$", views.unknown_api_path),
    path("api/", include("accounts.urls")),
    path("health", views.health, name="health"),
    path("metrics", views.prometheus, name="metrics"),
    path("admin/", admin.site.urls),
    path("", views.index, name="index"),
]

handler400 = "gateway.views.bad_request"
handler403 = "gateway.views.permission_denied"
handler404 = "gateway.views.not_found"
handler500 = "gateway.views.server_error"
