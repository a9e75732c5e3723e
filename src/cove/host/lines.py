"""Service output split into whole, bounded lines. No imports: `cove logs` and `cove run`
print through it, and the journal (which imports asyncio) must not load for them."""

from __future__ import annotations

MAX_LINE = 16 * 1024  # characters (as Docker's logs); a longer line comes in pieces this long


class LineSplitter:
    """Output arrives in chunks; whole lines come out, per (service, stream). Pieces of an
    unfinished line are kept in a list and joined once (joining at every chunk made a long
    line quadratic), and a line longer than `limit` comes out in pieces of that size, so a
    guest writing without newlines cannot grow a buffer without end."""

    def __init__(self, limit: int = MAX_LINE) -> None:
        self.limit = limit
        self.partial: dict[tuple[str, int], tuple[list[str], int]] = {}

    def feed(self, svc: str, fd: int, text: str) -> list[str]:
        pieces, size = self.partial.pop((svc, fd), ([], 0))
        lines: list[str] = []
        *complete, rest = text.split("\n")
        for segment in complete:
            pieces.append(segment)
            lines.extend(self.cut("".join(pieces)))
            pieces, size = [], 0
        if rest:
            pieces.append(rest)
            size += len(rest)
        if size >= self.limit:  # a line this long so far: out with its whole pieces
            joined = "".join(pieces)
            whole = size - size % self.limit
            lines.extend(self.cut(joined[:whole]))
            pieces, size = [joined[whole:]], size - whole
        if size:
            self.partial[(svc, fd)] = (pieces, size)
        return lines

    def cut(self, line: str) -> list[str]:
        return [line[i:i + self.limit] for i in range(0, max(len(line), 1), self.limit)]
