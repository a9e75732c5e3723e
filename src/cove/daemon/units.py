"""systemd units for cove: the daemon (system or user), and `cove@NAME.service` for people
who manage single VMs or stacks with systemctl. Pure text; `cove systemd install` writes it."""

from __future__ import annotations

import re
from pathlib import Path

UNIT_NAME = "coved.service"
TEMPLATE_NAME = "cove@.service"


def quote(word: str, exec_word: bool = False) -> str:
    """One argv word or value as systemd reads it: double-quoted, with `\\`, `"` and
    specifiers (`%`) escaped, so a path with spaces stays one word; in a command line `$`
    too, so systemd expands no variable in our own words."""
    if "\n" in word or "\0" in word:
        raise ValueError(f"{word!r}: a unit cannot hold a newline or NUL")
    escaped = word.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    if exec_word:
        escaped = escaped.replace("$", "$$")
    return f'"{escaped}"' if re.search(r'[\s"\\\';$%]', word) or not word else escaped


def command(argv: list[str]) -> str:
    return " ".join(quote(word, exec_word=True) for word in argv)


def daemon_unit(cove: list[str], home: Path, user: bool) -> str:
    target = "default.target" if user else "multi-user.target"
    after = "" if user else "After=network-online.target\nWants=network-online.target\n"
    return (
        "[Unit]\n"
        "Description=cove daemon: declarative microVMs\n"
        f"{after}"
        "\n[Service]\n"
        "Type=simple\n"
        f"Environment={quote('COVE_HOME=' + str(home))}\n"
        f"ExecStart={command([*cove, 'daemon'])}\n"
        "# VMs run on when the daemon stops or restarts; a new daemon adopts them\n"
        "KillMode=process\n"
        "Restart=on-failure\n"
        "RestartSec=2\n"
        "\n[Install]\n"
        f"WantedBy={target}\n"
    )


def vm_template(cove: list[str], home: Path, user: bool) -> str:
    """`cove@NAME.service`: NAME is a VM's or a stack's name; a drop-in gives its spec or
    stack path as COVE_TARGET. Start is `cove up -d` (healthy before it returns), stop is
    `cove down`."""
    after = UNIT_NAME
    return (
        "[Unit]\n"
        "Description=cove VM or stack %i\n"
        f"Requires={after}\n"
        f"After={after}\n"
        "\n[Service]\n"
        "Type=oneshot\n"
        "RemainAfterExit=yes\n"
        f"Environment={quote('COVE_HOME=' + str(home))}\n"
        f"ExecStart={command([*cove, 'up', '-d', '--timeout', '900'])} ${{COVE_TARGET}}\n"
        f"ExecStop={command([*cove, 'down'])} %i\n"
        "TimeoutStartSec=1000\n"
        "\n[Install]\n"
        f"WantedBy={'default.target' if user else 'multi-user.target'}\n"
    )


def instance_dropin(target: Path) -> str:
    return f"[Service]\nEnvironment={quote('COVE_TARGET=' + str(target))}\n"


def unit_dir(user: bool, home_dir: Path) -> Path:
    return home_dir / ".config/systemd/user" if user else Path("/etc/systemd/system")
