"""Files cove keeps: written atomically, private to their owner, read with clear errors."""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path
from typing import Any

from cove.errors import die


def write_atomic(path: Path, data: str | bytes, mode: int = 0o600) -> None:
    """Readers see the old file or the new one, never half of one (even after a crash)."""
    # unique per process, thread and call: two threads of the daemon may write one file
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}."
                         f"{os.urandom(4).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(fd, mode)  # exactly this mode, whatever the umask
            handle.write(data.encode() if isinstance(data, str) else data)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(path)
        fsync_directory(path.parent)  # the rename itself survives a crash
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json(path: Path, value: Any, mode: int = 0o600) -> None:
    write_atomic(path, json.dumps(value, indent=1), mode)


def read_json(path: Path, what: str, way_out: str) -> Any:
    """A JSON state file; a corrupt one is a clear error that says how to get past it."""
    try:
        return json.loads(path.read_text())
    except UnicodeDecodeError:
        die(f"{what} ({path}) is not text", way_out)
    except ValueError as error:
        die(f"{what} ({path}) is corrupt: {error}", way_out)


def read_json_or(path: Path, default: Any) -> Any:
    """A JSON memo that can always be made again: missing or corrupt means `default`."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return default


def remove_tree(path: Path) -> None:
    """rmtree that also removes read-only directories (a Nix store path's are 0555, which
    stops a user who is not root)."""
    def writable_then_retry(function: Any, name: str, _error: Any) -> None:
        parent = os.path.dirname(name)
        os.chmod(parent, 0o700)
        if os.path.isdir(name) and not os.path.islink(name):
            os.chmod(name, 0o700)
        function(name)

    if path.exists():
        shutil.rmtree(path, onerror=writable_then_retry)
