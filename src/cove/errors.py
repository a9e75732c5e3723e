"""User-facing errors: what is wrong, where, and how to fix it."""

from __future__ import annotations

from typing import NoReturn


class CoveError(Exception):
    """An error caused by user input or the host, shown without a traceback."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message


def die(message: str, hint: str | None = None) -> NoReturn:
    raise CoveError(message, hint)
