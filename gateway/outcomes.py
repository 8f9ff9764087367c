"""How a request ended, as recorded for every request that passed authentication."""

OK = "ok"
BAD_REQUEST = "bad_request"
UPSTREAM_ERROR = "upstream_error"
CLIENT_DISCONNECTED = "client_disconnected"
TIMEOUT = "timeout"
PROXY_ERROR = "proxy_error"
REFUSED = "refused"  # by the key's policy: a model not allowed, a limit reached
