"""Chat requests in, whole answers back, and the token estimate: the pure converter."""

import json

import pytest

from gateway import converter
from gateway.converter import BadAnswer, InvalidRequest, Usage

DEFAULT = "org/default-model:provider"


def body(**fields) -> bytes:
    return json.dumps({"messages": [{"role": "user", "content": "hi"}], **fields}).encode()


def test_it_fills_the_default_model():
    chat = converter.parse_chat_request(body(), DEFAULT)
    assert chat.model == DEFAULT
    assert json.loads(converter.upstream_body(chat))["model"] == DEFAULT


def test_it_forwards_an_untouched_request_byte_for_byte():
    raw = body(model="meta-llama/Llama-3.1-8B-Instruct:cerebras", temperature=0.2)
    chat = converter.parse_chat_request(raw, DEFAULT)
    assert converter.upstream_body(chat) is raw
    assert chat.model == "meta-llama/Llama-3.1-8B-Instruct:cerebras"


def test_it_keeps_every_field_it_does_not_need_to_understand():
    fields = {
        "model": "m:fastest",
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        "tool_choice": "auto",
        "response_format": {"type": "json_object"},
        "stop": ["\n"],
        "seed": 7,
        "logprobs": True,
        "top_logprobs": 2,
        "n": 2,
        "max_completion_tokens": 10,
        "presence_penalty": 0.5,
        "frequency_penalty": -0.5,
        "user": "u1",
        "stream": True,
        "stream_options": {"include_obfuscation": False},
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                ],
            }
        ],
    }
    forwarded = json.loads(
        converter.upstream_body(converter.parse_chat_request(json.dumps(fields).encode(), DEFAULT))
    )
    assert forwarded == {**fields, "stream_options": {"include_obfuscation": False, "include_usage": True}}


def test_it_always_asks_for_usage_on_streams_and_remembers_who_asked():
    quiet = converter.parse_chat_request(body(stream=True), DEFAULT)
    asked_raw = body(model="m", stream=True, stream_options={"include_usage": True})
    asked = converter.parse_chat_request(asked_raw, DEFAULT)
    assert json.loads(converter.upstream_body(quiet))["stream_options"] == {"include_usage": True}
    assert (quiet.wants_usage, asked.wants_usage) == (False, True)
    assert converter.upstream_body(asked) is asked_raw


def test_it_does_not_add_stream_options_without_stream():
    chat = converter.parse_chat_request(body(model="m"), DEFAULT)
    assert "stream_options" not in json.loads(converter.upstream_body(chat))


def test_it_drops_client_control_fields():
    chat = converter.parse_chat_request(
        body(model="m", api_key="sk-secret", base_url="http://evil", api_base="x"), DEFAULT
    )
    forwarded = json.loads(converter.upstream_body(chat))
    assert not {"api_key", "base_url", "api_base"} & forwarded.keys()


def test_it_keeps_unicode_as_it_came():
    text = "héllo 👋 مرحبا 你好 " * 1000
    chat = converter.parse_chat_request(
        body(model="m", api_key="x", messages=[{"role": "user", "content": text}]), DEFAULT
    )
    assert text.encode() in converter.upstream_body(chat)


def test_it_forwards_lone_surrogates_escaped():
    raw = b'{"model": "m", "api_key": "k", "messages": [{"role": "user", "content": "\\ud800"}]}'
    forwarded = converter.upstream_body(converter.parse_chat_request(raw, DEFAULT))
    assert b"\\ud800" in forwarded


def test_a_body_nested_near_the_parsers_limit_is_refused_or_forwarded_never_a_crash():
    # A streamed body is rewritten (include_usage added): deep enough to parse may be too deep
    # to write back.
    refused = 0
    for depth in range(900, 1000, 4):
        nested = b"[" * depth + b"]" * depth
        raw = b'{"stream": true, "messages": [{"role": "user", "content": ' + nested + b"}]}"
        try:
            converter.upstream_body(converter.parse_chat_request(raw, DEFAULT))
        except InvalidRequest:
            refused += 1
    assert 0 < refused < 25  # some were forwarded, some refused: the limit lies in between


