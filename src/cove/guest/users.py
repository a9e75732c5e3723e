"""Guest users by name or uid, from the guest's /etc/passwd."""

from __future__ import annotations


def lookup_user(name: str) -> tuple[int, int, str]:
    """(uid, gid, home) of a user name or numeric uid."""
    import pwd

    try:
        entry = pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
    except KeyError:
        if name.isdigit():
            return int(name), int(name), "/"
        raise ValueError(f"no user {name!r} in the guest's /etc/passwd") from None
    return entry.pw_uid, entry.pw_gid, entry.pw_dir
