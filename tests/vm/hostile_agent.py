"""A hostile stand-in for cove's guest agent (tests/vm/test_hostile.py copies it into a copy
of cove's tree as cove/guest/agent.py; the real agent moves to cove/guest/real_agent.py).

In a VM whose name starts with "evil" it is the attacker: it answers the host's hello (so
the VM comes up), then does what each exec asks by its first word, as a guest whose root
replaced cove's agent could: floods, lies, oversized frames, hostile tar streams. In every
other VM it is cove's real agent. Standard library only, like all guest code.
"""

from __future__ import annotations

import base64
import io
import json
import os
import struct
import sys
import tarfile
import threading
import time

from . import proto, real_agent  # type: ignore[attr-defined]
from .link import find_port  # type: ignore[import-not-found]

write_lock = threading.Lock()


def send(fd: int, frame: dict[str, object]) -> None:
    write_raw(fd, proto.encode(frame))


def write_raw(fd: int, data: bytes) -> None:
    with write_lock:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]


def out(fd: int, channel: int, data: bytes) -> None:
    for start in range(0, len(data), 48 * 1024):
        send(fd, {"t": "out", "ch": channel, "fd": 1,
                  "data": base64.b64encode(data[start:start + 48 * 1024]).decode()})


def log(fd: int, text: str) -> None:
    send(fd, {"t": "log", "svc": "evil", "fd": 1, "ts": time.time(),
              "data": base64.b64encode(text.encode()).decode()})


def member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "", size: int = 0
           ) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, link, size
    return info


def hostile_tar(case: str) -> bytes:
    """What `cove cp evil:/CASE DEST` gets back: each an attack on where files land."""
    members = {
        "dotdot": [member("dotdot/../../escaped", size=4)],
        "absolute": [member("/tmp/cove-escaped", size=4)],
        "through-link": [member("through-link", tarfile.DIRTYPE),
                         member("through-link/out", tarfile.SYMTYPE, "/tmp"),
                         member("through-link/out/cove-escaped", size=4)],
        "hardlink": [member("hardlink", tarfile.DIRTYPE),
                     member("hardlink/passwd", tarfile.LNKTYPE, "/etc/passwd")],
        "device": [member("device", tarfile.CHRTYPE)],
        "wrongtop": [member(".bashrc", size=4)],
    }.get(case, [])
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as archive:
        for info in members:
            archive.addfile(info, io.BytesIO(b"evil") if info.isreg() else None)
    if case == "bomb":  # a header claiming 1 TiB, then a little data and the end
        return member("bomb", size=2**40).tobuf(tarfile.GNU_FORMAT) + b"\0" * 4096
    return buffer.getvalue()


def flood(fd: int) -> None:
    """Log frames as fast as the port takes them, for ever (far more than 1 GiB)."""
    chunk = base64.b64encode(b"flood " * 8000 + b"\n").decode()
    while True:
        send(fd, {"t": "log", "svc": "evil", "fd": 1, "ts": time.time(), "data": chunk})


def lies(fd: int) -> None:
    """Events naming another VM, and ports it has no business forwarding."""
    send(fd, {"t": "event", "kind": "started", "svc": "hijack", "vm": "victim", "pid": 1})
    send(fd, {"t": "event", "kind": "listening", "port": 22})
    for port in range(20000, 30000):
        send(fd, {"t": "event", "kind": "listening", "port": port})


def run_exec(fd: int, request: dict[str, object], channel: int) -> None:
    argv = request.get("argv")
    word = argv[0] if isinstance(argv, list) and argv else ""
    send(fd, {"t": "res", "id": request.get("id"), "ok": True, "ch": channel, "pid": 1})
    code = 0
    if word == "tar" and isinstance(argv, list):
        out(fd, channel, hostile_tar(str(argv[-1])))
    elif word == "flood":
        threading.Thread(target=flood, args=(fd,), daemon=True).start()
    elif word == "line":  # a 1 MiB line with terminal escapes in it
        text = "\x1b]0;pwned\x07\x1b[2J" + "x" * (1024 * 1024) + "\n"
        for start in range(0, len(text), 32 * 1024):
            log(fd, text[start:start + 32 * 1024])
    elif word == "lies":
        lies(fd)
    elif word == "oversized":
        write_raw(fd, struct.pack(">I", proto.MAX_FRAME + 1))
        return
    else:
        code = 127
    send(fd, {"t": "exit", "ch": channel, "code": code})


def answer(fd: int, frame: dict[str, object], channel: int) -> None:
    if frame.get("t") == "hello":
        send(fd, {"t": "hello", "v": proto.VERSION, "caps": ["exec", "status"],
                  "uptime": 1.0, "services": {}})
    elif frame.get("t") == "req" and frame.get("op") == "exec":
        run_exec(fd, frame, channel)
    elif frame.get("t") == "req":
        send(fd, {"t": "res", "id": frame.get("id"), "ok": True, "services": {}})
        if frame.get("op") == "shutdown":
            os.sync()
            os.execv("/bin/busybox", ["poweroff", "-f"])


def attack() -> None:
    port = os.open(find_port(proto.PORT_NAME), os.O_RDWR)
    decoder, channel = proto.Decoder(), 0
    while True:
        try:
            data = os.read(port, 1 << 16)
        except OSError:
            data = b""
        if not data:  # no host yet (a virtio port reads EOF until one connects)
            time.sleep(0.1)
            continue
        try:
            frames = decoder.feed(data)
        except proto.ProtocolError:
            decoder = proto.Decoder()
            continue
        for frame in frames:
            channel += 1
            answer(port, frame, channel)


def main() -> None:
    with open(real_agent.CONFIG) as handle:
        name = json.loads(handle.read()).get("name", "")
    if not str(name).startswith("evil"):
        real_agent.main()
        return
    sys.stderr.write("cove-agent: this is the hostile stand-in\n")
    attack()
