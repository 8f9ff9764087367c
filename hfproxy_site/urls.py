"""The site's URLs, on Django's own handler with MIDDLEWARE. The API and the probes are
gateway.urls, on the API handler (gateway.routing decides)."""

from django.contrib import admin
from django.urls import include, path

from gateway import views

urlpatterns = [
    path("api/", include("accounts.urls")),
    path("admin/", admin.site.urls),
    path("", views.index, name="index"),
]
