from django.urls import path, re_path

from gateway import views

# Mounted under API_PREFIX. Trailing slashes are accepted: some clients add them.
urlpatterns = [
    re_path(r"^chat/completions/?$", views.chat_completions, name="chat-completions"),
    re_path(r"^embeddings/?$", views.embeddings, name="embeddings"),
    re_path(r"^models/?$", views.models, name="models"),
    path("models/<path:model_id>", views.model_detail, name="model-detail"),
]
