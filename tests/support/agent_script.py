"""Scripted answers for the coding agents that tests/e2e/test_agents.py drives (Codex CLI on the
Responses API, Claude Code on the Anthropic Messages API): one tool round, then a final text
that quotes the tool's output, with fixed token counts.

The fake router hands a streamed Responses or Messages request here when its model starts with
`agent/` (MODEL_PREFIX): `stream()` answers it, `call()` is what its stats keep. The turn is
read from the request alone, as a real model would: no tool result in it yet and the agent's
shell tool offered → run COMMAND through that tool; a tool result present → the final answer,
FINAL_MARKER followed by the tool's output; anything else (side calls such as Claude Code's
titles or quota checks, which carry no tools) → a plain SIDE_ANSWER. Every answer carries the usage of its
kind (USAGE), so that a test can match each usage record to the call that produced it.

The event sequences follow the public API references (OpenAI's Responses streaming events,
Anthropic's Messages streaming), as Hugging Face's router relays them.
"""

from __future__ import annotations

import json
import time
from typing import Any

from tests.support.router_events import sse

MODEL_PREFIX = "agent/"
COMMAND = "echo hfproxy-tool-ok"
TOOL_OUTPUT = "hfproxy-tool-ok"
FINAL_MARKER = "hfproxy-agent-done:"
SIDE_ANSWER = "hfproxy side answer"

# The agents' shell tools, as they name them in `tools`.
CODEX_TOOL = "exec_command"
CLAUDE_TOOL = "Bash"

# Token counts per kind of answer: (input, cached input, output, reasoning).
USAGE = {
    "tool": (1200, 1024, 40, 16),
    "final": (1300, 1152, 25, 8),
    "side": (90, 0, 6, 0),
}


def is_agent(model: str) -> bool:
    return model.startswith(MODEL_PREFIX)


def turn(request: dict[str, Any], api: str) -> tuple[str, str | None]:
    """Which answer a request gets: ("tool" | "final" | "side", the tool output or None)."""
    if api == "responses":
        items = request.get("input") if isinstance(request.get("input"), list) else []
        outputs = [item.get("output") for item in items if item.get("type") == "function_call_output"]
        tool = CODEX_TOOL
    else:
        outputs = [
            block.get("content")
            for message in request.get("messages", [])
            if isinstance(message.get("content"), list)
            for block in message["content"]
            if block.get("type") == "tool_result"
        ]
        tool = CLAUDE_TOOL
    if outputs:
        return "final", _text(outputs[-1])
    if any(t.get("name") == tool for t in request.get("tools") or []):
        return "tool", None
    return "side", None


def _text(output: Any) -> str:
    """A tool result's text: a string, or content blocks (or Responses output items) with text."""
    if isinstance(output, str):
        return output
    if isinstance(output, list):
        return "".join(part.get("text", "") for part in output if isinstance(part, dict))
    return json.dumps(output)


def final_text(tool_output: str) -> str:
    """The final answer: the marker and what the tool printed (its last non-empty line that
    mentions TOOL_OUTPUT, else all of it), so that the answer proves the round happened."""
    lines = [line.strip() for line in tool_output.splitlines() if TOOL_OUTPUT in line]
    return f"{FINAL_MARKER} {lines[-1] if lines else tool_output.strip()}"


# --- Responses API (Codex) --------------------------------------------------------------------


def responses_usage(kind: str) -> dict[str, Any]:
    prompt, cached, completion, reasoning = USAGE[kind]
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": prompt + completion,
    }


