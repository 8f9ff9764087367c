"""The real coding agents through hfproxy: Codex CLI (Responses API) and Claude Code (Anthropic
Messages API), at the versions tests/agents/package-lock.json pins (`npm ci` installs them, some
760 MB, when missing), each given a one-line task that takes one tool round. hfproxy runs as
production does in front of the fake router, which answers `agent/…` models with the scripts of
tests/support/agent_script.py: run `echo hfproxy-tool-ok` with the agent's shell tool, then say
FINAL_MARKER and what the tool printed.

Each test checks what the agent printed (the final answer quoting the tool's output: the round
happened), what the router saw (exactly the agent's two calls, with the server's token, not the
hfproxy key), and that hfproxy wrote one usage record per router call with the scripted counts.
Both agents run with a clean HOME and environment, their telemetry, update checks and plugins
off, and an HTTP(S) proxy that refuses every connection and notes who asked: nothing reaches
the internet, and the test fails if either agent tried."""

from __future__ import annotations

import json
import os
import socketserver
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import agent_script
from tests.support.agent_script import FINAL_MARKER, TOOL_OUTPUT, USAGE
from tests.support.harness import Proxy, Router, router_and_proxy
from tests.support.npm import npm_ci
from tests.support.processes import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.agents]

AGENTS = ROOT / "tests" / "agents"
CODEX, CLAUDE = "@openai/codex", "@anthropic-ai/claude-code"
TASK = "Run `echo hfproxy-tool-ok` in the shell and tell me what it printed."
FINAL = f"{FINAL_MARKER} {TOOL_OUTPUT}"
# Seconds an agent may take for its task (it takes about one when the machine is idle).
AGENT_TIMEOUT = 120


@pytest.fixture(scope="module")
def agents() -> dict[str, Path]:
    """The agents' executables, installed at their pinned versions."""
    npm_ci(AGENTS, CODEX, CLAUDE)
    return {"codex": AGENTS / "node_modules/.bin/codex", "claude": AGENTS / "node_modules/.bin/claude"}


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    with router_and_proxy(tmp_path_factory.mktemp("agents")) as (router, proxy):
        yield router, proxy


class _Refuse(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        self.server.asked.append(self.rfile.readline().decode(errors="replace").strip())
        self.wfile.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")


@dataclass
class Scene:
    """One agent's run: the servers, a folder of its own, and the internet it must not reach (an
    HTTP proxy that refuses every connection and notes the request lines it got)."""

    router: Router
    proxy: Proxy
    folder: Path
    outside: str
    refused: list[str]
    records_before: int

    @property
    def work(self) -> Path:
        return self.folder / "work"

    def env(self, **variables: str) -> dict[str, str]:
        """Nothing of ours but PATH (node, bash): a fresh HOME and TMPDIR, and every HTTP(S)
        connection but to 127.0.0.1 sent to the refusing proxy."""
        home = self.folder / "home"
        (home / "tmp").mkdir(parents=True, exist_ok=True)
        proxies = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "https_proxy", "http_proxy")
        return {
            "PATH": os.environ["PATH"],
            "HOME": str(home),
            "TMPDIR": str(home / "tmp"),
            "LANG": "C.UTF-8",
            **dict.fromkeys(proxies, self.outside),
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
            **variables,
        }

    def run(self, command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
        result = subprocess.run(
            command,
            env=env,
            cwd=self.work,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=AGENT_TIMEOUT,
            check=False,
        )
        assert result.returncode == 0, f"{command[0]} exited {result.returncode}:\n{result.stderr[-4000:]}"
        return result

    def agent_calls(self) -> list[dict]:
        return self.router.stats()["agent_calls"]


@pytest.fixture
def scene(servers, tmp_path) -> Iterator[Scene]:
    router, proxy = servers
    router.reset()
    (tmp_path / "work").mkdir()
    refusing = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Refuse)
    refusing.daemon_threads = True
    refusing.asked = []
    threading.Thread(target=refusing.serve_forever, daemon=True).start()
    outside = f"http://127.0.0.1:{refusing.server_address[1]}"
    try:
        yield Scene(router, proxy, tmp_path, outside, refusing.asked, proxy.count_records())
    finally:
        refusing.shutdown()
        refusing.server_close()


def check_records(scene: Scene, calls: list[dict], endpoint: str) -> list[dict]:
    """One usage record per router call, with the scripted counts of the answer it got; and no
    other record written meanwhile."""
    records = []
    for call in calls:
        record = scene.proxy.record(call["request_id"])
        prompt, cached, completion, reasoning = USAGE[call["kind"]]
        assert record["endpoint"] == endpoint
        assert (record["status"], record["outcome"], bool(record["stream"])) == (200, "ok", True)
        assert record["model_requested"] == call["model"]
        assert (record["prompt_tokens"], record["completion_tokens"]) == (prompt, completion)
        # Anthropic's usage has no reasoning count: thinking is in output_tokens.
        expected = (cached, reasoning if endpoint == "responses" else None)
        assert (record["cached_tokens"], record["reasoning_tokens"]) == expected
        assert record["total_tokens"] == prompt + completion
        records.append(record)
    assert scene.proxy.count_records() == scene.records_before + len(calls)
    return records


