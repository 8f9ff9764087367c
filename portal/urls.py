from django.urls import path

from portal import views

app_name = "portal"
urlpatterns = [
    path("", views.keys, name="index"),  # where a sign-in lands: my keys
    path("keys/", views.keys, name="keys"),
    path("keys/<int:pk>/created/", views.key_created, name="key_created"),
    path("keys/<int:pk>/revoke/", views.key_revoke, name="key_revoke"),
    path("usage/", views.usage, name="usage"),
    path("teams/<int:pk>/", views.team, name="team"),
]
