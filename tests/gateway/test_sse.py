"""Server-sent events: splitting the router's bytes into events, and reading their data."""

import pytest

from gateway import sse


def split(*chunks: bytes) -> list[bytes]:
    splitter = sse.EventSplitter()
    return [event for piece in chunks for event in splitter.feed(piece)]


def test_events_are_the_text_between_blank_lines():
    assert split(b"data: a\n\ndata: b\n\n") == [b"data: a", b"data: b"]


def test_an_event_cut_anywhere_comes_out_whole_once_its_blank_line_arrives():
    whole = b"data: first\n\ndata: second\n\n"
    for cut in range(len(whole) + 1):
        assert split(whole[:cut], whole[cut:]) == [b"data: first", b"data: second"], cut


def test_an_unfinished_event_waits():
    splitter = sse.EventSplitter()
    assert splitter.feed(b"data: a\n") == []
    assert splitter.feed(b"\n") == [b"data: a"]


@pytest.mark.parametrize("end", [b"\r\n", b"\r"])
def test_crlf_and_cr_line_ends_are_lf(end):
    whole = b"data: a" + end + end + b"data: b" + end + end
    for cut in range(len(whole) + 1):
        # A last CR is held (its LF may be in the next chunk): what follows, or the stream's
        # end (ChatStream.end feeds a blank line), lets it out.
        assert split(whole[:cut], whole[cut:], b"\n") == [b"data: a", b"data: b"], cut


def test_extra_blank_lines_make_no_empty_events():
    assert split(b"\n\n\n\ndata: a\n\n\n\n") == [b"data: a"]


@pytest.mark.parametrize(
    ("event", "data"),
    [
        (b"data: {}", b"{}"),
        (b"data:{}", b"{}"),
        (b"data:  two spaces", b" two spaces"),
        (b"data: a\ndata: b", b"a\nb"),
        (b"event: x\ndata: a\nid: 1", b"a"),
        (b"data:", b""),
        (b": keep-alive", None),
        (b"event: ping", None),
    ],
)
def test_the_data_of_an_event(event, data):
    assert sse.data_of(event) == data


def test_done_is_a_whole_event():
    assert split(sse.DONE) == [b"data: [DONE]"]
    assert sse.data_of(split(sse.DONE)[0]) == b"[DONE]"
