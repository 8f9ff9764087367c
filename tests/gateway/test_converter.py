import json

import pytest

from gateway import converter, sse
from gateway.converter import BadAnswer, ChatStream, InvalidRequest, Usage
from tests.conftest import chunk, standard_stream

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


def test_it_accepts_nulls_and_integral_floats():
    chat = converter.parse_chat_request(
        body(model=None, temperature=None, max_tokens=100.0, stream=None), DEFAULT
    )
    assert chat.model == DEFAULT and chat.stream is False


# --- Streams -------------------------------------------------------------------------------------


def relay(chunks, wants_usage=False) -> tuple[bytes, ChatStream]:
    stream = ChatStream(wants_usage=wants_usage)
    out = b"".join(stream.feed(c) for c in chunks)
    return out, stream


def test_stream_drops_the_usage_chunk_nobody_asked_for_but_counts_it():
    out, stream = relay(standard_stream(usage=(11, 2)))
    assert b'"usage"' not in out
    assert out.endswith(b"data: [DONE]\n\n")
    assert out.count(b"data: ") == 4
    assert stream.usage == Usage(11, 2, 13)
    assert stream.model == "openai/gpt-oss-120b"
    assert stream.done and stream.started


def test_stream_keeps_the_usage_chunk_when_asked():
    out, _stream = relay(standard_stream(usage=(11, 2)), wants_usage=True)
    assert out == b"".join(standard_stream(usage=(11, 2)))


def test_stream_handles_events_split_and_merged_across_chunks():
    whole = b"".join(standard_stream())
    pieces = [whole[i : i + 7] for i in range(0, len(whole), 7)]
    out, _stream = relay(pieces, wants_usage=True)
    assert out == whole
    merged, _ = relay([whole], wants_usage=True)
    assert merged == whole


def test_stream_understands_crlf_and_multiline_data():
    event = b'data: {"id": "1", "model": "m",\r\ndata: "choices": [{"index": 0, "delta": {}}]}\r\n\r\n'
    out, stream = relay([event, b"data: [DONE]\r\n\r\n"])
    assert stream.model == "m" and stream.started and stream.done
    assert out.endswith(sse.DONE)


def test_stream_passes_comments_on():
    out, _ = relay([b": keep-alive\n\n", chunk("x"), b"data: [DONE]\n\n"])
    assert out.startswith(b": keep-alive\n\n")


def test_stream_ignores_what_follows_done():
    out, _ = relay([b"data: [DONE]\n\n" + chunk("late")])
    assert out == sse.DONE


@pytest.mark.parametrize(
    "event",
    [
        b"data: not json\n\n",
        b"data: [1, 2]\n\n",
        b'data: {"error": {"message": "overloaded"}}\n\n',
        b"data: " + b"[" * 100_000 + b"\n\n",
    ],
)
def test_stream_refuses_events_it_cannot_relay(event):
    with pytest.raises(BadAnswer):
        relay([chunk("a"), event])


def test_stream_without_done_is_unfinished():
    _, stream = relay([chunk("a")])
    with pytest.raises(BadAnswer):
        stream.end()


def test_stream_end_accepts_a_last_event_without_its_blank_line():
    _, stream = relay([chunk("a"), b"data: [DONE]\n"])
    assert stream.end() == sse.DONE


def test_stream_that_ends_after_a_choice_finished_is_complete_without_done():
    # Cerebras and TGI: the last chunk carries finish_reason (and usage), then the stream closes.
    out, stream = relay([chunk("a"), chunk(finish="stop"), chunk(usage=(9, 2))])
    assert stream.finished and not stream.done
    assert stream.end() == sse.DONE
    assert stream.done and stream.usage == Usage(9, 2, 11)
    assert b"[DONE]" not in out


def test_stream_that_ends_before_any_choice_finished_is_cut_off():
    _, stream = relay([chunk("a"), chunk("b"), chunk(usage=(9, 2))])
    with pytest.raises(BadAnswer, match="before the answer was finished"):
        stream.end()


def test_stream_accepts_data_without_a_space_and_crlf_line_ends():
    events = [e.replace(b"data: ", b"data:").replace(b"\n", b"\r\n") for e in standard_stream()[:-1]]
    whole = b"".join(events)
    # Cut anywhere, CR and LF of one line end included.
    pieces = [whole[i : i + 5] for i in range(0, len(whole), 5)]
    out, stream = relay(pieces)
    assert stream.end() == sse.DONE
    assert stream.model == "openai/gpt-oss-120b" and stream.usage == Usage(5, 2, 7)
    assert stream.completion_chars == len("Hello")
    assert out.count(b"\n\n") == 3 and b"\r" not in out


def test_stream_accepts_bare_cr_line_ends():
    _, stream = relay([chunk("a").replace(b"\n", b"\r"), b"data: [DONE]\r\r"])
    assert stream.completion_chars == 1
    # The last CR is held: its LF could be in the next chunk. The stream's end settles it.
    assert stream.end() == sse.DONE and stream.done


def test_stream_with_usage_in_every_chunk_keeps_the_last():
    chunks = [
        chunk("a").replace(b'"model"', b'"usage": {"prompt_tokens": 4, "completion_tokens": 1}, "model"'),
        chunk(finish="stop").replace(
            b'"model"', b'"usage": {"prompt_tokens": 4, "completion_tokens": 2}, "model"'
        ),
    ]
    out, stream = relay(chunks)
    assert stream.usage == Usage(4, 2, 6)
    assert out.count(b'"usage"') == 2  # in chunks with choices: relayed as they came
    assert stream.end() == sse.DONE


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


def test_usage_of_odd_shapes():
    assert Usage.of({"prompt_tokens": 3, "completion_tokens": 4}) == Usage(3, 4, 7)
    assert Usage.of({"prompt_tokens": "3"}) == Usage(None, None, None)
    assert Usage.of(None) is None


# --- Answers and models -------------------------------------------------------------------------


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


def test_models_list_takes_the_openai_shape_and_keeps_extras():
    listing = converter.models_list(
        {
            "object": "list",
            "data": [
                {"id": "org/a", "providers": [{"provider": "p", "pricing": {"input": 1}}], "created": 5},
                {"id": "b", "object": "something", "created": "yesterday"},
                {"no": "id"},
            ],
        }
    )
    assert listing == {
        "object": "list",
        "data": [
            {
                "id": "org/a",
                "object": "model",
                "created": 5,
                "owned_by": "org",
                "providers": [{"provider": "p", "pricing": {"input": 1}}],
            },
            {"id": "b", "object": "model", "created": 0, "owned_by": "b"},
        ],
    }
    assert converter.models_list([{"id": "x/y"}])["data"][0]["id"] == "x/y"


def test_find_model_understands_provider_suffixes():
    listing = converter.models_list({"data": [{"id": "org/a"}]})
    assert converter.find_model(listing, "org/a")["id"] == "org/a"
    assert converter.find_model(listing, "org/a:fastest")["id"] == "org/a"
    assert converter.find_model(listing, "org/b") is None
