"""The admin: users and their keys, Hugging Face tokens and prices, usage and its dashboard.

One module a kind of page (`users`, `keys`, `tokens`, `usage`), with what they share beside
them (`display`: how values show; `export`: CSV; `drilldown`: the usage list's dates;
`snippets`: a new key's first call). The site itself is `accounts.admin_site`. The pages
write only through `accounts.services` and read through `accounts.selectors`.
"""

from accounts.admin import audit, keys, teams, tokens, usage, users

__all__ = ["audit", "keys", "teams", "tokens", "usage", "users"]
