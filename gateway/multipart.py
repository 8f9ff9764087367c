"""A multipart/form-data body already in memory, read by Django's own parser into plain values.

gateway.asgi has bounded the body by MAX_REQUEST_BYTES and holds it whole, so its files stay in
memory too (Django would spool a file over FILE_UPLOAD_MAX_MEMORY_SIZE to a temporary file), and
a big body is parsed on a worker thread, not on the event loop where streams wait.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from asgiref.sync import sync_to_async
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.core.files.uploadhandler import MemoryFileUploadHandler
from django.http.multipartparser import MultiPartParser, MultiPartParserError

from gateway.converter import InvalidRequest

# Below this a body is parsed at once: a thread hop would cost more than the parsing.
_ON_THE_LOOP = 256 * 1024


@dataclass(frozen=True)
class Part:
    """One uploaded file: its name and content type as the client gave them, and its bytes."""

    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class Form:
    fields: dict[str, list[str]]
    files: dict[str, list[Part]]


class _InMemory(MemoryFileUploadHandler):
    """Django's in-memory handler, for a file of any size: the body is in memory already."""

    def handle_raw_input(self, input_data, META, content_length, boundary, encoding=None) -> None:
        self.activated = True


def parse(body: bytes, content_type: str, file_field: str = "file") -> Form:
    """The form's fields and files; `InvalidRequest` (its `param` the form's file field) when
    the body is not multipart/form-data or cannot be read as such."""
    if not content_type.lower().startswith("multipart/form-data"):
        raise InvalidRequest(
            f"Send the request as multipart/form-data, the audio in a `{file_field}` part "
            f"(curl: `-F {file_field}=@speech.wav`).",
            file_field,
        )
    meta = {"CONTENT_TYPE": content_type, "CONTENT_LENGTH": str(len(body))}
    try:
        fields, files = MultiPartParser(meta, io.BytesIO(body), [_InMemory()]).parse()
    except (MultiPartParserError, RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent) as exc:
        raise InvalidRequest(f"The multipart/form-data body cannot be read: {exc}", file_field) from None
    return Form(
        fields={name: fields.getlist(name) for name in fields},
        files={
            name: [Part(f.name or "", f.content_type or "", f.file.getvalue()) for f in files.getlist(name)]
            for name in files
        },
    )


async def aparse(body: bytes, content_type: str, file_field: str = "file") -> Form:
    """`parse`, on a worker thread when the body is big."""
    if len(body) < _ON_THE_LOOP:
        return parse(body, content_type, file_field)
    return await sync_to_async(parse, thread_sensitive=False)(body, content_type, file_field)
