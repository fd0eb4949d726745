"""Errors fleetsched raises for user mistakes: one line naming where the mistake is.

Bugs raise ordinary exceptions; a user's bad file or bad argument raises `InputError`,
which the command line prints as a single line and turns into a non-zero exit.
"""

from __future__ import annotations


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