def test_codex_cli_runs_a_task_with_one_tool_round(agents, scene):
    proxy = scene.proxy
    codex_home = scene.folder / "codex"
    codex_home.mkdir()
    (codex_home / "config.toml").write_text(codex_config(proxy.api))
    env = scene.env(CODEX_HOME=str(codex_home), HFPROXY_KEY=proxy.keys["team"])

    options = ["--json", "--strict-config", "--skip-git-repo-check", "-C", str(scene.work)]
    result = scene.run([str(agents["codex"]), "exec", *options, TASK], env)

    events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    items = [event["item"] for event in events if event["type"] == "item.completed"]
    command = next(item for item in items if item["type"] == "command_execution")
    assert TOOL_OUTPUT in command["command"] and command["exit_code"] == 0
    assert command["aggregated_output"].strip() == TOOL_OUTPUT
    assert [item["text"] for item in items if item["type"] == "agent_message"] == [FINAL]
    # The usage Codex adds up from the two `response.completed` events, as hfproxy relayed them.
    (turn,) = [event for event in events if event["type"] == "turn.completed"]
    assert turn["usage"] == {
        "input_tokens": USAGE["tool"][0] + USAGE["final"][0],
        "cached_input_tokens": USAGE["tool"][1] + USAGE["final"][1],
        "cache_write_input_tokens": 0,
        "output_tokens": USAGE["tool"][2] + USAGE["final"][2],
        "reasoning_output_tokens": USAGE["tool"][3] + USAGE["final"][3],
    }

    calls = scene.agent_calls()
    assert [(call["api"], call["kind"]) for call in calls] == [("responses", "tool"), ("responses", "final")]
    for call in calls:
        assert call["stream"] and agent_script.CODEX_TOOL in call["tools"]
        assert call["authorization"] == f"Bearer {proxy.env['HF_TOKEN']}"
    check_records(scene, calls, "responses")
    assert scene.refused == []


def codex_config(base_url: str) -> str:
    """Codex's config.toml: hfproxy as a custom model provider on the Responses API, and what
    would call out off: analytics (ab.chatgpt.com), plugins (github.com, api.github.com,
    chatgpt.com); OTel's exporters are off by default, and said so in case that changes."""
    return f"""\
model = "{agent_script.MODEL_PREFIX}codex"
model_provider = "hfproxy"
approval_policy = "never"
sandbox_mode = "danger-full-access"

[model_providers.hfproxy]
name = "hfproxy"
base_url = "{base_url}"
env_key = "HFPROXY_KEY"
wire_api = "responses"

[analytics]
enabled = false

[otel]
exporter = "none"
trace_exporter = "none"
metrics_exporter = "none"

[features]
plugins = false
"""


def test_claude_code_runs_a_task_with_one_tool_round(agents, scene):
    proxy = scene.proxy
    model = f"{agent_script.MODEL_PREFIX}claude"
    env = scene.env(
        ANTHROPIC_BASE_URL=proxy.url,
        ANTHROPIC_AUTH_TOKEN=proxy.keys["team"],
        ANTHROPIC_MODEL=model,
        ANTHROPIC_DEFAULT_HAIKU_MODEL=model,
        ANTHROPIC_SMALL_FAST_MODEL=model,
        DISABLE_TELEMETRY="1",
        DISABLE_AUTOUPDATER="1",
        DISABLE_ERROR_REPORTING="1",
        CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
    )

    options = ["--model", model, "--allowedTools", "Bash", "--output-format", "json"]
    result = scene.run([str(agents["claude"]), "-p", TASK, *options], env)

    answer = json.loads(result.stdout)
    assert (answer["result"], answer["is_error"], answer["num_turns"]) == (FINAL, False, 2)
    # Claude Code's sums of the two answers' usage, Anthropic's way (input excludes cache reads).
    assert answer["usage"]["input_tokens"] == sum(USAGE[k][0] - USAGE[k][1] for k in ("tool", "final"))
    assert answer["usage"]["cache_read_input_tokens"] == USAGE["tool"][1] + USAGE["final"][1]
    assert answer["usage"]["output_tokens"] == USAGE["tool"][2] + USAGE["final"][2]

    calls = scene.agent_calls()
    # In -p mode, with non-essential traffic off, no side calls (titles, quota checks).
    assert [(call["api"], call["kind"]) for call in calls] == [("messages", "tool"), ("messages", "final")]
    for call in calls:
        assert call["stream"] and agent_script.CLAUDE_TOOL in call["tools"]
        assert call["query"] == "beta=true"
        assert call["anthropic_version"] == "2023-06-01" and "claude-code-" in call["anthropic_beta"]
        assert call["authorization"] == f"Bearer {proxy.env['HF_TOKEN']}" and call["x_api_key"] is None
        assert proxy.keys["team"] not in json.dumps(call)
    check_records(scene, calls, "messages")
    assert scene.refused == []
