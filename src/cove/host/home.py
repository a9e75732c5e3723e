"""Where cove keeps its state: $COVE_HOME, else /var/lib/cove for root, else XDG state.

The home is private: 0700, owned by the user running cove. A home that another user owns
or can write is refused, since whoever controls it controls the VMs started from it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cove.errors import die

PRIVATE_UMASK = 0o077  # state is 0600 in 0700 directories
SOCKET_NAME = "coved.sock"  # the daemon's API, in the home


def cove_home() -> Path:
    explicit = os.environ.get("COVE_HOME")
    if explicit:
        return Path(explicit)
    if os.geteuid() == 0:
        return Path("/var/lib/cove")
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "cove"


def home_refusal(info: os.stat_result, uid: int) -> str | None:
    """Why a home with this owner and mode is not safe to use, or None."""
    if info.st_uid != uid:
        return f"it belongs to uid {info.st_uid}, not to you (uid {uid})"
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"other users can write it (mode {stat.S_IMODE(info.st_mode):04o})"
    return None


def prepare_home(home: Path | None = None, private_umask: bool = True) -> Path:
    """Create the home 0700 (or tighten one an older cove made readable); refuse an unsafe
    one. Everything cove creates from here on is private (umask 077), unless this is a
    library call in someone's program: its umask is its own (state is written with exact
    modes anyway; the umask is the second line)."""
    if private_umask:
        os.umask(PRIVATE_UMASK)
    home = home or cove_home()
    try:
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = home.stat()
    except OSError as error:
        die(f"cannot use {home} as the cove home: {error.strerror}",
            "set COVE_HOME to a directory of your own")
    refusal = home_refusal(info, os.geteuid())
    if refusal:
        die(f"refusing the cove home {home}: {refusal}",
            f"use a directory only you can write (chmod 700 {home}), or set COVE_HOME")
    if info.st_mode & (stat.S_IRGRP | stat.S_IROTH):
        home.chmod(stat.S_IMODE(info.st_mode) & ~0o066)  # readable state leaked secrets
    return home


class Home:
    """The one place that names what lives in a cove home. A plain class, not a dataclass:
    the quick `cove ls` imports this module, and dataclasses pulls in inspect."""

    __slots__ = ("root",)

    def __init__(self, root: Path | None = None) -> None:
        self.root = root or cove_home()

    def __repr__(self) -> str:
        return f"Home({str(self.root)!r})"

    @property
    def cache(self) -> Path:
        """Built artifacts by content hash (may be a link to a shared cache)."""
        return refuse_broken_link(self.root / "cache")

    @property
    def vms(self) -> Path:
        return self.root / "vms"

    def vm(self, name: str) -> Path:
        return self.vms / name

    @property
    def volumes(self) -> Path:
        return self.root / "volumes"

    def volume(self, name: str) -> Path:
        return self.volumes / f"{name}.ext4"

    @property
    def networks(self) -> Path:
        return self.root / "networks"

    @property
    def snapshots(self) -> Path:
        return self.root / "snapshots"

    @property
    def stacks(self) -> Path:
        return self.root / "stacks"

    @property
    def host_facts(self) -> Path:
        """What was learnt about this host (the accelerator decision), per host boot."""
        return self.root / "host"

    @property
    def socket(self) -> Path:
        return self.root / SOCKET_NAME

    @property
    def daemon_log(self) -> Path:
        return self.root / "coved.log"

    @property
    def daemon_lock(self) -> Path:
        return self.root / "coved.lock"

    @property
    def events(self) -> Path:
        return self.root / "events.jsonl"

    @property
    def autostart(self) -> Path:
        return self.root / "autostart.json"


def refuse_broken_link(path: Path) -> Path:
    """`path`, refused with a fix when it is a link whose target is gone (a cache shared by
    a link that was moved or never made): creating it would fail with a bare 'File exists'."""
    if path.is_symlink() and not path.exists():
        target = os.readlink(path)
        die(f"{path} is a symbolic link to {target}, which does not exist",
            f"create that directory (mkdir -p {target}) or remove the link (rm {path}); "
            "cove then makes a cache of its own")
    return path