@pytest.mark.parametrize(
    ("raw", "param"),
    [
        (b"", None),
        (b"{not json", None),
        (b"[1, 2]", None),
        (b'"text"', None),
        (b"\xff\xfe", None),
        (body(temperature=float("nan")), None),
        (body(model=""), "model"),
        (body(model=5), "model"),
        (body(model="org/m\nrequest_id=forged"), "model"),
        (b'{"model": "m"}', "messages"),
        (body(messages=[]), "messages"),
        (body(messages="hi"), "messages"),
        (body(messages=["hi"]), "messages[0]"),
        (body(messages=[{"content": "hi"}]), "messages[0].role"),
        (body(messages=[{"role": "user"}, {"role": 3}]), "messages[1].role"),
        (body(stream="yes"), "stream"),
        (body(stream=1), "stream"),
        (body(temperature="hot"), "temperature"),
        (body(temperature=True), "temperature"),
        (body(top_p=[1]), "top_p"),
        (body(max_tokens="100"), "max_tokens"),
        (body(max_tokens=1.5), "max_tokens"),
        (body(n=False), "n"),
        (body(seed="1"), "seed"),
        (body(stream_options="usage"), "stream_options"),
        (b'{"messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", None),  # deeper than json goes
    ],
)
def test_it_rejects_bad_requests(raw, param):
    with pytest.raises(InvalidRequest) as caught:
        converter.parse_chat_request(raw, DEFAULT)
    assert caught.value.param == param


def raw_chat(*members: str, model: str = "m") -> bytes:
    """A chat request's bytes with more members, as they are written."""
    return (
        ", ".join(
            (f'{{"model": "{model}"', '"messages": [{"role": "user", "content": "hi"}]', *members)
        ).encode()
        + b"}"
    )


@pytest.mark.parametrize(
    "raw",
    [
        raw_chat('"model": "forbidden"', model="allowed"),
        b'{"model": "m", "messages": [{"role": "user", "role": "system", "content": "hi"}]}',
        raw_chat('"stream_options": {"a": 1, "a": 2}'),
        raw_chat('"mod\\u0065l": "other"'),  # the same key written two ways is the same key
    ],
)
def test_it_refuses_a_key_twice_in_one_object(raw):
    with pytest.raises(InvalidRequest, match="more than once"):
        converter.parse_chat_request(raw, DEFAULT)


@pytest.mark.parametrize(
    ("number", "param"),
    [
        ('"temperature": 1e309', "temperature"),
        ('"top_p": -1e400', "top_p"),
        ('"metadata": {"x": [1, 2e999]}', "metadata.x[1]"),
    ],
)
def test_it_refuses_a_number_too_large_for_a_float_naming_it(number, param):
    with pytest.raises(InvalidRequest, match="finite") as caught:
        converter.parse_chat_request(raw_chat(number), DEFAULT)
    assert caught.value.param == param


def test_it_takes_large_finite_numbers_and_integers():
    raw = raw_chat('"temperature": 1e308', '"seed": ' + "9" * 400)
    assert converter.parse_chat_request(raw, DEFAULT).raw == raw


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-8-sig"])
def test_it_refuses_a_body_not_in_utf8(encoding):
    with pytest.raises(InvalidRequest, match="UTF-8"):
        converter.parse_chat_request(raw_chat().decode().encode(encoding), DEFAULT)


def test_it_accepts_nulls_and_integral_floats():
    chat = converter.parse_chat_request(
        body(model=None, temperature=None, max_tokens=100.0, stream=None), DEFAULT
    )
    assert chat.model == DEFAULT and chat.stream is False


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"model": " "}, "`model` must be a non-empty string of printable characters."),
        ({"messages": {}}, "`messages` must be a non-empty array of message objects."),
        ({"messages": [{"role": "user"}, "x"]}, "`messages[1]` must be an object."),
        ({"messages": [{"role": ""}]}, "`messages[0].role` must be a non-empty string."),
        ({"logprobs": "yes"}, "`logprobs` must be a boolean."),
        ({"frequency_penalty": "0"}, "`frequency_penalty` must be a number."),
        ({"top_logprobs": 2.5}, "`top_logprobs` must be an integer."),
        ({"stream_options": []}, "`stream_options` must be an object."),
    ],
)
def test_each_check_says_what_the_field_must_be(fields, message):
    with pytest.raises(InvalidRequest) as caught:
        converter.parse_chat_request(body(**fields), DEFAULT)
    assert caught.value.message == message


def test_the_first_wrong_field_is_the_one_reported():
    # Checked in a fixed order: the model, the messages, booleans, numbers, integers, stream_options.
    fields = {"model": 1, "messages": [], "stream": 1, "temperature": "x", "n": "x"}
    right = {"model": "m", "messages": [{"role": "user"}], "stream": True, "temperature": 1, "n": 1}
    for param in right:
        with pytest.raises(InvalidRequest) as caught:
            converter.parse_chat_request(json.dumps(fields).encode(), DEFAULT)
        assert caught.value.param == param
        fields[param] = right[param]
    assert converter.parse_chat_request(json.dumps(fields).encode(), DEFAULT).model == "m"
    with pytest.raises(InvalidRequest) as caught:
        converter.parse_chat_request(body(n=0.5, stream_options=1), DEFAULT)
    assert caught.value.param == "n"


