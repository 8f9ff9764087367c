"""A relayed chat stream: what passes on, what is dropped, and what the stream told us."""

import pytest

from gateway import sse
from gateway.chatstream import ChatStream
from gateway.converter import BadAnswer, Usage
from tests.support.answers import chunk, standard_stream


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
