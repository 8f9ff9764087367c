from django.urls import path

from accounts import api

urlpatterns = [
    path("me", api.me, name="api-me"),
    path("usage", api.usage, name="api-usage"),
    path("audit", api.audit, name="api-audit"),
]
