"""What starts when the daemon starts (`cove enable`/`disable`): VMs by name, specs and stacks
by path, kept in the home's autostart.json in the order they were enabled.

A VM the daemon finds dead at its start comes back only if it is enabled (or its restart
policy is `always`, as Docker does on a daemon restart): after a host reboot, what is
disabled stays down."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cove.daemon.status import AUTOSTART_ENV
from cove.host.fsutil import read_json_or, write_json
from cove.host.home import Home

if TYPE_CHECKING:
    from cove.daemon.server import Daemon

log = logging.getLogger("coved")
FILENAME = "autostart.json"
UP_TIMEOUT = 900.0  # a cold build on a slow host; the daemon serves all along
DEAD = ("exited", "failed", "stopped", "created")


@dataclass(frozen=True)
class Entry:
    kind: str  # "vm", "spec" or "stack"
    target: str  # a VM's name, or the absolute path of a cove.toml / cove-stack.toml
    name: str  # the VM's or stack's name, for `cove disable NAME` and the log

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "cove", "up", "-d", "--timeout", str(int(UP_TIMEOUT)),
                self.target]


def load_entries(home: Path) -> list[Entry]:
    raw = read_json_or(Home(home).autostart, [])
    entries = []
    for item in raw if isinstance(raw, list) else []:
        try:
            entries.append(Entry(str(item["kind"]), str(item["target"]), str(item["name"])))
        except (KeyError, TypeError):
            log.warning("%s: skipped an entry that is not kind/target/name: %r", FILENAME, item)
    return entries


def save_entries(home: Path, entries: list[Entry]) -> None:
    write_json(Home(home).autostart, [asdict(e) for e in entries])


def enable(home: Path, entry: Entry) -> bool:
    """False if it was enabled already."""
    entries = load_entries(home)
    if any(e.kind == entry.kind and e.target == entry.target for e in entries):
        return False
    save_entries(home, [*entries, entry])
    return True


def disable(home: Path, name_or_target: str) -> list[Entry]:
    """Remove the entries named so (by name or path); returns what was removed."""
    entries = load_entries(home)
    gone = [e for e in entries if name_or_target in (e.name, e.target)]
    save_entries(home, [e for e in entries if e not in gone])
    return gone


async def start_enabled(daemon: Daemon) -> None:
    """Each enabled target, one after another (a stack's own order inside it)."""
    for entry in load_entries(daemon.home):
        try:
            if entry.kind == "vm":
                await start_vm(daemon, entry)
            elif entry.kind == "spec" and entry.name in daemon.vms \
                    and daemon.vms[entry.name].state not in DEAD:
                log.info("autostart: %s runs already", entry.name)  # adopted: a restart
            else:
                await run_up(daemon.home, entry)
        except Exception as error:  # one bad entry must not keep the others down
            log.error("autostart %s %s: %s", entry.kind, entry.name, error)
            daemon.events.append({"ts": time.time(), "vm": entry.name,
                                  "kind": "autostart-failed", "error": str(error)})


async def start_vm(daemon: Daemon, entry: Entry) -> None:
    supervisor = daemon.vms.get(entry.target)
    if supervisor is None:
        log.warning("autostart: VM %s is gone (`cove disable %s` forgets it)", entry.target,
                    entry.target)
        return
    if supervisor.state in DEAD:
        log.info("autostart: booting VM %s", entry.target)
        supervisor.stopping = False
        await supervisor.boot()


async def run_up(home: Path, entry: Entry) -> None:
    """`cove up -d` of the spec or stack, as its own process: the build may take minutes
    and must not run in the daemon's event loop. Its output goes to coved.log."""
    if not Path(entry.target).is_file():
        log.warning("autostart: %s is gone (`cove disable %s` forgets it)", entry.target,
                    entry.name)
        return
    log.info("autostart: cove up -d %s", entry.target)
    process = await asyncio.create_subprocess_exec(
        *entry.argv(), stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "COVE_HOME": str(home), AUTOSTART_ENV: "1"},
        start_new_session=True)
    try:
        output, _ = await process.communicate()
    except BaseException:
        process.kill()  # the daemon is stopping: no orphan `cove up`
        await process.wait()
        raise
    for line in output.decode(errors="replace").splitlines():
        log.info("autostart %s: %s", entry.name, line)
    if process.returncode != 0:
        raise RuntimeError(f"`cove up -d {entry.target}` exited with {process.returncode}")
