"""Every code example in the README runs as written: each ```python block (the English ones
and the Chinese quick start's) and each curl command against the API, against a real server
in front of the fake router, which refuses models the real router does not serve. Only the
base URL and the key placeholder are replaced."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.support.harness import router_and_proxy

pytestmark = pytest.mark.e2e

README = Path(__file__).resolve().parents[1] / "README.md"
BASE_URL = "http://localhost:8000"
KEY = "hfp_your_key"
# A fenced block, indented as a list item's may be: its language and its text.
FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<language>\w+)\n(?P<code>.*?)^(?P=indent)```$", re.M | re.S)


def examples(text: str, language: str) -> list[tuple[int, str]]:
    """The README's blocks in `language`: (line number, code)."""
    return [
        (text.count("\n", 0, match.start()) + 1, textwrap.dedent(match["code"]))
        for match in FENCE.finditer(text)
        if match["language"] == language
    ]


def curl_commands(code: str) -> list[tuple[int, str]]:
    """The curl commands against the API in a bash block: (line in the block, the command with
    its continued lines joined)."""
    commands, start, pending = [], 0, ""
    for number, line in enumerate(code.splitlines()):
        if not pending:
            start = number
        pending += line.removesuffix("\\") + " " if line.endswith("\\") else line
        if line.endswith("\\"):
            continue
        if pending.lstrip().startswith("curl ") and f"{BASE_URL}/v1" in pending:
            commands.append((start, pending))
        pending = ""
    return commands


TEXT = README.read_text()
PYTHON = examples(TEXT, "python")
CURL = [
    (line + offset + 1, command)
    for line, code in examples(TEXT, "bash")
    for offset, command in curl_commands(code)
]


@pytest.fixture(scope="module")
def proxy(tmp_path_factory):
    with router_and_proxy(tmp_path_factory.mktemp("readme")) as (_, proxy):
        yield proxy


def as_served(code: str, proxy) -> str:
    return code.replace(BASE_URL, proxy.url).replace(KEY, proxy.keys["team"])


def run(args: list[str]) -> str:
    result = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, f"exit {result.returncode}:\n{result.stderr}"
    assert result.stdout.strip(), f"printed nothing:\n{result.stderr}"
    return result.stdout


def test_the_readme_has_the_examples_this_test_runs():
    # Three English Python examples, the Chinese one, and the curl chat commands: if the
    # extraction found fewer, the tests below would pass without running them.
    assert len(PYTHON) >= 4
    assert any("你好" in code for _, code in PYTHON)
    assert len(CURL) >= 2
    assert all(KEY in code for _, code in PYTHON + CURL)


@pytest.mark.parametrize(("line", "code"), PYTHON, ids=[f"README.md:{line}" for line, _ in PYTHON])
def test_a_python_example_runs_as_written(proxy, line, code):
    run([sys.executable, "-c", as_served(code, proxy)])


@pytest.mark.parametrize(("line", "command"), CURL, ids=[f"README.md:{line}" for line, _ in CURL])
def test_a_curl_example_runs_as_written(proxy, line, command):
    output = run(["bash", "-c", as_served(command, proxy)])
    # curl exits 0 whatever the status: the answer itself must not be an error.
    assert '"error"' not in output, output
    assert '"choices"' in output
    if "-N" in command.split():  # the streaming one ends as the README says
        assert output.rstrip().endswith("data: [DONE]")
