"""ASGI entry point: `uvicorn hfproxy_site.asgi:application`."""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hfproxy_site.settings")
django.setup(set_prefix=False)  # as django.core.asgi.get_asgi_application() does

from gateway.asgi import GatewayASGI, Handler  # noqa: E402  (needs Django set up)

# Django's handler (ours skips its per-request thread on the API path) inside our ASGI layer.
application = GatewayASGI(Handler())
