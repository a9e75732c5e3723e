"""C modules in place of Python wrappers whose imports are costly in the guest.

`os` is `posix` plus path helpers, environ as text and the ABCs of `_collections_abc`: 26 ms
of a cold guest's start under TCG, for functions `posix` has itself (the agent needs only
`exists` and `isdir` beyond them, below). `signal` imports enum (and with it functools,
types, ...), `collections` imports operator, keyword and reprlib, `heapq` defines a
pure-Python copy before importing its C version: together ~0.3 s of every guest boot under
TCG. The C modules behind them offer the same functions with plain ints.
"""

import posix as os

TYPE_CHECKING = False
if TYPE_CHECKING:
    import heapq
    import signal
    from collections import deque
else:
    try:
        import _heapq as heapq
    except ImportError:
        import heapq
    try:
        import _signal as signal
    except ImportError:
        import signal
    try:
        from _collections import deque
    except ImportError:
        from collections import deque

__all__ = ["deque", "exists", "heapq", "isdir", "os", "signal"]

S_IFMT = 0o170000
S_IFDIR = 0o040000


def exists(path: str) -> bool:
    try:
        os.stat(path)
    except OSError:
        return False
    return True


def isdir(path: str) -> bool:
    try:
        return os.stat(path).st_mode & S_IFMT == S_IFDIR
    except OSError:
        return False
