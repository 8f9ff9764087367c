"""The sign-in providers, from the environment: allauth's SOCIALACCOUNT_PROVIDERS.

A plain module (no models, no app registry): hfproxy_site.settings calls it, and a bad value
stops the start-up with a message naming the variable.
"""

from __future__ import annotations

import json
import re

from django.core.exceptions import ImproperlyConfigured

HUGGING_FACE_ID = "huggingface"
# The scope that adds the `orgs` claim to Hugging Face's userinfo (the organisations the user
# let the app see, chosen on Hugging Face's consent page).
HUGGING_FACE_ORGS_SCOPE = "read-memberships"
_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
_REQUIRED = ("id", "name", "server_url", "client_id", "secret")
_OPTIONAL = ("scopes", "trust_email", "token_auth_method")


def _app(*, id: str, name: str, server_url: str, client_id: str, secret: str, scopes, trust_email, **extra):
    settings = {
        "server_url": server_url.rstrip("/"),
        "oauth_pkce_enabled": True,
        "scope": list(scopes),
        # hfproxy's own key (allauth ignores it): the provider hands out only addresses it has
        # verified, without saying so with `email_verified` (Entra ID, for one).
        "trust_email": bool(trust_email),
        **extra,
    }
    return {"provider_id": id, "name": name, "client_id": client_id, "secret": secret, "settings": settings}


def openid_connect_apps(
    *,
    oidc_providers: str,
    hf_client_id: str,
    hf_client_secret: str,
    hf_server_url: str,
    hf_scopes: list[str],
    hf_orgs: list[str],
) -> list[dict]:
    """allauth's `APPS` for its openid_connect provider: Hugging Face's when HF_OAUTH_CLIENT_ID
    is set, then each of OIDC_PROVIDERS (a JSON list of objects with id, name, server_url (the
    issuer), client_id, secret, and optionally scopes, trust_email, token_auth_method)."""
    apps = []
    if hf_client_id:
        if not hf_client_secret:
            raise ImproperlyConfigured("HF_OAUTH_CLIENT_ID is set without HF_OAUTH_CLIENT_SECRET.")
        scopes = list(dict.fromkeys([*hf_scopes, *([HUGGING_FACE_ORGS_SCOPE] if hf_orgs else [])]))
        if "openid" not in scopes:
            raise ImproperlyConfigured("HF_OAUTH_SCOPES must include openid.")
        apps.append(
            _app(
                id=HUGGING_FACE_ID,
                name="Hugging Face",
                server_url=hf_server_url,
                client_id=hf_client_id,
                secret=hf_client_secret,
                scopes=scopes,
                trust_email=True,  # Hugging Face verifies an address before it hands it to an app
            )
        )
    if oidc_providers.strip():
        try:
            entries = json.loads(oidc_providers)
        except ValueError as error:
            raise ImproperlyConfigured(f"OIDC_PROVIDERS is not valid JSON: {error}") from None
        if not isinstance(entries, list):
            raise ImproperlyConfigured("OIDC_PROVIDERS must be a JSON list of objects.")
        for entry in entries:
            if not isinstance(entry, dict) or any(not isinstance(entry.get(k), str) for k in _REQUIRED):
                raise ImproperlyConfigured(
                    f"OIDC_PROVIDERS: each entry needs {', '.join(_REQUIRED)} (strings)."
                )
            unknown = set(entry) - set(_REQUIRED) - set(_OPTIONAL)
            if unknown:
                raise ImproperlyConfigured(
                    f"OIDC_PROVIDERS: unknown keys {sorted(unknown)} in {entry['id']!r}."
                )
            if not _ID.match(entry["id"]) or entry["id"] == HUGGING_FACE_ID:
                raise ImproperlyConfigured(
                    f"OIDC_PROVIDERS: id {entry['id']!r} must be lower-case letters, digits, - or _ "
                    f"(and not {HUGGING_FACE_ID!r}, which HF_OAUTH_CLIENT_ID configures)."
                )
            extra = {"token_auth_method": entry["token_auth_method"]} if "token_auth_method" in entry else {}
            apps.append(
                _app(
                    **{k: entry[k] for k in _REQUIRED},
                    scopes=entry.get("scopes", ["openid", "profile", "email"]),
                    trust_email=entry.get("trust_email", False),
                    **extra,
                )
            )
    ids = [app["provider_id"] for app in apps]
    if len(set(ids)) != len(ids):
        raise ImproperlyConfigured(f"OIDC_PROVIDERS: two providers have the same id ({ids}).")
    return apps
