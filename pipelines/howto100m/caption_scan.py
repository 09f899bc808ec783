"""One streaming pass over caption.json that finds the byte extent of each video's record.

caption.json is one JSON object on one line, `{video_id: {"start": [...], "end": [...],
"text": [...]}, ...}`, several GB for the full set. The scan parses only the top level (keys,
':' and ','), and skips each value by counting brackets outside strings, so no Python object is
built for a value and memory stays at about one chunk (plus the longest single string).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import BinaryIO

# A run with no bracket outside strings: unquoted bytes (numbers, NaN, ',', ':', spaces) and
# complete strings (escapes included). It stops at a bracket, at a string that does not end in
# the buffer, or at a stray backslash. Invalid UTF-8 bytes are just bytes here.
_RUN_WITHOUT_BRACKETS = re.compile(rb'(?:[^"{}\[\]\\]+|"[^"\\]*(?:\\.[^"\\]*)*")*', re.DOTALL)
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_WHITESPACE = re.compile(rb"[ \t\r\n]*")
_SCALAR = re.compile(rb"[^,}\] \t\r\n]*")  # a number, NaN, true, false or null
_UTF8_BOM = b"\xef\xbb\xbf"
_OPENERS = b"{["
_CLOSERS = b"}]"


class CaptionFileFormatError(ValueError):
    """caption.json is not one JSON object of records (truncated, or not JSON at this byte)."""


def scan_caption_records(
    file: BinaryIO, *, chunk_bytes: int, name: str = "caption.json"
) -> Iterator[tuple[bytes, int, int]]:
    """Yield (raw JSON key with its quotes, value byte offset, value byte length) in file order."""
    stream = _ByteStream(file, chunk_bytes=chunk_bytes, name=name)
    stream.skip_bom()
    stream.expect(b"{")
    if stream.peek() == ord("}"):
        stream.advance(1)
    else:
        yield from _scan_members(stream)
    if stream.peek() is not None:
        raise stream.error("unexpected data after the closing '}'")


def decode_key(raw_key: bytes) -> str:
    """The video id a raw JSON key (with quotes) spells; undecodable bytes become U+FFFD."""
    if b"\\" not in raw_key:
        return raw_key[1:-1].decode("utf-8", "replace")
    return json.loads(raw_key.decode("utf-8", "replace"), strict=False)


def _scan_members(stream: _ByteStream) -> Iterator[tuple[bytes, int, int]]:
    while True:
        key = stream.take_string()
        stream.expect(b":")
        stream.peek()  # skip whitespace so the extent starts at the value itself
        start = stream.offset
        stream.skip_value()
        yield key, start, stream.offset - start
        separator = stream.peek()
        if separator == ord("}"):
            stream.advance(1)
            return
        stream.expect(b",")


class _ByteStream:
    """A window on a binary file: `buffer[position:]` is unread; bytes before it are dropped on refill."""

    def __init__(self, file: BinaryIO, *, chunk_bytes: int, name: str) -> None:
        if chunk_bytes < 1:
            raise ValueError(f"chunk_bytes must be >= 1, got {chunk_bytes}")
        self.file, self.chunk_bytes, self.name = file, chunk_bytes, name
        self.buffer = b""
        self.position = 0
        self.buffer_offset = 0  # file offset of buffer[0]

    @property
    def offset(self) -> int:
        return self.buffer_offset + self.position

    def advance(self, count: int) -> None:
        self.position += count

    def refill(self, at_least: int = 0) -> bool:
        """Drop the read bytes and append at least max(chunk_bytes, at_least) more; False at EOF."""
        self.buffer_offset += self.position
        self.buffer = self.buffer[self.position :]
        self.position = 0
        data = self.file.read(max(self.chunk_bytes, at_least))
        self.buffer += data
        return bool(data)

    def skip_bom(self) -> None:
        while len(self.buffer) < len(_UTF8_BOM) and self.refill():
            pass
        if self.buffer.startswith(_UTF8_BOM):
            self.advance(len(_UTF8_BOM))

    def peek(self) -> int | None:
        """The next non-whitespace byte (not consumed), or None at the end of the file."""
        while True:
            self.position = _WHITESPACE.match(self.buffer, self.position).end()  # type: ignore[union-attr]
            if self.position < len(self.buffer):
                return self.buffer[self.position]
            if not self.refill():
                return None

    def expect(self, token: bytes) -> None:
        if self.peek() != token[0]:
            found = (
                "the end of the file" if self.peek() is None else repr(bytes([self.buffer[self.position]]))
            )
            raise self.error(f"expected {token.decode()!r}, found {found}")
        self.advance(1)

    def take_string(self) -> bytes:
        if self.peek() != ord('"'):
            raise self.error("expected a '\"' starting a video id")
        return self._take_token(_STRING, "a string")

    def skip_value(self) -> None:
        first = self.peek()
        if first is None:
            raise self.error("the file ends where a value should start")
        if first in _OPENERS:
            self._skip_container()
        elif first == ord('"'):
            self._take_token(_STRING, "a string")
        else:
            self._take_token(_SCALAR, "a value")

    def _take_token(self, pattern: re.Pattern[bytes], what: str) -> bytes:
        """Match `pattern` at the position, growing the buffer while the match could grow further."""
        while True:
            match = pattern.match(self.buffer, self.position)
            if match is not None and match.end() < len(self.buffer):
                break
            if not self.refill(at_least=len(self.buffer) - self.position):  # doubling keeps this linear
                match = pattern.match(self.buffer, self.position)  # the refill moved the window
                if match is None:
                    raise self.error(f"the file ends inside {what}")
                break
        if match.end() == self.position:
            raise self.error(f"expected {what}")
        self.position = match.end()
        return match.group()

    def _skip_container(self) -> None:
        depth = 0
        while True:
            self.position = _RUN_WITHOUT_BRACKETS.match(self.buffer, self.position).end()  # type: ignore[union-attr]
            byte = self.buffer[self.position] if self.position < len(self.buffer) else None
            if byte is None or byte == ord('"'):  # buffer end, or a string the buffer cuts off
                if not self.refill(at_least=len(self.buffer) - self.position):
                    raise self.error(f"the file ends inside a record ({depth} brackets open)")
            elif byte in _OPENERS:
                depth += 1
                self.advance(1)
            elif byte in _CLOSERS:
                depth -= 1
                self.advance(1)
                if depth == 0:
                    return
            else:
                raise self.error("a backslash outside a string")

    def error(self, message: str) -> CaptionFileFormatError:
        context = self.buffer[max(0, self.position - 40) : self.position + 40]
        return CaptionFileFormatError(f"{self.name}: {message} at byte {self.offset} (near {context!r})")
