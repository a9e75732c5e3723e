"""User-facing errors: what is wrong, where, and how to fix it."""

from __future__ import annotations

TYPE_CHECKING = False  # typing costs milliseconds on every CLI call
if TYPE_CHECKING:
    from typing import NoReturn

    from cove.spec.validate import Problem


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


class VMNotFound(CoveError):
    """No VM of that name (the daemon answers 404)."""

    status = 404
    code = "vm-not-found"


class ExecTimeout(CoveError):
    """A command ran past its timeout; its whole process group in the guest was killed."""

    def __init__(self, message: str, stdout: bytes = b"", stderr: bytes = b"") -> None:
        super().__init__(message, "give it a longer timeout, or make it finish sooner")
        self.stdout = stdout
        self.stderr = stderr


class SpecError(CoveError):
    """One or more problems in a spec, each with its key path and a fix (all at once).
    Here, not beside the spec code, so the CLI can catch it without importing that."""

    def __init__(self, file: str, problems: list[Problem]) -> None:
        self.file = file
        self.problems = problems
        super().__init__("\n".join(p.render(file) for p in problems))
