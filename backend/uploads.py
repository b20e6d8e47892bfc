"""A multipart upload streamed straight into one file, with a hard size limit.

Starlette's form parser would first spool the whole file to the system's temp folder — an
oversized upload would be received completely before it could be refused, and outside the data
dir. Here the body is parsed as it arrives: the part named `file` goes into `dest` (a temp file
inside the data dir) and reading stops as soon as it exceeds the limit.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

FILE_FIELD = "file"
MAX_TEXT_FIELD = 4096  # bytes of any other (text) field
# Bytes of multipart framing allowed on top of the file when checking Content-Length early.
FRAMING_SLACK = 64 * 1024
# An oversized body is still read (and thrown away) up to this many bytes before the 413:
# clients such as `requests` send the whole body before reading the answer, and a connection
# closed under them surfaces as a reset instead of the 413 and its message.
DRAIN_MAX = 64 * 2**20


class UploadError(Exception):
    """A malformed upload (400)."""


class UploadTooLarge(UploadError):
    """The file exceeds the limit (413)."""


@dataclass
class Upload:
    filename: str
    size: int
    fields: dict[str, str] = field(default_factory=dict)


def safe_filename(raw: str) -> str:
    """The client's file name for display only: no folders, no control characters."""
    name = raw.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable()).strip()
    return name[:200] or "checkpoint"


class _Receiver:
    """python-multipart callbacks writing the `file` part to disk and keeping text fields."""

    def __init__(self, out: IO[bytes], limit: int) -> None:
        self.out = out
        self.limit = limit
        self.size = 0
        self.filename: str | None = None
        self.fields: dict[str, str] = {}
        self._header_name = b""
        self._header_value = b""
        self._disposition = b""
        self._name = ""
        self._is_file = False
        self._text = bytearray()

    def on_part_begin(self) -> None:
        self._disposition = b""
        self._name = ""
        self._is_file = False
        self._text = bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        if self._header_name.strip().lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name = b""
        self._header_value = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        self._name = options.get(b"name", b"").decode("utf-8", "replace")
        if self._name == FILE_FIELD:
            if self.filename is not None:
                raise UploadError(f"send one file in the {FILE_FIELD!r} field, not several")
            self._is_file = True
            self.filename = safe_filename(options.get(b"filename", b"").decode("utf-8", "replace"))

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._is_file:
            self.size += end - start
            if self.size > self.limit:
                raise UploadTooLarge(
                    f"the file is larger than the limit of {self.limit} bytes "
                    f"({self.limit / 2**20:.1f} MiB)"
                )
            self.out.write(data[start:end])
        else:
            self._text += data[start:end]
            if len(self._text) > MAX_TEXT_FIELD:
                raise UploadError(
                    f"form field {self._name!r} is longer than {MAX_TEXT_FIELD} bytes"
                )

    def on_part_end(self) -> None:
        if not self._is_file and self._name:
            self.fields[self._name] = self._text.decode("utf-8", "replace")


async def _drain(chunks: AsyncIterator[bytes]) -> None:
    """Read and discard the rest of the body, up to DRAIN_MAX bytes."""
    seen = 0
    try:
        async for chunk in chunks:
            seen += len(chunk)
            if seen > DRAIN_MAX:
                return
    except (ClientDisconnect, RuntimeError):  # gone already, or the stream was consumed
        return


async def receive_upload(request: Request, dest: Path, limit: int) -> Upload:
    """Stream the multipart body's `file` part into `dest`; raise UploadError/UploadTooLarge.

    `dest` may hold a partial file when this raises; the caller removes it.
    """
    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    if ctype != b"multipart/form-data":
        raise UploadError(
            f"expected multipart/form-data with the checkpoint in a field named {FILE_FIELD!r}"
        )
    boundary = params.get(b"boundary")
    if not boundary:
        raise UploadError("multipart body without a boundary")
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit + FRAMING_SLACK:
        if int(length) <= limit + DRAIN_MAX:
            await _drain(request.stream())
        raise UploadTooLarge(
            f"the upload ({int(length)} bytes) is larger than the limit of {limit} bytes "
            f"({limit / 2**20:.1f} MiB)"
        )
    with dest.open("wb") as out:
        receiver = _Receiver(out, limit)
        parser = MultipartParser(
            boundary,
            {
                "on_part_begin": receiver.on_part_begin,
                "on_part_data": receiver.on_part_data,
                "on_part_end": receiver.on_part_end,
                "on_header_field": receiver.on_header_field,
                "on_header_value": receiver.on_header_value,
                "on_header_end": receiver.on_header_end,
                "on_headers_finished": receiver.on_headers_finished,
            },
        )
        # One iterator throughout: after an oversized part the same stream is drained.
        chunks = request.stream().__aiter__()
        try:
            async for chunk in chunks:
                parser.write(chunk)
            parser.finalize()
        except UploadTooLarge:
            await _drain(chunks)
            raise
        except MultipartParseError as e:
            raise UploadError(f"malformed multipart body: {e}") from None
        except ClientDisconnect:
            raise UploadError("the client disconnected during the upload") from None
    if receiver.filename is None:
        raise UploadError(f"no file in the multipart field {FILE_FIELD!r}")
    if receiver.size == 0:
        raise UploadError("the uploaded file is empty")
    return Upload(receiver.filename, receiver.size, receiver.fields)