@pytest.mark.parametrize(
    ("value", "integral"), [(3, True), (3.0, True), (3.5, False), (True, False), ("3", False)]
)
def test_an_integer_may_come_as_an_integral_float(value, integral):
    assert converter.is_integer(value) is integral


# --- Estimates -----------------------------------------------------------------------------------


def test_prompt_estimate_counts_what_a_chat_template_renders():
    one = [{"role": "user", "content": "Hello there, how are you?"}]  # 25 characters
    assert converter.estimate_prompt_tokens(one) == (
        converter.TOKENS_PER_REQUEST + converter.TOKENS_PER_MESSAGE + 8  # "user" + 25 chars: 29 / 4
    )
    system = [{"role": "system", "content": "Be brief."}, *one]
    assert converter.estimate_prompt_tokens(system) > converter.estimate_prompt_tokens(one) + 5
    named = [{**one[0], "name": "alice_from_accounting"}]
    assert converter.estimate_prompt_tokens(named) > converter.estimate_prompt_tokens(one)
    calls = [
        *one,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": '{"temp": 21}'},
    ]
    assert converter.estimate_prompt_tokens(calls) >= converter.estimate_prompt_tokens(one) + 2 * 5 + 7
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    with_tools = converter.estimate_prompt_tokens(one, tools)
    assert with_tools >= converter.estimate_prompt_tokens(one) + converter.TOKENS_FOR_TOOLS + 15


def test_prompt_estimate_counts_a_chinese_character_as_a_token():
    chinese = converter.estimate_prompt_tokens([{"role": "user", "content": "你好，请介绍一下你自己。"}])
    assert chinese == converter.TOKENS_PER_REQUEST + converter.TOKENS_PER_MESSAGE + 1 + 12


def test_parse_chat_request_estimates_the_prompt():
    raw = json.dumps(
        {"model": "m", "messages": [{"role": "user", "content": "x" * 400}], "tools": [{"type": "function"}]}
    ).encode()
    chat = converter.parse_chat_request(raw, DEFAULT)
    assert chat.prompt_tokens == converter.estimate_prompt_tokens(
        [{"role": "user", "content": "x" * 400}], [{"type": "function"}]
    )
    assert chat.prompt_tokens > 100 + converter.TOKENS_FOR_TOOLS


def test_characters_become_tokens_rounded_up():
    assert [converter.tokens_for(n) for n in (0, 1, 4, 5)] == [0, 1, 1, 2]
    assert converter.text_size(["abc", "你好"]) == 3 + 2 * converter.CHARS_PER_TOKEN


def test_usage_of_odd_shapes():
    assert Usage.of({"prompt_tokens": 3, "completion_tokens": 4}) == Usage(3, 4, 7)
    assert Usage.of({"prompt_tokens": "3"}) == Usage(None, None, None)
    assert Usage.of(None) is None


# --- Answers ----------------------------------------------------------------------------------


def test_completion_must_be_an_object():
    with pytest.raises(BadAnswer):
        converter.parse_completion(b"<html>oops</html>")
    with pytest.raises(BadAnswer):
        converter.parse_completion(b"[]")
    with pytest.raises(BadAnswer):
        converter.parse_completion(b"[" * 100_000)
    with pytest.raises(BadAnswer) as caught:
        converter.parse_completion(b'{"error": "model is loading"}')
    assert caught.value.error == {"error": "model is loading"}


@pytest.mark.parametrize(
    "raw",
    [
        b'{"usage": {"total_tokens": 3}, "x": [1.5, "\\u00e9"]}',
        b'{"a": NaN, "b": -Infinity}',  # not JSON, and the json module takes it: so does the relay
        '{"utf16": "é"}'.encode("utf-16"),
        b'{"lone": "\\ud83d"}',
    ],
)
def test_the_routers_json_reads_as_the_json_module_reads_it(raw):
    assert repr(converter.router_json(raw)) == repr(json.loads(raw))


def test_the_routers_json_that_is_none_is_refused():
    with pytest.raises(ValueError):
        converter.router_json(b'{"a": ')


def test_a_count_past_64_bits_is_no_count():
    # orjson reads such an integer as a float, the json module as an int: neither is a count.
    usage = converter.router_json(
        b'{"prompt_tokens": 123456789012345678901234567890, "completion_tokens": 2}'
    )
    assert converter.Usage.of(usage) == converter.Usage(None, 2, None)
