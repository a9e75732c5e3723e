"""The "VM" behind a hypervisor stand-in: cove's real guest agent, run as a host process with
the agent config cove put into the initrd, reached through a unix socket.

The stand-in reads that config out of the initrd itself (the newc archive cove appends to the
base initramfs), so the token and services the test sees are the ones cove delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

HEADER = 110  # "070701" and 13 eight-digit hex fields
AGENT_PORT = 1024
AGENT_CONFIG = "upper/cove/config.json"  # in the per-boot archive (cove.image.initramfs)


def initrd_files(data: bytes) -> dict[str, bytes]:
    """Every regular file in a chain of newc archives; a later one wins, as in the kernel."""
    files: dict[str, bytes] = {}
    at = 0
    while at + HEADER <= len(data):
        if data[at:at + 6] != b"070701":
            at += 4  # the padding between concatenated archives
            continue
        fields = [int(data[at + 6 + 8 * i:at + 14 + 8 * i], 16) for i in range(13)]
        mode, size, name_size = fields[1], fields[6], fields[11]
        name_at = at + HEADER
        name = data[name_at:name_at + name_size - 1].decode()
        body_at = name_at + name_size + (-(HEADER + name_size) % 4)
        if mode & 0o170000 == 0o100000:
            files[name] = data[body_at:body_at + size]
        at = body_at + size + (-size % 4)
    return files


PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36


def contain(argv: list[str]) -> int:
    """The stand-in guest's init: runs the agent, and when the agent ends or the stand-in
    hypervisor dies (even by SIGKILL), ends everything the agent started. A real guest's
    processes die with its VM; the agent's services here live in sessions of their own on
    the host, and would outlive the test. SIGTERM (a power button) goes to the agent."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1)  # orphaned services become ours, to end
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGHUP)
    agent = subprocess.Popen(argv)
    signal.signal(signal.SIGTERM, lambda *_: agent.send_signal(signal.SIGTERM))
    signal.signal(signal.SIGHUP, lambda *_: agent.kill())
    code = agent.wait()
    end_children()
    return code


def end_children() -> None:
    """SIGKILL every child, and every orphan that comes to us meanwhile, until none is left."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        for child in own_children():
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        if pid == 0:
            time.sleep(0.01)


def own_children() -> list[int]:
    me, found = str(os.getpid()), []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                if stat.rsplit(")", 1)[1].split()[1] == me:
                    found.append(int(entry))
    return found


class Guest:
    def __init__(self, initrd: Path, workdir: Path) -> None:
        self.initrd = initrd
        self.workdir = workdir
        self.socket = workdir / "agent.sock"
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        files = initrd_files(self.initrd.read_bytes())
        config = json.loads(files[AGENT_CONFIG])
        # the same agent, its channel a unix socket instead of vsock (no vhost-vsock here)
        config.update(transport="unix", unix_path=str(self.socket))
        config_path = self.workdir / "agent-config.json"
        config_path.write_text(json.dumps(config))
        root = str(Path(__file__).resolve().parents[2])
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.standins.guest", sys.executable, "-m",
            "cove.guest.agent",
            env={**os.environ, "COVE_AGENT_CONFIG": str(config_path),
                 "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))})

    async def relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One host connection to the agent's port, piped both ways."""
        for _ in range(200):
            try:
                agent_reader, agent_writer = await asyncio.open_unix_connection(str(self.socket))
                break
            except OSError:
                await asyncio.sleep(0.02)
        else:
            writer.close()
            return
        await asyncio.gather(pipe(reader, agent_writer), pipe(agent_reader, writer))

    def stop(self) -> None:
        """What a power button or Ctrl-Alt-Del does to a guest without an agent request."""
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)

    async def wait(self) -> None:
        if self.process is not None:
            await self.process.wait()


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
    writer.close()


async def serve_relay(path: Path, guest: Guest) -> asyncio.Server:
    """A plain unix socket into the agent: where AF_VSOCK would reach it (crosvm, kvmtool)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    return await asyncio.start_unix_server(guest.relay, str(path))


if __name__ == "__main__":
    sys.exit(contain(sys.argv[1:]))
