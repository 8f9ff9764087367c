from django.conf import settings
from django.contrib import admin
from django.urls import include, path

from gateway import views

urlpatterns = [
    path(settings.API_PREFIX.strip("/") + "/", include("gateway.urls")),
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
