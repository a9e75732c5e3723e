"""What a user who is not root needs to run virtiofsd: a user namespace where they are root,
mapped with their subordinate ids (newuidmap/newgidmap from the `uidmap` package).

Inside it, guest root's files in a read-write share belong to the user on the host; guest
uids 1 and up map into the user's subordinate range from /etc/subuid.
"""

from __future__ import annotations

import os
import pwd
import shutil
from pathlib import Path

SUBUID = Path("/etc/subuid")
SUBGID = Path("/etc/subgid")


def subid_range(path: Path, user: str, ident: int) -> tuple[int, int] | None:
    """(first, count) of the first range `path` gives the user (by name or number)."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.strip().split(":")
        if len(parts) == 3 and parts[0] in (user, str(ident)) and \
                parts[1].isdigit() and parts[2].isdigit() and int(parts[2]) > 0:
            return int(parts[1]), int(parts[2])
    return None


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def rootless_share_problem(uid: int | None = None) -> str | None:
    """Why virtiofsd cannot run for this (non-root) user, with what to do; None if it can."""
    uid = os.geteuid() if uid is None else uid
    name = user_name(uid)
    missing = [tool for tool in ("newuidmap", "newgidmap", "unshare")
               if shutil.which(tool) is None and shutil.which(tool, path="/usr/sbin:/sbin")
               is None]
    if missing:
        return (f"{' and '.join(missing)} not installed: apt-get install uidmap util-linux")
    gid = pwd.getpwuid(uid).pw_gid if name != str(uid) else os.getegid()
    if subid_range(SUBUID, name, uid) is None or (subid_range(SUBGID, name, gid) is None \
            and subid_range(SUBGID, name, uid) is None):
        return (f"user {name} has no subordinate ids in {SUBUID} and {SUBGID}; as root: "
                f"usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {name}")
    return None


def unshare_prefix() -> list[str]:
    """Become root in a new user namespace (own uid -> 0, subordinate ids -> 1...) with a
    private mount namespace."""
    return ["unshare", "--map-root-user", "--map-auto", "--mount", "--propagation", "private",
            "--"]
