"""Reading TOML files that users write, with errors that name the file, line and key.

`tomllib` reports syntax errors with a line but forgets lines once parsed, so `TomlDocument`
keeps the text and finds the line of a key inside the n-th `[[table]]` when a value is wrong.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from scheduler.errors import InputError, not_utf8

_SYNTAX_LINE = re.compile(r"\(at line (\d+), column \d+\)|\(at end of document\)")


@dataclass(frozen=True, slots=True)
class TomlDocument:
    """A parsed TOML file and its text, for error messages that point at lines."""

    source: str
    text: str
    data: Mapping[str, Any]

    @classmethod
    def read(cls, path: str | Path) -> TomlDocument:
        """Reads and parses `path`; InputError naming the file (and line) when it cannot."""
        try:
            data = Path(path).read_bytes()
        except OSError as error:
            raise InputError(error.strerror or str(error), source=str(path)) from None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise not_utf8(str(path), [data]) from None
        return cls.parse(text, str(path))

    @classmethod
    def parse(cls, text: str, source: str) -> TomlDocument:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            match = _SYNTAX_LINE.search(str(error))
            message = _SYNTAX_LINE.sub("", str(error)).strip()
            line = None
            if match:
                line = int(match.group(1)) if match.group(1) else max(1, len(text.splitlines()))
            raise InputError(f"not valid TOML: {message}", source=source, line=line) from None
        return cls(source, text, data)

    def line_of(self, key: str, table: str = "", index: int = 0) -> int | None:
        """The line where `key` is set, inside the `index`-th `[[table]]` when `table` is given."""
        lines = self.text.splitlines()
        begin, end = 0, len(lines)
        if table:
            headers = [n for n, line in enumerate(lines) if re.match(rf"\s*\[\[\s*{re.escape(table)}\s*\]\]", line)]
            if index >= len(headers):
                return None
            begin = headers[index]
            end = next((n for n in range(begin + 1, len(lines)) if lines[n].lstrip().startswith("[")), len(lines))
        if key.startswith("["):
            pattern = re.compile(rf"\s*{re.escape(key)}")
        else:
            pattern = re.compile(rf"\s*[\"']?{re.escape(key)}[\"']?\s*=")
        for number in range(begin, end):
            if pattern.match(lines[number]):
                return number + 1
        if table:
            return begin + 1
        # A top-level table (`[name]`, `[name.x]`, `[[name]]`) or dotted key (`name.x = 1`).
        header = re.compile(rf"\s*(\[\[?\s*)?[\"']?{re.escape(key)}[\"']?\s*[\].]")
        return next((number + 1 for number, line in enumerate(lines) if header.match(line)), None)

    def fail_in(self, kind: str, index: int, entry: Mapping[str, Any], key: str, message: str) -> NoReturn:
        """Raises InputError for `key` of the `index`-th `[[kind]]` table (`entry`), named
        `kind[index] (name)`. A dotted key (`quota.a100.weight`) is found on its first two parts'
        line, where an inline table sets it."""
        name = entry.get("name")
        label = f"{kind}[{index}]" + (f" ({name})" if isinstance(name, str) else "")
        self.fail(f"{label}.{key}", message, key=".".join(key.split(".")[:2]), table=kind, index=index)

    def fail(self, field: str, message: str, *, key: str = "", table: str = "", index: int = 0) -> NoReturn:
        """Raises InputError for `field`, located at `key` (inside `[[table]]` number `index`)."""
        line = self.line_of(key or field, table, index) if (key or field) else None
        raise InputError(message, source=self.source, line=line, field=field)
