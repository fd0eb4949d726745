"""Errors fleetsched raises for user mistakes: one line naming where the mistake is.

Bugs raise ordinary exceptions; a user's bad file or bad argument raises `InputError`,
which the command line prints as a single line and turns into a non-zero exit.
"""

from __future__ import annotations

from collections.abc import Iterable


class FleetschedError(Exception):
    """Base of every error meant for a user rather than a developer."""


class InputError(FleetschedError):
    """A mistake in something the user wrote: a file, a line in it, a field, an argument.

    The message reads `FILE:LINE: FIELD: what is wrong`, leaving out the parts that are unknown,
    so that editors and terminals can jump to the place.
    """

    def __init__(
        self,
        message: str,
        *,
        source: str = "",
        line: int | None = None,
        field: str = "",
    ) -> None:
        self.source = source
        self.line = line
        self.field = field
        self.problem = message
        super().__init__(self._format())

    def _format(self) -> str:
        where = self.source
        if self.line is not None:
            where = f"{where}:{self.line}" if where else f"line {self.line}"
        parts = [part for part in (where, self.field, self.problem) if part]
        return ": ".join(parts)


class UnknownGpuModelError(InputError):
    """A GPU model name the catalog cannot resolve."""


def not_utf8(source: str, chunks: Iterable[bytes]) -> InputError:
    """The InputError for the first byte of a file that is not UTF-8, from the file's bytes in order.

    The error names the line, the byte and its offset, so the user can find it
    (`FILE:LINE: not UTF-8 text (byte 0xe9 at offset 812)`); a multi-byte character split
    between two chunks is carried over, not mistaken for a bad byte.

    >>> str(not_utf8("jobs.csv", [b"id,duration_s\\nj\\xc3", b"\\xa9,5\\nk\\xe9,5\\n"]))
    'jobs.csv:3: not UTF-8 text (byte 0xe9 at offset 21); save the file as UTF-8'
    """
    offset, line, pending = 0, 1, b""
    for chunk in chunks:
        data = pending + chunk
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as error:
            if error.end < len(data) or error.reason != "unexpected end of data":
                return _bad_byte(source, data, error.start, offset, line)
            good, pending = data[: error.start], data[error.start :]  # a character split at the chunk's end
        else:
            good, pending = data, b""
        offset += len(good)
        line += good.count(b"\n")
    if pending:  # the file ends inside a character
        return _bad_byte(source, pending, 0, offset, line)
    return InputError("not UTF-8 text; save the file as UTF-8", source=source)


def _bad_byte(source: str, data: bytes, start: int, offset: int, line: int) -> InputError:
    return InputError(
        f"not UTF-8 text (byte 0x{data[start]:02x} at offset {offset + start}); save the file as UTF-8",
        source=source,
        line=line + data.count(b"\n", 0, start),
    )
