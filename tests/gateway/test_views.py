"""gateway.views: what every API view shares (`api_view`): when its own error handling fails,
still one answer and one usage record."""

from gateway import errors
from tests.support.clients import AsyncClient


async def test_an_error_while_failing_still_leaves_one_record(api_key, hf, reports, monkeypatch):
    hf.post("/chat/completions").respond(400, json={"error": "no"})

    def broken(exc, token_name=""):
        raise RuntimeError("the error mapping itself failed")

    monkeypatch.setattr(errors, "from_exception", broken)
    client = AsyncClient(authorization=f"Bearer {api_key}", raise_request_exception=False)
    response = await client.post(
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "x"}]},
        content_type="application/json",
    )
    assert response.status_code == 500
    assert [(r.status, r.outcome) for r in reports] == [(500, "proxy_error")]
