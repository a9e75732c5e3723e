"""C modules in place of Python wrappers whose imports are costly in the guest.

`signal` imports enum (and with it functools, types, ...), `collections` imports operator,
keyword and reprlib, `heapq` defines a pure-Python copy before importing its C version:
together ~0.3 s of every guest boot under TCG. The C modules behind
them offer the same functions with plain ints.
"""

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

__all__ = ["deque", "heapq", "signal"]
