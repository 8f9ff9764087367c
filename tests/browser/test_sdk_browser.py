"""openai-node in a real browser, on a page served from another origin than the proxy's: the
SDK's `.stream()` and `.parse()` helpers get through the CORS preflight (they send
`X-Stainless-Helper-Method`), and the page can read the rate-limit headers, `retry-after` and
`x-request-id`. Headless Chromium (Debian's package, driven by Playwright); the openai package
pinned in package.json and package-lock.json, installed by `npm ci` when missing."""

from __future__ import annotations

import contextlib
import functools
import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.support.browser import BROWSER, CHROMIUM, CHROMIUM_ARGS, playwright_api, served_site
from tests.support.npm import missing, npm_ci
from tests.support.processes import manage

pytestmark = BROWSER

HERE = Path(__file__).resolve().parent
PARSED = {"city": "Paris", "country": "France"}
WORDS = ["Hello", " from", " the", " upstream"]
MODEL = "test-org/test-model"


@pytest.fixture(scope="module")
def sdk() -> str:
    """The pinned openai package in tests/browser/node_modules (`npm ci` when absent or stale)."""
    if shutil.which(CHROMIUM) is None:
        missing(f"{CHROMIUM} is missing (apt-get install chromium)")
    return npm_ci(HERE, "openai")["openai"]


class Upstream(BaseHTTPRequestHandler):
    """The router's part for this test: a chat completion whose content is JSON (for `.parse()`,
    which the fake router's "tok0 tok1 …" is not), or a stream of WORDS."""

    usage = {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}

    def do_GET(self):  # the price refresh's model list
        self.answer(200, "application/json", b'{"object": "list", "data": []}')

    def do_POST(self):
        request = json.loads(self.rfile.read(int(self.headers["content-length"])))
        chunk = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": MODEL}
        if not request.get("stream"):
            message = {"role": "assistant", "content": json.dumps(PARSED)}
            choice = {"index": 0, "message": message, "finish_reason": "stop"}
            answer = {**chunk, "object": "chat.completion", "choices": [choice], "usage": self.usage}
            return self.answer(200, "application/json", json.dumps(answer).encode())
        deltas = [{"role": "assistant", "content": ""}] + [{"content": word} for word in WORDS]
        events = [{**chunk, "choices": [{"index": 0, "delta": delta}]} for delta in deltas]
        events.append({**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        events.append({**chunk, "choices": [], "usage": self.usage})
        body = "".join(f"data: {json.dumps(event)}\n\n" for event in events) + "data: [DONE]\n\n"
        self.answer(200, "text/event-stream", body.encode())

    def answer(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class PageFiles(SimpleHTTPRequestHandler):
    # Keep-alive for the SDK's 240 module files, without Nagle's algorithm (or each answer
    # waits 40 ms for a delayed ACK).
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serving(handler):
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def servers(sdk, tmp_path_factory):
    """The proxy (in front of Upstream) with two keys, and the page's origin."""
    with contextlib.ExitStack() as stack:
        upstream = stack.enter_context(serving(Upstream))
        origin = stack.enter_context(serving(functools.partial(PageFiles, directory=HERE)))
        proxy, env = stack.enter_context(served_site(tmp_path_factory.mktemp("db"), router=upstream))
        keys = {
            rpm: manage("create_api_key", f"rpm{rpm}", "--rpm", rpm, env=env).split()[-1]
            for rpm in ("100", "0")
        }
        yield {"proxy": proxy, "origin": origin, "key": keys["100"], "refused_key": keys["0"]}


# Each step reports what it got, or its error (the page's console says why CORS refused it).
CALLS = """
async ({baseURL, key, refusedKey, model}) => {
  const results = {};
  const step = async (name, call) => {
    try { results[name] = await call(); } catch (error) { results[name] = {error: String(error)}; }
  };
  // A header of a later SDK version: the preflight's "*" must admit it.
  const defaultHeaders = {"X-Stainless-Added-Later": "true"};
  const client = new OpenAI({baseURL, apiKey: key, dangerouslyAllowBrowser: true, maxRetries: 0, defaultHeaders});
  const messages = [{role: "user", content: "Where is the Eiffel Tower?"}];

  await step("stream", async () => {
    const stream = client.chat.completions.stream({model, messages});
    const deltas = [];
    stream.on("content", (delta) => deltas.push(delta));
    const final = await stream.finalChatCompletion();
    return {deltas, content: final.choices[0].message.content};
  });

  await step("parse", async () => {
    const schema = {
      type: "object",
      properties: {city: {type: "string"}, country: {type: "string"}},
      required: ["city", "country"],
      additionalProperties: false,
    };
    const {data, response} = await client.chat.completions.parse({
      model, messages, response_format: {type: "json_schema", json_schema: {name: "place", schema, strict: true}},
    }).withResponse();
    const header = (name) => response.headers.get(name);
    return {
      parsed: data.choices[0].message.parsed,
      requestId: header("x-request-id"),
      sdkRequestId: data._request_id,
      limit: header("x-ratelimit-limit-requests"),
      remaining: header("x-ratelimit-remaining-requests"),
      reset: header("x-ratelimit-reset-requests"),
    };
  });

  await step("refused", async () => {
    const refused = new OpenAI({baseURL, apiKey: refusedKey, dangerouslyAllowBrowser: true, maxRetries: 0});
    try {
      await refused.chat.completions.create({model, messages});
      return {error: "not refused"};
    } catch (error) {
      return {status: error.status, retryAfter: error.headers?.get("retry-after") ?? null};
    }
  });
  return results;
}
"""


def test_the_sdk_helpers_work_from_another_origin(servers):
    assert servers["origin"] != servers["proxy"]
    console: list[str] = []
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            page.on("console", lambda message: console.append(message.text))
            elsewhere: list[str] = []  # nothing but the page's origin and the proxy

            def only_ours(route):
                if route.request.url.startswith((servers["origin"] + "/", servers["proxy"] + "/")):
                    route.continue_()
                else:
                    elsewhere.append(route.request.url)
                    route.abort()

            page.route("**/*", only_ours)
            page.goto(servers["origin"] + "/sdk_page.html")
            page.wait_for_function("document.title === 'ready'", timeout=10_000)
            got = page.evaluate(
                CALLS,
                {
                    "baseURL": servers["proxy"] + "/v1",
                    "key": servers["key"],
                    "refusedKey": servers["refused_key"],
                    "model": MODEL,
                },
            )
        finally:
            browser.close()

    why = f"{got}\nconsole: {console}"
    assert not elsewhere, elsewhere
    assert got["stream"] == {"deltas": WORDS, "content": "".join(WORDS)}, why
    parse = got["parse"]
    assert parse.get("parsed") == PARSED, why
    assert parse["requestId"] and parse["requestId"] == parse["sdkRequestId"], why
    assert parse["limit"] == "100", why
    assert 0 <= int(parse["remaining"]) < 100, why
    assert parse["reset"], why
    refused = got["refused"]
    assert refused["status"] == 429, why
    assert 0 < int(refused["retryAfter"]) <= 60, why