def responses_events(request: dict[str, Any], created: int) -> list[dict[str, Any]]:
    """The Responses stream's events (without their SSE framing) answering `request`."""
    kind, tool_output = turn(request, "responses")
    response = {
        "id": f"resp_agent_{kind}",
        "object": "response",
        "created_at": created,
        "status": "in_progress",
        "model": request.get("model"),
        "output": [],
        "usage": None,
    }
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": response},
        {"type": "response.in_progress", "response": response},
    ]
    if kind == "tool":
        arguments = json.dumps({"cmd": COMMAND})
        item = {
            "type": "function_call",
            "id": "fc_agent_1",
            "call_id": "call_agent_1",
            "name": CODEX_TOOL,
            "arguments": "",
            "status": "in_progress",
        }
        done = {**item, "arguments": arguments, "status": "completed"}
        events += [
            {"type": "response.output_item.added", "output_index": 0, "item": item},
            *(
                {
                    "type": "response.function_call_arguments.delta",
                    "item_id": item["id"],
                    "output_index": 0,
                    "delta": piece,
                }
                for piece in _pieces(arguments)
            ),
            {
                "type": "response.function_call_arguments.done",
                "item_id": item["id"],
                "output_index": 0,
                "arguments": arguments,
            },
            {"type": "response.output_item.done", "output_index": 0, "item": done},
        ]
    else:
        text = final_text(tool_output) if kind == "final" else SIDE_ANSWER
        part = {"type": "output_text", "text": "", "annotations": []}
        item = {"type": "message", "id": f"msg_agent_{kind}", "status": "in_progress", "role": "assistant"}
        where = {"item_id": item["id"], "output_index": 0, "content_index": 0}
        done = {**item, "status": "completed", "content": [{**part, "text": text}]}
        events += [
            {"type": "response.output_item.added", "output_index": 0, "item": {**item, "content": []}},
            {"type": "response.content_part.added", **where, "part": part},
            *({"type": "response.output_text.delta", **where, "delta": piece} for piece in _pieces(text)),
            {"type": "response.output_text.done", **where, "text": text},
            {"type": "response.content_part.done", **where, "part": {**part, "text": text}},
            {"type": "response.output_item.done", "output_index": 0, "item": done},
        ]
    completed = {**response, "status": "completed", "output": [done], "usage": responses_usage(kind)}
    events.append({"type": "response.completed", "response": completed})
    return [{**event, "sequence_number": number} for number, event in enumerate(events)]


# --- Anthropic Messages API (Claude Code) -----------------------------------------------------


def messages_usage(kind: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The usage of message_start (input side, one output token so far) and of the final
    message_delta (Anthropic's: input_tokens excludes the tokens read from the cache)."""
    prompt, cached, completion, _ = USAGE[kind]
    start = {
        "input_tokens": prompt - cached,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
        "output_tokens": 1,
    }
    return start, {**start, "output_tokens": completion}


def messages_events(request: dict[str, Any]) -> list[dict[str, Any]]:
    """The Messages stream's events (each SSE `event:` is its `type`) answering `request`."""
    kind, tool_output = turn(request, "messages")
    start_usage, final_usage = messages_usage(kind)
    message = {
        "id": f"msg_agent_{kind}",
        "type": "message",
        "role": "assistant",
        "model": request.get("model"),
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": start_usage,
    }
    events: list[dict[str, Any]] = [{"type": "message_start", "message": message}]
    if kind == "tool":
        block = {"type": "tool_use", "id": "toolu_agent_1", "name": CLAUDE_TOOL, "input": {}}
        arguments = json.dumps({"command": COMMAND, "description": "Print the marker"})
        deltas = [{"type": "input_json_delta", "partial_json": piece} for piece in _pieces(arguments)]
        stop = "tool_use"
    else:
        block = {"type": "text", "text": ""}
        text = final_text(tool_output) if kind == "final" else SIDE_ANSWER
        deltas = [{"type": "text_delta", "text": piece} for piece in _pieces(text)]
        stop = "end_turn"
    events += [
        {"type": "content_block_start", "index": 0, "content_block": block},
        {"type": "ping"},
        *({"type": "content_block_delta", "index": 0, "delta": delta} for delta in deltas),
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": stop, "stop_sequence": None},
            "usage": final_usage,
        },
        {"type": "message_stop"},
    ]
    return events


# --- What the fake router calls --------------------------------------------------------------


def stream(api: str, request: dict[str, Any]) -> bytes:
    """The whole SSE body answering `request` on `api` ("responses" or "messages")."""
    events = responses_events(request, int(time.time())) if api == "responses" else messages_events(request)
    return b"".join(sse(event) for event in events)


def call(api: str, request: dict[str, Any], headers: dict[str, str], query: str) -> dict[str, Any]:
    """What the router's stats keep of an agent's call: enough for a test to tell which answer it
    got and to find its usage record (the proxy's `x-request-id`)."""
    return {
        "api": api,
        "query": query,
        "kind": turn(request, api)[0],
        "model": request.get("model"),
        "stream": bool(request.get("stream")),
        "tools": [tool.get("name") or tool.get("type") for tool in request.get("tools") or []],
        "request_id": headers.get("x-request-id"),
        "authorization": headers.get("authorization"),
        "x_api_key": headers.get("x-api-key"),
        "anthropic_version": headers.get("anthropic-version"),
        "anthropic_beta": headers.get("anthropic-beta"),
    }


def _pieces(text: str, size: int = 12) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]
